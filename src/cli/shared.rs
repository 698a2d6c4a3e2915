//! The store named by `--store` (`STEADFAST_STORE`): PostgreSQL, shared by every process that
//! names it, instead of the embedded store of the data directory; and `migrate`.

use std::path::PathBuf;
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

/// Refuses to move a store a process is working on (the embedded store is held by it).
async fn idle(session: &Session, what: &str) -> Result<(), CliError> {
    if session.shared_store().is_none() && super::remote::find(session).await?.is_some() {
        return Err(CliError::refused(format!(
            "a process works on this data directory (it answers on its socket): stop it, then {what}"
        )));
    }
    Ok(())
}

/// `export [FILE|-]`.
pub(super) async fn export(session: &Session, out: Out, file: PathBuf) -> Result<(), CliError> {
    idle(session, "export").await?;
    let store = session.existing_store()?;
    let to_stdout = file.as_os_str() == "-";
    let done = if to_stdout {
        let stdout = std::io::stdout();
        let mut lock = std::io::BufWriter::new(stdout.lock());
        crate::store::transfer::export(store.as_ref(), &mut lock).await
    } else {
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&file)
            .map_err(|e| CliError::usage(format!("cannot create {}: {e}", file.display())))?;
        let mut writer = std::io::BufWriter::new(created);
        let done = crate::store::transfer::export(store.as_ref(), &mut writer).await;
        if done.is_ok() {
            writer
                .into_inner()
                .map_err(|e| CliError::store(e.to_string()))?
                .sync_all()
                .map_err(|e| CliError::store(format!("cannot sync {}: {e}", file.display())))?;
        }
        done
    }
    .map_err(CliError::from_store)?;
    if to_stdout {
        return Ok(()); // the export is the output
    }
    if out.json {
        out.print_json(&done)
    } else {
        say!(
            "exported {} runs, {} schemas, {} agent controls to {}",
            done.runs,
            done.schemas,
            done.controls,
            file.display()
        )
    }
}

/// `import FILE|-`.
pub(super) async fn import(session: &Session, out: Out, file: PathBuf) -> Result<(), CliError> {
    idle(session, "import").await?;
    let store = session.open_store()?;
    let done = if file.as_os_str() == "-" {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        crate::store::transfer::import(store.as_ref(), &mut lock).await
    } else {
        let opened = std::fs::File::open(&file)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", file.display())))?;
        crate::store::transfer::import(store.as_ref(), &mut std::io::BufReader::new(opened)).await
    }
    .map_err(CliError::from_store)?;
    if out.json {
        out.print_json(&done)
    } else {
        say!(
            "imported {} runs ({} already there), {} schemas, {} agent controls",
            done.runs,
            done.skipped,
            done.schemas,
            done.controls
        )
    }
}
