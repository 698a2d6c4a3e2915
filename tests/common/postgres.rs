//! The local PostgreSQL (`STEADFAST_POSTGRES_URL`, by default the CI machine's
//! `postgres://postgres@127.0.0.1:5432/test`), each test's stores in a schema of their own.

#![allow(dead_code)] // each test binary uses its part

use std::sync::atomic::{AtomicU32, Ordering};

use steadfast::store::PostgresOptions;

/// The server's address.
pub(crate) fn url() -> String {
    std::env::var("STEADFAST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema name no other test uses: `sft_<seconds>_<pid>_<n>`.
pub(crate) fn fresh_schema() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    format!("sft_{secs}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The address and options of a fresh, empty schema on the local server, or `None` (the test
/// is skipped, saying why) when no server answers; with `STEADFAST_REQUIRE_PEERS=1` a missing
/// server fails the test. Schemas of earlier test runs older than an hour are dropped.
pub(crate) async fn fresh() -> Option<(String, PostgresOptions)> {
    let url = url();
    let options = PostgresOptions::default().schema(fresh_schema());
    if let Err(error) = steadfast::store::PostgresStore::migrate(&url, &options).await {
        return super::peers::missing_peer(&format!("PostgreSQL ({error})"));
    }
    sweep(&url).await;
    Some((url, options))
}

/// Runs `sql` (one statement answering one `bigint`) on its own connection.
pub(crate) async fn admin(url: &str, sql: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("an admin connection");
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    n
}

/// Drops the schemas of test runs that ended more than an hour ago.
async fn sweep(url: &str) {
    use sqlx::Connection;
    let Ok(mut conn) = sqlx::PgConnection::connect(url).await else { return };
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'sft\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    for (name,) in names {
        let secs: Option<u64> = name.split('_').nth(1).and_then(|s| s.parse().ok());
        if secs.is_some_and(|s| s + 3600 < now) {
            let drop = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut conn).await;
        }
    }
}
