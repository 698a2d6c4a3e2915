use steadfast::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    #[machine(initial, to(Payed))]
    Open,
    #[machine(terminal)]
    Paid,
}

// Code using the broken machine sees only the derive's error, not a cascade of
// "StateMachine is not implemented".
fn start() -> Order {
    <Order as StateMachine>::INITIAL
}

fn main() {
    let _ = start().name();
}
