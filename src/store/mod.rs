//! Durable storage of runs: the [`Store`] trait, its records, and [`SledStore`], the embedded
//! default.
//!
//! A store fails in two ways, kept apart: a [`StoreError`] means the operation failed or can
//! never succeed (the disk, a missing run, a move the lifecycle forbids); a [`Conflict`] means
//! the run moved under the caller (a stale `from`, a stale lease), which is expected under
//! concurrency and handled by reading the run again. Every method that changes a run returns
//! only after the change is durable to the degree the store's [`Durability`] promises.

mod archive;
pub mod backend;
mod error;
mod head;
mod memory;
mod plan;
#[cfg(feature = "postgres")]
mod postgres;
mod queries;
mod records;
mod requests;
mod retention;
mod rules;
mod signal;
#[cfg(feature = "sled")]
mod sled;
pub mod transfer;

#[cfg(feature = "testing")]
pub mod conformance;

use async_trait::async_trait;
use serde_json::Value;

use crate::clock::Timestamp;
use crate::lifecycle::RunId;

pub(crate) use self::archive::restore_plan;
pub use self::archive::{RunArchive, archive};
pub use self::error::{BoxError, StoreError};
pub use self::head::RunHead;
pub use self::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use self::postgres::{
    PostgresOptions, PostgresStore, SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION,
};
pub use self::queries::{ListQuery, Page, StateCounts};
pub use self::records::{
    Actor, AgentControl, DeadLetter, EffectRecord, FORMAT_VERSION, HistoryEntry, Lease, Note,
    RunRecord,
};
pub use self::requests::{Claim, Conflict, Created, NewRun, Transition};
pub use self::retention::{Pruned, Retention};
pub(crate) use self::rules::LEASE_EXPIRED;
pub use self::signal::WorkSignal;
#[cfg(feature = "sled")]
pub use self::sled::{Durability, SLED_FORMAT, SledStore, SledStoreOptions};
// Defined with the faults it records; also reachable here, where runs carry it.
pub use crate::fault::ErrorInfo;

/// How the effects journal named an attempt's recorded start before starts were kept apart
/// ([`Store::record_start`]); still read, in databases written then.
pub const LEGACY_START: &str = "steadfast/started attempt ";

/// Whether a move made as `request` asks, said on success, for a [`WorkSignal`]: it queues the
/// run or creates runs.
pub(crate) fn signals_work(request: &Transition) -> bool {
    request.to == crate::lifecycle::RunState::Queued || !request.follow_ups.is_empty()
}

/// The result of an operation that may meet a [`Conflict`]: the outer `Result` is the store
/// failing, the inner one the run having moved under the caller.
pub type ConflictResult<T> = Result<Result<T, Conflict>, StoreError>;

/// Durable storage of runs, their history, effects, dead letters and notes.
///
/// Implementations guarantee: every move is checked against the lifecycle table and applied
/// atomically with its history entry and indexes (never half); a move is durable before the
/// call returns; a claim hands each due run to exactly one claimer; a move out of
/// `processing` carries the lease's fencing token and is refused on a stale one.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current time by the store's clock, which leases and due times are compared to.
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    /// Creates a `queued` run, or returns the run that already has the idempotency key (for
    /// the same agent) and creates nothing.
    async fn create(&self, new: NewRun) -> Result<Created, StoreError>;

    /// A signal that new or newly due work may be there, for the runtime to wait on between
    /// its rounds instead of polling: every run created (follow-ups too) and every move into
    /// `queued`, whoever made it (another task, another process sharing the database). The
    /// runtime subscribes once; `None` (the default) means the store sends none, and the
    /// runtime relies on its own wake-ups and [`Store::next_due`].
    fn work_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// The run with this id.
    async fn get(&self, run: RunId) -> Result<Option<RunRecord>, StoreError>;

    /// Returns once everything this store acknowledged about `run` before its sync (its
    /// claim, or its creation already claimed) is durable. A claim may return before its sync
    /// (a lost claim only returns the run to `queued`), but nothing may act on it until it is
    /// durable: the runtime calls this before an attempt's agent starts, so that neither an
    /// effect (whose key is made of the run's id) nor a crash (which must count as an attempt)
    /// happens under a claim that a crash could undo. When the claim's write was synced
    /// already it returns at once; otherwise it joins the next sync. Stores whose writes are
    /// durable when acknowledged need not override it.
    async fn wait_durable(&self, _run: RunId) -> Result<(), StoreError> {
        Ok(())
    }

    /// The run of `agent` created with `idempotency_key`.
    async fn find_by_key(
        &self,
        agent: &str,
        idempotency_key: &str,
    ) -> Result<Option<RunRecord>, StoreError>;

    /// Moves a run: refused with [`StoreError::IllegalTransition`] unless the lifecycle allows
    /// `from → to`, and with a [`Conflict`] if the run is not in `from` or the fence is stale.
    /// Returns the run as it is after the move.
    async fn transition(&self, request: Transition) -> ConflictResult<RunRecord>;

    /// Claims up to `claim.limit` due `queued` runs (oldest due first), moving each to
    /// `processing` under a new lease with a larger fencing token. Each run goes to exactly one
    /// claimer.
    async fn claim(&self, claim: Claim) -> Result<Vec<RunRecord>, StoreError>;

    /// Extends a lease to `now + extend`. A conflict if the lease is no longer the caller's.
    async fn heartbeat(
        &self,
        run: RunId,
        token: u64,
        extend: std::time::Duration,
    ) -> ConflictResult<Timestamp>;

    /// Moves every `processing` run whose lease expired to `failed_transient`, due now,
    /// recorded as the timer's move. Returns the runs moved (at most `limit`).
    async fn recover_expired(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError>;

    /// Runs whose timer is due: `failed_transient` runs whose backoff elapsed and
    /// `waiting_external` runs whose wait timed out (at most `limit`, earliest first).
    async fn due_timers(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError>;

    /// The earliest future time at which something becomes due (a run, a timer, a lease
    /// expiry), for a worker to sleep until. `None` if nothing is scheduled.
    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Journals an effect's result under (run, name). If one is already recorded, nothing is
    /// written and the recorded one is returned: the first record wins.
    async fn record_effect(
        &self,
        run: RunId,
        name: &str,
        result: Value,
    ) -> Result<EffectRecord, StoreError>;

    /// Records, durably, that attempt `attempt` of `run` started its agent: the runtime's
    /// crash accounting (a run whose started attempts keep ending with their worker gone is a
    /// poison pill, see `RetryPolicy::max_crashes`), kept apart from the effects journal.
    /// Recording it twice records it once. Pruning a run removes its starts.
    ///
    /// The default keeps it in the effects journal as `steadfast/started attempt <n>` (how
    /// stores written before this method kept it); a store should keep it apart.
    async fn record_start(&self, run: RunId, attempt: u32) -> Result<(), StoreError> {
        let marker = format!("{LEGACY_START}{attempt}");
        self.record_effect(run, &marker, Value::Bool(true)).await.map(|_| ())
    }

    /// The attempts of `run` whose start was recorded ([`Store::record_start`]), ascending.
    async fn starts(&self, run: RunId) -> Result<Vec<u32>, StoreError> {
        let effects = self.effects(run).await?;
        let mut starts: Vec<u32> = effects
            .iter()
            .filter_map(|e| e.name.strip_prefix(LEGACY_START)?.parse().ok())
            .collect();
        starts.sort_unstable();
        Ok(starts)
    }

    /// The journaled effect of `run` named `name`.
    async fn effect(&self, run: RunId, name: &str) -> Result<Option<EffectRecord>, StoreError>;

    /// Every journaled effect of `run`, by name.
    async fn effects(&self, run: RunId) -> Result<Vec<EffectRecord>, StoreError>;

    /// The run's history, oldest first.
    async fn history(&self, run: RunId) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Adds an operator's note to a run.
    async fn add_note(&self, run: RunId, author: Actor, text: &str) -> Result<Note, StoreError>;

    /// The notes on a run, oldest first.
    async fn notes(&self, run: RunId) -> Result<Vec<Note>, StoreError>;

    /// The dead letter queue, oldest first, continuing after `cursor`.
    async fn dead_letters(
        &self,
        cursor: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    /// Runs matching `query`, a page at a time.
    async fn list(&self, query: ListQuery) -> Result<Page, StoreError>;

    /// How many runs are in each state.
    async fn counts(&self) -> Result<StateCounts, StoreError>;

    /// How many runs of each agent are in each state (agents with no run are absent): what a
    /// metrics scrape reads every few seconds. The default pages through every run; the
    /// stores of this crate read counters kept with every move instead.
    async fn counts_by_agent(
        &self,
    ) -> Result<std::collections::BTreeMap<String, StateCounts>, StoreError> {
        use crate::machine::StateMachine;
        let mut counts: std::collections::BTreeMap<String, StateCounts> = Default::default();
        let mut query = ListQuery::new().oldest_first().limit(1000);
        loop {
            let page = self.list(query.clone()).await?;
            for run in &page.runs {
                counts.entry(run.agent.clone()).or_default().0[run.state.index()] += 1;
            }
            match page.next {
                Some(next) => query = query.cursor(next),
                None => return Ok(counts),
            }
        }
    }

    /// Keeps the JSON Schema `schema` (its text) under `hash` (the hash runs store as their
    /// `input_schema` / `output_schema`), so that tools without the agent's Rust types (the
    /// CLI, the dashboard) can validate an operator's output or show the expected form. The
    /// runtime calls it for every registered agent when it starts; idempotent. The default
    /// keeps nothing.
    async fn put_schema(&self, _hash: &str, _schema: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// The JSON Schema kept under `hash`, if any.
    async fn schema(&self, _hash: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    /// The due time of `agent`'s longest-waiting queued run, if it has one (the age of the
    /// oldest due run, for metrics and the silent-failure alarm). The default lists queued runs
    /// oldest first; the stores of this crate read their per-agent queue index.
    async fn oldest_queued(&self, agent: &str) -> Result<Option<Timestamp>, StoreError> {
        let query = ListQuery::new()
            .state(crate::lifecycle::RunState::Queued)
            .agent(agent)
            .oldest_first()
            .limit(1000);
        let page = self.list(query).await?;
        Ok(page.runs.iter().filter_map(|r| r.due_at).min())
    }

    /// Keeps `control` for `agent` durably (`None` removes it: the agent runs freely), so that
    /// a pause outlives a restart. The default refuses (a store that keeps no controls).
    async fn set_agent_control(
        &self,
        agent: &str,
        _control: Option<AgentControl>,
    ) -> Result<(), StoreError> {
        Err(StoreError::InvalidRequest(format!(
            "this store keeps no agent controls: `{agent}` cannot be paused"
        )))
    }

    /// Every agent's control that is set, by agent.
    async fn agent_controls(
        &self,
    ) -> Result<std::collections::BTreeMap<String, AgentControl>, StoreError> {
        Ok(Default::default())
    }

    /// Writes `archive` (a run with its history, effects, starts, notes and dead letter entry,
    /// as [`archive`] read it from another store) as it is, with its indexes and counts:
    /// `steadfast import`. Returns `false`, writing nothing, if a run with its id or its key
    /// is there already. The archive is checked ([`RunArchive::check`]) first. The default
    /// refuses (a store that cannot import).
    async fn restore(&self, archive: RunArchive) -> Result<bool, StoreError> {
        archive.check()?;
        Err(StoreError::InvalidRequest("this store cannot import runs (`restore`)".into()))
    }

    /// Deletes the runs `policy` takes (see [`Retention`]) with everything kept for them:
    /// history, effects, notes, payloads, dead letter entries, idempotency keys and index
    /// entries; the counts go down with them. Runs that move while it works are left alone.
    /// A policy naming a state with work left (`queued`, say) is refused
    /// ([`StoreError::InvalidRequest`]) and nothing is deleted. The default deletes nothing
    /// and says so (a store written before retention existed).
    async fn prune(&self, policy: Retention) -> Result<Pruned, StoreError> {
        policy.check().map_err(StoreError::InvalidRequest)?;
        Err(StoreError::InvalidRequest("this store does not implement retention (`prune`)".into()))
    }
}
