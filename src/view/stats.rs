//! The numbers per agent over a window: runs by state, success, retry and dead-letter rates,
//! and p50/p95 latency from creation to success.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::series::{Buckets, Series};
use crate::clock::Timestamp;
use crate::lifecycle::RunState;
use crate::machine::StateMachine;
use crate::store::{ListQuery, RunRecord, Store, StoreError};

/// The row that sums up every agent.
pub const ALL_AGENTS: &str = "(all)";

/// Per-agent numbers over the runs created in a window.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct Stats {
    /// The window, in seconds.
    pub window_secs: u64,
    /// One row per agent, by name, and [`ALL_AGENTS`] for every agent together (first, as `(`
    /// sorts before letters).
    pub agents: Vec<AgentStats>,
}

/// The numbers of one agent (or of all, [`ALL_AGENTS`]).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct AgentStats {
    /// The agent.
    pub agent: String,
    /// Runs created in the window.
    pub runs: u64,
    /// Of those, how many are in each state now (snake_case names).
    pub by_state: BTreeMap<String, u64>,
    /// Succeeded, of all the runs in the window (every rate has that one denominator, so
    /// runs still in review or in flight count against success); `None` if there are none.
    pub success_rate: Option<f64>,
    /// Runs that took more than one attempt, of all.
    pub retry_rate: Option<f64>,
    /// Dead-lettered, of all.
    pub dead_letter_rate: Option<f64>,
    /// Held for review now, of all.
    pub review_rate: Option<f64>,
    /// Median time from creation to success, in milliseconds.
    pub p50_ms: Option<u64>,
    /// 95th percentile of the same.
    pub p95_ms: Option<u64>,
}

impl AgentStats {
    /// How many of the agent's runs are in `state`.
    pub fn count(&self, state: RunState) -> u64 {
        self.by_state.get(state.name()).copied().unwrap_or(0)
    }
}

/// What one agent's runs add up to while they are read.
#[derive(Default)]
struct Tally {
    runs: u64,
    by_state: BTreeMap<String, u64>,
    retried: u64,
    latencies: Vec<u64>,
}

impl Stats {
    /// The numbers over the runs created in the last `window` (by the store's clock).
    pub async fn compute(store: &dyn Store, window: Duration) -> Result<Stats, StoreError> {
        let since = store.now().before(window);
        let mut tallies = Tallies::default();
        each_run_since(store, since, None, |run| tallies.add(run)).await?;
        Ok(tallies.finish(window))
    }

    /// [`Stats::compute`] over `window` and the [`Series`] of the same runs in `buckets` of
    /// `every` (the dashboard's overview), from one reading of the runs.
    pub async fn compute_with_series(
        store: &dyn Store,
        window: Duration,
        every: Duration,
        buckets: usize,
    ) -> Result<(Stats, Series), StoreError> {
        let now = store.now();
        let since = now.before(window);
        let mut tallies = Tallies::default();
        let mut series = Buckets::new(now, every, buckets);
        each_run_since(store, since.min(series.first), None, |run| {
            if run.created_at >= since {
                tallies.add(run);
            }
            series.add(run);
        })
        .await?;
        Ok((tallies.finish(window), series.finish()))
    }
}

/// Calls `each` with every run created since `since` (of `agent`, if given), a page at a time.
pub(super) async fn each_run_since(
    store: &dyn Store,
    since: Timestamp,
    agent: Option<&str>,
    mut each: impl FnMut(&RunRecord),
) -> Result<(), StoreError> {
    let mut query = ListQuery::new().since(since).limit(1000);
    if let Some(agent) = agent {
        query = query.agent(agent);
    }
    loop {
        let page = store.list(query.clone()).await?;
        page.runs.iter().for_each(&mut each);
        match page.next {
            Some(next) => query = query.cursor(next),
            None => return Ok(()),
        }
    }
}

/// Every agent's [`Tally`] (and all agents'), while the runs are read.
#[derive(Default)]
struct Tallies(BTreeMap<String, Tally>);

impl Tallies {
    fn add(&mut self, r: &RunRecord) {
        for key in [r.agent.as_str(), ALL_AGENTS] {
            let tally = self.0.entry(key.to_owned()).or_default();
            tally.runs += 1;
            *tally.by_state.entry(r.state.to_string()).or_default() += 1;
            if r.attempt > 1 {
                tally.retried += 1;
            }
            if r.state == RunState::Succeeded {
                tally.latencies.push(r.updated_at.since(r.created_at).as_millis() as u64);
            }
        }
    }

    fn finish(self, window: Duration) -> Stats {
        let agents = self.0.into_iter().map(|(agent, tally)| tally.into_stats(agent)).collect();
        Stats { window_secs: window.as_secs(), agents }
    }
}

impl Tally {
    fn into_stats(mut self, agent: String) -> AgentStats {
        self.latencies.sort_unstable();
        let count = |s: RunState| self.by_state.get(s.name()).copied().unwrap_or(0);
        let rate = |n: u64, of: u64| (of > 0).then(|| n as f64 / of as f64);
        let pct = |p: f64| super::percentile(&self.latencies, p);
        AgentStats {
            success_rate: rate(count(RunState::Succeeded), self.runs),
            retry_rate: rate(self.retried, self.runs),
            dead_letter_rate: rate(count(RunState::FailedPermanent), self.runs),
            review_rate: rate(count(RunState::NeedsReview), self.runs),
            p50_ms: pct(0.5),
            p95_ms: pct(0.95),
            agent,
            runs: self.runs,
            by_state: self.by_state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_percentiles_follow_the_runs() {
        let mut tally = Tally::default();
        for (state, attempt, ms) in [
            (RunState::Succeeded, 1, 10),
            (RunState::Succeeded, 2, 30),
            (RunState::Succeeded, 1, 20),
            (RunState::FailedPermanent, 5, 0),
            (RunState::NeedsReview, 1, 0),
            (RunState::NeedsReview, 1, 0),
            (RunState::NeedsReview, 1, 0),
            (RunState::NeedsReview, 1, 0),
        ] {
            tally.runs += 1;
            *tally.by_state.entry(state.to_string()).or_default() += 1;
            tally.retried += u64::from(attempt > 1);
            if state == RunState::Succeeded {
                tally.latencies.push(ms);
            }
        }
        let stats = tally.into_stats("a".into());
        // One denominator, all eight runs: the four in review count against success.
        assert_eq!(stats.success_rate, Some(3.0 / 8.0));
        assert_eq!(stats.retry_rate, Some(2.0 / 8.0));
        assert_eq!(stats.dead_letter_rate, Some(1.0 / 8.0));
        assert_eq!(stats.review_rate, Some(0.5));
        assert_eq!((stats.p50_ms, stats.p95_ms), (Some(20), Some(30)));
        assert_eq!(stats.count(RunState::Succeeded), 3);
        let none = Tally::default().into_stats("b".into());
        assert_eq!((none.success_rate, none.p50_ms), (None, None));
    }
}
