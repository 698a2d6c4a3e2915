//! [`PostgresStore`]: the store contract on PostgreSQL (feature `postgres`), for many worker
//! processes on many machines sharing one queue.
//!
//! - **Claims** take due runs with `SELECT … FOR UPDATE SKIP LOCKED` in batches, so claimers
//!   never wait on each other's rows; every move is a transaction that rewrites the run, appends
//!   its history entry and updates the counters of its agent (O(1) counts), applying the
//!   contract's [plans](crate::store::backend): the rules live in `store/`, not here.
//! - **Leases** carry fencing tokens: a worker that lost its lease (it stalled past expiry and
//!   the run was recovered and claimed again) has its moves refused as a `Conflict`.
//! - **Wake-ups**: a write that queues work sends `NOTIFY steadfast_work` after it commits,
//!   batched and deduplicated per agent; each store `LISTEN`s on one connection of its own and
//!   wakes its runtime ([`Store::work_signal`](crate::store::Store::work_signal)). While that
//!   connection is down, the runtime is woken every second instead (the polling fallback).
//! - **Migrations** are embedded and versioned, applied on open under an advisory lock (or
//!   ahead of time with [`PostgresStore::migrate`], `steadfast migrate`); a schema newer than
//!   this build is refused. No superuser and no extension are needed.
//! - **Connection faults**: a dropped connection, a failover or a pool timeout is a
//!   [`StoreError::Backend`] (a resource fault: the runtime waits and tries again); a refused
//!   login, a missing database or permission, or a schema error is [`StoreError::Unusable`]
//!   (permanent). Messages name the server (`host:port/database`), never the password.
//! - **Poolers**: everything but `LISTEN` works through a transaction-mode pooler such as
//!   PgBouncer (no session state, no prepared statement is relied on across transactions...
//!   sqlx prepares statements per connection, so set PgBouncer's `max_prepared_statements`);
//!   the listening connection must reach PostgreSQL directly or through a session-mode pool:
//!   give it its own address with [`PostgresOptions::listen_url`].

mod apply;
mod contract;
mod listen;
mod moves;
mod prune;
mod reads;
mod schema;
mod tx;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::clock::{Clock, SystemClock};
use crate::store::{StoreError, WorkSignal};

pub use self::schema::SCHEMA_VERSION;

/// How to open a [`PostgresStore`].
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// The clock leases and due times are compared to (default: the system clock; the
    /// conformance suite gives a manual one). Workers sharing a database must agree on time.
    pub clock: Arc<dyn Clock>,
    /// At most this many connections (default 10), the listening one not included.
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing (default 30 s).
    pub acquire_timeout: Duration,
    /// Where to `LISTEN` for wake-ups, if not at the store's own address (a pooler in
    /// transaction mode cannot carry `LISTEN`). `Some("")` turns listening off (the runtime
    /// then relies on its own wake-ups and due times).
    pub listen_url: Option<String>,
    /// The PostgreSQL schema (namespace) steadfast's tables live in, created if missing
    /// (default: the connection's `search_path`, usually `public`). Several deployments can
    /// share one database, each in its own schema; their wake-ups stay apart too.
    pub schema: Option<String>,
    /// Bring the schema up to date when connecting (default); when off, a schema older than
    /// this build (or none) is refused with a message that says to run `steadfast migrate`
    /// (for operators who migrate explicitly, and for reads that must change nothing).
    pub migrate: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            clock: Arc::new(SystemClock),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
            listen_url: None,
            schema: None,
            migrate: true,
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("listen_url", &self.listen_url.as_ref().map(|_| "<set>"))
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresOptions {
    /// The clock to compare leases and due times to.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// At most `n` connections.
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Whether connecting brings the schema up to date (see [`PostgresOptions::migrate`]).
    #[must_use]
    pub fn migrate(mut self, yes: bool) -> Self {
        self.migrate = yes;
        self
    }

    /// Keeps the tables in the PostgreSQL schema `name` (lowercase letters, digits and `_`,
    /// not starting with a digit), created if missing.
    #[must_use]
    pub fn schema(mut self, name: impl Into<String>) -> Self {
        self.schema = Some(name.into());
        self
    }

    /// `LISTEN` at `url` instead of the store's address (`""`: do not listen).
    #[must_use]
    pub fn listen_url(mut self, url: impl Into<String>) -> Self {
        self.listen_url = Some(url.into());
        self
    }
}

/// The store contract on PostgreSQL: one queue shared by every process that opens the same
/// database.
///
/// ```no_run
/// # async fn example() -> Result<(), steadfast::StoreError> {
/// use steadfast::store::{PostgresStore, Store};
///
/// let store = PostgresStore::connect("postgres://steadfast@db.internal/steadfast").await?;
/// println!("{:?}", store.counts().await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    /// The server as messages name it: `host:port/database`.
    server: String,
    signal: Arc<WorkSignal>,
    notifier: listen::Notifier,
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("server", &self.inner.server).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/database`, with
    /// libpq's parameters), brings its schema up to date and starts listening for wake-ups.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// [`PostgresStore::connect`] with options.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let (pool, server) = pool(url, &options).await?;
        if options.migrate {
            schema::migrate(&pool, options.schema.as_deref()).await.map_err(|e| e.at(&server))?;
        } else {
            schema::require_current(&pool).await.map_err(|e| e.at(&server))?;
        }
        let signal = Arc::new(WorkSignal::new());
        let channel = listen::channel(options.schema.as_deref());
        let listener = match options.listen_url.as_deref() {
            Some("") => None,
            Some(other) => {
                let (listen_pool, _) = pool_of(other, &options, 1)?;
                Some(listen::spawn(listen_pool, channel.clone(), signal.clone(), server.clone()))
            }
            None => {
                Some(listen::spawn(pool.clone(), channel.clone(), signal.clone(), server.clone()))
            }
        };
        let notifier = listen::Notifier::spawn(pool.clone(), channel);
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                clock: options.clock,
                server,
                signal,
                notifier,
                listener,
            }),
        })
    }

    /// Brings the schema of the database at `url` up to [`SCHEMA_VERSION`] without opening a
    /// store; returns the versions applied (none if it was up to date).
    pub async fn migrate(url: &str, options: &PostgresOptions) -> Result<Vec<u32>, StoreError> {
        let (pool, server) = pool(url, options).await?;
        let applied =
            schema::migrate(&pool, options.schema.as_deref()).await.map_err(|e| e.at(&server));
        pool.close().await;
        applied
    }

    /// The server, as `host:port/database` (never with a password).
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    fn pool(&self) -> &PgPool {
        &self.inner.pool
    }
}

/// A pool on `url`, checked by one connection, and the server's name.
async fn pool(url: &str, options: &PostgresOptions) -> Result<(PgPool, String), StoreError> {
    let (pool, server) = pool_of(url, options, options.max_connections)?;
    pool.acquire().await.map_err(|e| pg_error("connecting", e).at(&server))?;
    Ok((pool, server))
}

fn pool_of(url: &str, options: &PostgresOptions, max: u32) -> Result<(PgPool, String), StoreError> {
    let connect: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
        StoreError::InvalidRequest(format!("not a PostgreSQL address: {}", redact(&e.to_string())))
    })?;
    let server = format!(
        "{}:{}/{}",
        connect.get_host(),
        connect.get_port(),
        connect.get_database().unwrap_or(connect.get_username())
    );
    // Operators see whose connections these are (`pg_stat_activity.application_name`).
    let mut connect = match &options.schema {
        Some(schema) => connect.application_name(&format!("steadfast:{schema}")),
        None => connect.application_name("steadfast"),
    };
    if let Some(schema) = &options.schema {
        if !schema::valid_name(schema) {
            return Err(StoreError::InvalidRequest(format!(
                "`{schema}` is not a schema name steadfast uses: lowercase letters, digits and \
                 `_`, not starting with a digit, at most 48 characters"
            )));
        }
        connect = connect.options([("search_path", schema.as_str())]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(options.acquire_timeout)
        .connect_lazy_with(connect);
    Ok((pool, server))
}

/// `text` with anything after `://user:` up to `@` hidden (an address in an error message).
fn redact(text: &str) -> String {
    let Some(scheme) = text.find("://") else { return text.to_owned() };
    let rest = &text[scheme + 3..];
    match (rest.find(':'), rest.find('@')) {
        (Some(colon), Some(at)) if colon < at => {
            format!("{}{}:***{}", &text[..scheme + 3], &rest[..colon], &rest[at..])
        }
        _ => text.to_owned(),
    }
}

/// A PostgreSQL error while `context`: permanent when the server refuses us for good (a
/// login, a missing database or table, a permission, a bad statement), a resource fault when
/// the connection or the server failed (the runtime waits and tries again).
pub(super) fn pg_error(context: &'static str, error: sqlx::Error) -> StoreError {
    let permanent = match &error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 28: invalid authorization; 3D: invalid catalog (no such database); 42: syntax
            // error or access rule violation (permissions, missing tables); 0A: unsupported.
            ["28", "3D", "42", "0A"].iter().any(|class| code.starts_with(class))
        }),
        sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) => true,
        _ => false,
    };
    if permanent {
        StoreError::Unusable { context, source: redact(&error.to_string()).into() }
    } else {
        StoreError::Backend { context, source: redact(&error.to_string()).into() }
    }
}

/// A refusal of the database as it is (a newer schema).
pub(super) fn refused(reason: String) -> StoreError {
    StoreError::Unusable { context: "opening the database", source: reason.into() }
}

impl StoreError {
    /// The error with the server named in its message.
    fn at(self, server: &str) -> StoreError {
        match self {
            StoreError::Backend { context, source } => StoreError::Backend {
                context,
                source: format!("PostgreSQL at {server}: {source}").into(),
            },
            StoreError::Unusable { context, source } => StoreError::Unusable {
                context,
                source: format!("PostgreSQL at {server}: {source}").into(),
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_a_message() {
        assert_eq!(
            redact("error connecting to postgres://app:s3cret@db:5432/x"),
            "error connecting to postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("no address here"), "no address here");
        let options = PostgresOptions::default().listen_url("postgres://a:pw@h/d");
        assert!(!format!("{options:?}").contains("pw"));
    }
}
