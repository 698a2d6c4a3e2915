//! The run lifecycle as a graph of nodes and edges, for tools that draw it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::lifecycle::RunState;
use crate::machine::StateMachine;

/// The lifecycle as nodes and edges: what `steadfast graph --json` prints and the API's
/// `/graph/lifecycle` answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct LifecycleGraph {
    /// Always `lifecycle`.
    pub name: String,
    /// Every state.
    pub nodes: Vec<LifecycleNode>,
    /// Every allowed move, `[from, to]`.
    pub edges: Vec<(RunState, RunState)>,
}

/// A state of the [`LifecycleGraph`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct LifecycleNode {
    /// The state.
    pub id: RunState,
    /// Whether runs start here.
    pub initial: bool,
    /// Whether nothing moves out of it.
    pub terminal: bool,
}

impl LifecycleGraph {
    /// The lifecycle of [`RunState`], from its declared transitions.
    pub fn of_runs() -> Self {
        let nodes = RunState::STATES
            .iter()
            .map(|&s| LifecycleNode {
                id: s,
                initial: s == RunState::INITIAL,
                terminal: s.is_terminal(),
            })
            .collect();
        LifecycleGraph { name: "lifecycle".into(), nodes, edges: RunState::TRANSITIONS.to_vec() }
    }
}

/// The lifecycle as `{"name": "lifecycle", "nodes": [{id, initial, terminal}], "edges":
/// [[from, to]]}` (the JSON of [`LifecycleGraph::of_runs`]).
pub fn lifecycle_graph() -> Value {
    serde_json::to_value(LifecycleGraph::of_runs()).expect("the graph is plain data")
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_state_is_a_node_and_every_move_an_edge() {
        let graph = super::lifecycle_graph();
        assert_eq!(graph["nodes"].as_array().unwrap().len(), 7);
        assert_eq!(
            graph["nodes"][0],
            serde_json::json!({"id": "queued", "initial": true, "terminal": false})
        );
        assert!(
            graph["edges"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(["queued", "processing"]))
        );
    }
}
