use steadfast::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    #[machine(initial, to(Paid), final)]
    Open,
    #[machine(terminal)]
    Paid,
}

fn main() {}
