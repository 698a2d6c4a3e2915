//! A failed command: what to print and the exit code.

use std::fmt;

use crate::store::StoreError;

/// A failed command: its message and exit code (1 refused, 2 usage, 3 store unavailable).
#[derive(Debug)]
pub struct CliError {
    code: u8,
    message: String,
    closed_pipe: bool,
}

impl CliError {
    /// The operation was refused; nothing changed (exit 1).
    pub fn refused(message: impl Into<String>) -> Self {
        CliError { code: 1, message: message.into(), closed_pipe: false }
    }

    /// Bad arguments or environment (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError { code: 2, message: message.into(), closed_pipe: false }
    }

    /// An error with the given exit code (a server's answer, which carries it).
    pub(crate) fn with_code(code: u8, message: impl Into<String>) -> Self {
        CliError { code: code.max(1), message: message.into(), closed_pipe: false }
    }

    /// The store is unavailable (exit 3).
    pub fn store(message: impl Into<String>) -> Self {
        CliError { code: 3, message: message.into(), closed_pipe: false }
    }

    /// A store error: refused requests exit 1, the rest 3.
    pub fn from_store(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(_)
            | StoreError::IllegalTransition { .. }
            | StoreError::InvalidRequest(_) => CliError::refused(error.to_string()),
            other => CliError::store(other.to_string()),
        }
    }

    /// Writing the output failed: a closed pipe (`… | head`) ends the command quietly with
    /// exit 0, as in ripgrep; another write error is reported (exit 2).
    pub fn output(error: std::io::Error) -> Self {
        let closed = error.kind() == std::io::ErrorKind::BrokenPipe;
        CliError {
            code: if closed { 0 } else { 2 },
            message: format!("writing the output: {error}"),
            closed_pipe: closed,
        }
    }

    /// The exit code.
    pub fn code(&self) -> u8 {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the output's reader went away (the command ends quietly).
    pub fn is_closed_pipe(&self) -> bool {
        self.closed_pipe
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}
