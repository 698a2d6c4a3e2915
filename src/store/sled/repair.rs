//! What sled 0.34 can leave behind when its process is killed, and what opening does about it.
//!
//! Read from sled 0.34.7's source, two files written outside its log can be left half-written
//! by a SIGKILL, and either one makes the next open fail with `Corruption { at: None }`:
//!
//! - `conf` (`config.rs`): written in place on the first open, without a temporary file or a
//!   sync; `read_config` only warns on a bad checksum and then fails on a missing line. Its
//!   content is fixed by how steadfast opens sled (segment size, no compression, sled's
//!   version), so a damaged one is set aside and sled writes it again.
//! - snapshots (`pagecache/snapshot.rs`): `write_snapshot` writes `snap.<lsn>.generating`,
//!   syncs and renames it; but `get_snapshot_files` does not skip `.generating` files and
//!   `read_snapshot` takes the largest name, so one cut off (sled writes one on every open
//!   that follows writes) is read as the newest snapshot and fails its checksum. A damaged one
//!   is set aside; sled then starts from the previous snapshot, or from the log alone.
//!
//! A snapshot only summarises the log, which sled replays from the snapshot's position on, so
//! setting one aside loses nothing that was written. If sled still reports corruption, every
//! snapshot is set aside and the log replayed from its start. What is set aside goes to
//! `set-aside/` in the database directory (sled never looks there), and a warning says so.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The folder, inside the database directory, that takes what opening set aside.
pub(super) const SET_ASIDE: &str = "set-aside";

/// Sets aside a damaged `conf` and any damaged snapshot; returns what it moved.
pub(super) fn before_open(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut moved = Vec::new();
    let conf = path.join("conf");
    if let Ok(bytes) = fs::read(&conf)
        // sled itself rewrites one of 8 bytes or less
        && bytes.len() > 8
        && !checksum_matches(&bytes, 4)
    {
        moved.push(set_aside(path, &conf)?);
    }
    for snapshot in snapshots(path)? {
        let name = snapshot.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with(".generating") && !checksum_matches(&fs::read(&snapshot)?, 12) {
            moved.push(set_aside(path, &snapshot)?);
        }
    }
    Ok(moved)
}

/// Sets aside every snapshot, so that sled recovers from its log alone.
pub(super) fn all_snapshots(path: &Path) -> io::Result<Vec<PathBuf>> {
    snapshots(path)?.iter().map(|snapshot| set_aside(path, snapshot)).collect()
}

/// Makes sled's `conf` durable (sled writes it without a sync).
pub(super) fn sync_conf(path: &Path) -> io::Result<()> {
    fs::File::open(path.join("conf"))?.sync_all()?;
    fs::File::open(path)?.sync_all()
}

/// The snapshot files sled would consider: `snap.*` in the directory itself.
fn snapshots(path: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && !name.ends_with(".in___motion") && entry.path().is_file() {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Whether `bytes` end in a CRC-32 of everything before its `trailer` bytes, as sled writes
/// them (4 for `conf`; 12 for a snapshot: an 8-byte length, then the checksum).
fn checksum_matches(bytes: &[u8], trailer: usize) -> bool {
    if bytes.len() <= trailer {
        return false;
    }
    let (body, tail) = bytes.split_at(bytes.len() - trailer);
    let expected = u32::from_le_bytes(tail[trailer - 4..].try_into().expect("four bytes"));
    crc32fast::hash(body) == expected
}

/// Moves `file` into the set-aside folder under a name that says when.
fn set_aside(path: &Path, file: &Path) -> io::Result<PathBuf> {
    let folder = path.join(SET_ASIDE);
    fs::create_dir_all(&folder)?;
    let stamp = crate::clock::Timestamp::now().as_millis();
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let to = folder.join(format!("{stamp}-{name}"));
    fs::rename(file, &to)?;
    fs::File::open(path)?.sync_all()?;
    tracing::warn!(
        from = %file.display(),
        to = %to.display(),
        "set aside a file a crash left half-written in the database directory; nothing written to the database is lost with it"
    );
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file as sled writes it: `body`, then (for a snapshot) its length, then its CRC.
    fn sealed(body: &[u8], snapshot: bool) -> Vec<u8> {
        let mut bytes = body.to_vec();
        if snapshot {
            bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        }
        bytes.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        bytes
    }

    #[test]
    fn a_whole_file_passes_and_a_cut_or_changed_one_does_not() {
        let conf = sealed(b"segment_size: 524288\nuse_compression: false\nversion: 0.34\n", false);
        assert!(checksum_matches(&conf, 4));
        assert!(!checksum_matches(&conf[..conf.len() - 1], 4));
        assert!(!checksum_matches(&conf[..20], 4));
        let mut changed = conf.clone();
        changed[3] ^= 1;
        assert!(!checksum_matches(&changed, 4));
        let snapshot = sealed(&[7u8; 300], true);
        assert!(checksum_matches(&snapshot, 12));
        assert!(!checksum_matches(&snapshot[..200], 12));
        assert!(!checksum_matches(&[], 12));
    }

    #[test]
    fn only_damaged_files_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        let conf = sealed(b"segment_size: 524288\nuse_compression: false\nversion: 0.34\n", false);
        fs::write(path.join("conf"), &conf).unwrap();
        fs::write(path.join("snap.0000000000000010"), sealed(&[1; 100], true)).unwrap();
        fs::write(path.join("snap.0000000000000020.generating"), sealed(&[2; 100], true)).unwrap();
        assert!(before_open(path).unwrap().is_empty(), "whole files stay");

        let cut = sealed(&[3; 100], true);
        fs::write(path.join("snap.0000000000000030.generating"), &cut[..60]).unwrap();
        fs::write(path.join("conf"), &conf[..25]).unwrap();
        let moved = before_open(path).unwrap();
        let names: Vec<String> =
            moved.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names[0].ends_with("-conf") && names[1].ends_with("-snap.0000000000000030.generating")
        );
        assert!(!path.join("conf").exists());
        assert!(path.join("snap.0000000000000020.generating").exists());
        assert!(path.join(SET_ASIDE).join(&names[1]).exists());
        assert_eq!(snapshots(path).unwrap().len(), 2, "set-aside files are not snapshots any more");

        assert_eq!(all_snapshots(path).unwrap().len(), 2);
        assert!(snapshots(path).unwrap().is_empty());
    }
}
