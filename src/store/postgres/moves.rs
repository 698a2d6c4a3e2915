//! A move in one statement: the run read without a lock, its plan made, then everything the
//! plan writes (the run, compare-and-set on its move count; its history entry; its dead
//! letter entry and concurrency key; its counters) as data-modifying CTEs of one `UPDATE`,
//! committed on its own: one round trip and one commit instead of six round trips. If the run
//! moved between the read and the write, the statement writes nothing and the move is planned
//! again from the run as it is now (which may then be a conflict). A plan with follow-up runs
//! takes the transaction path instead (see `contract`).

use serde_json::Value;
use sqlx::Row;

use super::apply::{COUNT_SHARDS, encode, id, millis, payload, text};
use super::{PostgresStore, pg_error};
use crate::lifecycle::RunId;
use crate::machine::StateMachine;
use crate::store::backend::{DeadLetterChange, LockChange, Plan, RunHead};
use crate::store::{RunRecord, StoreError};

const MOVE: &str = "\
WITH u AS (
    UPDATE steadfast_runs SET state = $2, due_at = $3, lease_expires_at = $4, updated_at = $5,
        head = $6::jsonb,
        output = CASE $7 WHEN 0 THEN output WHEN 1 THEN $8::json ELSE NULL END,
        signal = CASE $9 WHEN 0 THEN signal WHEN 1 THEN $10::json ELSE NULL END
    WHERE id = $1 AND (head->>'moves')::integer = $11
    RETURNING input, output, signal
), history AS (
    INSERT INTO steadfast_history (run, seq, entry) SELECT $1, $11, $12::json FROM u
), dead AS (
    INSERT INTO steadfast_dead_letters (run, entry) SELECT $1, $13::json FROM u WHERE $14 = 1
    ON CONFLICT (run) DO UPDATE SET entry = excluded.entry
), undead AS (
    DELETE FROM steadfast_dead_letters WHERE run = $1 AND $14 = 2 AND EXISTS (SELECT 1 FROM u)
), locked AS (
    INSERT INTO steadfast_locks (key, run) SELECT $15, $1 FROM u WHERE $16 = 1
    ON CONFLICT (key) DO UPDATE SET run = excluded.run
), unlocked AS (
    DELETE FROM steadfast_locks
    WHERE key = $15 AND run = $1 AND $16 = 2 AND EXISTS (SELECT 1 FROM u)
), counted AS (
    INSERT INTO steadfast_counts (agent, state, shard, n)
    SELECT $17, t.s, $18, t.d FROM unnest($19::text[], $20::bigint[]) AS t(s, d), u
    ON CONFLICT (agent, state, shard) DO UPDATE SET n = steadfast_counts.n + excluded.n
)
SELECT input, output, signal FROM u";

/// The outcome of one attempt at a move in one statement.
pub(super) enum Written {
    /// Done: the run as it is after the move.
    Moved(Box<RunRecord>),
    /// The run moved since it was read: plan again.
    Stale,
}

impl PostgresStore {
    /// The run's head, read without a lock (for a plan checked by compare-and-set).
    pub(super) async fn head(&self, run: RunId) -> Result<Option<RunHead>, StoreError> {
        let row = sqlx::query("SELECT head FROM steadfast_runs WHERE id = $1")
            .bind(id(run))
            .fetch_optional(self.pool())
            .await
            .map_err(|e| pg_error("reading a run", e))?;
        match row {
            Some(row) => {
                let head = row.try_get("head").map_err(|e| pg_error("reading a run", e))?;
                super::apply::decode("steadfast_runs", head).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Writes `plan` (without follow-ups) for the run read as `before`, in one statement.
    pub(super) async fn write_move(
        &self,
        before: &RunHead,
        plan: Plan,
    ) -> Result<Written, StoreError> {
        debug_assert!(plan.follow_ups.is_empty() && plan.input.is_none());
        let Plan { run, head, history, output, signal, dead_letter, lock, counts, .. } = plan;
        let (output_mode, output) = payload(output);
        let (signal_mode, signal) = payload(signal);
        let (dead_mode, dead) = match dead_letter {
            Some(DeadLetterChange::Add(entry)) => (1i16, Some(encode(&entry))),
            Some(DeadLetterChange::Remove) => (2, None),
            None => (0, None),
        };
        let (lock_mode, lock) = match lock {
            Some(LockChange::Take(key)) => (1i16, Some(key)),
            Some(LockChange::Release(key)) => (2, Some(key)),
            None => (0, None),
        };
        let states: Vec<&str> = counts.iter().map(|c| c.state.name()).collect();
        let deltas: Vec<i64> = counts.iter().map(|c| c.delta).collect();
        let row = sqlx::query(MOVE)
            .bind(id(run))
            .bind(head.state.name())
            .bind(head.due_at.map(millis))
            .bind(head.lease.as_ref().map(|l| millis(l.expires_at)))
            .bind(millis(head.updated_at))
            .bind(encode(&head))
            .bind(output_mode)
            .bind(text(&output))
            .bind(signal_mode)
            .bind(text(&signal))
            .bind(before.moves as i32)
            .bind(encode(&history))
            .bind(dead)
            .bind(dead_mode)
            .bind(lock)
            .bind(lock_mode)
            .bind(&head.agent)
            .bind(fastrand::i16(0..COUNT_SHARDS))
            .bind(&states)
            .bind(&deltas)
            .fetch_optional(self.pool())
            .await;
        let row = match row {
            Ok(row) => row,
            // Aborted by a deadlock or a serialization failure: nothing was written.
            Err(error) if super::tx::retryable(&error) => return Ok(Written::Stale),
            Err(error) => return Err(pg_error("moving a run", error)),
        };
        let Some(row) = row else { return Ok(Written::Stale) };
        let get = |e| pg_error("moving a run", e);
        let input: Value = row.try_get("input").map_err(get)?;
        let output: Option<Value> = row.try_get("output").map_err(get)?;
        let signal: Option<Value> = row.try_get("signal").map_err(get)?;
        Ok(Written::Moved(Box::new(head.into_record(run, input, output, signal))))
    }
}
