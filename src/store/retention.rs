//! Retention: which settled runs [`Store::prune`](super::Store::prune) deletes, and what it
//! reports. The rule is written here once; a backend finds candidates and deletes them.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::lifecycle::{RunId, RunState};
use crate::machine::StateMachine;

use super::records::RunRecord;

/// Which runs [`Store::prune`](super::Store::prune) deletes: runs in one of `states` that have
/// not moved for `older_than`, with their history, effects, notes, payloads and index entries.
///
/// Only runs at rest can be pruned: `succeeded` (the default), and, when asked, dead letters
/// (`failed_permanent`) and runs held for review (`needs_review`). A pipeline run goes with
/// all its stage runs, and only when every one of them is in one of `states` too (a stage
/// still held for review keeps its pipeline); a stage run is never pruned on its own.
///
/// ```
/// use std::time::Duration;
/// use steadfast::store::Retention;
///
/// // Succeeded runs and dead letters untouched for 30 days.
/// let policy = Retention::older_than(Duration::from_secs(30 * 86_400)).dead_letters(true);
/// assert!(policy.check().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// How long a run must have been in its state (since its last move).
    pub older_than: Duration,
    /// The states whose runs may be deleted (default `succeeded`).
    pub states: Vec<RunState>,
    /// At most this many runs deleted per commit (default 512), so that a large prune never
    /// holds the store's writer for long: workers' moves interleave with its commits.
    pub batch: usize,
}

/// What [`Store::prune`](super::Store::prune) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct Pruned {
    /// Runs deleted, stage runs included.
    pub runs: u64,
    /// Pipeline runs the policy matched but kept, because a stage run of theirs is in a state
    /// the policy does not take (held for review, say).
    pub kept: u64,
}

/// The states a run can be pruned in: the ones a run rests in until an operator acts.
const AT_REST: [RunState; 3] =
    [RunState::Succeeded, RunState::FailedPermanent, RunState::NeedsReview];

impl Retention {
    /// Succeeded runs that have not moved for `older_than`.
    pub fn older_than(older_than: Duration) -> Self {
        Retention { older_than, states: vec![RunState::Succeeded], batch: 512 }
    }

    /// Also dead letters (`failed_permanent`), or not.
    #[must_use]
    pub fn dead_letters(self, yes: bool) -> Self {
        self.with_state(RunState::FailedPermanent, yes)
    }

    /// Also runs held for review (`needs_review`), or not.
    #[must_use]
    pub fn in_review(self, yes: bool) -> Self {
        self.with_state(RunState::NeedsReview, yes)
    }

    /// Exactly these states (each must be one a run rests in; see [`Retention::check`]).
    #[must_use]
    pub fn states(mut self, states: impl IntoIterator<Item = RunState>) -> Self {
        self.states = states.into_iter().collect();
        self.states.sort_by_key(|s| s.index());
        self.states.dedup();
        self
    }

    /// At most `runs` deleted per commit (at least 1).
    #[must_use]
    pub fn batch(mut self, runs: usize) -> Self {
        self.batch = runs.max(1);
        self
    }

    fn with_state(mut self, state: RunState, yes: bool) -> Self {
        self.states.retain(|s| *s != state);
        if yes {
            self.states.push(state);
            self.states.sort_by_key(|s| s.index());
        }
        self
    }

    /// Whether the policy can be applied: at least one state, and only states a run rests in
    /// (`succeeded`, `failed_permanent`, `needs_review`); a run that is queued, processing,
    /// waiting or due for a retry is never pruned.
    pub fn check(&self) -> Result<(), String> {
        if self.states.is_empty() {
            return Err("a retention policy names no state to prune".into());
        }
        if let Some(state) = self.states.iter().find(|s| !AT_REST.contains(s)) {
            return Err(format!(
                "runs in `{state}` are never pruned: they still have work to do (prunable: succeeded, failed_permanent, needs_review)"
            ));
        }
        Ok(())
    }

    /// The last time a run may have moved to be pruned at `now`.
    pub fn cutoff(&self, now: Timestamp) -> Timestamp {
        now.before(self.older_than)
    }

    /// Whether the policy takes `run` at `now`: a run without a parent, in one of the states,
    /// unmoved since the cutoff. Its stage runs must also pass [`Retention::takes_stage`].
    pub fn takes(&self, run: &RunRecord, now: Timestamp) -> bool {
        self.takes_resting(&Resting::of(run), now)
    }

    /// Whether a stage run (any descendant) of a run the policy takes may go with it.
    pub fn takes_stage(&self, run: &RunRecord) -> bool {
        self.states.contains(&run.state)
    }

    pub(crate) fn takes_resting(&self, run: &Resting, now: Timestamp) -> bool {
        !run.has_parent && self.states.contains(&run.state) && run.moved_at <= self.cutoff(now)
    }
}

/// What the rule reads of a run (a backend need not decode its payloads).
#[derive(Clone, Debug)]
pub(crate) struct Resting {
    pub(crate) id: RunId,
    pub(crate) state: RunState,
    /// How many moves it had when read: a run that moved since is not the run judged.
    #[cfg_attr(not(any(feature = "sled", feature = "postgres")), allow(dead_code))]
    pub(crate) moves: u32,
    pub(crate) has_parent: bool,
    pub(crate) moved_at: Timestamp,
}

impl Resting {
    pub(crate) fn of(run: &RunRecord) -> Self {
        Resting {
            id: run.id,
            state: run.state,
            moves: run.moves,
            has_parent: run.parent.is_some(),
            moved_at: run.updated_at,
        }
    }
}

/// The runs to delete for `run`, which the policy takes: itself and every descendant, read
/// with `children`; or `None` when a descendant is in a state the policy does not take (the
/// whole tree is then kept).
pub(crate) fn gather<E>(
    policy: &Retention,
    run: Resting,
    mut children: impl FnMut(RunId) -> Result<Vec<Resting>, E>,
) -> Result<Option<Vec<Resting>>, E> {
    let mut group = vec![run];
    let mut next = 0;
    while next < group.len() {
        for child in children(group[next].id)? {
            if !policy.states.contains(&child.state) {
                return Ok(None);
            }
            group.push(child);
        }
        next += 1;
    }
    Ok(Some(group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: RunState, moved: Timestamp) -> RunRecord {
        RunRecord {
            id: RunId::new(),
            agent: "a".into(),
            state,
            input: serde_json::Value::Null,
            output: None,
            idempotency_key: "k".into(),
            attempt: 1,
            due_at: None,
            lease: None,
            fence: 0,
            parent: None,
            stage: None,
            input_schema: None,
            output_schema: None,
            concurrency_key: None,
            waiting_for: None,
            signal: None,
            review_note: None,
            last_error: None,
            moves: 3,
            format: crate::store::FORMAT_VERSION,
            created_at: moved,
            updated_at: moved,
        }
    }

    #[test]
    fn only_runs_at_rest_and_older_than_the_policy_are_taken() {
        let now = Timestamp::from_millis(10_000_000);
        let policy = Retention::older_than(Duration::from_secs(60));
        let old = now.before(Duration::from_secs(61));
        let young = now.before(Duration::from_secs(59));
        assert!(policy.takes(&run(RunState::Succeeded, old), now));
        assert!(policy.takes(&run(RunState::Succeeded, policy.cutoff(now)), now));
        assert!(!policy.takes(&run(RunState::Succeeded, young), now));
        assert!(!policy.takes(&run(RunState::FailedPermanent, old), now));
        assert!(!policy.takes(&run(RunState::NeedsReview, old), now));
        let all = policy.clone().dead_letters(true).in_review(true);
        assert!(all.takes(&run(RunState::FailedPermanent, old), now));
        assert!(all.takes(&run(RunState::NeedsReview, old), now));
        assert!(!all.takes(&run(RunState::Queued, old), now));
        let mut stage = run(RunState::Succeeded, old);
        stage.parent = Some(RunId::new());
        assert!(!policy.takes(&stage, now), "a stage run goes only with its pipeline");
        assert!(policy.takes_stage(&stage));
        let fewer = all.dead_letters(false).states;
        assert_eq!(fewer.len(), 2);
        assert!(fewer.contains(&RunState::Succeeded) && fewer.contains(&RunState::NeedsReview));
    }

    #[test]
    fn a_policy_naming_a_state_with_work_left_is_refused() {
        let policy = Retention::older_than(Duration::ZERO);
        assert!(policy.check().is_ok());
        let error = policy.clone().states([RunState::Queued]).check().unwrap_err();
        assert!(error.contains("`queued` are never pruned"), "{error}");
        assert!(policy.states([]).check().unwrap_err().contains("no state"));
    }
}
