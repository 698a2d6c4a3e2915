//! A token bucket per agent: at most `per_second` runs start per second on average, with
//! bursts up to `burst`. The dispatcher claims only as many runs as there are tokens, so a
//! rate limit is backpressure (runs wait queued), never a pile of attempts waiting in memory.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// An agent's rate limit.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Average runs started per second.
    pub per_second: f64,
    /// Runs that may start at once after a quiet period.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` on average, bursts of `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimit { per_second: per_second.max(f64::MIN_POSITIVE), burst: burst.max(1) }
    }
}

#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    state: Mutex<(f64, Instant)>,
}

/// The longest [`TokenBucket::take`] asks to wait before it is asked again.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit) -> Self {
        TokenBucket { limit, state: Mutex::new((f64::from(limit.burst), Instant::now())) }
    }

    /// Takes up to `wanted` whole tokens; when none are there, says how long until one is.
    pub(crate) fn take(&self, wanted: usize) -> (usize, Option<Duration>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.limit.per_second)
            .min(f64::from(self.limit.burst));
        let taken = (tokens.floor() as usize).min(wanted);
        *state = (tokens - taken as f64, now);
        if taken == 0 && wanted > 0 {
            let missing = 1.0 - tokens;
            // A rate of one run in centuries is not worth a panic: wait an hour at most, then
            // look again (the dispatcher wakes anyway when a run or a control changes).
            let wait = Duration::try_from_secs_f64(missing / self.limit.per_second)
                .unwrap_or(Duration::MAX)
                .min(LONGEST_WAIT);
            return (0, Some(wait));
        }
        (taken, None)
    }

    /// Returns tokens taken for runs that were not there to claim.
    pub(crate) fn give_back(&self, tokens: usize) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 = (state.0 + tokens as f64).min(f64::from(self.limit.burst));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_vanishing_rate_waits_an_hour_at_most() {
        let bucket = TokenBucket::new(RateLimit::new(1e-300, 1));
        assert_eq!(bucket.take(1).0, 1);
        assert_eq!(bucket.take(1), (0, Some(LONGEST_WAIT)));
    }

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_refills_at_the_rate() {
        let bucket = TokenBucket::new(RateLimit::new(10.0, 5));
        assert_eq!(bucket.take(8), (5, None));
        let (none, wait) = bucket.take(1);
        assert_eq!(none, 0);
        assert_eq!(wait, Some(Duration::from_millis(100)));
        tokio::time::advance(Duration::from_millis(350)).await;
        assert_eq!(bucket.take(8).0, 3);
        bucket.give_back(2);
        assert_eq!(bucket.take(8).0, 2);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(bucket.take(100).0, 5, "never more than the burst");
    }
}
