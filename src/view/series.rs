//! The runs of a window in equal buckets of time, for charts: how many were created in each,
//! how they ended, and how long the successes took.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::lifecycle::RunState;
use crate::store::{RunRecord, Store, StoreError};

/// One bucket of a [`Series`]: the runs created within it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct Bucket {
    /// When the bucket starts.
    pub start: Timestamp,
    /// Runs created in it.
    pub created: u64,
    /// Of those, succeeded by now.
    pub succeeded: u64,
    /// Dead-lettered by now.
    pub dead: u64,
    /// Held for review now.
    pub review: u64,
    /// Runs that took more than one attempt.
    pub retried: u64,
    /// Median time from creation to success, in milliseconds.
    pub p50_ms: Option<u64>,
    /// 95th percentile of the same.
    pub p95_ms: Option<u64>,
}

/// The runs created in a window, oldest bucket first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct Series {
    /// Each bucket's length, in seconds.
    pub bucket_secs: u64,
    /// The buckets, oldest first, the last one ending now.
    pub buckets: Vec<Bucket>,
}

impl Series {
    /// The last `buckets` × `every` (by the store's clock), of every agent or only `agent`'s.
    pub async fn compute(
        store: &dyn Store,
        agent: Option<&str>,
        every: Duration,
        buckets: usize,
    ) -> Result<Series, StoreError> {
        let mut series = Buckets::new(store.now(), every, buckets);
        super::each_run_since(store, series.first, agent, |run| series.add(run)).await?;
        Ok(series.finish())
    }
}

/// A [`Series`] while the runs are read.
pub(super) struct Buckets {
    /// When the first bucket starts.
    pub(super) first: Timestamp,
    every: Duration,
    out: Vec<Bucket>,
    latencies: Vec<Vec<u64>>,
}

impl Buckets {
    /// `buckets` of `every` each, the last one ending at `now`.
    pub(super) fn new(now: Timestamp, every: Duration, buckets: usize) -> Self {
        let every_ms = (every.as_millis() as u64).max(1);
        let first = now.as_millis().saturating_sub(every_ms * buckets as u64);
        let out = (0..buckets)
            .map(|i| Bucket {
                start: Timestamp::from_millis(first + every_ms * i as u64),
                ..Bucket::default()
            })
            .collect();
        let latencies = vec![Vec::new(); buckets];
        Buckets { first: Timestamp::from_millis(first), every, out, latencies }
    }

    /// Counts `run` in the bucket of its creation (if one holds it).
    pub(super) fn add(&mut self, run: &RunRecord) {
        let every_ms = (self.every.as_millis() as u64).max(1);
        let since = run.created_at.as_millis().checked_sub(self.first.as_millis());
        let Some(i) = since.map(|d| (d / every_ms) as usize) else { return };
        let Some(bucket) = self.out.get_mut(i) else { return };
        bucket.created += 1;
        bucket.retried += u64::from(run.attempt > 1);
        match run.state {
            RunState::Succeeded => {
                bucket.succeeded += 1;
                self.latencies[i].push(run.updated_at.since(run.created_at).as_millis() as u64);
            }
            RunState::FailedPermanent => bucket.dead += 1,
            RunState::NeedsReview => bucket.review += 1,
            _ => {}
        }
    }

    pub(super) fn finish(mut self) -> Series {
        for (bucket, mut ms) in self.out.iter_mut().zip(self.latencies) {
            ms.sort_unstable();
            bucket.p50_ms = super::percentile(&ms, 0.5);
            bucket.p95_ms = super::percentile(&ms, 0.95);
        }
        Series { bucket_secs: self.every.as_secs(), buckets: self.out }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{Claim, MemoryStore, NewRun, Transition};

    #[tokio::test]
    async fn runs_fall_in_the_bucket_of_their_creation() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(10 * 3_600_000)));
        let store = MemoryStore::with_clock(clock.clone());
        let hour = Duration::from_secs(3600);
        let old = store.create(NewRun::new("a", "old", json!(1))).await.unwrap().run.id;
        clock.advance(2 * hour);
        let done = store.create(NewRun::new("a", "done", json!(2))).await.unwrap().run.id;
        store.create(NewRun::new("b", "other", json!(3))).await.unwrap();
        let claim = Claim::new("w", 1, Duration::from_secs(30)).runs([done]);
        let token = store.claim(claim).await.unwrap()[0].lease.as_ref().unwrap().token;
        clock.advance(Duration::from_millis(1500));
        let finish = Transition::new(done, RunState::Processing, RunState::Succeeded)
            .fenced(token)
            .output(json!(2));
        store.transition(finish).await.unwrap().unwrap();
        let _ = old;

        let series = Series::compute(&store, Some("a"), hour, 3).await.unwrap();
        let created: Vec<u64> = series.buckets.iter().map(|b| b.created).collect();
        assert_eq!(created, [1, 0, 1], "oldest first, the run of 2 h ago in the first bucket");
        let last = &series.buckets[2];
        assert_eq!((last.succeeded, last.p50_ms, last.p95_ms), (1, Some(1500), Some(1500)));
        let all = Series::compute(&store, None, hour, 3).await.unwrap();
        assert_eq!(all.buckets[2].created, 2);
        // One reading for both gives what two readings give.
        let day = Duration::from_secs(86_400);
        let (stats, both) =
            crate::view::Stats::compute_with_series(&store, day, hour, 3).await.unwrap();
        let alone = crate::view::Stats::compute(&store, day).await.unwrap();
        assert_eq!(serde_json::to_value(&stats).unwrap(), serde_json::to_value(&alone).unwrap());
        assert_eq!(both, all);
        let (narrow, _) =
            crate::view::Stats::compute_with_series(&store, hour, hour, 3).await.unwrap();
        assert_eq!(narrow.agents[0].runs, 2, "the stats keep to their own window");
        let short = Series::compute(&store, None, hour, 1).await.unwrap();
        assert_eq!(short.buckets.len(), 1);
        assert_eq!(short.buckets[0].created, 2, "the run of 2 h ago is outside the window");
    }
}
