use steadfast::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    #[machine(to(Paid, Lost))]
    Open,
    #[machine(terminal, to(Open))]
    Paid,
    Stuck,
}

fn main() {}
