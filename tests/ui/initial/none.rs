use steadfast::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    #[machine(to(Paid))]
    Open,
    #[machine(terminal)]
    Paid,
}

fn main() {}
