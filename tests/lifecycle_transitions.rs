//! The run lifecycle and the derive, seen from a user's crate: the table is enforced exactly,
//! names follow serde, and the diagrams describe the table.

use std::collections::{HashSet, VecDeque};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use steadfast::{RunState, StateMachine, TransitionError};

/// DESIGN.md §1, written out by hand: the derive's output must match it exactly.
const DESIGN_TABLE: &[(RunState, &[RunState])] = {
    use RunState::*;
    &[
        (Queued, &[Processing, FailedPermanent]),
        (Processing, &[Succeeded, FailedTransient, FailedPermanent, WaitingExternal, NeedsReview]),
        (WaitingExternal, &[Queued, FailedTransient, FailedPermanent, NeedsReview]),
        (FailedTransient, &[Queued, FailedPermanent]),
        (FailedPermanent, &[Queued]),
        (NeedsReview, &[Queued, Succeeded, FailedPermanent]),
        (Succeeded, &[]),
    ]
};

#[test]
fn run_state_table_is_the_designed_one() {
    let expected: HashSet<(RunState, RunState)> = DESIGN_TABLE
        .iter()
        .flat_map(|(from, tos)| tos.iter().map(move |to| (*from, *to)))
        .collect();
    let generated: HashSet<(RunState, RunState)> = RunState::TRANSITIONS.iter().copied().collect();
    assert_eq!(generated, expected);
    assert_eq!(RunState::TRANSITIONS.len(), expected.len(), "no duplicate edges");
    assert_eq!(RunState::STATES.len(), 7);
    assert_eq!(RunState::INITIAL, RunState::Queued);
    let terminal: Vec<_> = RunState::STATES.iter().filter(|s| s.is_terminal()).collect();
    assert_eq!(terminal, [&RunState::Succeeded]);
}

#[test]
fn refused_move_names_what_is_allowed() {
    let err = RunState::Queued.transition(RunState::Succeeded).unwrap_err();
    assert_eq!(err, TransitionError { from: RunState::Queued, to: RunState::Succeeded });
    assert_eq!(
        err.to_string(),
        "cannot move from `queued` to `succeeded`; allowed from `queued`: `processing`, `failed_permanent`"
    );
}

fn state() -> impl Strategy<Value = RunState> {
    proptest::sample::select(RunState::STATES)
}

proptest! {


    /// For random sequences of requested moves, `transition` accepts exactly the pairs in
    /// `TRANSITIONS`; an accepted move changes the state, a refused one leaves it unchanged.
    #[test]
    fn transition_accepts_exactly_the_table(requests in proptest::collection::vec(state(), 0..200)) {
        let table: HashSet<_> = RunState::TRANSITIONS.iter().copied().collect();
        let mut current = RunState::INITIAL;
        for to in requests {
            let allowed = table.contains(&(current, to));
            prop_assert_eq!(current.can_transition(to), allowed);
            prop_assert_eq!(current.successors().any(|s| s == to), allowed);
            match current.transition(to) {
                Ok(next) => { prop_assert!(allowed); prop_assert_eq!(next, to); current = next; }
                Err(err) => { prop_assert!(!allowed); prop_assert_eq!(err.from, current); prop_assert_eq!(err.to, to); }
            }
        }
    }

    /// `name` and `from_name` are inverse, and agree with serde both ways.
    #[test]
    fn names_round_trip(s in state()) {
        prop_assert_eq!(RunState::from_name(s.name()), Some(s));
        let json = serde_json::to_string(&s).unwrap();
        prop_assert_eq!(&json, &format!("\"{}\"", s.name()));
        prop_assert_eq!(serde_json::from_str::<RunState>(&json).unwrap(), s);
    }
}

#[test]
fn every_state_is_reachable_from_initial() {
    let mut seen = HashSet::from([RunState::INITIAL]);
    let mut queue = VecDeque::from([RunState::INITIAL]);
    while let Some(s) = queue.pop_front() {
        for next in s.successors() {
            if seen.insert(next) {
                queue.push_back(next);
            }
        }
    }
    assert_eq!(seen.len(), RunState::STATES.len());
}

/// A user's own machine, with every serde naming form.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Deploy {
    #[machine(initial, to(BuildingImage, Cancelled))]
    Pending,
    #[machine(to(RollingOut, Cancelled))]
    BuildingImage,
    #[machine(to(Live))]
    #[machine(to(RolledBack))]
    RollingOut,
    #[serde(rename = "live!")]
    #[machine(terminal)]
    Live,
    #[machine(to(Pending))]
    RolledBack,
    #[serde(rename(serialize = "CANCELLED", deserialize = "cancelled"))]
    #[machine(terminal)]
    Cancelled,
}

#[test]
fn user_machine_names_follow_serde() {
    assert_eq!(Deploy::BuildingImage.name(), "building-image");
    assert_eq!(Deploy::RollingOut.name(), "rolling-out");
    assert_eq!(Deploy::Live.name(), "live!");
    assert_eq!(Deploy::Cancelled.name(), "CANCELLED");
    for &s in Deploy::STATES {
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.name()));
    }
    assert_eq!(Deploy::from_name("live!"), Some(Deploy::Live));
    assert_eq!(Deploy::from_name("Live"), None);
    // Several `machine` attributes on one variant merge their `to(...)` lists.
    assert_eq!(
        Deploy::RollingOut.successors().collect::<Vec<_>>(),
        [Deploy::Live, Deploy::RolledBack]
    );
}

#[test]
fn diagrams_describe_the_table() {
    let mermaid = Deploy::mermaid();
    assert_eq!(
        mermaid,
        "stateDiagram-v2
    state \"building-image\" as building_image
    state \"rolling-out\" as rolling_out
    state \"live!\" as live_
    state \"rolled-back\" as rolled_back
    [*] --> pending
    pending --> building_image
    pending --> CANCELLED
    building_image --> rolling_out
    building_image --> CANCELLED
    rolling_out --> live_
    rolling_out --> rolled_back
    rolled_back --> pending
    live_ --> [*]
    CANCELLED --> [*]
"
    );
    let dot = RunState::dot();
    assert!(dot.starts_with("digraph {"));
    assert!(dot.contains("queued [label=\"queued\", penwidth=2];"));
    assert!(dot.contains("succeeded [label=\"succeeded\", peripheries=2];"));
    assert_eq!(dot.matches(" -> ").count(), RunState::TRANSITIONS.len());
}
