use steadfast::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    #[machine(initial, to(Paid))]
    Open,
    #[machine(initial, to(Paid))]
    Draft,
    #[machine(terminal)]
    Paid,
}

fn main() {}
