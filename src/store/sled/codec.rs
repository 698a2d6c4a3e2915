//! How records are laid out in sled: [`StoredRun`], the part of a run that changes with every
//! move, in a compact binary encoding (postcard); the input, output and signal payloads live
//! in their own trees as JSON, written once each, so a move rewrites ~100 bytes instead of the
//! whole run. (sled rewrites a leaf of up to 16 entries every 10 updates, so the size of what
//! a move rewrites is multiplied many times over in bytes written.)

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::lifecycle::{RunId, RunState};
use crate::store::{ErrorInfo, Lease, RunHead, StoreError};

/// A run's head as stored in the `runs` tree (keyed by the run id): [`RunHead`] with its
/// parent as 16 bytes, in this field order (the layout of every database written so far).
#[derive(Deserialize)]
struct StoredRun {
    agent: String,
    state: RunState,
    idempotency_key: String,
    attempt: u32,
    due_at: Option<Timestamp>,
    lease: Option<Lease>,
    fence: u64,
    parent: Option<[u8; 16]>,
    stage: Option<u32>,
    input_schema: Option<String>,
    output_schema: Option<String>,
    concurrency_key: Option<String>,
    waiting_for: Option<String>,
    review_note: Option<String>,
    last_error: Option<ErrorInfo>,
    moves: u32,
    format: u32,
    created_at: Timestamp,
    updated_at: Timestamp,
}

/// [`StoredRun`] borrowed from a [`RunHead`], to encode it without a copy.
#[derive(Serialize)]
struct StoredRunRef<'a> {
    agent: &'a str,
    state: RunState,
    idempotency_key: &'a str,
    attempt: u32,
    due_at: Option<Timestamp>,
    lease: Option<&'a Lease>,
    fence: u64,
    parent: Option<[u8; 16]>,
    stage: Option<u32>,
    input_schema: Option<&'a str>,
    output_schema: Option<&'a str>,
    concurrency_key: Option<&'a str>,
    waiting_for: Option<&'a str>,
    review_note: Option<&'a str>,
    last_error: Option<&'a ErrorInfo>,
    moves: u32,
    format: u32,
    created_at: Timestamp,
    updated_at: Timestamp,
}

/// Encodes a run's head for the `runs` tree.
pub(super) fn encode_run(run: &RunHead) -> Vec<u8> {
    to_bin(&StoredRunRef {
        agent: &run.agent,
        state: run.state,
        idempotency_key: &run.idempotency_key,
        attempt: run.attempt,
        due_at: run.due_at,
        lease: run.lease.as_ref(),
        fence: run.fence,
        parent: run.parent.map(RunId::to_bytes),
        stage: run.stage,
        input_schema: run.input_schema.as_deref(),
        output_schema: run.output_schema.as_deref(),
        concurrency_key: run.concurrency_key.as_deref(),
        waiting_for: run.waiting_for.as_deref(),
        review_note: run.review_note.as_deref(),
        last_error: run.last_error.as_ref(),
        moves: run.moves,
        format: run.format,
        created_at: run.created_at,
        updated_at: run.updated_at,
    })
}

/// Decodes a run's head of the `runs` tree.
pub(super) fn decode_run(bytes: &[u8]) -> Result<RunHead, StoreError> {
    let run: StoredRun = from_bin("runs", bytes)?;
    Ok(RunHead {
        agent: run.agent,
        state: run.state,
        idempotency_key: run.idempotency_key,
        attempt: run.attempt,
        due_at: run.due_at,
        lease: run.lease,
        fence: run.fence,
        parent: run.parent.map(RunId::from_bytes),
        stage: run.stage,
        input_schema: run.input_schema,
        output_schema: run.output_schema,
        concurrency_key: run.concurrency_key,
        waiting_for: run.waiting_for,
        review_note: run.review_note,
        last_error: run.last_error,
        moves: run.moves,
        format: run.format,
        created_at: run.created_at,
        updated_at: run.updated_at,
    })
}

/// Encodes a record in the compact binary form.
pub(super) fn to_bin<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("records encode")
}

/// Decodes a record of the compact binary form, naming the tree on failure.
pub(super) fn from_bin<T: DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt { tree, source: Box::new(e) })
}

/// Encodes a JSON payload or record.
pub(super) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize to JSON")
}

/// Decodes a JSON payload or record, naming the tree on failure.
pub(super) fn from_json<T: DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { tree, source: Box::new(e) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Fault;
    use serde_json::Value;

    #[test]
    fn a_moving_run_is_small_and_round_trips() {
        let mut stored = crate::store::backend::plan_create(
            RunId::new(),
            &crate::store::NewRun::new("classifier", "classifier:5f2c9a7e41d3b6a8", Value::Null)
                .child_of(RunId::new(), 1)
                .schemas("a1b2c3d4e5f60718", "0918f7e6d5c4b3a2"),
            Timestamp::from_millis(1_800_000_000_000),
        )
        .head;
        stored.state = RunState::Processing;
        stored.attempt = 2;
        stored.lease = Some(Lease {
            owner: "w1".into(),
            token: 7,
            expires_at: Timestamp::from_millis(1_800_000_030_000),
        });
        stored.fence = 7;
        stored.last_error = Some(ErrorInfo::new(Fault::Transient, "HTTP 503"));
        stored.moves = 5;
        let bytes = encode_run(&stored);
        assert!(bytes.len() < 160, "{} bytes", bytes.len());
        assert_eq!(decode_run(&bytes).unwrap(), stored);
        assert!(matches!(decode_run(b"\xff"), Err(StoreError::Corrupt { tree: "runs", .. })));
    }
}
