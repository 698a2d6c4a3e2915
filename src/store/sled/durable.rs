//! Making applied writes durable: sled's log written out and fsynced, and the blobs sled
//! writes beside it synced, which sled 0.34 never does itself. The one way the store makes
//! writes durable, shared by the committer, the journal's replay and a migration.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{backend, io_error};
use crate::store::StoreError;

/// Writes sled's log out and fsyncs it and any new blob: everything applied so far survives a
/// crash or a power loss. The one way the store makes writes durable (commits in `Fsync`
/// mode, the journal's replay, a migration).
pub(super) fn make_durable(db: &::sled::Db, log: &File, path: &Path) -> Result<(), StoreError> {
    db.flush().map_err(|e| backend("flushing the database", e))?;
    log.sync_data().map_err(|e| io_error("fsync of the database log", e))?;
    sync_blobs(path).map_err(|e| io_error("fsync of the database blobs", e))
}

/// sled 0.34 writes values too large for its log (about 1/4 of a segment) to files under
/// `blobs/` without ever syncing them. Sync each new blob once, then the directory.
pub(super) fn sync_blobs(path: &Path) -> io::Result<()> {
    static SYNCED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let dir = path.join("blobs");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut synced = SYNCED.lock().unwrap_or_else(|p| p.into_inner());
    let synced = synced.get_or_insert_with(HashSet::new);
    let mut present = HashSet::new();
    let mut any = false;
    for entry in entries {
        let blob = entry?.path();
        if !synced.contains(&blob) {
            match File::open(&blob) {
                Ok(file) => file.sync_data()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // garbage-collected
                Err(e) => return Err(e),
            }
            any = true;
        }
        present.insert(blob);
    }
    // Forget blobs sled has deleted, so the set does not grow for the life of the process.
    synced.retain(|blob| !blob.starts_with(&dir) || present.contains(blob));
    synced.extend(present);
    if any {
        fs::File::open(&dir)?.sync_all()?;
    }
    Ok(())
}
