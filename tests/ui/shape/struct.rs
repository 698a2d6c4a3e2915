use steadfast::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq)]
struct Order {
    id: u64,
}

fn main() {}
