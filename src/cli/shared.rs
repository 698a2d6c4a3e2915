//! The store named by `--store` (`STEADFAST_STORE`): PostgreSQL, shared by every process that
//! names it, instead of the embedded store of the data directory; and `migrate`.

use std::sync::Arc;

use super::output::{Out, say};
use super::{CliError, Session};
use crate::store::Store;

/// Checks that `url` is a PostgreSQL address (never echoing it: it may hold a password).
fn check(url: &str) -> Result<(), CliError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(())
    } else {
        Err(CliError::usage(
            "--store (STEADFAST_STORE) takes a PostgreSQL address, postgres://user@host:5432/db; \
             without it the embedded store in --data is used",
        ))
    }
}

/// Connects to the PostgreSQL store at `url` from inside the command's runtime; `migrate`
/// brings its schema up to date, otherwise an old or missing schema is refused.
pub(super) fn open(url: &str, migrate: bool) -> Result<Arc<dyn Store>, CliError> {
    check(url)?;
    #[cfg(feature = "postgres")]
    {
        use crate::store::{PostgresOptions, PostgresStore};
        let handle = tokio::runtime::Handle::try_current()
            .ok()
            .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
            .ok_or_else(|| {
                CliError::store("a PostgreSQL store is opened inside `Session::block_on`")
            })?;
        let options = PostgresOptions::default().migrate(migrate);
        let store = tokio::task::block_in_place(|| {
            handle.block_on(PostgresStore::connect_with(url, options))
        })
        .map_err(|e| CliError::store(format!("cannot open the store: {e}")))?;
        Ok(Arc::new(store))
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = migrate;
        Err(CliError::usage(
            "this program was built without PostgreSQL (the `postgres` feature of steadfast)",
        ))
    }
}

/// `migrate`: the schema brought up to date, and its version.
pub(super) async fn migrate(session: &Session, out: Out) -> Result<(), CliError> {
    let Some(url) = session.shared_store() else {
        // The embedded store upgrades its layout when it is opened.
        let _store = session.open_store()?;
        return if out.json {
            out.print_json(&serde_json::json!({"store": "sled", "applied": []}))
        } else {
            say!("the embedded store at {} is up to date", session.store_dir().display())
        };
    };
    check(url)?;
    #[cfg(feature = "postgres")]
    {
        use crate::store::{POSTGRES_SCHEMA_VERSION, PostgresOptions, PostgresStore};
        let applied = PostgresStore::migrate(url, &PostgresOptions::default())
            .await
            .map_err(CliError::from_store)?;
        if out.json {
            out.print_json(&serde_json::json!({
                "store": "postgres",
                "version": POSTGRES_SCHEMA_VERSION,
                "applied": applied,
            }))
        } else if applied.is_empty() {
            say!("the schema is up to date (version {POSTGRES_SCHEMA_VERSION})")
        } else {
            say!("the schema is at version {POSTGRES_SCHEMA_VERSION} (applied {applied:?})")
        }
    }
    #[cfg(not(feature = "postgres"))]
    {
        open(url, true).map(drop)
    }
}
