//! Pausing and resuming an agent: kept in the store (a pause outlives a restart, and every
//! process working on the store sees it), applied by the dispatcher (a paused agent's runs
//! stay queued; one resumed at a rate starts at most that many per second).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::limit::{RateLimit, TokenBucket};
use super::{Runtime, RuntimeError, Shared};
use crate::store::{Actor, AgentControl};

/// How often a dispatcher reads the controls again (another process may have set one).
pub(crate) const REFRESH: Duration = Duration::from_secs(2);

/// The controls a runtime applies, as last read or set.
#[derive(Debug, Default)]
pub(crate) struct Controls {
    by_agent: Mutex<HashMap<String, (AgentControl, Option<TokenBucket>)>>,
    read_at: Mutex<Option<tokio::time::Instant>>,
}

impl Controls {
    /// Replaces what is known with `controls` (as read from the store).
    pub(crate) fn load(&self, controls: impl IntoIterator<Item = (String, AgentControl)>) {
        let mut by_agent = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = HashMap::new();
        for (agent, control) in controls {
            // A rate already being applied keeps its bucket.
            let bucket = match by_agent.remove(&agent) {
                Some((old, bucket)) if old.rate == control.rate => bucket,
                _ => control.rate.map(|r| TokenBucket::new(RateLimit::new(r, 1))),
            };
            fresh.insert(agent, (control, bucket));
        }
        *by_agent = fresh;
        *self.read_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
    }

    /// Sets (or clears) one agent's control.
    pub(crate) fn set(&self, agent: &str, control: Option<AgentControl>) {
        let mut by_agent = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        match control {
            Some(control) => {
                let bucket = control.rate.map(|r| TokenBucket::new(RateLimit::new(r, 1)));
                by_agent.insert(agent.to_owned(), (control, bucket));
            }
            None => {
                by_agent.remove(agent);
            }
        }
    }

    /// Whether the controls were read longer than [`REFRESH`] ago (or never).
    pub(crate) fn stale(&self) -> bool {
        self.read_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= REFRESH)
    }

    /// `agent`'s control, if one is set.
    pub(crate) fn get(&self, agent: &str) -> Option<AgentControl> {
        let by_agent = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        by_agent.get(agent).map(|(control, _)| control.clone())
    }

    /// How many of `wanted` runs of `agent` its control lets start now (0 while paused), and
    /// how long until one more may.
    pub(crate) fn admit(&self, agent: &str, wanted: usize) -> (usize, Option<Duration>) {
        let by_agent = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        match by_agent.get(agent) {
            None => (wanted, None),
            Some((control, _)) if control.paused => (0, None),
            Some((_, Some(bucket))) => bucket.take(wanted),
            Some((_, None)) => (wanted, None),
        }
    }

    /// Gives back what was admitted for runs that were not there.
    pub(crate) fn give_back(&self, agent: &str, unused: usize) {
        let by_agent = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, Some(bucket))) = by_agent.get(agent) {
            bucket.give_back(unused);
        }
    }
}

impl Shared {
    /// Reads the controls from the store again if they are stale; a failed read keeps what
    /// is known (and is logged).
    pub(crate) async fn refresh_controls(&self) {
        if !self.controls.stale() {
            return;
        }
        match self.store.agent_controls().await {
            Ok(controls) => self.controls.load(controls),
            Err(error) => tracing::warn!(%error, "could not read the agents' pause settings"),
        }
    }
}

impl Runtime {
    /// Pauses `agent`: its queued runs stay queued (visible, counted) and no attempt of it
    /// starts, in this process and in every other working on the store, until
    /// [`resume`](Runtime::resume); kept in the store, so a restart keeps it. Attempts already
    /// running finish.
    pub async fn pause(
        &self,
        agent: &str,
        by: Actor,
        reason: &str,
    ) -> Result<AgentControl, RuntimeError> {
        self.agent(agent)?;
        let control = AgentControl::paused(by, reason.trim(), self.shared.store.now());
        self.shared.store.set_agent_control(agent, Some(control.clone())).await?;
        self.shared.controls.set(agent, Some(control.clone()));
        tracing::warn!(agent, reason, "agent paused");
        Ok(control)
    }

    /// Resumes `agent`: at once, or with `rate`, at most that many runs started per second
    /// (a gradual resume after an outage) until it is resumed without one. Returns the control
    /// now in force (`None`: none).
    pub async fn resume(
        &self,
        agent: &str,
        by: Actor,
        rate: Option<f64>,
    ) -> Result<Option<AgentControl>, RuntimeError> {
        self.agent(agent)?;
        if let Some(rate) = rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(RuntimeError::InvalidRequest(format!(
                "a resume rate must be a positive number of runs per second, not {rate}"
            )));
        }
        let control = rate.map(|r| AgentControl::throttled(by, r, self.shared.store.now()));
        self.shared.store.set_agent_control(agent, control.clone()).await?;
        self.shared.controls.set(agent, control.clone());
        self.shared.wake.notify_one();
        tracing::warn!(agent, rate, "agent resumed");
        Ok(control)
    }

    /// `agent`'s pause or resume rate in force, as this runtime last read it.
    pub fn agent_control(&self, agent: &str) -> Option<AgentControl> {
        self.shared.controls.get(agent)
    }
}
