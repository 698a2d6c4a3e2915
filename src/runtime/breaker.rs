//! A circuit breaker per agent: after consecutive infrastructure failures it opens, and while
//! open the agent's runs stay queued (deferred, not charged an attempt); after a pause one
//! probe run goes through, and its outcome closes the breaker or opens it again.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::fault::Fault;

/// When a breaker opens and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerPolicy {
    /// Consecutive failures (transient, resource or unknown) that open the breaker (default 5).
    pub failures: u32,
    /// How long it stays open before a probe is let through (default 30 s).
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy { failures: 5, open_for: Duration::from_secs(30) }
    }
}

impl BreakerPolicy {
    /// Opens after `failures` consecutive failures, for `open_for`.
    pub fn new(failures: u32, open_for: Duration) -> Self {
        BreakerPolicy { failures: failures.max(1), open_for }
    }
}

/// Where a breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Runs go through; this many failures in a row so far.
    Closed {
        /// Consecutive failures.
        failures: u32,
    },
    /// Runs are deferred until the pause is over.
    Open {
        /// Time left before a probe may go.
        remaining: Duration,
    },
    /// One probe is (or may be) in flight; its outcome decides.
    HalfOpen,
}

impl std::fmt::Display for BreakerState {
    /// In words: `closed`, `closed (2 failures in a row)`, `open: a probe in 12 s`,
    /// `half-open: one probe decides`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BreakerState::Closed { failures: 0 } => f.write_str("closed"),
            BreakerState::Closed { failures: 1 } => f.write_str("closed (1 failure)"),
            BreakerState::Closed { failures } => {
                write!(f, "closed ({failures} failures in a row)")
            }
            BreakerState::Open { remaining } => {
                write!(f, "open: a probe in {} s", remaining.as_secs_f64().ceil())
            }
            BreakerState::HalfOpen => f.write_str("half-open: one probe decides"),
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// One agent's breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    agent: String,
    policy: BreakerPolicy,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(agent: impl Into<String>, policy: BreakerPolicy) -> Self {
        Breaker { agent: agent.into(), policy, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    /// How many runs may be claimed now (`usize::MAX` when closed), and, when none, how long
    /// until that changes.
    pub(crate) fn admit(&self, wanted: usize) -> (usize, Option<Duration>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let State::Open { until } = *state
            && now >= until
        {
            *state = State::HalfOpen { probing: false };
            tracing::warn!(agent = %self.agent, "circuit breaker half-open: letting one probe through");
        }
        match *state {
            State::Closed { .. } => (wanted, None),
            State::Open { until } => (0, Some(until - now)),
            State::HalfOpen { probing: true } => (0, None), // the probe's outcome wakes us
            State::HalfOpen { probing: false } => {
                if wanted > 0 {
                    *state = State::HalfOpen { probing: true };
                }
                (wanted.min(1), None)
            }
        }
    }

    /// Gives back an admission that found nothing to claim.
    pub(crate) fn unused(&self, admitted: usize) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if admitted > 0 && matches!(*state, State::HalfOpen { probing: true }) {
            *state = State::HalfOpen { probing: false };
        }
    }

    /// Records an attempt's result: `None` for success, else its fault class.
    pub(crate) fn record(&self, fault: Option<Fault>) {
        let counts = matches!(fault, Some(Fault::Transient | Fault::Resource | Fault::Unknown));
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let agent = self.agent.as_str();
        let open_secs = self.policy.open_for.as_secs_f64();
        *state = match (&*state, counts) {
            (State::Closed { .. }, false) if fault.is_none() => State::Closed { failures: 0 },
            (_, false) if fault.is_none() => {
                tracing::warn!(%agent, "circuit breaker closed: the probe succeeded");
                State::Closed { failures: 0 }
            }
            (State::Closed { failures }, true) if failures + 1 >= self.policy.failures => {
                tracing::warn!(
                    %agent,
                    failures = failures + 1,
                    "circuit breaker opened after {} failures in a row: the agent's runs wait \
                     {open_secs} s, then one probe goes (AgentOptions::breaker or no_breaker \
                     change this)",
                    failures + 1
                );
                State::Open { until: Instant::now() + self.policy.open_for }
            }
            (State::Closed { failures }, true) => State::Closed { failures: failures + 1 },
            (State::HalfOpen { .. }, true) => {
                tracing::warn!(%agent, "probe failed: circuit breaker open again for {open_secs} s");
                State::Open { until: Instant::now() + self.policy.open_for }
            }
            // A logic or permanent fault says nothing about the service's health.
            (State::HalfOpen { .. }, false) => State::HalfOpen { probing: false },
            (State::Closed { failures }, false) => State::Closed { failures: *failures },
            (State::Open { until }, _) => State::Open { until: *until },
        };
    }

    /// While open: how long until a probe may go.
    pub(crate) fn open_for(&self) -> Option<Duration> {
        match *self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            State::Open { until } => Some(until.saturating_duration_since(Instant::now())),
            _ => None,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match *self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            State::Closed { failures } => BreakerState::Closed { failures },
            State::Open { until } => {
                BreakerState::Open { remaining: until.saturating_duration_since(Instant::now()) }
            }
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_defers_half_opens_and_closes() {
        let breaker = Breaker::new("a", BreakerPolicy::new(3, Duration::from_secs(10)));
        assert_eq!(breaker.admit(8), (8, None));
        breaker.record(Some(Fault::Transient));
        breaker.record(Some(Fault::Permanent)); // does not count, does not reset
        breaker.record(Some(Fault::Resource));
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 2 });
        breaker.record(Some(Fault::Unknown));
        assert_eq!(breaker.admit(8), (0, Some(Duration::from_secs(10))));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(breaker.admit(8), (1, None), "one probe");
        assert_eq!(breaker.admit(8), (0, None), "only one");
        breaker.record(Some(Fault::Transient));
        assert!(matches!(breaker.state(), BreakerState::Open { .. }), "a failed probe reopens");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(breaker.admit(1), (1, None));
        breaker.record(None);
        assert_eq!(breaker.state(), BreakerState::Closed { failures: 0 });
        assert_eq!(breaker.admit(8), (8, None));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unused_probe_is_given_back() {
        let breaker = Breaker::new("a", BreakerPolicy::new(1, Duration::from_secs(1)));
        breaker.record(Some(Fault::Transient));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.admit(4), (1, None));
        breaker.unused(1);
        assert_eq!(breaker.admit(4), (1, None));
    }
}
