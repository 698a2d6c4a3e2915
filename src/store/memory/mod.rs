//! [`MemoryStore`]: the [`Store`] contract in memory, for tests and for work that need not
//! survive the process.
//!
//! It keeps every promise of the trait except durability: everything is gone when it is
//! dropped. It runs no threads and does no I/O, so under tokio's paused clock time moves only
//! when the test is idle on a timer, which makes it the store of choice for testing agents'
//! retries, backoff, waits and leases deterministically (see `steadfast::testing`).

mod retention;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::backend::{
    CountDelta, DeadLetterChange, Expiry, LockChange, Payload, Plan, RunHead, check_transition,
    plan_claim, plan_create, plan_expiry, plan_heartbeat, plan_move,
};
use super::{
    Actor, AgentControl, Claim, ConflictResult, Created, DeadLetter, EffectRecord, HistoryEntry,
    ListQuery, NewRun, Note, Page, Pruned, Retention, RunRecord, StateCounts, Store, StoreError,
    Transition,
};
use crate::clock::{Clock, SystemClock, Timestamp};
use crate::lifecycle::{RunId, RunState};
use crate::machine::StateMachine;

/// The store contract in memory: transactional moves, leases with fencing, effects, dead
/// letters and notes, without durability.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use steadfast::store::{MemoryStore, NewRun, Store};
///
/// let store = MemoryStore::new();
/// let run = store.create(NewRun::new("agent", "key", serde_json::json!(1))).await?.run;
/// assert_eq!(store.get(run.id).await?.unwrap().attempt, 0);
/// # Ok::<(), steadfast::StoreError>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
    signal: Arc<super::WorkSignal>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("runs", &self.lock().runs.len()).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    runs: BTreeMap<RunId, RunRecord>,
    keys: HashMap<(String, String), RunId>,
    history: HashMap<RunId, Vec<HistoryEntry>>,
    effects: BTreeMap<(RunId, String), EffectRecord>,
    /// The attempts whose start was recorded (see `Store::record_start`).
    starts: std::collections::BTreeSet<(RunId, u32)>,
    dead: BTreeMap<RunId, DeadLetter>,
    notes: HashMap<RunId, Vec<Note>>,
    schemas: HashMap<String, String>,
    controls: BTreeMap<String, AgentControl>,
    /// The concurrency keys held by processing runs.
    held: std::collections::HashSet<String>,
    /// The runs of each agent in each state, kept with every move.
    counts: BTreeMap<String, StateCounts>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryStore {
            state: Arc::new(Mutex::new(State::default())),
            clock,
            signal: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Applies `plan` (see [`backend`](crate::store::backend)), with the follow-ups whose keys
    /// are free, and returns the run as it is after it.
    fn apply(&mut self, plan: Plan) -> RunRecord {
        let Plan {
            run: id,
            head,
            history,
            input,
            output,
            signal,
            dead_letter,
            lock,
            counts,
            follow_ups,
            ..
        } = plan;
        let mut run = match (input, self.runs.remove(&id)) {
            (_, Some(mut run)) => {
                run.set_head(head);
                run
            }
            (input, None) => {
                self.keys.insert((head.agent.clone(), head.idempotency_key.clone()), id);
                head.into_record(id, input.unwrap_or_default(), None, None)
            }
        };
        match output {
            Payload::Keep => {}
            Payload::Put(value) => run.output = Some(value),
            Payload::Remove => run.output = None,
        }
        match signal {
            Payload::Keep => {}
            Payload::Put(value) => run.signal = Some(value),
            Payload::Remove => run.signal = None,
        }
        match dead_letter {
            Some(DeadLetterChange::Add(entry)) => drop(self.dead.insert(id, entry)),
            Some(DeadLetterChange::Remove) => drop(self.dead.remove(&id)),
            None => {}
        }
        match lock {
            Some(LockChange::Take(key)) => drop(self.held.insert(key)),
            Some(LockChange::Release(key)) => drop(self.held.remove(&key)),
            None => {}
        }
        if !counts.is_empty() {
            let agent = self.counts.entry(run.agent.clone()).or_default();
            for CountDelta { state, delta } in counts {
                let count = &mut agent.0[state.index()];
                *count = count.saturating_add_signed(delta);
            }
        }
        let history_at = history.at;
        self.history.entry(id).or_default().push(history);
        self.runs.insert(id, run.clone());
        for new in follow_ups {
            if !self.keys.contains_key(&(new.agent.clone(), new.idempotency_key.clone())) {
                self.apply(plan_create(RunId::new(), &new, history_at));
            }
        }
        run
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn work_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.signal.subscribe())
    }

    async fn create(&self, new: NewRun) -> Result<Created, StoreError> {
        new.check()?;
        let now = self.now();
        let mut state = self.lock();
        let key = (new.agent.clone(), new.idempotency_key.clone());
        if let Some(id) = state.keys.get(&key) {
            return Ok(Created { run: state.runs[id].clone(), created: false });
        }
        let run = state.apply(plan_create(RunId::new(), &new, now));
        drop(state);
        self.signal.notify();
        Ok(Created { run, created: true })
    }

    async fn get(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        Ok(self.lock().runs.get(&run).cloned())
    }

    async fn find_by_key(
        &self,
        agent: &str,
        idempotency_key: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        let state = self.lock();
        let id = state.keys.get(&(agent.to_owned(), idempotency_key.to_owned()));
        Ok(id.map(|id| state.runs[id].clone()))
    }

    async fn transition(&self, request: Transition) -> ConflictResult<RunRecord> {
        check_transition(&request)?;
        let now = self.now();
        let mut state = self.lock();
        let id = request.run;
        let before = state.runs.get(&id).ok_or(StoreError::NotFound(id))?;
        match plan_move(id, &RunHead::of(before), &request, now) {
            Ok(plan) => {
                let run = state.apply(plan);
                drop(state);
                if super::signals_work(&request) {
                    self.signal.notify();
                }
                Ok(Ok(run))
            }
            Err(conflict) => Ok(Err(conflict)),
        }
    }

    async fn claim(&self, claim: Claim) -> Result<Vec<RunRecord>, StoreError> {
        let now = self.now();
        let mut state = self.lock();
        let mut due: Vec<(Timestamp, RunId)> = state
            .runs
            .values()
            .filter(|r| r.state == RunState::Queued && r.due_at.is_some_and(|d| d <= now))
            .filter(|r| claim.agents.is_empty() || claim.agents.contains(&r.agent))
            .filter(|r| claim.runs.is_empty() || claim.runs.contains(&r.id))
            .map(|r| (r.due_at.unwrap_or(now), r.id))
            .collect();
        due.sort_unstable();
        let mut claimed = Vec::with_capacity(claim.limit.min(due.len()));
        for (_, id) in due {
            if claimed.len() >= claim.limit {
                break;
            }
            let before = RunHead::of(&state.runs[&id]);
            let held = |key: &str| Ok::<_, std::convert::Infallible>(state.held.contains(key));
            let Ok(plan) = plan_claim(id, &before, &claim.owner, claim.lease, now, held);
            if let Some(plan) = plan {
                claimed.push(state.apply(plan));
            }
        }
        Ok(claimed)
    }

    async fn heartbeat(
        &self,
        id: RunId,
        token: u64,
        extend: Duration,
    ) -> ConflictResult<Timestamp> {
        let now = self.now();
        let mut state = self.lock();
        let run = state.runs.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        match plan_heartbeat(id, &RunHead::of(run), token, extend, now) {
            Ok(head) => {
                let expires = head.lease.as_ref().map_or(now, |l| l.expires_at);
                run.set_head(head);
                Ok(Ok(expires))
            }
            Err(conflict) => Ok(Err(conflict)),
        }
    }

    async fn recover_expired(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let now = self.now();
        let mut state = self.lock();
        let mut expired: Vec<(Timestamp, RunId)> = state
            .runs
            .values()
            .filter_map(|r| {
                r.lease
                    .as_ref()
                    .filter(|l| r.state == RunState::Processing && l.expires_at <= now)
                    .map(|l| (l.expires_at, r.id))
            })
            .collect();
        expired.sort_unstable();
        expired.truncate(limit);
        let mut recovered = Vec::with_capacity(expired.len());
        for (_, id) in expired {
            let before = RunHead::of(&state.runs[&id]);
            if let Some(plan) = plan_expiry(id, &before, Expiry::Expired, now) {
                recovered.push(state.apply(plan));
            }
        }
        Ok(recovered)
    }

    async fn due_timers(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let now = self.now();
        let state = self.lock();
        let mut due: Vec<&RunRecord> = state
            .runs
            .values()
            .filter(|r| {
                matches!(r.state, RunState::FailedTransient | RunState::WaitingExternal)
                    && r.due_at.is_some_and(|d| d <= now)
            })
            .collect();
        due.sort_by_key(|r| (r.due_at, r.id));
        Ok(due.into_iter().take(limit).cloned().collect())
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let state = self.lock();
        let due = state.runs.values().filter_map(|r| match r.state {
            RunState::Queued | RunState::FailedTransient | RunState::WaitingExternal => r.due_at,
            RunState::Processing => r.lease.as_ref().map(|l| l.expires_at),
            _ => None,
        });
        Ok(due.min())
    }

    async fn record_effect(
        &self,
        run: RunId,
        name: &str,
        result: Value,
    ) -> Result<EffectRecord, StoreError> {
        let now = self.now();
        let mut state = self.lock();
        let attempt = state.runs.get(&run).ok_or(StoreError::NotFound(run))?.attempt;
        let effect = state.effects.entry((run, name.to_owned())).or_insert_with(|| EffectRecord {
            run,
            name: name.to_owned(),
            result,
            attempt,
            recorded_at: now,
        });
        Ok(effect.clone())
    }

    async fn record_start(&self, run: RunId, attempt: u32) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !state.runs.contains_key(&run) {
            return Err(StoreError::NotFound(run));
        }
        state.starts.insert((run, attempt));
        Ok(())
    }

    async fn starts(&self, run: RunId) -> Result<Vec<u32>, StoreError> {
        let state = self.lock();
        Ok(state.starts.range((run, 0)..=(run, u32::MAX)).map(|(_, a)| *a).collect())
    }

    async fn effect(&self, run: RunId, name: &str) -> Result<Option<EffectRecord>, StoreError> {
        Ok(self.lock().effects.get(&(run, name.to_owned())).cloned())
    }

    async fn effects(&self, run: RunId) -> Result<Vec<EffectRecord>, StoreError> {
        let state = self.lock();
        Ok(state
            .effects
            .range((run, String::new())..)
            .take_while(|((r, _), _)| *r == run)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn history(&self, run: RunId) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(self.lock().history.get(&run).cloned().unwrap_or_default())
    }

    async fn add_note(&self, run: RunId, author: Actor, text: &str) -> Result<Note, StoreError> {
        let now = self.now();
        let mut state = self.lock();
        if !state.runs.contains_key(&run) {
            return Err(StoreError::NotFound(run));
        }
        let note = Note { run, author, text: text.to_owned(), at: now };
        state.notes.entry(run).or_default().push(note.clone());
        Ok(note)
    }

    async fn notes(&self, run: RunId) -> Result<Vec<Note>, StoreError> {
        Ok(self.lock().notes.get(&run).cloned().unwrap_or_default())
    }

    async fn dead_letters(
        &self,
        cursor: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let state = self.lock();
        let start = cursor.map_or(Unbounded, Excluded);
        Ok(state.dead.range((start, Unbounded)).take(limit).map(|(_, d)| d.clone()).collect())
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let state = self.lock();
        let size = query.page_size();
        let range = match (query.cursor, query.oldest_first) {
            (None, _) => state.runs.range(..),
            (Some(c), true) => state.runs.range((Excluded(c), Unbounded)),
            (Some(c), false) => state.runs.range(..c),
        };
        let matching: Box<dyn Iterator<Item = &RunRecord>> = if query.oldest_first {
            Box::new(range.map(|(_, r)| r).filter(|r| query.matches(r)))
        } else {
            Box::new(range.rev().map(|(_, r)| r).filter(|r| query.matches(r)))
        };
        let mut runs: Vec<RunRecord> = matching.take(size + 1).cloned().collect();
        let next = if runs.len() > size {
            runs.truncate(size);
            runs.last().map(|r| r.id)
        } else {
            None
        };
        Ok(Page { runs, next })
    }

    async fn counts(&self) -> Result<StateCounts, StoreError> {
        let mut counts = StateCounts::default();
        for agent in self.lock().counts.values() {
            for (state, n) in agent.iter() {
                counts.0[state.index()] += n;
            }
        }
        Ok(counts)
    }

    async fn counts_by_agent(
        &self,
    ) -> Result<std::collections::BTreeMap<String, StateCounts>, StoreError> {
        Ok(self.lock().counts.clone())
    }

    async fn put_schema(&self, hash: &str, schema: &str) -> Result<(), StoreError> {
        self.lock().schemas.entry(hash.to_owned()).or_insert_with(|| schema.to_owned());
        Ok(())
    }

    async fn schema(&self, hash: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().schemas.get(hash).cloned())
    }

    async fn set_agent_control(
        &self,
        agent: &str,
        control: Option<AgentControl>,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        match control {
            Some(control) => state.controls.insert(agent.to_owned(), control),
            None => state.controls.remove(agent),
        };
        Ok(())
    }

    async fn agent_controls(&self) -> Result<BTreeMap<String, AgentControl>, StoreError> {
        Ok(self.lock().controls.clone())
    }

    async fn restore(&self, archive: super::RunArchive) -> Result<bool, StoreError> {
        archive.check()?;
        let mut state = self.lock();
        let run = &archive.run;
        if state.runs.contains_key(&run.id)
            || state.keys.contains_key(&(run.agent.clone(), run.idempotency_key.clone()))
        {
            return Ok(false);
        }
        let id = run.id;
        let plan = super::restore_plan(&archive);
        let earlier = archive.history.len() - 1;
        state.apply(plan);
        // `apply` appended the last entry; the earlier ones go first.
        let last = state.history.remove(&id).unwrap_or_default();
        let mut history = archive.history[..earlier].to_vec();
        history.extend(last);
        state.history.insert(id, history);
        for effect in archive.effects {
            state.effects.insert((id, effect.name.clone()), effect);
        }
        state.starts.extend(archive.starts.into_iter().map(|a| (id, a)));
        if !archive.notes.is_empty() {
            state.notes.insert(id, archive.notes);
        }
        Ok(true)
    }

    async fn prune(&self, policy: Retention) -> Result<Pruned, StoreError> {
        retention::prune(&mut self.lock(), policy, self.now())
    }
}
