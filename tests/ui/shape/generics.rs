use std::marker::PhantomData;
use steadfast::StateMachine;

#[derive(StateMachine)]
enum Order<T> {
    #[machine(initial, to(Paid))]
    Open,
    #[machine(terminal)]
    Paid,
    #[allow(dead_code)]
    Never(PhantomData<T>),
}

fn main() {}
