//! [`StoreError`]: the store failed, or the request can never succeed.

use std::path::PathBuf;

use crate::fault::{Classify, Fault};
use crate::lifecycle::{RunId, RunState};
use crate::machine::TransitionError;

// One definition, in `fault`; also reachable as `store::BoxError`.
pub use crate::fault::BoxError;

/// A store operation that failed. Expected races (a stale `from`, a stale lease) are not
/// errors but a [`Conflict`](super::Conflict) value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No run has this id.
    #[error("run {0} does not exist")]
    NotFound(RunId),
    /// The lifecycle table does not allow the move; nothing was changed.
    #[error("run {run}: {source}")]
    IllegalTransition {
        /// The run.
        run: RunId,
        /// The refused move.
        #[source]
        source: TransitionError<RunState>,
    },
    /// The request is malformed (for example a move out of `processing` without a fence);
    /// nothing was changed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Another process has the database open.
    #[error("{} is locked by {}: the embedded store lets one process at a time open a database; stop it first", .path.display(), .holder.as_deref().unwrap_or("another process"))]
    Locked {
        /// The database directory.
        path: PathBuf,
        /// The process holding it, as far as it could be told (`pid 1234 (steadfast demo)`).
        holder: Option<String>,
    },
    /// The path exists but is not a steadfast database.
    #[error("{} is not a steadfast database: {reason}", .path.display())]
    NotADatabase {
        /// The path.
        path: PathBuf,
        /// Why it was not recognised.
        reason: String,
    },
    /// The database was written by a newer steadfast.
    #[error("{} has format version {found}, newer than this steadfast supports ({supported}); upgrade steadfast", .path.display())]
    NewerFormat {
        /// The database directory.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A stored record could not be decoded.
    #[error("corrupt record in `{tree}`: {source}")]
    Corrupt {
        /// Where.
        tree: &'static str,
        /// The decoding error.
        #[source]
        source: BoxError,
    },
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The store cannot be used as it is configured (a refused login, a missing database or
    /// permission, a schema newer than this build): permanent until an operator fixes it.
    #[error("{context}: {source}")]
    Unusable {
        /// What was being done.
        context: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The storage backend failed.
    #[error("{context}: {source}")]
    Backend {
        /// What was being done.
        context: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl Classify for StoreError {
    /// The store failing under an agent (a full disk, I/O) is a resource problem; a refused
    /// request is a bug in the caller: permanent.
    fn fault(&self) -> Fault {
        use StoreError::*;
        match self {
            Io { source, .. } => source.fault(),
            Backend { .. } => Fault::Resource,
            NotFound(_)
            | IllegalTransition { .. }
            | InvalidRequest(_)
            | Corrupt { .. }
            | Unusable { .. } => Fault::Permanent,
            _ => Fault::Unknown,
        }
    }
}
