use steadfast::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    #[machine(initial, to(Paid, Cancelled))]
    Open,
    #[machine(terminal)]
    Paid,
    Cancelled,
}

fn main() {}
