//! The wire types of the operator calls: what the HTTP API takes and answers, what
//! [`Operate`](crate::runtime::Operate) returns locally and over HTTP, and what the CLI prints
//! with `--json`. One definition each, so the three agree by construction.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::clock::DurationText;
use crate::lifecycle::{RunId, RunState};
use crate::store::RunRecord;

/// Which runs to list, and which page (`GET /api/v1/runs`, `runs list`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RunFilter {
    /// Only runs in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RunState>,
    /// Only runs of this agent (or pipeline, or stage: `digest.1.classifier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Only runs created within this long: `90s`, `15m`, `2h`, `7d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DurationText>,
    /// At most this many runs (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub limit: Option<u32>,
    /// The page after this run: the `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<RunId>,
}

impl RunFilter {
    /// Every run, the first page of the default size.
    pub fn new() -> Self {
        RunFilter::default()
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

    /// Only runs created within `since` of now.
    #[must_use]
    pub fn since(mut self, since: std::time::Duration) -> Self {
        self.since = Some(DurationText(since));
        self
    }

    /// At most `limit` runs.
    #[must_use]
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The page after `cursor`.
    #[must_use]
    pub fn cursor(mut self, cursor: RunId) -> Self {
        self.cursor = Some(cursor);
        self
    }
}

/// A page of runs, newest first.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[non_exhaustive]
pub struct RunsPage {
    /// The runs.
    pub runs: Vec<RunRecord>,
    /// The `cursor` of the next page; `null` on the last one.
    pub next: Option<RunId>,
}

/// A replayed run, and the stage runs of a failed pipeline that were replayed with it (the
/// dead runs of the last stage it reached), in the order they were queued.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[non_exhaustive]
pub struct Replay {
    /// The run, queued again.
    #[serde(flatten)]
    pub run: RunRecord,
    /// The stage runs replayed with it (none for a run that is not a failed pipeline's).
    #[serde(default)]
    pub stages: Vec<RunRecord>,
}

/// An agent's pause or resume rate after an operator's call (`agents pause|resume`).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[non_exhaustive]
pub struct Controlled {
    /// The agent, as registered.
    pub agent: String,
    /// The pause or rate in force now; `null`: none (resumed at full speed).
    pub control: Option<crate::store::AgentControl>,
}

/// What waits for a person (`GET /api/v1/review`, `review list`).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[non_exhaustive]
pub struct ReviewList {
    /// Newest first, each with why.
    pub review: Vec<super::Held>,
}
