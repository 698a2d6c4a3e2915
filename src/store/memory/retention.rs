//! Retention in memory: the same rule as every store (`store::retention`), over the maps.

use std::collections::HashMap;

use super::State;
use crate::clock::Timestamp;
use crate::lifecycle::RunId;
use crate::machine::StateMachine;
use crate::store::retention::Resting;
use crate::store::{Pruned, Retention, RunRecord, StoreError};

/// Deletes what `policy` takes at `now` from `state`.
pub(super) fn prune(
    state: &mut State,
    policy: Retention,
    now: Timestamp,
) -> Result<Pruned, StoreError> {
    policy.check().map_err(StoreError::InvalidRequest)?;
    let mut stages: HashMap<RunId, Vec<Resting>> = HashMap::new();
    for run in state.runs.values() {
        if let Some(parent) = run.parent {
            stages.entry(parent).or_default().push(Resting::of(run));
        }
    }
    let taken: Vec<Resting> =
        state.runs.values().map(Resting::of).filter(|r| policy.takes_resting(r, now)).collect();
    let mut pruned = Pruned::default();
    for run in taken {
        let children =
            |id| Ok::<_, std::convert::Infallible>(stages.remove(&id).unwrap_or_default());
        let Ok(group) = crate::store::retention::gather(&policy, run, children);
        let Some(group) = group else {
            pruned.kept += 1;
            continue;
        };
        for run in group {
            if let Some(run) = state.runs.get(&run.id).cloned() {
                state.remove(&run);
                pruned.runs += 1;
            }
        }
    }
    Ok(pruned)
}

impl State {
    /// Forgets `run` and everything kept for it.
    fn remove(&mut self, run: &RunRecord) {
        if self.runs.remove(&run.id).is_some() {
            let counts = self.counts.entry(run.agent.clone()).or_default();
            counts.0[run.state.index()] -= 1;
            if counts.total() == 0 {
                self.counts.remove(&run.agent);
            }
        }
        let key = (run.agent.clone(), run.idempotency_key.clone());
        if self.keys.get(&key) == Some(&run.id) {
            self.keys.remove(&key);
        }
        self.history.remove(&run.id);
        let starts: Vec<_> = self.starts.range((run.id, 0)..=(run.id, u32::MAX)).copied().collect();
        for start in starts {
            self.starts.remove(&start);
        }
        let effects: Vec<_> = self
            .effects
            .range((run.id, String::new())..)
            .take_while(|((id, _), _)| *id == run.id)
            .map(|(key, _)| key.clone())
            .collect();
        for key in effects {
            self.effects.remove(&key);
        }
        self.dead.remove(&run.id);
        self.notes.remove(&run.id);
    }
}
