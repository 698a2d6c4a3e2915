//! The one door every move of the runtime goes through: an attempt's outcome, an operator's
//! call, a timer (a backoff elapsed, a wait timed out, a poison pill dead-lettered), a lease
//! expiry, a stage run inline, a deferral, a release. Whoever moves, the same follows, once:
//!
//! 1. the move is committed with the notifications it raises as follow-up runs in the same
//!    write ([`Shared::with_notices`]), so a crash cannot keep the move and lose them;
//! 2. the observers are told ([`Observer::moved`]), with who moved it;
//! 3. the hooks run (`on_review`, `on_dead_letter`, `on_success`);
//! 4. whoever waits on it is woken: the dispatcher for a queued run or a new notification,
//!    the pipeline a stage belongs to (see [`after_move`]).

use super::wakeups::after_move;
use super::{MoveEvent, Shared};
use crate::lifecycle::RunState;
use crate::store::{Actor, ConflictResult, RunRecord, Transition};

impl Shared {
    /// Commits `transition` of a run of `agent` through the one door (see the module docs).
    /// `parent_sees_it`: the run is a stage its pipeline run is running inline, which sees the
    /// outcome itself (nobody to wake).
    pub(crate) async fn commit(
        &self,
        agent: &str,
        transition: Transition,
        parent_sees_it: bool,
    ) -> ConflictResult<RunRecord> {
        // Who moved it and why, kept for the observers only: no copy per move without them.
        let from = transition.from;
        let told = (!self.observers.is_empty())
            .then(|| (transition.actor.clone(), transition.reason.clone()));
        let transition = self.with_notices(transition, agent);
        let followed = !transition.follow_ups.is_empty();
        let moved = self.store.transition(transition).await?;
        if let Ok(record) = &moved {
            if let Some((actor, reason)) = &told {
                self.tell(record, from, actor, reason);
            }
            self.run_hooks(record);
            after_move(self, record, self.waits_on_children(&record.agent), parent_sees_it).await;
            if followed || record.state == RunState::Queued {
                self.wake.notify_one();
            }
        }
        Ok(moved)
    }

    /// Tells the observers and runs the hooks for `record`, just moved from `from` by `actor`:
    /// for moves the store made itself (a lease expiry) or that wake a pipeline run, which
    /// have nothing else to follow them.
    pub(crate) fn moved(&self, record: &RunRecord, from: RunState, actor: &Actor, reason: &str) {
        self.tell(record, from, actor, reason);
        self.run_hooks(record);
    }

    /// Tells the observers that `record` moved from `from`, by `actor`, for `reason`.
    fn tell(&self, record: &RunRecord, from: RunState, actor: &Actor, reason: &str) {
        let event = MoveEvent {
            agent: &record.agent,
            run: record.id,
            from,
            to: record.state,
            actor,
            reason,
            at: record.updated_at,
        };
        for observer in &self.observers {
            observer.moved(&event);
        }
    }

    /// Runs the hooks of the state `record` entered.
    fn run_hooks(&self, record: &RunRecord) {
        let hooks = match record.state {
            RunState::NeedsReview => &self.on_review,
            RunState::FailedPermanent => &self.on_dead_letter,
            RunState::Succeeded => &self.on_success,
            _ => return,
        };
        for hook in hooks {
            hook(record);
        }
    }

    /// Whether `agent`'s runs wait on their own children (see
    /// [`Kind`](crate::agent::erased::Kind)).
    pub(crate) fn waits_on_children(&self, agent: &str) -> bool {
        self.agents.get(agent).is_some_and(|r| r.kind().waits_on_children)
    }
}
