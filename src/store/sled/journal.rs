//! The journal: every commit written first as one entry under one key, then applied to the
//! trees with plain inserts and removes.
//!
//! sled 0.34 makes a `Batch` or a transaction atomic by rolling its log buffer before and
//! after it (`pin_log`): two device writes per commit, and the first one switches on a lock
//! around every read and write of the process. Plain inserts do neither. What makes them one
//! commit is this journal: sled recovers a prefix of its log, and the entry is logged before
//! the inserts it describes, so after a crash either the entry is lost (and with it every
//! write after it: the commit never happened, and nobody was told it did, since answers wait
//! for the sync) or it is there, and [`replay`] applies it again (whole values put or removed:
//! replaying twice is the same as once). The entry is removed right after its writes, in the
//! same commit: its removal is logged after them, so if the removal survives a crash, so did
//! they, and if the entry survives, nothing logged after the removal point did.
//!
//! An entry is cut into chunks of at most [`CHUNK`] bytes (sled stores a value over about a
//! quarter of a log segment in a file of its own, which costs a file creation and an fsync),
//! each keyed batch | chunk | chunks; replay applies a commit only when all its chunks are
//! there (its writes are logged after the last one, so a commit with a chunk missing wrote
//! nothing) and drops an incomplete one.

use std::fs::File;
use std::sync::OnceLock;

use ::sled::{Db, IVec};

use super::durable::make_durable;
use super::tx::{TreeId, apply_writes};
use super::{Trees, backend};
use crate::store::StoreError;

/// The writes of one commit, as stored: `(tree, key, value or None for a removal)`.
type Stored<'a> = Vec<(TreeId, &'a [u8], Option<&'a [u8]>)>;

/// The largest chunk of a journal entry, well under sled's inline limit (a quarter of its
/// 512 KiB segments).
const CHUNK: usize = 64 * 1024;

/// The key of chunk `chunk` of `chunks` of commit `batch`.
fn key(batch: u64, chunk: u32, chunks: u32) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&batch.to_be_bytes());
    key[8..12].copy_from_slice(&chunk.to_be_bytes());
    key[12..].copy_from_slice(&chunks.to_be_bytes());
    key
}

fn key_parts(key: &[u8]) -> Option<(u64, u32, u32)> {
    let batch = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let chunk = u32::from_be_bytes(key.get(8..12)?.try_into().ok()?);
    let chunks = u32::from_be_bytes(key.get(12..16)?.try_into().ok()?);
    Some((batch, chunk, chunks))
}

fn corrupt(source: impl Into<crate::store::BoxError>) -> StoreError {
    StoreError::Corrupt { tree: "journal", source: source.into() }
}

/// Writes the entry of commit `batch` (`writes`) into the journal; returns its keys, to
/// remove once the writes are applied.
pub(super) fn write(
    trees: &Trees,
    batch: u64,
    writes: &[(TreeId, Vec<u8>, Option<IVec>)],
) -> Result<Vec<[u8; 16]>, StoreError> {
    let stored: Stored<'_> =
        writes.iter().map(|(tree, key, value)| (*tree, key.as_slice(), value.as_deref())).collect();
    let bytes = postcard::to_allocvec(&stored).map_err(corrupt)?;
    let chunks = bytes.len().div_ceil(CHUNK).max(1) as u32;
    let mut keys = Vec::with_capacity(chunks as usize);
    for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
        let key = key(batch, i as u32, chunks);
        trees.journal.insert(key, chunk).map_err(|e| backend("writing the journal", e))?;
        keys.push(key);
    }
    Ok(keys)
}

/// Removes a commit's entry (its writes are applied).
pub(super) fn remove(trees: &Trees, keys: &[[u8; 16]]) -> Result<(), StoreError> {
    for key in keys {
        trees.journal.remove(key).map_err(|e| backend("emptying the journal", e))?;
    }
    Ok(())
}

/// The highest commit number in the journal (0 if it is empty), to number commits after it.
pub(super) fn last_batch(trees: &Trees) -> Result<u64, StoreError> {
    match trees.journal.last().map_err(|e| backend("reading the journal", e))? {
        Some((key, _)) => Ok(key_parts(&key).map_or(0, |(batch, ..)| batch)),
        None => Ok(0),
    }
}

/// Applies every complete commit left in the journal (one a crash cut off half-applied), in
/// order, drops incomplete ones (they wrote nothing), makes the trees durable, then empties
/// the journal. Returns how many commits it replayed. A crash in the middle only means it
/// runs again at the next open.
pub(super) fn replay(
    db: &Db,
    trees: &Trees,
    path: &std::path::Path,
    log: &File,
) -> Result<usize, StoreError> {
    // Per commit, in order: its number, the chunks it says it has, those present, its bytes.
    let mut keys = Vec::new();
    let mut commits: Vec<(u64, u32, u32, Vec<u8>)> = Vec::new();
    for entry in trees.journal.iter() {
        let (key, chunk) = entry.map_err(|e| backend("reading the journal", e))?;
        let (batch, _, chunks) =
            key_parts(&key).ok_or_else(|| corrupt("a journal key of the wrong length"))?;
        match commits.last_mut() {
            Some((b, _, seen, bytes)) if *b == batch => {
                *seen += 1;
                bytes.extend_from_slice(&chunk);
            }
            _ => commits.push((batch, chunks, 1, chunk.to_vec())),
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Ok(0);
    }
    let mut replayed = 0;
    for (batch, chunks, seen, bytes) in &commits {
        if seen != chunks {
            tracing::warn!(
                batch,
                seen,
                chunks,
                "dropping a journal entry cut off before its writes"
            );
            continue;
        }
        let stored: Stored<'_> = postcard::from_bytes(bytes).map_err(corrupt)?;
        let writes: Vec<(TreeId, Vec<u8>, Option<IVec>)> = stored
            .into_iter()
            .map(|(tree, key, value)| (tree, key.to_vec(), value.map(IVec::from)))
            .collect();
        apply_writes(trees, &writes)?;
        replayed += 1;
    }
    make_durable(db, log, path)?;
    crash_point("replay");
    for key in &keys {
        trees.journal.remove(key).map_err(|e| backend("emptying the journal", e))?;
    }
    make_durable(db, log, path)?;
    tracing::info!(path = %path.display(), replayed, "replayed the commits a crash cut off");
    Ok(replayed)
}

/// Test builds (feature `testing`) abort the process at the named point when
/// `STEADFAST_CRASH_AT` is `<point>:<n>` and the point is reached the `n`-th time (`n` from
/// 1), so crash tests hit a window of microseconds on purpose. Points: `replay` (the journal
/// replayed and durable, not yet emptied), `commit-half` (a commit's entry and half of its
/// writes flushed to sled's log, the rest not).
pub(super) fn crash_point(name: &str) {
    if reached(name) {
        eprintln!("steadfast: crashing at `{name}` as STEADFAST_CRASH_AT asks");
        std::process::abort();
    }
}

/// Test builds (feature `testing`): whether the fault point `name` is reached the `n`-th time
/// as `STEADFAST_CRASH_AT=<name>:<n>` asks, for a fault the caller then injects instead of a
/// crash. Point: `claim-unsynced` (a claim applied and answered before its sync: the sync
/// that covers it fails, as a full disk or an I/O error would fail it).
pub(super) fn fault_point(name: &str) -> bool {
    let hit = reached(name);
    if hit {
        eprintln!("steadfast: a fault at `{name}` as STEADFAST_CRASH_AT asks");
    }
    hit
}

/// Whether the point `name` named by `STEADFAST_CRASH_AT` is reached the asked time.
#[cfg(feature = "testing")]
fn reached(name: &str) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static REACHED: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let value = std::env::var("STEADFAST_CRASH_AT").ok()?;
        let (point, n) = value.rsplit_once(':')?;
        Some((point.to_owned(), n.parse().ok()?))
    });
    matches!(target, Some((point, n)) if point == name
        && REACHED.fetch_add(1, Ordering::SeqCst) + 1 == *n)
}

/// Without the feature `testing`, no point is ever reached.
#[cfg(not(feature = "testing"))]
#[inline(always)]
fn reached(_name: &str) -> bool {
    false
}

/// Whether the crash point `name` is armed (a test build asked for it), so the committer
/// flushes half a commit before it: the torn state a crash leaves.
pub(super) fn armed(name: &str) -> bool {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    cfg!(feature = "testing")
        && ARMED
            .get_or_init(|| std::env::var("STEADFAST_CRASH_AT").ok())
            .as_deref()
            .is_some_and(|v| v.split(':').next() == Some(name))
}
