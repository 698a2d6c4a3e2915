//! What a [`Store`](super::Store) is asked to list and count.

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::lifecycle::{RunId, RunState};

use super::records::RunRecord;

/// Filters for [`Store::list`](super::Store::list).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// Only runs of this agent.
    pub agent: Option<String>,
    /// Only runs created at or after this time.
    pub since: Option<Timestamp>,
    /// Only children of this run.
    pub parent: Option<RunId>,
    /// Continue after this run (the `next` of the previous page).
    pub cursor: Option<RunId>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
    /// At most this many runs; 0 means 100.
    pub limit: usize,
}

impl ListQuery {
    /// The page size used when `limit` is 0.
    pub const DEFAULT_LIMIT: usize = 100;

    /// Every run, newest first, a page of 100.
    pub fn new() -> Self {
        ListQuery::default()
    }

    /// Only runs in `state`.
    #[must_use]
    pub fn state(mut self, state: RunState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only runs of `agent`.
    #[must_use]
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    /// Only runs created at or after `since`.
    #[must_use]
    pub fn since(mut self, since: Timestamp) -> Self {
        self.since = Some(since);
        self
    }

    /// Only children of `parent`.
    #[must_use]
    pub fn parent(mut self, parent: RunId) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Continue after `cursor`.
    #[must_use]
    pub fn cursor(mut self, cursor: RunId) -> Self {
        self.cursor = Some(cursor);
        self
    }

    /// Oldest first.
    #[must_use]
    pub fn oldest_first(mut self) -> Self {
        self.oldest_first = true;
        self
    }

    /// At most `limit` runs.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    pub(crate) fn page_size(&self) -> usize {
        if self.limit == 0 { Self::DEFAULT_LIMIT } else { self.limit }
    }

    /// Whether `run` passes the filters other than `state` and `cursor`.
    pub(crate) fn matches(&self, run: &RunRecord) -> bool {
        self.agent.as_deref().is_none_or(|a| a == run.agent)
            && self.since.is_none_or(|t| run.created_at >= t)
            && self.parent.is_none_or(|p| run.parent == Some(p))
            && self.state.is_none_or(|s| run.state == s)
    }
}

/// One page of runs.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Page {
    /// The runs, in the order asked for.
    pub runs: Vec<RunRecord>,
    /// The cursor for the next page; `None` when this is the last.
    pub next: Option<RunId>,
}

/// How many runs are in each state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts(pub [u64; 7]);

impl StateCounts {
    /// The count for `state`.
    pub fn get(&self, state: RunState) -> u64 {
        use crate::machine::StateMachine;
        self.0[state.index()]
    }

    /// Every state with its count, in lifecycle order.
    pub fn iter(&self) -> impl Iterator<Item = (RunState, u64)> + '_ {
        use crate::machine::StateMachine;
        RunState::STATES.iter().map(|&s| (s, self.0[s.index()]))
    }

    /// All runs.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}
