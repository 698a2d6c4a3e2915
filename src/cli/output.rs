//! How the operator commands print: tables (colour on a terminal only) or JSON, and the
//! small formatting helpers.

/// Prints a line to standard output (see [`say`](crate::cli::say)).
macro_rules! say {
    () => {
        $crate::cli::say(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::say(format_args!($($arg)*))
    };
}
pub(crate) use say;

use std::io::IsTerminal;
use std::time::Duration;

use super::CliError;
use crate::lifecycle::RunState;
use crate::store::RunRecord;

/// Output settings: `--json`, and colour (a terminal, and no `NO_COLOR`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Out {
    pub(crate) json: bool,
    color: bool,
}

impl Out {
    pub(crate) fn new(json: bool) -> Self {
        let color =
            !json && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Out { json, color }
    }

    pub(super) fn state(&self, state: RunState) -> String {
        let name = state.to_string();
        if !self.color {
            return name;
        }
        let code = match state {
            RunState::Succeeded => "32",
            RunState::FailedPermanent => "31",
            RunState::NeedsReview | RunState::FailedTransient => "33",
            RunState::Processing | RunState::WaitingExternal => "36",
            RunState::Queued => "0",
        };
        format!("\x1b[{code}m{name}\x1b[0m")
    }

    pub(super) fn print_json(&self, value: &impl serde::Serialize) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::store(format!("cannot write the output as JSON: {e}")))?;
        say!("{text}")
    }
}

pub(super) use crate::view::ago as age;

pub(super) fn clip(text: &str, max: usize) -> String {
    let one: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match one.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &one[..cut]),
        None => one,
    }
}

/// Prints a listing: `items` as JSON with `--json`; else `empty` when there are none, or the
/// rows `rows` makes as a table under `header`.
pub(super) fn listing<T: serde::Serialize>(
    out: Out,
    items: &[T],
    empty: &str,
    header: &[&str],
    rows: impl FnOnce(&[T]) -> Vec<Vec<String>>,
) -> Result<(), CliError> {
    if out.json {
        out.print_json(&items)
    } else if items.is_empty() {
        say!("{empty}")
    } else {
        table(header, &rows(items))
    }
}

/// Prints rows as aligned columns under `header`.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> Result<(), CliError> {
    let width = |s: &str| s.chars().filter(|c| !c.is_control()).count() - visible_escape_len(s);
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(widths[i] - width(cell) + 2));
            }
        }
        say!("{}", out.trim_end())
    };
    line(header.iter().map(|h| h.to_string()).collect())?;
    for row in rows {
        line(row.clone())?;
    }
    Ok(())
}

/// The printable characters of ANSI colour codes (`[32m`), which take no column.
pub(super) fn visible_escape_len(s: &str) -> usize {
    let mut n = 0;
    let mut rest = s;
    while let Some(i) = rest.find('\x1b') {
        let tail = &rest[i + 1..];
        let end = tail.find('m').map(|e| e + 1).unwrap_or(0);
        n += end;
        rest = &tail[end..];
    }
    n
}

pub(super) fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

pub(super) fn clip_lines(text: &str, max: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= max {
        return text.to_owned();
    }
    format!("{}\n… {} more lines (--json shows all)", lines[..max].join("\n"), lines.len() - max)
}

/// Prints the outcome of an operation on one run.
pub(super) fn done(out: Out, verb: &str, run: &RunRecord) -> Result<(), CliError> {
    if out.json {
        out.print_json(run)
    } else {
        say!("{verb} {}: now {}", run.id, out.state(run.state))
    }
}

pub(super) fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        "0s".to_owned()
    } else if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
