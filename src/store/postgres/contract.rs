//! The [`Store`] contract on PostgreSQL: each write one transaction (see `tx`) applying the
//! contract's plans (see `apply`); the reads in `reads`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::{PgConnection, Row};

use super::apply::{Writer, decode, id, locked_head, millis};
use super::tx::Refusal;
use super::{PostgresStore, pg_error};
use crate::clock::Timestamp;
use crate::lifecycle::{RunId, RunState};
use crate::store::backend::{
    Expiry, check_new_run, check_transition, claimable, plan_claim, plan_create, plan_expiry,
    plan_heartbeat, plan_move,
};
use crate::store::{
    Actor, AgentControl, Claim, ConflictResult, Created, DeadLetter, EffectRecord, HistoryEntry,
    ListQuery, NewRun, Note, Page, Pruned, Retention, RunHead, RunRecord, StateCounts, Store,
    StoreError, Transition,
};

/// The refusal for a run that is not there, or one whose head does not decode.
fn head_or_refusal(
    read: Option<Result<RunHead, StoreError>>,
    run: RunId,
) -> Result<RunHead, Refusal> {
    match read {
        Some(Ok(head)) => Ok(head),
        Some(Err(corrupt)) => Err(Refusal::Corrupt(corrupt)),
        None => Err(Refusal::NotFound(run)),
    }
}

fn refused<T>(refusal: Refusal) -> ConflictResult<T> {
    match refusal {
        Refusal::Conflict(conflict) => Ok(Err(conflict)),
        Refusal::NotFound(run) => Err(StoreError::NotFound(run)),
        Refusal::Corrupt(error) => Err(error),
    }
}

/// Takes the concurrency key `key` for `run` in this transaction if no other run holds it;
/// waits for a transaction that is taking or releasing it to end first.
async fn take_key(conn: &mut PgConnection, key: &str, run: RunId) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "INSERT INTO steadfast_locks (key, run) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(id(run))
    .execute(conn)
    .await?;
    Ok(taken.rows_affected() == 1)
}

#[async_trait]
impl Store for PostgresStore {
    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    fn work_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.inner.signal.subscribe())
    }

    async fn create(&self, new: NewRun) -> Result<Created, StoreError> {
        check_new_run(&new)?;
        let now = self.now();
        let created = self
            .write("creating a run", |conn| {
                let new = new.clone();
                Box::pin(async move {
                    let id = RunId::new();
                    let mut writer = Writer::new(conn);
                    let Some(mut run) = writer.apply(plan_create(id, &new, now)).await? else {
                        return Ok((Ok(None), Vec::new()));
                    };
                    if let Some((owner, lease)) = new.claim_for.clone() {
                        let head = RunHead::of(&run);
                        let mut free = true;
                        if let Some(key) = &head.concurrency_key
                            && claimable(&head, now)
                        {
                            free = take_key(writer.conn, key, id).await?;
                        }
                        let held = |_: &str| Ok::<_, std::convert::Infallible>(!free);
                        let Ok(plan) = plan_claim(id, &head, &owner, lease, now, held);
                        if let Some(plan) = plan
                            && let Some(claimed) = writer.apply(plan).await?
                        {
                            run = claimed;
                        }
                    }
                    let woken = writer.finish().await?;
                    Ok((Ok(Some(run)), woken))
                })
            })
            .await?;
        match created {
            Ok(Some(run)) => Ok(Created { run, created: true }),
            Ok(None) => {
                let run = self.read_by_key(&new.agent, &new.idempotency_key).await?;
                let run = run.ok_or_else(|| {
                    StoreError::InvalidRequest(format!(
                        "the key `{}` of `{}` was taken by a run that is gone (pruned meanwhile)",
                        new.idempotency_key, new.agent
                    ))
                })?;
                Ok(Created { run, created: false })
            }
            Err(Refusal::NotFound(run)) => Err(StoreError::NotFound(run)),
            Err(Refusal::Corrupt(error)) => Err(error),
            Err(Refusal::Conflict(conflict)) => {
                Err(StoreError::InvalidRequest(conflict.to_string()))
            }
        }
    }

    async fn get(&self, run: RunId) -> Result<Option<RunRecord>, StoreError> {
        self.read_run(run).await
    }

    async fn find_by_key(
        &self,
        agent: &str,
        idempotency_key: &str,
    ) -> Result<Option<RunRecord>, StoreError> {
        self.read_by_key(agent, idempotency_key).await
    }

    async fn transition(&self, request: Transition) -> ConflictResult<RunRecord> {
        check_transition(&request)?;
        let now = self.now();
        let run = request.run;
        if request.follow_ups.is_empty() {
            // One statement, compare-and-set on the run's move count (see `moves`); planned
            // again from the run as it is if it moved meanwhile.
            for _ in 0..16 {
                let before = self.head(run).await?.ok_or(StoreError::NotFound(run))?;
                let plan = match plan_move(run, &before, &request, now) {
                    Ok(plan) => plan,
                    Err(conflict) => return Ok(Err(conflict)),
                };
                if let super::moves::Written::Moved(record) = self.write_move(&before, plan).await?
                {
                    if record.state == RunState::Queued {
                        self.inner.signal.notify();
                        self.inner.notifier.notify(vec![record.agent.clone()]);
                    }
                    return Ok(Ok(*record));
                }
            }
        }
        let moved = self
            .write("moving a run", |conn| {
                let request = request.clone();
                Box::pin(async move {
                    let before = match head_or_refusal(locked_head(conn, run).await?, run) {
                        Ok(head) => head,
                        Err(refusal) => return Ok((Err(refusal), Vec::new())),
                    };
                    let plan = match plan_move(run, &before, &request, now) {
                        Ok(plan) => plan,
                        Err(conflict) => return Ok((Err(Refusal::Conflict(conflict)), Vec::new())),
                    };
                    let mut writer = Writer::new(conn);
                    let moved = writer.apply(plan).await?.expect("a move writes its run");
                    Ok((Ok(moved), writer.finish().await?))
                })
            })
            .await?;
        match moved {
            Ok(run) => Ok(Ok(run)),
            Err(refusal) => refused(refusal),
        }
    }

    async fn claim(&self, claim: Claim) -> Result<Vec<RunRecord>, StoreError> {
        if claim.limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.now();
        // Most rounds find nothing: one plain read says so, without a transaction's three
        // round trips.
        let agents: Option<Vec<String>> = (!claim.agents.is_empty()).then(|| claim.agents.clone());
        let runs: Option<Vec<Vec<u8>>> =
            (!claim.runs.is_empty()).then(|| claim.runs.iter().map(|r| id(*r)).collect());
        let any = sqlx::query(
            "SELECT 1 FROM steadfast_runs WHERE state = 'queued' AND due_at <= $1 \
             AND ($2::text[] IS NULL OR agent = ANY($2)) AND ($3::bytea[] IS NULL OR id = ANY($3)) \
             LIMIT 1",
        )
        .bind(millis(now))
        .bind(&agents)
        .bind(&runs)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| pg_error("looking for due runs", e))?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        // More candidates than asked for: some may wait on a held concurrency key.
        let want = claim.limit.saturating_mul(2).max(claim.limit + 8).min(10_000) as i64;
        let claimed = self
            .write("claiming runs", |conn| {
                let (claim, agents, runs) = (claim.clone(), agents.clone(), runs.clone());
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT id, head FROM steadfast_runs WHERE state = 'queued' \
                         AND due_at <= $1 AND ($2::text[] IS NULL OR agent = ANY($2)) \
                         AND ($3::bytea[] IS NULL OR id = ANY($3)) \
                         ORDER BY due_at, id LIMIT $4 FOR UPDATE SKIP LOCKED",
                    )
                    .bind(millis(now))
                    .bind(&agents)
                    .bind(&runs)
                    .bind(want)
                    .fetch_all(&mut *conn)
                    .await?;
                    let mut writer = Writer::new(conn);
                    let mut claimed = Vec::new();
                    for row in rows {
                        if claimed.len() >= claim.limit {
                            break;
                        }
                        let run = match super::apply::run_id(row.try_get("id")?) {
                            Ok(run) => run,
                            Err(corrupt) => {
                                return Ok((Err(Refusal::Corrupt(corrupt)), Vec::new()));
                            }
                        };
                        let head: RunHead = match decode("steadfast_runs", row.try_get("head")?) {
                            Ok(head) => head,
                            Err(corrupt) => {
                                return Ok((Err(Refusal::Corrupt(corrupt)), Vec::new()));
                            }
                        };
                        let mut free = true;
                        if let Some(key) = &head.concurrency_key
                            && claimable(&head, now)
                        {
                            free = take_key(writer.conn, key, run).await?;
                        }
                        let held = |_: &str| Ok::<_, std::convert::Infallible>(!free);
                        let Ok(plan) = plan_claim(run, &head, &claim.owner, claim.lease, now, held);
                        if let Some(plan) = plan
                            && let Some(record) = writer.apply(plan).await?
                        {
                            claimed.push(record);
                        }
                    }
                    Ok((Ok(claimed), writer.finish().await?))
                })
            })
            .await?;
        claimed.or_else(|refusal| refused::<()>(refusal).map(|_| Vec::new()))
    }

    async fn heartbeat(
        &self,
        run: RunId,
        token: u64,
        extend: Duration,
    ) -> ConflictResult<Timestamp> {
        let now = self.now();
        let beat = self
            .write("extending a lease", |conn| {
                Box::pin(async move {
                    let before = match head_or_refusal(locked_head(conn, run).await?, run) {
                        Ok(head) => head,
                        Err(refusal) => return Ok((Err(refusal), Vec::new())),
                    };
                    let head = match plan_heartbeat(run, &before, token, extend, now) {
                        Ok(head) => head,
                        Err(conflict) => return Ok((Err(Refusal::Conflict(conflict)), Vec::new())),
                    };
                    let expires = head.lease.as_ref().map_or(now, |l| l.expires_at);
                    sqlx::query(
                        "UPDATE steadfast_runs SET lease_expires_at = $2, head = $3::jsonb WHERE id = $1",
                    )
                    .bind(id(run))
                    .bind(millis(expires))
                    .bind(super::apply::encode(&head))
                    .execute(conn)
                    .await?;
                    Ok((Ok(expires), Vec::new()))
                })
            })
            .await?;
        match beat {
            Ok(expires) => Ok(Ok(expires)),
            Err(refusal) => refused(refusal),
        }
    }

    async fn recover_expired(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let now = self.now();
        let any = sqlx::query(
            "SELECT 1 FROM steadfast_runs WHERE state = 'processing' AND lease_expires_at <= $1 \
             LIMIT 1",
        )
        .bind(millis(now))
        .fetch_optional(self.pool())
        .await
        .map_err(|e| pg_error("looking for expired leases", e))?;
        if any.is_none() || limit == 0 {
            return Ok(Vec::new());
        }
        let recovered = self
            .write("recovering expired leases", |conn| {
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT id, head FROM steadfast_runs WHERE state = 'processing' \
                         AND lease_expires_at <= $1 ORDER BY lease_expires_at, id LIMIT $2 \
                         FOR UPDATE SKIP LOCKED",
                    )
                    .bind(millis(now))
                    .bind(limit.min(10_000) as i64)
                    .fetch_all(&mut *conn)
                    .await?;
                    let mut writer = Writer::new(conn);
                    let mut recovered = Vec::new();
                    for row in rows {
                        let (id, head) = (row.try_get("id")?, row.try_get("head")?);
                        let decoded = super::apply::run_id(id)
                            .and_then(|run| Ok((run, decode::<RunHead>("steadfast_runs", head)?)));
                        let (run, head) = match decoded {
                            Ok(decoded) => decoded,
                            Err(corrupt) => {
                                return Ok((Err(Refusal::Corrupt(corrupt)), Vec::new()));
                            }
                        };
                        if let Some(plan) = plan_expiry(run, &head, Expiry::Expired, now)
                            && let Some(record) = writer.apply(plan).await?
                        {
                            recovered.push(record);
                        }
                    }
                    Ok((Ok(recovered), writer.finish().await?))
                })
            })
            .await?;
        recovered.or_else(|refusal| refused::<()>(refusal).map(|_| Vec::new()))
    }

    async fn due_timers(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let states = [RunState::FailedTransient, RunState::WaitingExternal];
        self.read_due(&states, self.now(), limit).await
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read_next_due().await
    }

    async fn record_effect(
        &self,
        run: RunId,
        name: &str,
        result: Value,
    ) -> Result<EffectRecord, StoreError> {
        let row =
            sqlx::query("SELECT head->'attempt' AS attempt FROM steadfast_runs WHERE id = $1")
                .bind(id(run))
                .fetch_optional(self.pool())
                .await
                .map_err(|e| pg_error("reading a run", e))?
                .ok_or(StoreError::NotFound(run))?;
        let attempt: Value = row.try_get("attempt").map_err(|e| pg_error("reading a run", e))?;
        let effect = EffectRecord {
            run,
            name: name.to_owned(),
            result,
            attempt: attempt.as_u64().unwrap_or(0) as u32,
            recorded_at: self.now(),
        };
        // The first record wins: a conflicting insert returns the one already there.
        let row = sqlx::query(
            "WITH ins AS (INSERT INTO steadfast_effects (run, name, record) VALUES ($1, $2, $3::json) \
             ON CONFLICT (run, name) DO NOTHING RETURNING record) \
             SELECT record FROM ins UNION ALL \
             SELECT record FROM steadfast_effects WHERE run = $1 AND name = $2 LIMIT 1",
        )
        .bind(id(run))
        .bind(name)
        .bind(super::apply::encode(&effect))
        .fetch_one(self.pool())
        .await
        .map_err(|e| pg_error("recording an effect", e))?;
        decode("steadfast_effects", row.try_get(0).map_err(|e| pg_error("recording an effect", e))?)
    }

    async fn record_start(&self, run: RunId, attempt: u32) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO steadfast_starts (run, attempt) SELECT id, $2 FROM steadfast_runs \
             WHERE id = $1 ON CONFLICT DO NOTHING RETURNING 1",
        )
        .bind(id(run))
        .bind(attempt as i32)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| pg_error("recording a start", e))?;
        if inserted.is_none() && self.read_run(run).await?.is_none() {
            return Err(StoreError::NotFound(run));
        }
        Ok(())
    }

    async fn starts(&self, run: RunId) -> Result<Vec<u32>, StoreError> {
        self.read_starts(run).await
    }

    async fn effect(&self, run: RunId, name: &str) -> Result<Option<EffectRecord>, StoreError> {
        self.read_effect(run, name).await
    }

    async fn effects(&self, run: RunId) -> Result<Vec<EffectRecord>, StoreError> {
        self.read_effects(run).await
    }

    async fn history(&self, run: RunId) -> Result<Vec<HistoryEntry>, StoreError> {
        self.read_history(run).await
    }

    async fn add_note(&self, run: RunId, author: Actor, text: &str) -> Result<Note, StoreError> {
        let note = Note { run, author, text: text.to_owned(), at: self.now() };
        let inserted = sqlx::query(
            "INSERT INTO steadfast_notes (run, note) SELECT id, $2::json FROM steadfast_runs \
             WHERE id = $1 RETURNING 1",
        )
        .bind(id(run))
        .bind(super::apply::encode(&note))
        .fetch_optional(self.pool())
        .await
        .map_err(|e| pg_error("adding a note", e))?;
        inserted.map(|_| note).ok_or(StoreError::NotFound(run))
    }

    async fn notes(&self, run: RunId) -> Result<Vec<Note>, StoreError> {
        self.read_notes(run).await
    }

    async fn dead_letters(
        &self,
        cursor: Option<RunId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.read_dead_letters(cursor, limit).await
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        self.read_list(query).await
    }

    async fn counts(&self) -> Result<StateCounts, StoreError> {
        let mut total = StateCounts::default();
        for counts in self.read_counts().await?.values() {
            for (i, n) in counts.0.iter().enumerate() {
                total.0[i] += n;
            }
        }
        Ok(total)
    }

    async fn counts_by_agent(
        &self,
    ) -> Result<std::collections::BTreeMap<String, StateCounts>, StoreError> {
        self.read_counts().await
    }

    async fn put_schema(&self, hash: &str, schema: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO steadfast_schemas (hash, schema) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(hash)
        .bind(schema)
        .execute(self.pool())
        .await
        .map_err(|e| pg_error("keeping a schema", e))?;
        Ok(())
    }

    async fn schema(&self, hash: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT schema FROM steadfast_schemas WHERE hash = $1")
            .bind(hash)
            .fetch_optional(self.pool())
            .await
            .map_err(|e| pg_error("reading a schema", e))?;
        row.map(|r| r.try_get(0).map_err(|e| pg_error("reading a schema", e))).transpose()
    }

    async fn oldest_queued(&self, agent: &str) -> Result<Option<Timestamp>, StoreError> {
        self.read_oldest_queued(agent).await
    }

    async fn set_agent_control(
        &self,
        agent: &str,
        control: Option<AgentControl>,
    ) -> Result<(), StoreError> {
        let query = match &control {
            Some(control) => sqlx::query(
                "INSERT INTO steadfast_controls (agent, control) VALUES ($1, $2::json) \
                 ON CONFLICT (agent) DO UPDATE SET control = excluded.control",
            )
            .bind(agent)
            .bind(super::apply::encode(control)),
            None => sqlx::query("DELETE FROM steadfast_controls WHERE agent = $1").bind(agent),
        };
        query.execute(self.pool()).await.map_err(|e| pg_error("keeping an agent control", e))?;
        if control.as_ref().is_none_or(|c| !c.paused) {
            // A resumed agent's queued runs are work for every process.
            self.inner.signal.notify();
            self.inner.notifier.notify(vec![agent.to_owned()]);
        }
        Ok(())
    }

    async fn agent_controls(
        &self,
    ) -> Result<std::collections::BTreeMap<String, AgentControl>, StoreError> {
        self.read_controls().await
    }

    async fn restore(&self, archive: crate::store::RunArchive) -> Result<bool, StoreError> {
        archive.check()?;
        let restored = self
            .write("importing a run", |conn| {
                let archive = archive.clone();
                Box::pin(async move { super::apply::restore(conn, archive).await })
            })
            .await?;
        restored.or_else(|refusal| refused::<()>(refusal).map(|_| false))
    }

    async fn prune(&self, policy: Retention) -> Result<Pruned, StoreError> {
        super::prune::prune(self, policy).await
    }
}
