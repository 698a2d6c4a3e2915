use steadfast::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    #[machine(initial, to(Paid))]
    Open,
    #[machine(terminal)]
    Paid,
    #[machine(to(Paid))]
    Refunded,
}

fn main() {}
