//! What the demo's digest run came to: printed as text, or as one JSON document (`--json`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use steadfast::agents::{Labeled, LabeledBy, Receipt, Report};
use steadfast::cli::{CliError, Session};
use steadfast::prelude::*;
use steadfast::store::{ListQuery, RunRecord};

/// A run held or failed, and why.
#[derive(Debug, Serialize)]
pub(crate) struct Why {
    id: RunId,
    why: String,
}

/// Who labelled the edition's items.
#[derive(Debug, Default, Serialize)]
pub(crate) struct LabelledBy {
    /// By the model, through the schema gate.
    model: usize,
    /// By the rules (with `--llm`: the model gave no valid label).
    rules: usize,
    /// By an operator (resolved, or approved with a label in the note).
    operator: usize,
    /// Why the model's answers fell back to the rules (distinct reasons, with counts).
    fallback_reasons: BTreeMap<String, usize>,
}

/// The summary of one digest run.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    run: RunId,
    edition: String,
    pub(crate) state: RunState,
    took_secs: Option<f64>,
    runs_by_state: BTreeMap<String, usize>,
    stage_runs: usize,
    report: Option<Report>,
    mail: Option<Receipt>,
    why: Option<String>,
    labelled_by: LabelledBy,
    model: Option<String>,
    review: Vec<Why>,
    dead_letters: Vec<Why>,
    /// The collector's notes: files skipped, items left out over the cap.
    collector_notes: Vec<String>,
}

impl Summary {
    pub(crate) async fn load(
        rt: &Runtime,
        run: RunId,
        edition: &str,
        took: Option<Duration>,
        model: Option<&str>,
    ) -> Result<Summary, CliError> {
        let store = rt.store();
        let record = store.get(run).await.map_err(CliError::from_store)?.ok_or_else(|| {
            CliError::store(format!("the digest run {run} vanished from the store"))
        })?;
        let stages = store
            .list(ListQuery::new().parent(run).oldest_first().limit(10_000))
            .await
            .map_err(CliError::from_store)?
            .runs;
        let mut runs_by_state = BTreeMap::new();
        for r in std::iter::once(&record).chain(&stages) {
            *runs_by_state.entry(r.state.to_string()).or_default() += 1;
        }
        let output = |stage: u32| -> Option<serde_json::Value> {
            stages
                .iter()
                .find(|r| r.stage == Some(stage) && r.state == RunState::Succeeded)?
                .output
                .clone()
        };
        let mut labelled_by = LabelledBy::default();
        for item in stages.iter().filter(|r| r.stage == Some(1) && r.state == RunState::Succeeded) {
            let Some(labeled) =
                item.output.clone().and_then(|v| serde_json::from_value::<Labeled>(v).ok())
            else {
                continue;
            };
            match labeled.by {
                LabeledBy::Model { .. } => labelled_by.model += 1,
                LabeledBy::Rules { .. } => {
                    labelled_by.rules += 1;
                    if model.is_some() {
                        let reason = fallback_reason(rt, item).await;
                        *labelled_by.fallback_reasons.entry(reason).or_default() += 1;
                    }
                }
                _ => labelled_by.operator += 1,
            }
        }
        let mut review = Vec::new();
        for r in stages.iter().filter(|r| r.state == RunState::NeedsReview) {
            let why = store
                .history(r.id)
                .await
                .ok()
                .and_then(|h| h.last().map(|e| e.reason.clone()))
                .unwrap_or_default();
            review.push(Why { id: r.id, why });
        }
        let dead_letters = stages
            .iter()
            .filter(|r| r.state == RunState::FailedPermanent)
            .map(|r| Why {
                id: r.id,
                why: r.last_error.as_ref().map(|e| e.to_string()).unwrap_or_default(),
            })
            .collect();
        let collector_notes = match stages.iter().find(|r| r.stage == Some(0)) {
            Some(collector) => store
                .notes(collector.id)
                .await
                .map_err(CliError::from_store)?
                .into_iter()
                .map(|n| n.text)
                .collect(),
            None => Vec::new(),
        };
        Ok(Summary {
            run,
            edition: edition.to_owned(),
            state: record.state,
            took_secs: took.map(|d| d.as_secs_f64()),
            runs_by_state,
            stage_runs: stages.len(),
            report: output(2).and_then(|v| serde_json::from_value(v).ok()),
            mail: output(3).and_then(|v| serde_json::from_value(v).ok()),
            why: record
                .last_error
                .as_ref()
                .filter(|_| record.state != RunState::Succeeded)
                .map(|e| e.to_string()),
            labelled_by,
            model: model.map(str::to_owned),
            review,
            dead_letters,
            collector_notes,
        })
    }

    pub(crate) fn print(&self, session: &Session) -> Result<(), CliError> {
        let took = self.took_secs.map(|s| format!(" in {s:.1} s")).unwrap_or_default();
        say!("Digest run {}: {}{took}", self.run, self.state)?;
        let shown: Vec<String> = RunState::STATES
            .iter()
            .filter_map(|s| self.runs_by_state.get(s.name()).map(|n| format!("{s} {n}")))
            .collect();
        say!(
            "  runs     {} (the pipeline and its {} stage runs)",
            shown.join(" · "),
            self.stage_runs
        )?;
        if let Some(report) = &self.report {
            say!("  report   {}", report.markdown_path)?;
            say!("           {}", report.html_path)?;
            let counts: Vec<String> =
                report.counts.iter().map(|(l, n)| format!("{l} {n}")).collect();
            match report.total {
                0 => say!("  labels   none: no item was labelled")?,
                n => say!("  labels   {} ({n} items)", counts.join(" · "))?,
            }
        }
        if let Some(model) = &self.model {
            let by = &self.labelled_by;
            say!(
                "  labelled by the model `{model}`: {}; by the rules as the fallback: {}{}",
                by.model,
                by.rules,
                if by.operator > 0 {
                    format!("; by an operator: {}", by.operator)
                } else {
                    String::new()
                }
            )?;
            for (reason, n) in &by.fallback_reasons {
                say!("           {n} fell back: {reason}")?;
            }
        }
        if let Some(receipt) = &self.mail {
            match &receipt.path {
                _ if !receipt.sent => say!("  mail     not sent: the digest is empty")?,
                Some(path) => say!("  mail     {path}")?,
                None => say!(
                    "  mail     sent via {} to {}",
                    receipt.transport,
                    receipt.recipients.join(", ")
                )?,
            }
            if receipt.sent {
                say!("           Subject: {}", receipt.subject)?;
                say!("           Message-ID: {}", receipt.message_id)?;
            }
        }
        if let Some(why) = &self.why {
            say!("  why      {why}")?;
        }
        if !self.review.is_empty() {
            say!("\nHeld for review ({}), left out of this digest:", self.review.len())?;
            for r in &self.review {
                say!("  {}  {}", r.id, r.why)?;
            }
        }
        if !self.dead_letters.is_empty() {
            say!("\nDead letters ({}):", self.dead_letters.len())?;
            for r in &self.dead_letters {
                say!("  {}  {}", r.id, r.why)?;
            }
        }
        let skipped: Vec<&String> =
            self.collector_notes.iter().filter(|n| n.starts_with("skipped ")).collect();
        if !skipped.is_empty() {
            say!("\nSkipped while collecting ({}):", skipped.len())?;
            for note in skipped {
                say!("  {}", note.strip_prefix("skipped ").unwrap_or(note))?;
            }
        }
        for note in self.collector_notes.iter().filter(|n| !n.starts_with("skipped ")) {
            say!("\nCollector: {note}")?;
        }

        let data = session.data_dir().display();
        say!("\nNext:")?;
        say!("  steadfast runs list --data {data}            every run, newest first")?;
        say!(
            "  steadfast runs show <RUN> --data {data}      a run's input, output, history and effects"
        )?;
        say!("  steadfast review list --data {data}          what waits for a person")?;
        say!(
            "  steadfast review show <RUN> --data {data}    why, and the output `resolve` expects"
        )?;
        say!(
            "  steadfast demo --data {data}                 again: nothing new is done, no mail is sent"
        )
    }
}

/// Why the model's answer for `item` fell back to the rules, from its journaled `classify`
/// effect (or its last error when the model never answered).
async fn fallback_reason(rt: &Runtime, item: &RunRecord) -> String {
    let effects = rt.store().effects(item.id).await.unwrap_or_default();
    let journaled = effects
        .iter()
        .find(|e| e.name == "classify")
        .and_then(|e| e.result.get("reason").and_then(|r| r.as_str()).map(str::to_owned));
    journaled.unwrap_or_else(|| "the model gave no answer that passed the schema gate".to_owned())
}
