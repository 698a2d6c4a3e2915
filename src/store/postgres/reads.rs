//! The reads of the contract on PostgreSQL: plain queries on the pool, outside transactions.

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::apply::{decode, id, millis, run_id, timestamp};
use super::{PostgresStore, pg_error};
use crate::clock::Timestamp;
use crate::lifecycle::{RunId, RunState};
use crate::machine::StateMachine;
use crate::store::{
    AgentControl, DeadLetter, EffectRecord, HistoryEntry, ListQuery, Note, Page, RunHead,
    RunRecord, StateCounts, StoreError,
};

/// The columns a run is read from.
pub(super) const RUN: &str = "id, head, input, output, signal";

/// A run read from the columns of [`RUN`].
pub(super) fn record(row: &PgRow) -> Result<RunRecord, StoreError> {
    let get = |e: sqlx::Error| pg_error("reading a run", e);
    let id = run_id(row.try_get::<&[u8], _>("id").map_err(get)?)?;
    let head: RunHead = decode("steadfast_runs", row.try_get("head").map_err(get)?)?;
    let input: Value = row.try_get("input").map_err(get)?;
    Ok(head.into_record(
        id,
        input,
        row.try_get("output").map_err(get)?,
        row.try_get("signal").map_err(get)?,
    ))
}

impl PostgresStore {
    pub(super) async fn read_run(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN} FROM steadfast_runs WHERE id = $1"
        )))
        .bind(id(run))
        .fetch_optional(self.pool())
        .await
        .map_err(|e| pg_error("reading a run", e))?;
        row.as_ref().map(record).transpose()
    }

    pub(super) async fn read_by_key(
        &self,
        agent: &str,
        key: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN} FROM steadfast_runs WHERE agent = $1 AND idempotency_key = $2"
        )))
        .bind(agent)
        .bind(key)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| pg_error("reading a run by key", e))?;
        row.as_ref().map(record).transpose()
    }

    pub(super) async fn read_list(&self, query: ListQuery) -> Result<Page, StoreError> {
        let size = query.page_size();
        let (cmp, order) = if query.oldest_first { (">", "ASC") } else { ("<", "DESC") };
        let sql = format!(
            "SELECT {RUN} FROM steadfast_runs WHERE ($1::text IS NULL OR state = $1) \
             AND ($2::text IS NULL OR agent = $2) AND ($3::bigint IS NULL OR created_at >= $3) \
             AND ($4::bytea IS NULL OR parent = $4) AND ($5::bytea IS NULL OR id {cmp} $5) \
             ORDER BY id {order} LIMIT $6"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(query.state.map(|s| s.name()))
            .bind(&query.agent)
            .bind(query.since.map(millis))
            .bind(query.parent.map(id))
            .bind(query.cursor.map(id))
            .bind((size + 1) as i64)
            .fetch_all(self.pool())
            .await
            .map_err(|e| pg_error("listing runs", e))?;
        let mut runs = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
        let next = if runs.len() > size {
            runs.truncate(size);
            runs.last().map(|r| r.id)
        } else {
            None
        };
        Ok(Page { runs, next })
    }

    /// Runs in `states` due at or before `now`, earliest first.
    pub(super) async fn read_due(
        &self,
        states: &[RunState],
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let names: Vec<&str> = states.iter().map(|s| s.name()).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN} FROM steadfast_runs WHERE state = ANY($1) AND due_at <= $2 \
             ORDER BY due_at, id LIMIT $3"
        )))
        .bind(&names)
        .bind(millis(now))
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(self.pool())
        .await
        .map_err(|e| pg_error("reading due timers", e))?;
        rows.iter().map(record).collect()
    }

    pub(super) async fn read_next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        let row = sqlx::query(
            "SELECT least( \
               (SELECT min(due_at) FROM steadfast_runs WHERE state = 'queued'), \
               (SELECT min(due_at) FROM steadfast_runs \
                  WHERE state IN ('failed_transient', 'waiting_external')), \
               (SELECT min(lease_expires_at) FROM steadfast_runs WHERE state = 'processing') \
             ) AS due",
        )
        .fetch_one(self.pool())
        .await
        .map_err(|e| pg_error("reading the next due time", e))?;
        let due: Option<i64> = row.try_get("due").map_err(|e| pg_error("reading a due time", e))?;
        Ok(due.map(timestamp))
    }

    /// The JSON values of `column` in rows of `sql` bound to `run`, in order.
    async fn json_rows<T: serde::de::DeserializeOwned>(
        &self,
        table: &'static str,
        sql: &'static str,
        run: RunId,
    ) -> Result<Vec<T>, StoreError> {
        let rows = sqlx::query(sql)
            .bind(id(run))
            .fetch_all(self.pool())
            .await
            .map_err(|e| pg_error("reading a run's records", e))?;
        rows.into_iter()
            .map(|row| {
                let value: Value = row.try_get(0).map_err(|e| pg_error("reading a record", e))?;
                decode(table, value)
            })
            .collect()
    }

    pub(super) async fn read_history(&self, run: RunId) -> Result<Vec<HistoryEntry>, StoreError> {
        let sql = "SELECT entry FROM steadfast_history WHERE run = $1 ORDER BY seq";
        self.json_rows("steadfast_history", sql, run).await
    }

    pub(super) async fn read_effects(&self, run: RunId) -> Result<Vec<EffectRecord>, StoreError> {
        let sql = "SELECT record FROM steadfast_effects WHERE run = $1 ORDER BY name COLLATE \"C\"";
        self.json_rows("steadfast_effects", sql, run).await
    }

    pub(super) async fn read_notes(&self, run: RunId) -> Result<Vec<Note>, StoreError> {
        let sql = "SELECT note FROM steadfast_notes WHERE run = $1 ORDER BY seq";
        self.json_rows("steadfast_notes", sql, run).await
    }

    pub(super) async fn read_effect(
        &self,
        run: RunId,
        name: &str,
    ) -> Result<Option<EffectRecord>, StoreError> {
        let row = sqlx::query("SELECT record FROM steadfast_effects WHERE run = $1 AND name = $2")
            .bind(id(run))
            .bind(name)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| pg_error("reading an effect", e))?;
        match row {
            Some(row) => decode(
                "steadfast_effects",
                row.try_get(0).map_err(|e| pg_error("reading an effect", e))?,
            )
            .map(Some),
            None => Ok(None),
        }
    }

    pub(super) async fn read_starts(&self, run: RunId) -> Result<Vec<u32>, StoreError> {
        let rows =
            sqlx::query("SELECT attempt FROM steadfast_starts WHERE run = $1 ORDER BY attempt")
                .bind(id(run))
                .fetch_all(self.pool())
                .await
                .map_err(|e| pg_error("reading starts", e))?;
        rows.iter()
            .map(|r| {
                r.try_get::<i32, _>(0).map(|a| a as u32).map_err(|e| pg_error("reading a start", e))
            })
            .collect()
    }

    pub(super) async fn read_dead_letters(
        &self,
        cursor: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT entry FROM steadfast_dead_letters WHERE ($1::bytea IS NULL OR run > $1) \
             ORDER BY run LIMIT $2",
        )
        .bind(cursor.map(id))
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(self.pool())
        .await
        .map_err(|e| pg_error("reading dead letters", e))?;
        rows.into_iter()
            .map(|row| {
                decode(
                    "steadfast_dead_letters",
                    row.try_get(0).map_err(|e| pg_error("reading a dead letter", e))?,
                )
            })
            .collect()
    }

    pub(super) async fn read_counts(&self) -> Result<BTreeMap<String, StateCounts>, StoreError> {
        let rows = sqlx::query(
            "SELECT agent, state, sum(n)::bigint AS n FROM steadfast_counts GROUP BY agent, state \
             HAVING sum(n) <> 0",
        )
        .fetch_all(self.pool())
        .await
        .map_err(|e| pg_error("reading counts", e))?;
        let mut counts: BTreeMap<String, StateCounts> = BTreeMap::new();
        for row in rows {
            let get = |e| pg_error("reading a count", e);
            let agent: String = row.try_get("agent").map_err(get)?;
            let state: String = row.try_get("state").map_err(get)?;
            let n: i64 = row.try_get("n").map_err(get)?;
            let state = RunState::from_name(&state).ok_or_else(|| StoreError::Corrupt {
                tree: "steadfast_counts",
                source: format!("`{state}` is not a state").into(),
            })?;
            counts.entry(agent).or_default().0[state.index()] = n.max(0) as u64;
        }
        Ok(counts)
    }

    pub(super) async fn read_oldest_queued(
        &self,
        agent: &str,
    ) -> Result<Option<Timestamp>, StoreError> {
        let row = sqlx::query(
            "SELECT min(due_at) FROM steadfast_runs WHERE state = 'queued' AND agent = $1",
        )
        .bind(agent)
        .fetch_one(self.pool())
        .await
        .map_err(|e| pg_error("reading the oldest queued run", e))?;
        let due: Option<i64> = row.try_get(0).map_err(|e| pg_error("reading a due time", e))?;
        Ok(due.map(timestamp))
    }

    pub(super) async fn read_controls(&self) -> Result<BTreeMap<String, AgentControl>, StoreError> {
        let rows = sqlx::query("SELECT agent, control FROM steadfast_controls")
            .fetch_all(self.pool())
            .await
            .map_err(|e| pg_error("reading agent controls", e))?;
        rows.into_iter()
            .map(|row| {
                let get = |e| pg_error("reading an agent control", e);
                let agent: String = row.try_get(0).map_err(get)?;
                Ok((agent, decode("steadfast_controls", row.try_get(1).map_err(get)?)?))
            })
            .collect()
    }
}
