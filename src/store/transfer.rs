//! Moving a deployment between stores (`steadfast export` / `import`): a stream of JSON lines,
//! one record each: a header, every run with everything kept for it ([`RunArchive`]), the
//! schemas its runs name, the agents' controls. Importing the same stream twice imports it
//! once (a run whose id or key is there is skipped).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use super::{AgentControl, ListQuery, RunArchive, Store, StoreError, archive};

/// The version of the stream [`export`] writes; [`import`] refuses a newer one.
pub const EXPORT_FORMAT: u32 = 1;

/// One line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExportLine {
    /// The first line: the stream's format version.
    Header {
        /// [`EXPORT_FORMAT`] when written.
        format: u32,
    },
    /// A run with everything kept for it.
    Run(Box<RunArchive>),
    /// A JSON Schema runs name by hash.
    Schema {
        /// The hash runs store.
        hash: String,
        /// The schema's text.
        schema: String,
    },
    /// An agent's control (paused, or throttled).
    Control {
        /// The agent.
        agent: String,
        /// Its control.
        control: AgentControl,
    },
}

/// What [`export`] wrote or [`import`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Transferred {
    /// Runs written (export) or imported.
    pub runs: u64,
    /// Runs skipped on import: their id or key was there already.
    pub skipped: u64,
    /// Schemas.
    pub schemas: u64,
    /// Agent controls.
    pub controls: u64,
}

fn write_line(out: &mut dyn Write, line: &ExportLine) -> Result<(), StoreError> {
    let text = serde_json::to_string(line).expect("export lines serialize");
    writeln!(out, "{text}")
        .map_err(|source| StoreError::Io { context: "writing the export".into(), source })
}

/// Writes everything `store` holds to `out`, oldest run first.
pub async fn export<S: Store + ?Sized>(
    store: &S,
    out: &mut dyn Write,
) -> Result<Transferred, StoreError> {
    let mut done = Transferred::default();
    write_line(out, &ExportLine::Header { format: EXPORT_FORMAT })?;
    let mut dead = HashMap::new();
    let mut cursor = None;
    loop {
        let page = store.dead_letters(cursor, 1000).await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.run);
        dead.extend(page.into_iter().map(|d| (d.run, d)));
    }
    let mut hashes = BTreeSet::new();
    let mut query = ListQuery::new().oldest_first().limit(500);
    loop {
        let page = store.list(query.clone()).await?;
        for run in page.runs {
            hashes.extend(run.input_schema.iter().chain(&run.output_schema).cloned());
            let dead_letter = dead.remove(&run.id);
            let archived = archive(store, run, dead_letter).await?;
            write_line(out, &ExportLine::Run(Box::new(archived)))?;
            done.runs += 1;
        }
        match page.next {
            Some(next) => query = query.cursor(next),
            None => break,
        }
    }
    for hash in hashes {
        if let Some(schema) = store.schema(&hash).await? {
            write_line(out, &ExportLine::Schema { hash, schema })?;
            done.schemas += 1;
        }
    }
    let controls: BTreeMap<String, AgentControl> = store.agent_controls().await?;
    for (agent, control) in controls {
        write_line(out, &ExportLine::Control { agent, control })?;
        done.controls += 1;
    }
    out.flush()
        .map_err(|source| StoreError::Io { context: "writing the export".into(), source })?;
    Ok(done)
}

/// Reads an export from `input` into `store`. A line that is not part of an export is refused
/// with its number; the lines before it are imported (importing again skips them).
pub async fn import<S: Store + ?Sized>(
    store: &S,
    input: &mut dyn BufRead,
) -> Result<Transferred, StoreError> {
    let mut done = Transferred::default();
    let mut line = String::new();
    let mut number = 0;
    let mut header = false;
    loop {
        line.clear();
        let read = input
            .read_line(&mut line)
            .map_err(|source| StoreError::Io { context: "reading the export".into(), source })?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ExportLine = serde_json::from_str(&line).map_err(|e| {
            StoreError::InvalidRequest(format!(
                "line {number} is not part of a steadfast export: {e}"
            ))
        })?;
        if !header && !matches!(parsed, ExportLine::Header { .. }) {
            return Err(StoreError::InvalidRequest(format!(
                "line {number}: a steadfast export starts with its header line"
            )));
        }
        match parsed {
            ExportLine::Header { format } if format > EXPORT_FORMAT => {
                return Err(StoreError::InvalidRequest(format!(
                    "the export has format {format}, newer than this steadfast reads \
                     ({EXPORT_FORMAT}); upgrade steadfast"
                )));
            }
            ExportLine::Header { .. } => header = true,
            ExportLine::Run(archive) => {
                if store.restore(*archive).await? {
                    done.runs += 1;
                } else {
                    done.skipped += 1;
                }
            }
            ExportLine::Schema { hash, schema } => {
                store.put_schema(&hash, &schema).await?;
                done.schemas += 1;
            }
            ExportLine::Control { agent, control } => {
                store.set_agent_control(&agent, Some(control)).await?;
                done.controls += 1;
            }
        }
    }
    Ok(done)
}
