//! Key layouts of the trees. Integers are big-endian so that keys sort in time and id order.

use crate::clock::Timestamp;
use crate::lifecycle::{RunId, RunState};
use crate::machine::StateMachine;

use crate::store::RunHead;

/// `ready` entries of runs waiting to be claimed (`queued`).
pub(super) const READY_QUEUED: u8 = 0;
/// `ready` entries of timers (`failed_transient` backoff, `waiting_external` timeout).
pub(super) const READY_TIMER: u8 = 1;

/// A key and its value.
pub(super) type KeyValue = (Vec<u8>, Vec<u8>);

pub(super) fn state_byte(state: RunState) -> u8 {
    state.index() as u8
}

/// `ready`: kind (1) | due (8) | id (16).
pub(super) fn ready_key(kind: u8, due: Timestamp, run: RunId) -> Vec<u8> {
    [&[kind][..], &due.to_be_bytes(), &run.to_bytes()].concat()
}

/// The id inside a `ready` key.
pub(super) fn ready_key_run(key: &[u8]) -> RunId {
    RunId::from_bytes(key[9..25].try_into().expect("ready key layout"))
}

/// The due time inside a `ready` key.
pub(super) fn ready_key_due(key: &[u8]) -> Timestamp {
    Timestamp::from_be_bytes(key[1..9].try_into().expect("ready key layout"))
}

/// `queue`: agent | 0 | due (8) | id (16): the queued runs of one agent in due order, so that
/// a claim for some agents never scans the others' runs.
pub(super) fn queue_key(agent: &str, due: Timestamp, run: RunId) -> Vec<u8> {
    [agent.as_bytes(), &[0], &due.to_be_bytes(), &run.to_bytes()].concat()
}

/// The (due time, id) inside a `queue` key of an agent whose name is `agent_len` bytes.
pub(super) fn queue_key_parts(key: &[u8], agent_len: usize) -> (Timestamp, RunId) {
    let at = agent_len + 1;
    let due = Timestamp::from_be_bytes(key[at..at + 8].try_into().expect("queue key layout"));
    (due, RunId::from_bytes(key[at + 8..at + 24].try_into().expect("queue key layout")))
}

/// `leases`: expiry (8) | id (16), value: the fencing token.
pub(super) fn lease_key(expires: Timestamp, run: RunId) -> Vec<u8> {
    [&expires.to_be_bytes()[..], &run.to_bytes()].concat()
}

/// The (expiry, id) of a `leases` key.
pub(super) fn lease_key_parts(key: &[u8]) -> (Timestamp, RunId) {
    let expires = Timestamp::from_be_bytes(key[0..8].try_into().expect("lease key layout"));
    (expires, RunId::from_bytes(key[8..24].try_into().expect("lease key layout")))
}

/// `by_state`: state (1) | id (16).
pub(super) fn state_key(state: RunState, run: RunId) -> Vec<u8> {
    [&[state_byte(state)][..], &run.to_bytes()].concat()
}

/// `history`, `effects`, `notes`: id (16) | suffix.
pub(super) fn run_key_with(run: RunId, suffix: &[u8]) -> Vec<u8> {
    [&run.to_bytes()[..], suffix].concat()
}

/// `keys`: agent | 0 | idempotency key.
pub(super) fn idempotency_key(agent: &str, key: &str) -> Vec<u8> {
    [agent.as_bytes(), &[0], key.as_bytes()].concat()
}

/// The id stored as a value (`keys`).
pub(super) fn run_from_value(value: &[u8]) -> RunId {
    RunId::from_bytes(value.try_into().expect("a run id is 16 bytes"))
}

/// The index entries a run has in its current state: (`by_state`, `ready`, `leases`).
/// The index entries of a run in its current state.
pub(super) struct Entries {
    pub(super) by_state: Vec<u8>,
    pub(super) ready: Option<KeyValue>,
    pub(super) queue: Option<Vec<u8>>,
    pub(super) lease: Option<KeyValue>,
}

pub(super) fn index_entries(id: RunId, run: &RunHead) -> Entries {
    let kind = match run.state {
        RunState::Queued => Some(READY_QUEUED),
        RunState::FailedTransient | RunState::WaitingExternal => Some(READY_TIMER),
        _ => None,
    };
    let ready = kind.zip(run.due_at).map(|(kind, due)| {
        let value = [&[state_byte(run.state)][..], run.agent.as_bytes()].concat();
        (ready_key(kind, due, id), value)
    });
    let lease = match (run.state, &run.lease) {
        (RunState::Processing, Some(lease)) => {
            Some((lease_key(lease.expires_at, id), lease.token.to_be_bytes().to_vec()))
        }
        _ => None,
    };
    let queue = match (run.state, run.due_at) {
        (RunState::Queued, Some(due)) => Some(queue_key(&run.agent, due, id)),
        _ => None,
    };
    Entries { by_state: state_key(run.state, id), ready, queue, lease }
}

/// `counts`: `s` | state (1) for all runs in a state, and `a` | agent | 0 | state (1) for an
/// agent's runs in it; the value is the count (8, big-endian).
pub(super) fn counter_keys(agent: &str, state: RunState) -> [Vec<u8>; 2] {
    [vec![b's', state_byte(state)], [b"a", agent.as_bytes(), &[0, state_byte(state)]].concat()]
}

/// The key of the count of all runs in `state`.
pub(super) fn state_counter_key(state: RunState) -> [u8; 2] {
    [b's', state_byte(state)]
}

/// A count as stored in `counts` (0 if the bytes are not one).
pub(super) fn decode_count(bytes: &[u8]) -> u64 {
    bytes.try_into().map_or(0, u64::from_be_bytes)
}
