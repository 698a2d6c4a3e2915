//! Typed state machines: the [`StateMachine`] trait and its derive.
//!
//! A state machine here is a fieldless enum whose moves are declared on its variants with
//! `#[derive(StateMachine)]`; a move the table does not allow fails with a
//! [`TransitionError`] naming what is allowed, and a table that makes no sense (an unknown
//! target, a state no run can reach, a state with no way out) does not compile.
//!
//! # Example
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use steadfast::StateMachine;
//!
//! #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
//! #[serde(rename_all = "snake_case")]
//! enum Door {
//!     #[machine(initial, to(Open, Locked))]
//!     Closed,
//!     #[machine(to(Closed))]
//!     Open,
//!     #[machine(to(Closed, Broken))]
//!     Locked,
//!     #[machine(terminal)]
//!     Broken,
//! }
//!
//! assert_eq!(Door::INITIAL, Door::Closed);
//! assert_eq!(Door::Closed.transition(Door::Open), Ok(Door::Open));
//! let refused = Door::Open.transition(Door::Locked).unwrap_err();
//! assert_eq!(refused.to_string(), "cannot move from `open` to `locked`; allowed from `open`: `closed`");
//!
//! // `can_transition` is a `const fn`: prove a move at compile time.
//! const _: () = assert!(Door::Locked.can_transition(Door::Broken));
//! ```
//!
//! # The attribute
//!
//! Every variant carries `#[machine(...)]` with these keys:
//!
//! | key | meaning |
//! |---|---|
//! | `initial` | the state every new instance starts in; exactly one variant has it |
//! | `to(A, B, ...)` | the states this one may move to; every non-terminal variant has it |
//! | `terminal` | an end state: no moves out, so no `to(...)` |
//!
//! Rejected at compile time, each with an error on the offending token that says how to fix
//! it: a target that is not a variant, a variant with fields, zero or two `initial`, a
//! `terminal` variant with `to(...)`, a non-terminal variant without `to(...)`, a variant
//! unreachable from the initial one, a duplicate move, an unknown key, generic parameters,
//! and the derive on a struct or union.
//!
//! # What the derive generates
//!
//! `impl StateMachine` with [`INITIAL`](StateMachine::INITIAL),
//! [`STATES`](StateMachine::STATES) (declaration order),
//! [`TRANSITIONS`](StateMachine::TRANSITIONS) (declaration order),
//! [`name`](StateMachine::name) (the serde name: `#[serde(rename_all = ...)]` and
//! `#[serde(rename = ...)]` are honoured) and [`is_terminal`](StateMachine::is_terminal); plus
//! an inherent `const fn can_transition(self, to: Self) -> bool` with the enum's visibility,
//! which the trait method calls. The trait supplies the rest: [`transition`],
//! [`successors`](StateMachine::successors), [`from_name`](StateMachine::from_name),
//! [`mermaid`](StateMachine::mermaid) and [`dot`](StateMachine::dot).
//!
//! [`transition`]: StateMachine::transition

use std::fmt::{self, Write as _};

/// Derives [`StateMachine`](trait@StateMachine) for a fieldless enum; see the
/// [module docs](self).
pub use steadfast_derive::StateMachine;

/// A finite set of states and the moves allowed between them.
///
/// Implement it with `#[derive(StateMachine)]`; the derive checks the table at compile time.
/// Hand-written impls must keep the invariants the derive guarantees: `INITIAL` is in
/// `STATES`, every pair in `TRANSITIONS` is made of states in `STATES`, `can_transition(a, b)`
/// holds exactly for the pairs in `TRANSITIONS`, and terminal states have no moves out.
pub trait StateMachine: Copy + Eq + fmt::Debug + Send + Sync + 'static {
    /// The state every new instance starts in.
    const INITIAL: Self;
    /// Every state, in declaration order.
    const STATES: &'static [Self];
    /// Every allowed move `(from, to)`, in declaration order.
    const TRANSITIONS: &'static [(Self, Self)];

    /// Whether the move `self → to` is in the table.
    ///
    /// The derive also generates an inherent `const fn` of the same name, which method-call
    /// syntax prefers, so `const _: () = assert!(S::A.can_transition(S::B));` works.
    fn can_transition(self, to: Self) -> bool;

    /// The state's serialized name (the serde name), used in storage, logs, the CLI and HTTP.
    fn name(self) -> &'static str;

    /// Whether the state is an end: no move leaves it.
    fn is_terminal(self) -> bool;

    /// Checks the move `self → to` against the table: `Ok(to)` if allowed, otherwise a
    /// [`TransitionError`] that names the allowed moves.
    fn transition(self, to: Self) -> Result<Self, TransitionError<Self>> {
        if self.can_transition(to) { Ok(to) } else { Err(TransitionError { from: self, to }) }
    }

    /// The states `self` may move to, in declaration order.
    fn successors(self) -> impl Iterator<Item = Self> {
        Self::TRANSITIONS.iter().filter(move |(from, _)| *from == self).map(|&(_, to)| to)
    }

    /// The position of `self` in [`STATES`](StateMachine::STATES).
    fn index(self) -> usize {
        Self::STATES.iter().position(|&s| s == self).expect("every state is in STATES")
    }

    /// The state whose [`name`](StateMachine::name) is `name`, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::STATES.iter().copied().find(|s| s.name() == name)
    }

    /// The machine as a Mermaid `stateDiagram-v2`, with `[*]` arrows into the initial state
    /// and out of the terminal ones.
    fn mermaid() -> String {
        let mut out = String::from("stateDiagram-v2\n");
        for &state in Self::STATES {
            let id = diagram_id(state.name());
            if id != state.name() {
                let _ = writeln!(out, "    state \"{}\" as {id}", state.name());
            }
        }
        let _ = writeln!(out, "    [*] --> {}", diagram_id(Self::INITIAL.name()));
        for &(from, to) in Self::TRANSITIONS {
            let _ = writeln!(out, "    {} --> {}", diagram_id(from.name()), diagram_id(to.name()));
        }
        for &state in Self::STATES.iter().filter(|s| s.is_terminal()) {
            let _ = writeln!(out, "    {} --> [*]", diagram_id(state.name()));
        }
        out
    }

    /// The machine as a Graphviz `digraph`: the initial state bold, terminal states doubled.
    fn dot() -> String {
        let mut out =
            String::from("digraph {\n    rankdir=LR;\n    node [shape=box, style=rounded];\n");
        for &state in Self::STATES {
            let mut attrs = vec![format!("label=\"{}\"", state.name())];
            if state == Self::INITIAL {
                attrs.push("penwidth=2".into());
            }
            if state.is_terminal() {
                attrs.push("peripheries=2".into());
            }
            let _ = writeln!(out, "    {} [{}];", diagram_id(state.name()), attrs.join(", "));
        }
        for &(from, to) in Self::TRANSITIONS {
            let _ = writeln!(out, "    {} -> {};", diagram_id(from.name()), diagram_id(to.name()));
        }
        out.push_str("}\n");
        out
    }
}

/// A name usable as a node id in Mermaid and Graphviz: ASCII letters, digits and `_`.
fn diagram_id(name: &str) -> String {
    let id: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if id.starts_with(|c: char| c.is_ascii_digit()) || id.is_empty() {
        format!("s_{id}")
    } else {
        id
    }
}

/// A move the table does not allow.
///
/// Its message names both states and what is allowed instead:
/// "cannot move from `succeeded` to `queued`; `succeeded` is terminal".
#[derive(Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{}", describe(*.from, *.to))]
pub struct TransitionError<S: StateMachine> {
    /// The state the move started from.
    pub from: S,
    /// The state the move asked for.
    pub to: S,
}

impl<S: StateMachine> fmt::Debug for TransitionError<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransitionError").field("from", &self.from).field("to", &self.to).finish()
    }
}

fn describe<S: StateMachine>(from: S, to: S) -> String {
    let mut out = format!("cannot move from `{}` to `{}`; ", from.name(), to.name());
    if from.is_terminal() || from.successors().next().is_none() {
        let _ = write!(out, "`{}` is terminal", from.name());
    } else {
        let allowed: Vec<String> = from.successors().map(|s| format!("`{}`", s.name())).collect();
        let _ = write!(out, "allowed from `{}`: {}", from.name(), allowed.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::diagram_id;

    #[test]
    fn diagram_ids_are_plain() {
        assert_eq!(diagram_id("waiting_external"), "waiting_external");
        assert_eq!(diagram_id("waiting-external"), "waiting_external");
        assert_eq!(diagram_id("2fa"), "s_2fa");
        assert_eq!(diagram_id(""), "s_");
    }
}
