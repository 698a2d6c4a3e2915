//! The operator's calls as one interface, [`Operate`], with two implementations: the local
//! [`Runtime`] and `steadfast::client::Client` (HTTP, feature `client`), which calls the same
//! runtime methods in a running server. The CLI holds one of them, chosen once, so each
//! command is written once; the API's handlers call the runtime's; all three agree by
//! construction, on the wire types of [`crate::view`].

use async_trait::async_trait;
use serde_json::Value;

use super::{Replayed, Runtime, RuntimeError};
use crate::lifecycle::RunId;
use crate::store::{Actor, DeadLetter, ListQuery, Note, RunRecord};
use crate::view::{Controlled, Held, Replay, ReviewItem, RunFilter, RunView, RunsPage, Stats};

/// The largest page of runs one call lists.
pub const MAX_PAGE: u32 = 10_000;

/// Why an operator's call did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperateError {
    /// Refused or failed in the runtime (a local call).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Refused or failed by the server, in its words: the CLI's exit code for the same (1
    /// refused, 2 a malformed call, 3 the store unavailable) and the HTTP status.
    #[error("{message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The CLI's exit code for the same.
        code: u8,
        /// The server's words.
        message: String,
    },
    /// The server could not be reached, or answered outside the API's contract.
    #[error("{0}")]
    Unreachable(String),
}

impl From<crate::store::StoreError> for OperateError {
    fn from(error: crate::store::StoreError) -> Self {
        OperateError::Runtime(RuntimeError::Store(error))
    }
}

/// The operator's calls on a running system (see the module docs). Every call that changes
/// something records `by` as who acted.
#[async_trait]
pub trait Operate: Send + Sync {
    /// Whether the calls go to a running server, whose workers take up at once what a call
    /// queues (locally, nothing runs it until workers do).
    fn is_remote(&self) -> bool;

    /// A page of runs, newest first.
    async fn runs(&self, filter: RunFilter) -> Result<RunsPage, OperateError>;

    /// A run with its history, effects, notes, stages and error chain.
    async fn run(&self, id: RunId) -> Result<RunView, OperateError>;

    /// Replays a dead or held run (see [`Runtime::replay`]), with the stage runs of a failed
    /// pipeline replayed with it.
    async fn replay(&self, id: RunId, by: Actor, force: bool) -> Result<Replay, OperateError>;

    /// Cancels a run (see [`Runtime::cancel`]).
    async fn cancel(&self, id: RunId, by: Actor) -> Result<RunRecord, OperateError>;

    /// Signals a waiting run (see [`Runtime::signal`]).
    async fn signal(
        &self,
        id: RunId,
        name: &str,
        payload: Value,
        by: Actor,
    ) -> Result<RunRecord, OperateError>;

    /// Notes on a run (see [`Runtime::note`]).
    async fn note(&self, id: RunId, by: Actor, text: &str) -> Result<Note, OperateError>;

    /// What waits for review, oldest first.
    async fn review(&self) -> Result<Vec<Held>, OperateError>;

    /// A run held for review with what resolving it needs.
    async fn review_item(&self, id: RunId) -> Result<ReviewItem, OperateError>;

    /// Approves a held run (see [`Runtime::approve`]).
    async fn approve(
        &self,
        id: RunId,
        by: Actor,
        note: Option<&str>,
    ) -> Result<RunRecord, OperateError>;

    /// Rejects a held run (see [`Runtime::reject`]).
    async fn reject(
        &self,
        id: RunId,
        by: Actor,
        note: Option<&str>,
    ) -> Result<RunRecord, OperateError>;

    /// Resolves a held run with an output checked against its kept schema (see
    /// [`Runtime::resolve`]).
    async fn resolve(&self, id: RunId, by: Actor, output: Value)
    -> Result<RunRecord, OperateError>;

    /// Success, retry, dead-letter and review rates and latencies per agent over the runs
    /// created within `window`.
    async fn stats(&self, window: std::time::Duration) -> Result<Stats, OperateError>;

    /// The dead letters, oldest first, at most `limit`.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, OperateError>;

    /// Replays every dead letter, or `agent`'s (see [`Runtime::replay_dead_letters`]).
    async fn replay_dead_letters(
        &self,
        agent: Option<&str>,
        by: Actor,
        force: bool,
    ) -> Result<Vec<Replayed>, OperateError>;

    /// Pauses an agent (see [`Runtime::pause`]).
    async fn pause(&self, agent: &str, by: Actor, reason: &str)
    -> Result<Controlled, OperateError>;

    /// Resumes an agent, at most `rate` runs started per second if given (see
    /// [`Runtime::resume`]).
    async fn resume(
        &self,
        agent: &str,
        by: Actor,
        rate: Option<f64>,
    ) -> Result<Controlled, OperateError>;
}

impl Runtime {
    /// A page of runs by `filter` (refused: a limit outside `1..=MAX_PAGE`).
    pub async fn runs(&self, filter: RunFilter) -> Result<RunsPage, RuntimeError> {
        let limit = filter.limit.unwrap_or(50);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(RuntimeError::InvalidRequest(format!(
                "limit {limit} is out of range 1..={MAX_PAGE}"
            )));
        }
        let store = self.store();
        let mut query = ListQuery::new().limit(limit as usize);
        if let Some(state) = filter.state {
            query = query.state(state);
        }
        if let Some(agent) = filter.agent {
            query = query.agent(agent);
        }
        if let Some(since) = filter.since {
            query = query.since(store.now().before(since.0));
        }
        if let Some(cursor) = filter.cursor {
            query = query.cursor(cursor);
        }
        let page = store.list(query).await?;
        Ok(RunsPage { runs: page.runs, next: page.next })
    }
}

#[async_trait]
impl Operate for Runtime {
    fn is_remote(&self) -> bool {
        false
    }

    async fn runs(&self, filter: RunFilter) -> Result<RunsPage, OperateError> {
        Ok(Runtime::runs(self, filter).await?)
    }

    async fn run(&self, id: RunId) -> Result<RunView, OperateError> {
        RunView::load(self.store().as_ref(), id)
            .await?
            .ok_or(OperateError::Runtime(RuntimeError::NotFound(id)))
    }

    async fn replay(&self, id: RunId, by: Actor, force: bool) -> Result<Replay, OperateError> {
        Ok(self.replay_with_stages(id, by, force).await?)
    }

    async fn cancel(&self, id: RunId, by: Actor) -> Result<RunRecord, OperateError> {
        Ok(Runtime::cancel(self, id, by).await?)
    }

    async fn signal(
        &self,
        id: RunId,
        name: &str,
        payload: Value,
        by: Actor,
    ) -> Result<RunRecord, OperateError> {
        Ok(Runtime::signal(self, id, name, payload, by).await?)
    }

    async fn note(&self, id: RunId, by: Actor, text: &str) -> Result<Note, OperateError> {
        Ok(Runtime::note(self, id, by, text).await?)
    }

    async fn review(&self) -> Result<Vec<Held>, OperateError> {
        Ok(crate::view::held_for_review(self.store().as_ref()).await?)
    }

    async fn review_item(&self, id: RunId) -> Result<ReviewItem, OperateError> {
        ReviewItem::load(self.store().as_ref(), id)
            .await?
            .ok_or(OperateError::Runtime(RuntimeError::NotFound(id)))
    }

    async fn approve(
        &self,
        id: RunId,
        by: Actor,
        note: Option<&str>,
    ) -> Result<RunRecord, OperateError> {
        Ok(Runtime::approve(self, id, by, note).await?)
    }

    async fn reject(
        &self,
        id: RunId,
        by: Actor,
        note: Option<&str>,
    ) -> Result<RunRecord, OperateError> {
        Ok(Runtime::reject(self, id, by, note).await?)
    }

    async fn resolve(
        &self,
        id: RunId,
        by: Actor,
        output: Value,
    ) -> Result<RunRecord, OperateError> {
        Ok(Runtime::resolve(self, id, by, output).await?)
    }

    async fn stats(&self, window: std::time::Duration) -> Result<Stats, OperateError> {
        Ok(Stats::compute(self.store().as_ref(), window).await?)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, OperateError> {
        Ok(self.store().dead_letters(None, limit).await?)
    }

    async fn replay_dead_letters(
        &self,
        agent: Option<&str>,
        by: Actor,
        force: bool,
    ) -> Result<Vec<Replayed>, OperateError> {
        Ok(Runtime::replay_dead_letters(self, agent, by, force).await?)
    }

    async fn pause(
        &self,
        agent: &str,
        by: Actor,
        reason: &str,
    ) -> Result<Controlled, OperateError> {
        let control = Runtime::pause(self, agent, by, reason).await?;
        Ok(Controlled { agent: agent.to_owned(), control: Some(control) })
    }

    async fn resume(
        &self,
        agent: &str,
        by: Actor,
        rate: Option<f64>,
    ) -> Result<Controlled, OperateError> {
        let control = Runtime::resume(self, agent, by, rate).await?;
        Ok(Controlled { agent: agent.to_owned(), control })
    }
}
