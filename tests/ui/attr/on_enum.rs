use steadfast::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq)]
#[machine(initial)]
enum Order {
    #[machine(initial, to(Paid))]
    Open,
    #[machine(terminal)]
    Paid,
}

fn main() {}
