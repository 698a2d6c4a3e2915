//! A user-defined state machine: a document's approval flow, declared with
//! `#[derive(StateMachine)]` and driven through its moves.
//!
//! Shows: declaring states and moves, the serde names, a refused move and its message, the
//! compile-time proof of a move, and the Mermaid and Graphviz diagrams.
//!
//! Run it with `cargo run --example approval_flow`.

use serde::{Deserialize, Serialize};
use steadfast::{StateMachine, TransitionError};

/// The life of a document that needs a sign-off.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Approval {
    #[machine(initial, to(Submitted))]
    Draft,
    #[machine(to(InReview, Draft))]
    Submitted,
    #[machine(to(Approved, Rejected, ChangesRequested))]
    InReview,
    #[machine(to(Submitted))]
    ChangesRequested,
    #[machine(terminal)]
    Approved,
    #[machine(terminal)]
    Rejected,
}

// Proven while compiling: if someone removes this move from the table, this line fails.
const _: () = assert!(Approval::ChangesRequested.can_transition(Approval::Submitted));

/// A document and the moves it went through.
#[derive(Debug)]
struct Document {
    title: &'static str,
    state: Approval,
    history: Vec<Approval>,
}

impl Document {
    fn new(title: &'static str) -> Self {
        Document { title, state: Approval::INITIAL, history: vec![Approval::INITIAL] }
    }

    /// Every move goes through the typed table; a refused move changes nothing.
    fn advance(&mut self, to: Approval) -> Result<(), TransitionError<Approval>> {
        self.state = self.state.transition(to)?;
        self.history.push(to);
        Ok(())
    }
}

fn main() -> Result<(), TransitionError<Approval>> {
    let mut doc = Document::new("Q3 budget");
    for step in [
        Approval::Submitted,
        Approval::InReview,
        Approval::ChangesRequested,
        Approval::Submitted,
        Approval::InReview,
        Approval::Approved,
    ] {
        doc.advance(step)?;
        println!("{:<10} -> {}", doc.title, doc.state.name());
    }

    // A finished document cannot be reopened: the move is refused and the state is kept.
    match doc.advance(Approval::Draft) {
        Err(refused) => println!("\nrefused: {refused}"),
        Ok(()) => unreachable!("`approved` is terminal"),
    }
    assert_eq!(doc.state, Approval::Approved);

    let path: Vec<&str> = doc.history.iter().map(|s| s.name()).collect();
    println!("history: {}", path.join(" -> "));
    println!(
        "\nfrom `in_review` a document may go to: {:?}",
        Approval::InReview.successors().collect::<Vec<_>>()
    );

    println!(
        "\nMermaid (paste into any Markdown that renders mermaid):\n\n{}",
        Approval::mermaid()
    );
    println!("Graphviz (pipe into `dot -Tsvg`):\n\n{}", Approval::dot());
    Ok(())
}
