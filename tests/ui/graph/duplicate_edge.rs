use steadfast::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    #[machine(initial, to(Paid, Shipped, Paid))]
    Open,
    #[machine(to(Shipped))]
    Paid,
    #[machine(terminal)]
    Shipped,
}

fn main() {}
