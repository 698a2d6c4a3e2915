//! The [`Store`] contract on sled: each operation delegated to the store's reads (straight
//! from the trees) or writes (through the committer).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{SledStore, prune, reads, writes};
use crate::clock::Timestamp;
use crate::lifecycle::RunId;
use crate::store::{
    Actor, AgentControl, Claim, ConflictResult, Created, DeadLetter, EffectRecord, HistoryEntry,
    ListQuery, NewRun, Note, Page, Pruned, Retention, RunRecord, StateCounts, Store, StoreError,
    Transition,
};

#[async_trait]
impl Store for SledStore {
    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    fn work_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.inner.signal.subscribe())
    }

    async fn create(&self, new: NewRun) -> Result<Created, StoreError> {
        let created = writes::create(self, new).await?;
        if created.created && created.run.state == crate::lifecycle::RunState::Queued {
            self.inner.signal.notify();
        }
        Ok(created)
    }

    async fn get(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        reads::get(self, run).await
    }

    async fn wait_durable(&self, run: RunId) -> Result<(), StoreError> {
        writes::wait_durable(self, run).await
    }

    async fn find_by_key(
        &self,
        agent: &str,
        idempotency_key: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        reads::find_by_key(self, agent, idempotency_key).await
    }

    async fn transition(&self, request: Transition) -> ConflictResult<RunRecord> {
        let signals = crate::store::signals_work(&request);
        let moved = writes::transition(self, request).await?;
        if signals && moved.is_ok() {
            self.inner.signal.notify();
        }
        Ok(moved)
    }

    async fn claim(&self, claim: Claim) -> Result<Vec<RunRecord>, StoreError> {
        writes::claim(self, claim).await
    }

    async fn heartbeat(
        &self,
        id: RunId,
        token: u64,
        extend: Duration,
    ) -> ConflictResult<Timestamp> {
        writes::heartbeat(self, id, token, extend).await
    }

    async fn recover_expired(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        writes::recover_expired(self, limit).await
    }

    async fn due_timers(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        reads::due_timers(self, limit).await
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        reads::next_due(self).await
    }

    async fn record_effect(
        &self,
        run: RunId,
        name: &str,
        result: Value,
    ) -> Result<EffectRecord, StoreError> {
        writes::record_effect(self, run, name, result).await
    }

    async fn record_start(&self, run: RunId, attempt: u32) -> Result<(), StoreError> {
        super::starts::record_start(self, run, attempt).await
    }

    async fn starts(&self, run: RunId) -> Result<Vec<u32>, StoreError> {
        super::starts::starts(self, run).await
    }

    async fn effect(&self, run: RunId, name: &str) -> Result<Option<EffectRecord>, StoreError> {
        reads::effect(self, run, name).await
    }

    async fn effects(&self, run: RunId) -> Result<Vec<EffectRecord>, StoreError> {
        reads::effects(self, run).await
    }

    async fn history(&self, run: RunId) -> Result<Vec<HistoryEntry>, StoreError> {
        reads::history(self, run).await
    }

    async fn add_note(&self, run: RunId, author: Actor, text: &str) -> Result<Note, StoreError> {
        writes::add_note(self, run, author, text).await
    }

    async fn notes(&self, run: RunId) -> Result<Vec<Note>, StoreError> {
        reads::notes(self, run).await
    }

    async fn dead_letters(
        &self,
        cursor: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        reads::dead_letters(self, cursor, limit).await
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        reads::list(self, query).await
    }

    async fn counts(&self) -> Result<StateCounts, StoreError> {
        reads::counts(self).await
    }

    async fn counts_by_agent(
        &self,
    ) -> Result<std::collections::BTreeMap<String, StateCounts>, StoreError> {
        reads::counts_by_agent(self).await
    }

    /// Kept in the `meta` tree under `schema/<hash>`; flushed before it returns.
    async fn put_schema(&self, hash: &str, schema: &str) -> Result<(), StoreError> {
        writes::put_schema(self, hash, schema).await
    }

    async fn schema(&self, hash: &str) -> Result<Option<String>, StoreError> {
        reads::schema(self, hash).await
    }

    async fn oldest_queued(&self, agent: &str) -> Result<Option<Timestamp>, StoreError> {
        reads::oldest_queued(self, agent).await
    }

    async fn set_agent_control(
        &self,
        agent: &str,
        control: Option<AgentControl>,
    ) -> Result<(), StoreError> {
        writes::set_agent_control(self, agent, control).await
    }

    async fn agent_controls(
        &self,
    ) -> Result<std::collections::BTreeMap<String, AgentControl>, StoreError> {
        reads::agent_controls(self).await
    }

    async fn prune(&self, policy: Retention) -> Result<Pruned, StoreError> {
        prune::prune(self, policy).await
    }

    async fn restore(&self, archive: crate::store::RunArchive) -> Result<bool, StoreError> {
        writes::restore(self, archive).await
    }
}
