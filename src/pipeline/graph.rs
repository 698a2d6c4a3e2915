//! A pipeline's shape as data: its stages as nodes and edges, drawn as Mermaid or Graphviz,
//! or given as JSON (`steadfast graph NAME --json`).

use std::fmt::Write as _;

use serde::Serialize;

use super::FanIn;

/// A pipeline's stages as a graph: the input, one node per stage, the output, and an edge
/// from each to the next.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct PipelineGraph {
    /// The pipeline's name.
    pub name: String,
    /// The input, the stages in order, and the output.
    pub nodes: Vec<GraphNode>,
    /// `(from, to)` node ids.
    pub edges: Vec<(String, String)>,
}

/// A node of a [`PipelineGraph`].
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct GraphNode {
    /// Its id in the graph (`input`, `s0`, `s1`, …, `output`).
    pub id: String,
    /// `input`, `stage`, `fan_out` or `output`.
    pub kind: &'static str,
    /// A stage's agent as registered (`digest.1.classifier`); the pipeline's name for the
    /// input and output.
    pub label: String,
    /// A fan-out stage's concurrency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// A fan-out stage's fan-in, in words (`all must succeed`, `at least 3 must succeed`,
    /// `80% must succeed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_in: Option<String>,
}

impl PipelineGraph {
    pub(super) fn new<'a>(
        name: &str,
        stages: impl IntoIterator<Item = (&'a str, Option<(usize, FanIn)>)>,
    ) -> Self {
        let end = |id: &str, kind| GraphNode {
            id: id.to_owned(),
            kind,
            label: name.to_owned(),
            concurrency: None,
            fan_in: None,
        };
        let mut nodes = vec![end("input", "input")];
        for (k, (registered, fan_out)) in stages.into_iter().enumerate() {
            nodes.push(GraphNode {
                id: format!("s{k}"),
                kind: if fan_out.is_some() { "fan_out" } else { "stage" },
                label: registered.to_owned(),
                concurrency: fan_out.map(|(n, _)| n),
                fan_in: fan_out.map(|(_, f)| f.to_string()),
            });
        }
        nodes.push(end("output", "output"));
        let edges = nodes.windows(2).map(|w| (w[0].id.clone(), w[1].id.clone())).collect();
        PipelineGraph { name: name.to_owned(), nodes, edges }
    }

    fn text(node: &GraphNode) -> String {
        match (node.kind, node.concurrency, &node.fan_in) {
            ("input", ..) => format!("{} input", node.label),
            ("output", ..) => format!("{} output", node.label),
            (_, Some(n), Some(fan_in)) => format!("{} ×{n} ({fan_in})", node.label),
            _ => node.label.clone(),
        }
    }

    /// The stages as a Mermaid flowchart.
    pub fn mermaid(&self) -> String {
        let mut out = "flowchart LR\n".to_owned();
        for node in &self.nodes {
            let text = Self::text(node).replace('"', "#quot;");
            let _ = match node.kind {
                "input" | "output" => writeln!(out, "    {}([\"{text}\"])", node.id),
                "fan_out" => writeln!(out, "    {}[[\"{text}\"]]", node.id),
                _ => writeln!(out, "    {}[\"{text}\"]", node.id),
            };
        }
        for (from, to) in &self.edges {
            let _ = writeln!(out, "    {from} --> {to}");
        }
        out
    }

    /// The stages as a Graphviz `digraph`.
    pub fn dot(&self) -> String {
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = format!("digraph \"{}\" {{\n    rankdir=LR;\n", quote(&self.name));
        for node in &self.nodes {
            let shape = match node.kind {
                "input" | "output" => "oval",
                "fan_out" => "box3d",
                _ => "box",
            };
            let _ = writeln!(
                out,
                "    {} [label=\"{}\", shape={shape}];",
                node.id,
                quote(&Self::text(node))
            );
        }
        for (from, to) in &self.edges {
            let _ = writeln!(out, "    {from} -> {to};");
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_has_the_stages_in_order_in_every_form() {
        let graph = PipelineGraph::new(
            "digest",
            [("digest.0.collector", None), ("digest.1.classifier", Some((8, FanIn::All)))],
        );
        let ids: Vec<&str> = graph.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["input", "s0", "s1", "output"]);
        assert_eq!(graph.edges.len(), 3);
        assert!(graph.mermaid().contains("s1[[\"digest.1.classifier ×8 (all must succeed)\"]]"));
        assert!(graph.mermaid().contains("s0 --> s1"));
        assert!(
            graph
                .dot()
                .contains("s1 [label=\"digest.1.classifier ×8 (all must succeed)\", shape=box3d];")
        );
        let json = serde_json::to_value(&graph).unwrap();
        assert_eq!(json["nodes"][2]["concurrency"], 8);
        assert_eq!(json["edges"][0], serde_json::json!(["input", "s0"]));
    }
}
