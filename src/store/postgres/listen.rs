//! Wake-ups across processes: `NOTIFY steadfast_work` sent by the application after a commit
//! that queued work (batched: one statement for the agents of every commit of the last few
//! milliseconds, each agent once; a `NOTIFY` per row would serialize commits under many
//! writers), and a `LISTEN` on one connection of each store that wakes its runtime, with a
//! bounded polling fallback while that connection is down.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

use crate::store::WorkSignal;

/// The channel the stores of one deployment (one schema) listen on; the payload is the agent
/// whose work is there.
pub(super) fn channel(schema: Option<&str>) -> String {
    match schema {
        Some(schema) => format!("steadfast_work_{schema}"),
        None => "steadfast_work".to_owned(),
    }
}

/// How long the notifier gathers agents before it sends (the debounce).
const GATHER: Duration = Duration::from_millis(2);

/// While the listening connection is down, the runtime is woken this often.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// Sends `NOTIFY`s for the agents it is given, batched (see the module docs).
pub(super) struct Notifier {
    tx: mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Notifier {
    pub(super) fn spawn(pool: PgPool, channel: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Notifier { tx, task: tokio::spawn(send(pool, channel, rx)) }
    }

    /// Asks for a wake-up of `agents`' workers in every process.
    pub(super) fn notify(&self, agents: Vec<String>) {
        for agent in agents {
            let _ = self.tx.send(agent);
        }
    }
}

async fn send(pool: PgPool, channel: String, mut rx: mpsc::UnboundedReceiver<String>) {
    while let Some(first) = rx.recv().await {
        let mut agents = BTreeSet::from([first]);
        tokio::time::sleep(GATHER).await;
        while let Ok(agent) = rx.try_recv() {
            agents.insert(agent);
        }
        let agents: Vec<String> = agents.into_iter().collect();
        let sent = sqlx::query("SELECT pg_notify($1, a) FROM unnest($2::text[]) AS a")
            .bind(&channel)
            .bind(&agents)
            .execute(&pool)
            .await;
        if let Err(error) = sent {
            // The other processes' fallback (their next due time, their polling while their
            // listener is down) still finds the work; this process woke its own runtime.
            tracing::debug!(%error, "could not send a wake-up to other processes");
        }
    }
}

/// Listens on `channel` and notifies `signal` for every wake-up; while the connection is
/// down (and once when it comes back, for what was missed), notifies it every second.
pub(super) fn spawn(
    pool: PgPool,
    channel: String,
    signal: Arc<WorkSignal>,
    server: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut down_since: Option<std::time::Instant> = None;
        loop {
            match listen(&pool, &channel, &signal, &mut down_since).await {
                Ok(()) => {}
                Err(error) => {
                    if down_since.is_none() {
                        tracing::warn!(%server, error = %super::pg_error("listening for wake-ups", error),
                            "the wake-up connection is down; workers poll every second until it is back");
                        down_since = Some(std::time::Instant::now());
                    }
                }
            }
            signal.notify();
            tokio::time::sleep(FALLBACK_POLL).await;
        }
    })
}

/// One life of the listening connection: returns when it is lost.
async fn listen(
    pool: &PgPool,
    channel: &str,
    signal: &WorkSignal,
    down_since: &mut Option<std::time::Instant>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.eager_reconnect(false);
    listener.listen(channel).await?;
    if let Some(since) = down_since.take() {
        tracing::info!(
            down_ms = since.elapsed().as_millis() as u64,
            "the wake-up connection is back"
        );
    }
    // Anything queued while it was down (or before it started) is looked for once.
    signal.notify();
    while listener.try_recv().await?.is_some() {
        signal.notify();
    }
    *down_since = Some(std::time::Instant::now());
    tracing::warn!("the wake-up connection was lost; workers poll every second until it is back");
    Ok(())
}
