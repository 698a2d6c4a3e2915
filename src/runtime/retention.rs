//! Retention on a schedule: while a runtime works until shut down (a worker process, a
//! server), it prunes the store by its [`Retention`] policy at start and then every period.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use crate::store::Retention;

/// Prunes by `policy` now and then every `every`, until the runtime stops. A failed prune is
/// logged at WARN and tried again at the next period: retention never stops the work.
pub(crate) async fn keep(shared: Arc<Shared>, policy: Retention, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        match shared.store.prune(policy.clone()).await {
            Ok(pruned) if pruned.runs > 0 || pruned.kept > 0 => tracing::info!(
                runs = pruned.runs,
                kept = pruned.kept,
                older_than_secs = policy.older_than.as_secs(),
                "retention: pruned runs at rest"
            ),
            Ok(_) => tracing::debug!("retention: nothing to prune"),
            Err(error) => tracing::warn!(
                %error,
                every_secs = every.as_secs(),
                "retention: prune failed; trying again at the next period"
            ),
        }
    }
}

/// Aborts the task it holds when dropped: the schedule ends with the dispatcher, whichever
/// way it returns.
pub(crate) struct Scheduled(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for Scheduled {
    fn drop(&mut self) {
        self.0.abort();
    }
}
