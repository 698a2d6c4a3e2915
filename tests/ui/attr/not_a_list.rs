use steadfast::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    #[machine]
    Open,
    #[machine(terminal)]
    Paid,
}

fn main() {}
