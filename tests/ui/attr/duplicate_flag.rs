use steadfast::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    #[machine(initial, to(Paid))]
    #[machine(initial)]
    Open,
    #[machine(terminal, terminal)]
    Paid,
}

fn main() {}
