//! How records are laid out in sled: [`StoredRun`], the part of a run that changes with every
//! move, in a compact binary encoding (postcard); the input, output and signal payloads live
//! in their own trees as JSON, written once each, so a move rewrites ~100 bytes instead of the
//! whole run. (sled rewrites a leaf of up to 16 entries every 10 updates, so the size of what
//! a move rewrites is multiplied many times over in bytes written.)

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::lifecycle::{RunId, RunState};
use crate::store::{ErrorInfo, Lease, RunRecord, StoreError};

/// The mutable part of a run, as stored in the `runs` tree (keyed by the run id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct StoredRun {
    pub(super) agent: String,
    pub(super) state: RunState,
    pub(super) idempotency_key: String,
    pub(super) attempt: u32,
    pub(super) due_at: Option<Timestamp>,
    pub(super) lease: Option<Lease>,
    pub(super) fence: u64,
    pub(super) parent: Option<[u8; 16]>,
    pub(super) stage: Option<u32>,
    pub(super) input_schema: Option<String>,
    pub(super) output_schema: Option<String>,
    pub(super) concurrency_key: Option<String>,
    pub(super) waiting_for: Option<String>,
    pub(super) review_note: Option<String>,
    pub(super) last_error: Option<ErrorInfo>,
    pub(super) moves: u32,
    pub(super) format: u32,
    pub(super) created_at: Timestamp,
    pub(super) updated_at: Timestamp,
}

impl StoredRun {
    /// The fields a move changes.
    pub(super) fn fields(&mut self) -> crate::store::MoveFields<'_> {
        crate::store::MoveFields {
            state: &mut self.state,
            due_at: &mut self.due_at,
            lease: &mut self.lease,
            attempt: &mut self.attempt,
            fence: &mut self.fence,
            waiting_for: &mut self.waiting_for,
            review_note: &mut self.review_note,
            last_error: &mut self.last_error,
        }
    }

    /// The full record, with the payloads read from their trees.
    pub(super) fn into_record(
        self,
        id: RunId,
        input: Value,
        output: Option<Value>,
        signal: Option<Value>,
    ) -> RunRecord {
        RunRecord {
            id,
            agent: self.agent,
            state: self.state,
            input,
            output,
            idempotency_key: self.idempotency_key,
            attempt: self.attempt,
            due_at: self.due_at,
            lease: self.lease,
            fence: self.fence,
            parent: self.parent.map(RunId::from_bytes),
            stage: self.stage,
            input_schema: self.input_schema,
            output_schema: self.output_schema,
            concurrency_key: self.concurrency_key,
            waiting_for: self.waiting_for,
            signal,
            review_note: self.review_note,
            last_error: self.last_error,
            moves: self.moves,
            format: self.format,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
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

    #[test]
    fn a_moving_run_is_small_and_round_trips() {
        let stored = StoredRun {
            agent: "classifier".into(),
            state: RunState::Processing,
            idempotency_key: "classifier:5f2c9a7e41d3b6a8".into(),
            attempt: 2,
            due_at: None,
            lease: Some(Lease {
                owner: "w1".into(),
                token: 7,
                expires_at: Timestamp::from_millis(1_800_000_030_000),
            }),
            fence: 7,
            parent: Some(RunId::new().to_bytes()),
            stage: Some(1),
            input_schema: Some("a1b2c3d4e5f60718".into()),
            output_schema: Some("0918f7e6d5c4b3a2".into()),
            concurrency_key: None,
            waiting_for: None,
            review_note: None,
            last_error: Some(ErrorInfo::new(Fault::Transient, "HTTP 503")),
            moves: 5,
            format: 1,
            created_at: Timestamp::from_millis(1_800_000_000_000),
            updated_at: Timestamp::from_millis(1_800_000_001_000),
        };
        let bytes = to_bin(&stored);
        assert!(bytes.len() < 160, "{} bytes", bytes.len());
        assert_eq!(from_bin::<StoredRun>("runs", &bytes).unwrap(), stored);
        assert!(matches!(
            from_bin::<StoredRun>("runs", b"\xff"),
            Err(StoreError::Corrupt { tree: "runs", .. })
        ));
    }
}
