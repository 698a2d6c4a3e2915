//! One write as one transaction: committed unless it refused itself, tried again when
//! PostgreSQL aborts it for a deadlock or a serialization failure, and the agents whose work
//! it queued woken once it committed.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sqlx::PgConnection;

use super::{PostgresStore, pg_error};
use crate::lifecycle::RunId;
use crate::store::{Conflict, StoreError};

/// Why a transaction gave up on its own: nothing it wrote is kept.
pub(super) enum Refusal {
    NotFound(RunId),
    Conflict(Conflict),
    Corrupt(StoreError),
}

/// A transaction's work: its answer (or its refusal) and the agents to wake.
pub(super) type Work<'a, T> = Pin<
    Box<dyn Future<Output = Result<(Result<T, Refusal>, Vec<String>), sqlx::Error>> + Send + 'a>,
>;

/// How often a transaction aborted by a deadlock or a serialization failure is tried again.
const RETRIES: usize = 8;

impl PostgresStore {
    /// Runs `work` in a transaction, committed unless it refused; tried again when PostgreSQL
    /// aborts it (a deadlock, a serialization failure). Wakes the agents it queued work for.
    pub(super) async fn write<T: Send>(
        &self,
        context: &'static str,
        mut work: impl for<'a> FnMut(&'a mut PgConnection) -> Work<'a, T> + Send,
    ) -> Result<Result<T, Refusal>, StoreError> {
        let mut tries = 0;
        loop {
            let mut tx = self.pool().begin().await.map_err(|e| pg_error(context, e))?;
            let outcome = match work(&mut tx).await {
                Ok((Ok(answer), woken)) => match tx.commit().await {
                    Ok(()) => Ok((Ok(answer), woken)),
                    Err(error) => Err(error),
                },
                Ok((Err(refusal), _)) => {
                    drop(tx); // rolled back
                    return Ok(Err(refusal));
                }
                Err(error) => Err(error),
            };
            match outcome {
                Ok((answer, woken)) => {
                    if !woken.is_empty() {
                        self.inner.signal.notify();
                        self.inner.notifier.notify(woken);
                    }
                    return Ok(answer);
                }
                Err(error) if tries < RETRIES && retryable(&error) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(1..=5 * tries as u64)))
                        .await;
                }
                Err(error) => return Err(pg_error(context, error)),
            }
        }
    }
}

/// A deadlock or a serialization failure: the transaction is safe to run again.
pub(super) fn retryable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}
