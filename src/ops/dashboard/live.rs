//! Live updates (`GET /ui/events`): server-sent events carrying the counts the pages show,
//! every two seconds (read from the store once per period however many pages are open),
//! read by the dashboard's one script (`/ui/static/app.js`), which a
//! visitor can pause. The pages work the same without it. The period is the server's, not the
//! visitor's (a poll interval taken from the request is how Sidekiq's web UI could be made to
//! spin), and at most [`MAX_STREAMS`] streams are open at once.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::lifecycle::RunState;
use crate::machine::StateMachine;
use crate::ops::Ops;

/// The most event streams open at once.
const MAX_STREAMS: usize = 64;
/// How often the counts are sent.
const PERIOD: Duration = Duration::from_secs(2);

/// The open streams, and the counts they all send (read once per period, however many pages
/// are open).
#[derive(Debug, Default)]
pub(super) struct Live {
    open: AtomicUsize,
    last: tokio::sync::Mutex<Option<(Instant, Arc<Value>)>>,
}

/// Counts one open stream while it lives.
struct Open(Arc<Ops>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dashboard.live.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The counts as last read, or read now if they are older than half a period.
async fn counts(ops: &Ops) -> Arc<Value> {
    let mut last = ops.dashboard.live.last.lock().await;
    if let Some((at, value)) = last.as_ref()
        && at.elapsed() < PERIOD / 2
    {
        return value.clone();
    }
    let value = Arc::new(snapshot(ops).await);
    *last = Some((Instant::now(), value.clone()));
    value
}

/// What the pages show that moves: runs by agent and state, and the alarm.
async fn snapshot(ops: &Ops) -> Value {
    let counts = ops.runtime.store().counts_by_agent().await.unwrap_or_default();
    let mut by_agent = serde_json::Map::new();
    let mut review = 0;
    let mut dead = 0;
    for (agent, c) in &counts {
        let states: serde_json::Map<String, Value> =
            c.iter().map(|(s, n)| (s.name().to_owned(), json!(n))).collect();
        review += c.get(RunState::NeedsReview);
        dead += c.get(RunState::FailedPermanent);
        by_agent.insert(agent.clone(), json!({"states": states, "total": c.total()}));
    }
    let alarms = ops.metrics.alarms(&ops.runtime).await.map(|a| a.len()).unwrap_or(0);
    json!({"agents": by_agent, "review": review, "dead": dead, "alarms": alarms})
}

pub(super) async fn events(State(ops): State<Arc<Ops>>) -> Response {
    if ops.dashboard.live.open.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        ops.dashboard.live.open.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many live pages are open; reload later")
            .into_response();
    }
    let open = Open(ops);
    let stream = futures_util::stream::unfold((open, true), |(open, first)| async move {
        if !first {
            tokio::time::sleep(PERIOD).await;
        }
        let event = Event::default().event("counts").json_data(&*counts(&open.0).await);
        let event = event.unwrap_or_else(|_| Event::default().comment("unserialisable"));
        Some((Ok::<_, Infallible>(event), (open, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}
