use steadfast::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    #[machine(initial, to(Paid))]
    Open,
    #[machine(terminal)]
    Paid,
}

// A move the table does not allow cannot be proven: this fails to compile.
const _: () = assert!(Order::Paid.can_transition(Order::Open));

fn main() {}
