//! [`RuntimeError`]: an operation was refused or failed; nothing was changed by a refusal.

use crate::lifecycle::{RunId, RunState};
use crate::schema::SchemaError;
use crate::store::StoreError;

/// Why a runtime operation did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No agent of that name is registered.
    #[error("no agent named `{name}` is registered (registered: {known})")]
    UnknownAgent {
        /// The name asked for.
        name: String,
        /// The registered names.
        known: String,
    },
    /// Two agents were registered under one name.
    #[error("an agent named `{0}` is registered twice")]
    DuplicateAgent(String),
    /// The runtime was built without a store.
    #[error("no store: call `Runtime::builder().store(...)`")]
    NoStore,
    /// The submitted input does not fit the agent's input type; nothing was stored.
    #[error("input for `{agent}` rejected: {source}")]
    InvalidInput {
        /// The agent.
        agent: String,
        /// Every violation.
        #[source]
        source: SchemaError,
    },
    /// An operator's output does not fit the agent's output type; nothing was changed.
    #[error("output for run {run} rejected: {source}")]
    InvalidOutput {
        /// The run.
        run: RunId,
        /// Every violation.
        #[source]
        source: SchemaError,
    },
    /// An output for a run of an agent this process does not register, and the store kept
    /// no schema to check it against; nothing was changed.
    #[error(
        "run {run} is a run of `{agent}`, which is not registered here, and the store kept no schema of its output to check against; resolve it from a program that registers `{agent}`"
    )]
    NoSchema {
        /// The run.
        run: RunId,
        /// Its agent.
        agent: String,
    },
    /// The value could not be turned into JSON.
    #[error("the value is not representable as JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The run is in a state the operation does not apply to; nothing was changed.
    #[error("run {run} is `{state}`; {action} is allowed only from {allowed}")]
    Refused {
        /// The run.
        run: RunId,
        /// Its state.
        state: RunState,
        /// What was asked (`approve`, `replay`, ...).
        action: &'static str,
        /// The states it is allowed from, written out.
        allowed: String,
    },
    /// The run waits for another signal.
    #[error("run {run} waits for signal `{waiting}`, not `{sent}`")]
    WrongSignal {
        /// The run.
        run: RunId,
        /// The signal it waits for.
        waiting: String,
        /// The signal sent.
        sent: String,
    },
    /// A replay under a changed input type, refused unless forced.
    #[error(
        "run {run} was created with input schema {stored}, but `{agent}` now has {current}; replay with force to run it anyway"
    )]
    SchemaChanged {
        /// The run.
        run: RunId,
        /// Its agent.
        agent: String,
        /// The schema hash stored with the run.
        stored: String,
        /// The agent's schema hash now.
        current: String,
    },
    /// No such run.
    #[error("run {0} does not exist")]
    NotFound(RunId),
    /// The request is malformed (an empty note, a signal name the runtime keeps for itself);
    /// nothing was changed.
    #[error("{0}")]
    InvalidRequest(String),
    /// The run moved while the operation ran; nothing was changed by this operation.
    #[error("run {run} moved to `{current}` while the operation ran; look again and retry")]
    Raced {
        /// The run.
        run: RunId,
        /// Its state now.
        current: RunState,
    },
    /// The agent's runs are made by the program only (a pipeline's stage, a notifier, or an
    /// agent registered with `AgentOptions::internal`): not submitted from outside.
    #[error("`{agent}` cannot be submitted from outside the program: {why}")]
    NotSubmittable {
        /// The agent.
        agent: String,
        /// Why: what the agent is.
        why: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::fault::Classify for RuntimeError {
    /// The store failing is classified as the store says (a full disk is a resource fault);
    /// a run that moved meanwhile is transient (look again and retry); every other refusal
    /// is permanent: the same call would be refused again.
    fn fault(&self) -> crate::fault::Fault {
        use crate::fault::Fault;
        match self {
            RuntimeError::Store(error) => error.fault(),
            RuntimeError::Raced { .. } => Fault::Transient,
            _ => Fault::Permanent,
        }
    }
}
