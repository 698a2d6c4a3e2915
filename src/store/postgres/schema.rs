//! The database schema, as embedded, versioned migrations: applied in order on open (or by
//! `steadfast migrate`), each in its own transaction with the version it brings, under an
//! advisory lock so that two processes opening one database at once do not race. A database
//! whose version is newer than this build knows is refused.

use sqlx::{PgPool, Row};

use super::{pg_error, refused};
use crate::store::StoreError;

/// The migrations, in order: migration `n` (from 1) brings the schema to version `n`.
const MIGRATIONS: &[&str] = &[
    // 1: runs with their payloads, the indexes the contract reads by, and everything kept
    // per run; counters per agent and state; concurrency keys held; schemas and controls.
    // Payloads and records are `json` (kept as written, keys in order); the run's head, which
    // the store itself reads into, `jsonb`.
    r#"
    CREATE TABLE steadfast_runs (
        id bytea PRIMARY KEY,
        agent text NOT NULL,
        state text NOT NULL,
        idempotency_key text NOT NULL,
        due_at bigint,
        lease_expires_at bigint,
        parent bytea,
        concurrency_key text,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        head jsonb NOT NULL,
        input json NOT NULL,
        output json,
        signal json,
        UNIQUE (agent, idempotency_key)
    );
    CREATE INDEX steadfast_runs_queued ON steadfast_runs (due_at, id) WHERE state = 'queued';
    CREATE INDEX steadfast_runs_queued_agent ON steadfast_runs (agent, due_at, id)
        WHERE state = 'queued';
    CREATE INDEX steadfast_runs_timers ON steadfast_runs (due_at, id)
        WHERE state IN ('failed_transient', 'waiting_external');
    CREATE INDEX steadfast_runs_leases ON steadfast_runs (lease_expires_at, id)
        WHERE state = 'processing';
    CREATE INDEX steadfast_runs_by_state ON steadfast_runs (state, id);
    CREATE INDEX steadfast_runs_by_agent ON steadfast_runs (agent, id);
    CREATE INDEX steadfast_runs_by_parent ON steadfast_runs (parent, id) WHERE parent IS NOT NULL;
    CREATE INDEX steadfast_runs_resting ON steadfast_runs (state, updated_at)
        WHERE state IN ('succeeded', 'failed_permanent', 'needs_review');
    CREATE TABLE steadfast_history (
        run bytea NOT NULL,
        seq integer NOT NULL,
        entry json NOT NULL,
        PRIMARY KEY (run, seq)
    );
    CREATE TABLE steadfast_effects (
        run bytea NOT NULL,
        name text NOT NULL,
        record json NOT NULL,
        PRIMARY KEY (run, name)
    );
    CREATE TABLE steadfast_starts (
        run bytea NOT NULL,
        attempt integer NOT NULL,
        PRIMARY KEY (run, attempt)
    );
    CREATE TABLE steadfast_dead_letters (
        run bytea PRIMARY KEY,
        entry json NOT NULL
    );
    CREATE TABLE steadfast_notes (
        run bytea NOT NULL,
        seq bigserial NOT NULL,
        note json NOT NULL,
        PRIMARY KEY (run, seq)
    );
    CREATE TABLE steadfast_locks (
        key text PRIMARY KEY,
        run bytea NOT NULL
    );
    CREATE TABLE steadfast_counts (
        agent text NOT NULL,
        state text NOT NULL,
        shard smallint NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (agent, state, shard)
    );
    CREATE TABLE steadfast_schemas (
        hash text PRIMARY KEY,
        schema text NOT NULL
    );
    CREATE TABLE steadfast_controls (
        agent text PRIMARY KEY,
        control json NOT NULL
    );
    "#,
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// An arbitrary key for the advisory lock held while migrating ("steadfas" in ASCII).
const MIGRATION_LOCK: i64 = 0x7374_6561_6466_6173;

/// Refuses a schema that is not [`SCHEMA_VERSION`], changing nothing.
pub(super) async fn require_current(pool: &PgPool) -> Result<(), StoreError> {
    let exists = sqlx::query("SELECT to_regclass('steadfast_schema_version') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(|e| pg_error("reading the schema version", e))?
        .get::<bool, _>(0);
    let found = if exists { read_version(pool).await? } else { 0 };
    match found {
        0 => Err(refused(
            "the database has no steadfast schema yet: run `steadfast migrate --store …` or \
             start a worker on it"
                .into(),
        )),
        v if v < SCHEMA_VERSION => Err(refused(format!(
            "the database's steadfast schema is version {v}, older than this steadfast's \
             ({SCHEMA_VERSION}): run `steadfast migrate --store …`"
        ))),
        v if v > SCHEMA_VERSION => Err(refused(format!(
            "the database's steadfast schema is version {v}, newer than this steadfast knows \
             ({SCHEMA_VERSION}); upgrade steadfast"
        ))),
        _ => Ok(()),
    }
}

/// The schema version of the database (0 if it has none yet), creating the table that
/// records it.
pub(super) async fn version(pool: &PgPool) -> Result<u32, StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS steadfast_schema_version (version integer NOT NULL, \
         applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(pool)
    .await
    .map_err(|e| pg_error("creating the schema version table", e))?;
    read_version(pool).await
}

async fn read_version(pool: &PgPool) -> Result<u32, StoreError> {
    let row = sqlx::query("SELECT coalesce(max(version), 0) AS v FROM steadfast_schema_version")
        .fetch_one(pool)
        .await
        .map_err(|e| pg_error("reading the schema version", e))?;
    let version: i32 = row.get("v");
    Ok(version.max(0) as u32)
}

/// Brings the schema to [`SCHEMA_VERSION`]; returns the versions applied. A newer schema is
/// refused and nothing is changed.
pub(super) async fn migrate(pool: &PgPool, schema: Option<&str>) -> Result<Vec<u32>, StoreError> {
    let mut conn = pool.acquire().await.map_err(|e| pg_error("connecting to migrate", e))?;
    if let Some(schema) = schema {
        // Checked by `valid_name`: nothing to quote.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {schema}")))
            .execute(&mut *conn)
            .await
            .map_err(|e| pg_error("creating the schema", e))?;
    }
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(|e| pg_error("locking the schema to migrate it", e))?;
    let result = migrate_locked(pool).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(|e| pg_error("unlocking the schema", e));
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn migrate_locked(pool: &PgPool) -> Result<Vec<u32>, StoreError> {
    let found = version(pool).await?;
    if found > SCHEMA_VERSION {
        return Err(refused(format!(
            "the database's steadfast schema is version {found}, newer than this steadfast \
             knows ({SCHEMA_VERSION}); upgrade steadfast"
        )));
    }
    let mut applied = Vec::new();
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as u32 + 1;
        let mut tx = pool.begin().await.map_err(|e| pg_error("starting a migration", e))?;
        sqlx::raw_sql(*sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| pg_error("applying a migration", e))?;
        sqlx::query("INSERT INTO steadfast_schema_version (version) VALUES ($1)")
            .bind(version as i32)
            .execute(&mut *tx)
            .await
            .map_err(|e| pg_error("recording a migration", e))?;
        tx.commit().await.map_err(|e| pg_error("committing a migration", e))?;
        applied.push(version);
    }
    Ok(applied)
}

/// Whether `name` is a schema name steadfast accepts (no quoting needed anywhere).
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
