//! The run lifecycle as a graph of nodes and edges, for tools that draw it.

use serde_json::{Value, json};

use crate::lifecycle::RunState;
use crate::machine::StateMachine;

/// The lifecycle as `{"name": "lifecycle", "nodes": [{id, initial, terminal}], "edges":
/// [[from, to]]}` (what `steadfast graph --json` prints and the API's `/graph/lifecycle`
/// answers).
pub fn lifecycle_graph() -> Value {
    let nodes: Vec<Value> = RunState::STATES
        .iter()
        .map(|s| json!({"id": s.name(), "initial": *s == RunState::INITIAL, "terminal": s.is_terminal()}))
        .collect();
    let edges: Vec<Value> =
        RunState::TRANSITIONS.iter().map(|(a, b)| json!([a.name(), b.name()])).collect();
    json!({"name": "lifecycle", "nodes": nodes, "edges": edges})
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_state_is_a_node_and_every_move_an_edge() {
        let graph = super::lifecycle_graph();
        assert_eq!(graph["nodes"].as_array().unwrap().len(), 7);
        assert!(
            graph["edges"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(["queued", "processing"]))
        );
    }
}
