//! Which process the CLI's operator commands act on, chosen once: when a process works on the
//! data directory (`serve`, `work`, or a user's program with
//! [`LocalSocket`](crate::ops::LocalSocket)), its API through the socket `steadfast.sock` there
//! (the process holds the store); `--server URL` / `STEADFAST_SERVER` names a server elsewhere;
//! otherwise the store itself, through a runtime of this program's registrations. Each command
//! is written once, on [`Operate`]; output and exit codes are the same either way.
//!
//! The token (`$STEADFAST_TOKEN`) goes only to a server named with `--server`: never through
//! the socket (the file system decides who may use it), and never to an address found in a
//! file, which a process that outlived its server, or another user, could have put there.

use std::time::Duration;

use super::input::operator;
use super::{CliError, Session, runtime_error};
use crate::client::Client;
use crate::runtime::Runtime;
use crate::runtime::{Operate, OperateError};
use crate::store::Actor;

/// The server `session` should talk to: `--server`/`STEADFAST_SERVER`, else the process that
/// answers on the data directory's socket (a socket left by a killed process is ignored, and
/// the store opened as usual). A data directory another user owns is refused before anything
/// is sent.
pub(crate) async fn find(session: &Session) -> Result<Option<Client>, CliError> {
    if let Some(url) = &session.server {
        check_operator()?;
        let token = std::env::var("STEADFAST_TOKEN").ok();
        return Client::new(url, token).map(Some).map_err(|e| CliError::usage(e.to_string()));
    }
    if session.shared_store().is_some() {
        // A shared store is opened by every process that names it: no socket to look for.
        return Ok(None);
    }
    let path = session.data_dir().join(crate::ops::SOCKET_FILE);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    super::private::secure_data_dir(session.data_dir(), false)?;
    check_operator()?;
    let client = Client::local(&path).map_err(|e| CliError::usage(e.to_string()))?;
    Ok(client.is_alive(Duration::from_secs(2)).await.then_some(client))
}

/// The operator calls `session` makes: a running process's API (see [`find`]), else a runtime
/// on the store.
pub(crate) async fn operate(session: &Session) -> Result<Box<dyn Operate>, CliError> {
    match find(session).await? {
        Some(client) => Ok(Box::new(client)),
        None => Ok(Box::new(operator_runtime(session)?)),
    }
}

/// An operator call's failure as the CLI reports it, with the same exit code whichever way
/// the call went.
pub(crate) fn operate_error(error: OperateError) -> CliError {
    match error {
        OperateError::Runtime(error) => runtime_error(error),
        OperateError::Server { code, message, .. } => CliError::with_code(code, message),
        OperateError::Unreachable(message) => CliError::store(message),
    }
}

/// The server records who acts from a header, and refuses a name it cannot record.
fn check_operator() -> Result<(), CliError> {
    if let Actor::Operator(name) = operator()
        && !crate::ops::is_operator_name(name.trim())
    {
        return Err(CliError::usage(format!(
            "the operator name `{}` (STEADFAST_OPERATOR, else USER) must be 1 to {} printable ASCII characters to act through a server",
            name.trim(),
            crate::ops::OPERATOR_MAX
        )));
    }
    Ok(())
}

/// A runtime over the existing store with the program's agents and pipelines registered, so
/// their runs get their full checks; it never runs an attempt.
pub(crate) fn operator_runtime(session: &Session) -> Result<Runtime, CliError> {
    let store = session.existing_store()?;
    session.runtime(store).build().map_err(runtime_error)
}
