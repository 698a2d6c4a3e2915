//! Retention on PostgreSQL: candidates read a page at a time (the rule is
//! `store::retention`'s), then deleted `policy.batch` runs per transaction, so that vacuum
//! keeps up and workers' moves interleave; a group any of whose runs moved since it was read
//! is left whole.

use std::collections::HashMap;

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::apply::{id, millis, run_id, timestamp};
use super::tx::Refusal;
use super::{PostgresStore, pg_error};
use crate::lifecycle::{RunId, RunState};
use crate::machine::StateMachine;
use crate::store::retention::{Resting, gather};
use crate::store::{Pruned, Retention, StoreError};

const RESTING: &str = "id, state, (head->>'moves')::integer AS moves, parent, updated_at";

fn resting(row: &PgRow) -> Result<(Resting, Option<RunId>), StoreError> {
    let get = |e| pg_error("reading a run to prune", e);
    let state: String = row.try_get("state").map_err(get)?;
    let state = RunState::from_name(&state).ok_or_else(|| StoreError::Corrupt {
        tree: "steadfast_runs",
        source: format!("`{state}` is not a state").into(),
    })?;
    let parent: Option<Vec<u8>> = row.try_get("parent").map_err(get)?;
    let parent = parent.as_deref().map(run_id).transpose()?;
    let run = Resting {
        id: run_id(row.try_get::<&[u8], _>("id").map_err(get)?)?,
        state,
        moves: row.try_get::<i32, _>("moves").map_err(get)? as u32,
        has_parent: parent.is_some(),
        moved_at: timestamp(row.try_get("updated_at").map_err(get)?),
    };
    Ok((run, parent))
}

pub(super) async fn prune(store: &PostgresStore, policy: Retention) -> Result<Pruned, StoreError> {
    policy.check().map_err(StoreError::InvalidRequest)?;
    let now = crate::store::Store::now(store);
    let cutoff = millis(policy.cutoff(now));
    let mut pruned = Pruned::default();
    for state in policy.states.clone() {
        let mut cursor: Option<RunId> = None;
        loop {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {RESTING} FROM steadfast_runs WHERE state = $1 AND updated_at <= $2 \
                 AND parent IS NULL AND ($3::bytea IS NULL OR id > $3) ORDER BY id LIMIT $4"
            )))
            .bind(state.name())
            .bind(cutoff)
            .bind(cursor.map(id))
            .bind(policy.batch.max(1) as i64)
            .fetch_all(store.pool())
            .await
            .map_err(|e| pg_error("finding runs to prune", e))?;
            let Some(last) = rows.last() else { break };
            cursor = Some(resting(last)?.0.id);
            let mut groups = Vec::new();
            for row in &rows {
                let (run, _) = resting(row)?;
                if !policy.takes_resting(&run, now) {
                    continue;
                }
                let mut stages = descendants(store, run.id).await?;
                match gather(&policy, run, |parent| {
                    Ok::<_, StoreError>(stages.remove(&parent).unwrap_or_default())
                })? {
                    Some(group) => groups.push(group),
                    None => pruned.kept += 1,
                }
            }
            if !groups.is_empty() {
                pruned.runs += delete(store, groups).await?;
            }
        }
    }
    Ok(pruned)
}

/// Every descendant of `run`, by parent.
async fn descendants(
    store: &PostgresStore,
    run: RunId,
) -> Result<HashMap<RunId, Vec<Resting>>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH RECURSIVE d AS ( \
           SELECT {RESTING} FROM steadfast_runs WHERE parent = $1 \
           UNION ALL \
           SELECT r.id, r.state, (r.head->>'moves')::integer, r.parent, r.updated_at \
             FROM steadfast_runs r JOIN d ON r.parent = d.id) \
         SELECT * FROM d"
    )))
    .bind(id(run))
    .fetch_all(store.pool())
    .await
    .map_err(|e| pg_error("reading stage runs to prune", e))?;
    let mut stages: HashMap<RunId, Vec<Resting>> = HashMap::new();
    for row in &rows {
        let (stage, parent) = resting(row)?;
        if let Some(parent) = parent {
            stages.entry(parent).or_default().push(stage);
        }
    }
    Ok(stages)
}

/// Deletes `groups` in one transaction, each only if none of its runs moved since it was read.
async fn delete(store: &PostgresStore, groups: Vec<Vec<Resting>>) -> Result<u64, StoreError> {
    let deleted = store
        .write("pruning runs", |conn| {
            let groups = groups.clone();
            Box::pin(async move {
                let mut deleted = 0u64;
                let mut counts: std::collections::BTreeMap<(String, &'static str), i64> =
                    Default::default();
                'groups: for group in &groups {
                    let ids: Vec<Vec<u8>> = group.iter().map(|r| id(r.id)).collect();
                    let rows = sqlx::query(
                        "SELECT id, agent, state, (head->>'moves')::integer AS moves \
                         FROM steadfast_runs WHERE id = ANY($1) FOR UPDATE",
                    )
                    .bind(&ids)
                    .fetch_all(&mut *conn)
                    .await?;
                    let mut found = HashMap::new();
                    for row in &rows {
                        let key: Vec<u8> = row.try_get("id")?;
                        let moves: i32 = row.try_get("moves")?;
                        let agent: String = row.try_get("agent")?;
                        let state: String = row.try_get("state")?;
                        found.insert(key, (moves as u32, agent, state));
                    }
                    for run in group {
                        match found.get(&id(run.id)) {
                            Some((moves, ..)) if *moves == run.moves => {}
                            _ => continue 'groups, // moved (or gone) since it was read
                        }
                    }
                    for table in [
                        "steadfast_history",
                        "steadfast_effects",
                        "steadfast_starts",
                        "steadfast_dead_letters",
                        "steadfast_notes",
                        "steadfast_locks",
                    ] {
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DELETE FROM {table} WHERE run = ANY($1)"
                        )))
                        .bind(&ids)
                        .execute(&mut *conn)
                        .await?;
                    }
                    sqlx::query("DELETE FROM steadfast_runs WHERE id = ANY($1)")
                        .bind(&ids)
                        .execute(&mut *conn)
                        .await?;
                    for (_, agent, state) in found.into_values() {
                        let state = RunState::from_name(&state).map_or("unknown", |s| s.name());
                        *counts.entry((agent, state)).or_default() -= 1;
                        deleted += 1;
                    }
                }
                super::apply::add_counts(conn, counts).await?;
                Ok((Ok::<_, Refusal>(deleted), Vec::new()))
            })
        })
        .await?;
    Ok(deleted.unwrap_or(0))
}
