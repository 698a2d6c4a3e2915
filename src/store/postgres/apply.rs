//! Applying the contract's plans in one transaction: a [`Writer`] writes each plan's run,
//! history entry, payloads, dead letter and concurrency key as it comes, and the counters of
//! the whole transaction at its end, summed and in one order (so that two transactions never
//! lock the same counter rows in opposite orders).

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::{PgConnection, Row};

use crate::clock::Timestamp;
use crate::lifecycle::{RunId, RunState};
use crate::machine::StateMachine;
use crate::store::backend::{
    CountDelta, DeadLetterChange, LockChange, Payload, Plan, RunHead, plan_create,
};
use crate::store::{RunRecord, StoreError};

/// A run id as stored: its 16 bytes, big-endian, so that byte order is id order.
pub(super) fn id(run: RunId) -> Vec<u8> {
    run.to_bytes().to_vec()
}

/// The id of a stored run.
pub(super) fn run_id(bytes: &[u8]) -> Result<RunId, StoreError> {
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        tree: "steadfast_runs",
        source: format!("a run id of {} bytes", bytes.len()).into(),
    })?;
    Ok(RunId::from_bytes(bytes))
}

/// A time as stored: milliseconds since the epoch.
pub(super) fn millis(at: Timestamp) -> i64 {
    i64::try_from(at.as_millis()).unwrap_or(i64::MAX)
}

/// A stored time.
pub(super) fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms.max(0) as u64)
}

/// Decodes a JSON column into `T`, naming the table on failure.
pub(super) fn decode<T: serde::de::DeserializeOwned>(
    table: &'static str,
    value: Value,
) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError::Corrupt { tree: table, source: e.into() })
}

/// A record as JSON text, bound as `text` and cast in SQL (`$n::json`): a `json` column keeps
/// the text as written (its keys in order), where binding a `jsonb` value would reorder them.
pub(super) fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records serialize to JSON")
}

/// An optional payload as JSON text (see [`encode`]).
pub(super) fn text(value: &Option<Value>) -> Option<String> {
    value.as_ref().map(encode)
}

/// The plans of one transaction, applied as they come; the counters at [`Writer::finish`].
pub(super) struct Writer<'c> {
    pub(super) conn: &'c mut PgConnection,
    counts: BTreeMap<(String, &'static str), i64>,
    /// The agents whose work this transaction queued or created, to wake after it commits.
    pub(super) woken: Vec<String>,
}

impl<'c> Writer<'c> {
    pub(super) fn new(conn: &'c mut PgConnection) -> Self {
        Writer { conn, counts: BTreeMap::new(), woken: Vec::new() }
    }

    /// Applies `plan` and returns the run as it is after it, or `None` if it creates a run
    /// whose key is already taken (nothing is written then).
    pub(super) async fn apply(&mut self, plan: Plan) -> Result<Option<RunRecord>, sqlx::Error> {
        let Plan {
            run,
            head,
            history,
            input,
            output,
            signal,
            dead_letter,
            lock,
            counts,
            follow_ups,
            ..
        } = plan;
        let key = id(run);
        let (output_mode, output) = payload(output);
        let (signal_mode, signal) = payload(signal);
        let lease_expires = head.lease.as_ref().map(|l| millis(l.expires_at));
        let stored = match input {
            Some(input) => {
                let inserted = sqlx::query(
                    "INSERT INTO steadfast_runs (id, agent, state, idempotency_key, due_at, \
                     lease_expires_at, parent, concurrency_key, created_at, updated_at, head, \
                     input, output, signal) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12::json, \
                     $13::json, $14::json) \
                     ON CONFLICT (agent, idempotency_key) DO NOTHING",
                )
                .bind(&key)
                .bind(&head.agent)
                .bind(head.state.name())
                .bind(&head.idempotency_key)
                .bind(head.due_at.map(millis))
                .bind(lease_expires)
                .bind(head.parent.map(id))
                .bind(&head.concurrency_key)
                .bind(millis(head.created_at))
                .bind(millis(head.updated_at))
                .bind(encode(&head))
                .bind(encode(&input))
                .bind(text(&output))
                .bind(text(&signal))
                .execute(&mut *self.conn)
                .await?;
                if inserted.rows_affected() == 0 {
                    return Ok(None);
                }
                (input, output, signal)
            }
            None => {
                let row = sqlx::query(
                    "UPDATE steadfast_runs SET state = $2, due_at = $3, lease_expires_at = $4, \
                     updated_at = $5, head = $6::jsonb, \
                     output = CASE $7 WHEN 0 THEN output WHEN 1 THEN $8::json ELSE NULL END, \
                     signal = CASE $9 WHEN 0 THEN signal WHEN 1 THEN $10::json ELSE NULL END \
                     WHERE id = $1 RETURNING input, output, signal",
                )
                .bind(&key)
                .bind(head.state.name())
                .bind(head.due_at.map(millis))
                .bind(lease_expires)
                .bind(millis(head.updated_at))
                .bind(encode(&head))
                .bind(output_mode)
                .bind(text(&output))
                .bind(signal_mode)
                .bind(text(&signal))
                .fetch_one(&mut *self.conn)
                .await?;
                (row.try_get("input")?, row.try_get("output")?, row.try_get("signal")?)
            }
        };
        sqlx::query("INSERT INTO steadfast_history (run, seq, entry) VALUES ($1, $2, $3::json)")
            .bind(&key)
            .bind(history.seq as i32)
            .bind(encode(&history))
            .execute(&mut *self.conn)
            .await?;
        match dead_letter {
            Some(DeadLetterChange::Add(entry)) => {
                sqlx::query(
                    "INSERT INTO steadfast_dead_letters (run, entry) VALUES ($1, $2::json) \
                     ON CONFLICT (run) DO UPDATE SET entry = excluded.entry",
                )
                .bind(&key)
                .bind(encode(&entry))
                .execute(&mut *self.conn)
                .await?;
            }
            Some(DeadLetterChange::Remove) => {
                sqlx::query("DELETE FROM steadfast_dead_letters WHERE run = $1")
                    .bind(&key)
                    .execute(&mut *self.conn)
                    .await?;
            }
            None => {}
        }
        match lock {
            Some(LockChange::Take(name)) => {
                // Usually taken already by the claim that checked it (see `contract::claim`).
                sqlx::query(
                    "INSERT INTO steadfast_locks (key, run) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET run = excluded.run",
                )
                .bind(&name)
                .bind(&key)
                .execute(&mut *self.conn)
                .await?;
            }
            Some(LockChange::Release(name)) => {
                sqlx::query("DELETE FROM steadfast_locks WHERE key = $1 AND run = $2")
                    .bind(&name)
                    .bind(&key)
                    .execute(&mut *self.conn)
                    .await?;
            }
            None => {}
        }
        for CountDelta { state, delta } in counts {
            *self.counts.entry((head.agent.clone(), state.name())).or_default() += delta;
        }
        if head.state == RunState::Queued && !self.woken.contains(&head.agent) {
            self.woken.push(head.agent.clone());
        }
        let now = history.at;
        for new in follow_ups {
            Box::pin(self.apply(plan_create(RunId::new(), &new, now))).await?;
        }
        let (input, output, signal) = stored;
        Ok(Some(head.into_record(run, input, output, signal)))
    }

    /// Writes the counters of every plan applied, summed, in (agent, state) order.
    pub(super) async fn finish(self) -> Result<Vec<String>, sqlx::Error> {
        add_counts(self.conn, self.counts).await?;
        Ok(self.woken)
    }
}

/// Counter shards per (agent, state): a transaction adds its deltas to one shard, chosen at
/// random, so that concurrent moves of one agent do not all wait on one row's lock through
/// each other's commits; a count is the sum of its shards.
pub(super) const COUNT_SHARDS: i16 = 16;

/// Adds `counts` (by agent and state) to one shard of the counters, in (agent, state) order.
pub(super) async fn add_counts(
    conn: &mut PgConnection,
    counts: BTreeMap<(String, &'static str), i64>,
) -> Result<(), sqlx::Error> {
    let (mut agents, mut states, mut deltas) = (Vec::new(), Vec::new(), Vec::new());
    for ((agent, state), delta) in counts {
        if delta != 0 {
            agents.push(agent);
            states.push(state);
            deltas.push(delta);
        }
    }
    if agents.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO steadfast_counts (agent, state, shard, n) \
         SELECT a, s, $4, d FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(a, s, d) \
         ON CONFLICT (agent, state, shard) DO UPDATE SET n = steadfast_counts.n + excluded.n",
    )
    .bind(&agents)
    .bind(&states)
    .bind(&deltas)
    .bind(fastrand::i16(0..COUNT_SHARDS))
    .execute(conn)
    .await?;
    Ok(())
}

/// A payload change as (mode, value): 0 keep, 1 put, 2 remove.
pub(super) fn payload(change: Payload) -> (i16, Option<Value>) {
    match change {
        Payload::Keep => (0, None),
        Payload::Put(value) => (1, Some(value)),
        Payload::Remove => (2, None),
    }
}

/// Reads a run's head under a row lock, for a move in this transaction.
pub(super) async fn locked_head(
    conn: &mut PgConnection,
    run: RunId,
) -> Result<Option<Result<RunHead, StoreError>>, sqlx::Error> {
    let row = sqlx::query("SELECT head FROM steadfast_runs WHERE id = $1 FOR UPDATE")
        .bind(id(run))
        .fetch_optional(conn)
        .await?;
    match row {
        Some(row) => Ok(Some(decode("steadfast_runs", row.try_get("head")?))),
        None => Ok(None),
    }
}

/// Writes `archive` in this transaction; `false` (nothing written) if its id or key is taken.
pub(super) async fn restore(
    conn: &mut PgConnection,
    archive: crate::store::RunArchive,
) -> Result<(Result<bool, super::tx::Refusal>, Vec<String>), sqlx::Error> {
    let key = id(archive.run.id);
    let taken = sqlx::query("SELECT 1 FROM steadfast_runs WHERE id = $1")
        .bind(&key)
        .fetch_optional(&mut *conn)
        .await?;
    if taken.is_some() {
        return Ok((Ok(false), Vec::new()));
    }
    let mut writer = Writer::new(conn);
    if writer.apply(crate::store::restore_plan(&archive)).await?.is_none() {
        return Ok((Ok(false), Vec::new()));
    }
    for entry in &archive.history[..archive.history.len() - 1] {
        sqlx::query("INSERT INTO steadfast_history (run, seq, entry) VALUES ($1, $2, $3::json)")
            .bind(&key)
            .bind(entry.seq as i32)
            .bind(encode(entry))
            .execute(&mut *writer.conn)
            .await?;
    }
    for effect in &archive.effects {
        sqlx::query("INSERT INTO steadfast_effects (run, name, record) VALUES ($1, $2, $3::json)")
            .bind(&key)
            .bind(&effect.name)
            .bind(encode(effect))
            .execute(&mut *writer.conn)
            .await?;
    }
    for attempt in &archive.starts {
        sqlx::query("INSERT INTO steadfast_starts (run, attempt) VALUES ($1, $2)")
            .bind(&key)
            .bind(*attempt as i32)
            .execute(&mut *writer.conn)
            .await?;
    }
    for note in &archive.notes {
        sqlx::query("INSERT INTO steadfast_notes (run, note) VALUES ($1, $2::json)")
            .bind(&key)
            .bind(encode(note))
            .execute(&mut *writer.conn)
            .await?;
    }
    let woken = writer.finish().await?;
    Ok((Ok(true), woken))
}
