//! The lifecycle and a pipeline's stages as SVG, drawn by the server. Names (of pipelines and
//! agents, which programs choose) are escaped for XML; the rest is numbers and fixed words.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::lifecycle::RunState;
use crate::machine::StateMachine;
use crate::pipeline::PipelineGraph;
use crate::view::LifecycleGraph;

/// `text` escaped for XML text and attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The fill of a node in `state` (the pages' state colours).
fn fill(state: Option<RunState>) -> &'static str {
    match state {
        Some(RunState::Succeeded) => "#dff3e6",
        Some(RunState::FailedPermanent) => "#f8e0e1",
        Some(RunState::NeedsReview | RunState::FailedTransient) => "#fbefd5",
        Some(RunState::Processing | RunState::WaitingExternal) => "#e2ecf8",
        Some(RunState::Queued) => "#eceff2",
        None => "#ffffff",
    }
}

const ARROW: &str = r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#5b6670"/></marker></defs>"##;

/// The lifecycle: states in columns by their distance from the initial one, every allowed
/// move an arrow (moves back to an earlier column curve below).
pub(super) fn lifecycle(graph: &LifecycleGraph) -> String {
    // Columns: the states runs pass through by their distance from the initial one, then
    // the terminal states together in a last column, so every move towards an end points
    // right and only the moves back (a retry, a replay, an approval) point left.
    let terminal = |s: &RunState| graph.nodes.iter().any(|n| n.id == *s && n.terminal);
    let mut depth: BTreeMap<RunState, usize> = BTreeMap::new();
    let initial = graph.nodes.iter().find(|n| n.initial).map_or(RunState::INITIAL, |n| n.id);
    depth.insert(initial, 0);
    let mut frontier = std::collections::VecDeque::from([initial]);
    while let Some(state) = frontier.pop_front() {
        let d = depth[&state];
        for (from, to) in &graph.edges {
            if *from == state && !terminal(to) && !depth.contains_key(to) {
                depth.insert(*to, d + 1);
                frontier.push_back(*to);
            }
        }
    }
    let last = depth.values().max().copied().unwrap_or(0) + 1;
    for node in graph.nodes.iter().filter(|n| n.terminal) {
        depth.insert(node.id, last);
    }
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let mut at: BTreeMap<RunState, (f64, f64)> = BTreeMap::new();
    for node in &graph.nodes {
        let column = depth.get(&node.id).copied().unwrap_or(0);
        let row = rows.entry(column).or_default();
        at.insert(node.id, (30.0 + 210.0 * column as f64, 30.0 + 62.0 * *row as f64));
        *row += 1;
    }
    let (w, h) = (170.0, 36.0);
    let width = at.values().map(|p| p.0).fold(0.0, f64::max) + w + 30.0;
    let height = at.values().map(|p| p.1).fold(0.0, f64::max) + h + 60.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" aria-label="The run lifecycle" class="diagram">{ARROW}"#
    );
    for (from, to) in &graph.edges {
        let ((x1, y1), (x2, y2)) = (at[from], at[to]);
        let (sx, sy) = (x1 + w, y1 + h / 2.0);
        let (ex, ey) = (x2, y2 + h / 2.0);
        if x2 > x1 {
            let _ = write!(
                svg,
                r##"<path d="M{sx},{sy} C{},{sy} {},{ey} {ex},{ey}" fill="none" stroke="#5b6670" marker-end="url(#arrow)"/>"##,
                sx + 30.0,
                ex - 30.0
            );
        } else {
            // Back to an earlier column: from the node's bottom, under the rows, to the target's.
            let (bx, by) = (x1 + w / 2.0, y1 + h);
            let (tx, ty) = (x2 + w / 2.0, y2 + h);
            let low = height - 8.0;
            let _ = write!(
                svg,
                r##"<path d="M{bx},{by} C{bx},{low} {tx},{low} {tx},{ty}" fill="none" stroke="#9aa4ad" stroke-dasharray="4 3" marker-end="url(#arrow)"/>"##
            );
        }
    }
    for node in &graph.nodes {
        let (x, y) = at[&node.id];
        let stroke = if node.terminal { "#1d232a" } else { "#5b6670" };
        let width = if node.initial || node.terminal { 2 } else { 1 };
        let _ = write!(
            svg,
            r##"<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="{}" stroke="{stroke}" stroke-width="{width}"/><text x="{}" y="{}" font-size="13" text-anchor="middle" fill="#1d232a">{}</text>"##,
            fill(Some(node.id)),
            x + w / 2.0,
            y + h / 2.0 + 4.5,
            node.id.name()
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A pipeline's stages left to right; with `states`, each stage node coloured by the state of
/// its run (for a pipeline run's page), and its state written under it.
pub(super) fn pipeline(graph: &PipelineGraph, states: &BTreeMap<u32, Vec<RunState>>) -> String {
    let (w, h, gap) = (190.0, 44.0, 40.0);
    let width = graph.nodes.len() as f64 * (w + gap) - gap + 20.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} 96" role="img" aria-label="The stages of {}" class="diagram">{ARROW}"#,
        escape(&graph.name)
    );
    for (i, node) in graph.nodes.iter().enumerate() {
        let x = 10.0 + i as f64 * (w + gap);
        let stage = node.id.strip_prefix('s').and_then(|k| k.parse::<u32>().ok());
        let runs = stage.and_then(|k| states.get(&k)).map_or(&[][..], Vec::as_slice);
        let state = summary(runs);
        let round = if matches!(node.kind, "input" | "output") { 22 } else { 6 };
        let _ = write!(
            svg,
            r##"<rect x="{x}" y="10" width="{w}" height="{h}" rx="{round}" fill="{}" stroke="#5b6670"/>"##,
            fill(state)
        );
        let label = match (node.kind, node.concurrency) {
            ("fan_out", Some(n)) => format!("{} ×{n}", node.label),
            ("input", _) => "input".to_owned(),
            ("output", _) => "output".to_owned(),
            _ => node.label.clone(),
        };
        let _ = write!(
            svg,
            r##"<text x="{}" y="37" font-size="12" text-anchor="middle" fill="#1d232a">{}</text>"##,
            x + w / 2.0,
            escape(&label)
        );
        if !runs.is_empty() {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for run in runs {
                *counts.entry(run.name()).or_default() += 1;
            }
            let text: Vec<String> = if runs.len() == 1 {
                vec![runs[0].name().to_owned()]
            } else {
                counts.iter().map(|(s, n)| format!("{n} {s}")).collect()
            };
            let _ = write!(
                svg,
                r##"<text x="{}" y="76" font-size="11" text-anchor="middle" fill="#5b6670">{}</text>"##,
                x + w / 2.0,
                text.join(" · ")
            );
        }
        if i + 1 < graph.nodes.len() {
            let _ = write!(
                svg,
                r##"<line x1="{}" y1="32" x2="{}" y2="32" stroke="#5b6670" marker-end="url(#arrow)"/>"##,
                x + w,
                x + w + gap
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The colour a stage's runs give it: its run's state; for a fan-out's items, in progress
/// while any is, succeeded when all did, else the state that needs a look (review, then dead).
fn summary(runs: &[RunState]) -> Option<RunState> {
    match runs {
        [] => None,
        [one] => Some(*one),
        _ if runs.iter().any(|s| {
            matches!(
                s,
                RunState::Queued
                    | RunState::Processing
                    | RunState::WaitingExternal
                    | RunState::FailedTransient
            )
        }) =>
        {
            Some(RunState::Processing)
        }
        _ if runs.iter().all(|s| *s == RunState::Succeeded) => Some(RunState::Succeeded),
        _ if runs.contains(&RunState::NeedsReview) => Some(RunState::NeedsReview),
        _ => Some(RunState::FailedPermanent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fan_out_is_coloured_by_what_needs_a_look() {
        use RunState::*;
        assert_eq!(summary(&[]), None);
        assert_eq!(summary(&[FailedPermanent]), Some(FailedPermanent));
        assert_eq!(summary(&[Succeeded, Queued, FailedPermanent]), Some(Processing));
        assert_eq!(summary(&[Succeeded, Succeeded]), Some(Succeeded));
        assert_eq!(summary(&[Succeeded, FailedPermanent, NeedsReview]), Some(NeedsReview));
        assert_eq!(summary(&[Succeeded, FailedPermanent]), Some(FailedPermanent));
    }

    #[test]
    fn names_are_escaped_and_every_state_is_drawn() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let svg = lifecycle(&LifecycleGraph::of_runs());
        for state in RunState::STATES {
            assert!(svg.contains(&format!(">{}</text>", state.name())), "{state}");
        }
        assert_eq!(svg.matches("marker-end").count(), RunState::TRANSITIONS.len());
    }
}
