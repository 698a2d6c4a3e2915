//! What the commands read from their caller: durations, who the operator is, JSON files.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::CliError;
use crate::store::Actor;

/// A duration argument (`90s`, `15m`, `2h`, `7d`), white space around it allowed.
pub(super) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::clock::parse_duration(text.trim())
}

/// Who the operator is: `$STEADFAST_OPERATOR`, else `$USER`, else `cli`.
pub(super) fn operator() -> Actor {
    let name = std::env::var("STEADFAST_OPERATOR")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "cli".to_owned());
    Actor::Operator(name)
}

/// Reads JSON from a file or standard input (`-`).
pub(super) fn read_json(path: &Path) -> Result<Value, CliError> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::usage(format!("reading standard input: {e}")))?;
    } else {
        text = std::fs::read_to_string(path)
            .map_err(|e| CliError::usage(format!("reading {}: {e}", path.display())))?;
    }
    serde_json::from_str(&text)
        .map_err(|e| CliError::usage(format!("{} is not JSON: {e}", path.display())))
}
