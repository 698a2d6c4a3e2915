//! The read model: store records turned into what people look at, with no HTTP and no
//! terminal in it. The command line, the HTTP API (`steadfast::ops`) and the dashboard render these, so
//! the three always agree.
//!
//! - [`RunView`]: a run with its history, effects, notes and stages.
//! - [`Held`] and [`ReviewItem`]: what waits for review, and why.
//! - [`Series`]: the runs of a window in buckets of time, for charts.
//! - [`Stats`]: per agent, over a window: runs by state, success, retry and dead-letter rates,
//!   p50/p95 latency.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use steadfast::store::{MemoryStore, NewRun, Store};
//! use steadfast::view::{RunView, Stats};
//!
//! let store = MemoryStore::new();
//! let run = store.create(NewRun::new("mailer", "k1", serde_json::json!({}))).await?.run;
//! let view = RunView::load(&store, run.id).await?.expect("the run exists");
//! assert_eq!(view.history.len(), 1);
//! let stats = Stats::compute(&store, std::time::Duration::from_secs(3600)).await?;
//! assert_eq!(stats.agents[0].agent, "(all)");
//! # Ok::<(), steadfast::store::StoreError>(()) }).unwrap();
//! ```

mod graph;
mod review;
mod run;
mod series;
mod stats;
mod time;
mod wire;

pub use self::graph::{LifecycleGraph, LifecycleNode, lifecycle_graph};
pub use self::review::{Held, REVIEW_LIMIT, ReviewItem, held_for_review};
pub use self::run::{RunView, StageView, is_internal_effect, last_reason};
pub use self::series::{Bucket, Series};
use self::stats::each_run_since;
pub use self::stats::{ALL_AGENTS, AgentStats, Stats};
pub use self::time::{ago, percentile};
pub use self::wire::{Controlled, Replay, ReviewList, RunFilter, RunsPage};
