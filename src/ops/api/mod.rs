//! The JSON API's handlers, under `/api/v1`: the CLI's operator calls, on the same runtime
//! methods and the same `view` model, so the answers agree. Each route is declared once, with
//! its handler and its documentation: the OpenAPI document is generated from the handlers'
//! types (their extractors and answers).

mod admin;
mod agents;
mod review;
mod runs;

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use aide::transform::TransformOperation;
use axum::Json;
use schemars::JsonSchema;
use serde::Deserialize;

use super::Ops;
use super::error::ApiError;
use crate::lifecycle::RunId;

/// What a handler answers: its JSON, or the API's error.
type Answer<T> = Result<Json<T>, ApiError>;

/// The most items one page lists.
const MAX_LIMIT: u32 = 10_000;

/// A page's `limit`, 50 by default, refused outside `1..=MAX_LIMIT`.
fn check_limit(limit: Option<u32>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::usage(format!("limit {limit} is out of range 1..={MAX_LIMIT}")));
    }
    Ok(limit as usize)
}

/// A run, by id.
#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct RunPath {
    /// The run's id.
    id: RunId,
}

/// An operation's tag, summary and description in the document.
fn doc(
    tag: &'static str,
    summary: &'static str,
    description: &'static str,
) -> impl for<'t> FnOnce(TransformOperation<'t>) -> TransformOperation<'t> {
    move |op| op.tag(tag).summary(summary).description(description)
}

/// The routes under `/api/v1`.
pub(super) fn routes() -> ApiRouter<Arc<Ops>> {
    ApiRouter::new()
        .api_route(
            "/runs",
            get_with(runs::runs, doc("runs", "List runs", "Newest first, filtered, a page at a time."))
                .post_with(runs::submit, |op| {
                    doc(
                        "runs",
                        "Submit a run",
                        "The input is checked against the agent's schema (422 with the violations, nothing stored, when it does not fit) and deduplicated by the agent's idempotency key.",
                    )(op)
                    .response_with::<201, Json<runs::Submitted>, _>(|r| r.description("Created"))
                    .response_with::<200, Json<runs::Submitted>, _>(|r| {
                        r.description("A run with the same idempotency key exists: its id")
                    })
                }),
        )
        .api_route(
            "/runs/{id}",
            get_with(
                runs::run,
                doc("runs", "Show a run", "Its record, history, effects, notes and stages."),
            ),
        )
        .api_route(
            "/runs/{id}/replay",
            post_with(
                runs::replay,
                doc(
                    "runs",
                    "Replay a run",
                    "A dead letter or a run held for review, queued again with the same input and a fresh attempt budget. Refused (409) if the agent's input type changed, unless `force`.",
                ),
            ),
        )
        .api_route(
            "/runs/{id}/cancel",
            post_with(
                runs::cancel,
                doc("runs", "Cancel a run", "A run not yet finished is dead-lettered, by the operator."),
            ),
        )
        .api_route(
            "/runs/{id}/signal",
            post_with(
                runs::signal,
                doc("runs", "Signal a waiting run", "The signal it waits for, with a payload for its next attempt."),
            ),
        )
        .api_route(
            "/runs/{id}/notes",
            post_with(runs::note, doc("runs", "Note on a run", "Kept with the run, by the operator.")),
        )
        .api_route(
            "/review",
            get_with(review::review, doc("review", "The review inbox", "The runs held for review, newest first, each with why.")),
        )
        .api_route(
            "/review/{id}",
            get_with(
                review::review_item,
                doc("review", "A review item", "A run with why it is where it is and the output schema a resolution must fit."),
            ),
        )
        .api_route(
            "/review/{id}/approve",
            post_with(review::approve, doc("review", "Approve", "The run is queued again; the note goes to its next attempt.")),
        )
        .api_route(
            "/review/{id}/reject",
            post_with(review::reject, doc("review", "Reject", "The run is dead-lettered, with the note.")),
        )
        .api_route(
            "/review/{id}/resolve",
            post_with(
                review::resolve,
                doc("review", "Resolve", "The run succeeds with this output, checked against the output schema kept for it (422 with the violations)."),
            ),
        )
        .api_route(
            "/dlq",
            get_with(admin::dlq, doc("dead letters", "List dead letters", "Oldest first, a page at a time.")),
        )
        .api_route(
            "/dlq/replay",
            post_with(
                admin::dlq_replay,
                doc("dead letters", "Replay dead letters", "Every dead letter, or one agent's, each reported: replayed or refused and why."),
            ),
        )
        .api_route(
            "/prune",
            post_with(
                admin::prune,
                doc("runs", "Prune", "Runs at rest that have not moved for a while are deleted with everything kept about them."),
            ),
        )
        .api_route(
            "/stats",
            get_with(admin::stats, doc("stats", "Numbers per agent", "Runs by state, success, retry and dead-letter rates, p50/p95 latency, over a window.")),
        )
        .api_route(
            "/agents",
            get_with(agents::agents, doc("agents", "List agents", "The registered agents, their breakers and controls.")),
        )
        .api_route(
            "/agents/{name}/pause",
            post_with(
                agents::pause,
                doc("agents", "Pause an agent", "Durably: its runs stay queued and visible, and no attempt starts until it is resumed."),
            ),
        )
        .api_route(
            "/agents/{name}/resume",
            post_with(agents::resume, doc("agents", "Resume an agent", "Optionally at a rate (runs started per second).")),
        )
        .api_route(
            "/graph/{target}",
            get_with(agents::graph, doc("graphs", "A graph", "The lifecycle (`lifecycle`) or a pipeline's stages, as nodes and edges.")),
        )
}
