//! Opening a sled database directory: recognising it, refusing what is not ours, naming the
//! process that holds the lock, and the blob fsync that sled itself never does.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::committer::{Committer, Writer};
use super::durable::make_durable;
use super::repair;
use super::{Durability, Engine, Inner, SledStore, SledStoreOptions, Trees, backend, io_error};
use crate::store::StoreError;

/// The file, next to sled's own, that names the process holding the database.
const OWNER_FILE: &str = "steadfast.owner";
const FORMAT_KEY: &[u8] = b"format";

use super::SLED_FORMAT as DB_FORMAT;

pub(super) fn open(path: &Path, options: SledStoreOptions) -> Result<SledStore, StoreError> {
    let fresh = check_directory(path)?;
    let registration = Registration::new(path);
    let engine = open_engine(path, &options, fresh, registration.is_some())?;
    // The first opening in this process: every lease in it is an ended process's.
    let orphans = if registration.is_some() { leases_of(&engine)? } else { Default::default() };
    if !orphans.is_empty() {
        tracing::info!(
            path = %path.display(),
            runs = orphans.len(),
            "runs in progress when the database was last closed: their leases are recovered now, not when they expire"
        );
    }
    Ok(SledStore {
        inner: Arc::new(Inner {
            engine: std::sync::RwLock::new(Some(Arc::new(engine))),
            path: path.to_owned(),
            durability: options.durability,
            clock: options.clock.clone(),
            options,
            reopened: Default::default(),
            unsynced_claims: Default::default(),
            orphans: std::sync::Mutex::new(orphans),
            signal: Default::default(),
            _registration: registration,
        }),
    })
}

/// Every lease in the database, by run, with its fencing token.
fn leases_of(
    engine: &Engine,
) -> Result<std::collections::HashMap<crate::lifecycle::RunId, u64>, StoreError> {
    let mut leases = std::collections::HashMap::new();
    for item in engine.trees.leases.iter() {
        let (key, token) = item.map_err(|e| backend("scanning leases", e))?;
        let token = token.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
        leases.insert(super::keys::lease_key_parts(&key).1, token);
    }
    Ok(leases)
}

/// Opens the database in `path` (new if `fresh`): repairs what a crash left, checks the
/// format, replays the journal, migrates, and starts the committer. `own_lock`: a lock held by
/// this process (a store just dropped, or the engine a failed write left behind) is waited
/// out for a moment instead of refused.
pub(super) fn open_engine(
    path: &Path,
    options: &SledStoreOptions,
    fresh: bool,
    own_lock: bool,
) -> Result<Engine, StoreError> {
    let flush_every_ms = match options.durability {
        Durability::Periodic(period) => Some(period.as_millis().max(1) as u64),
        Durability::Fsync | Durability::Flush => Some(500),
    };
    let config = ::sled::Config::new()
        .path(path)
        .cache_capacity(options.cache_capacity)
        .flush_every_ms(flush_every_ms)
        .mode(::sled::Mode::HighThroughput);
    // A database this process has just dropped may hold the lock a moment longer (sled's I/O
    // threads finish their writes first): wait for it rather than refuse. One this process
    // has open, or another process holds, is refused at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    // What a kill may have left half-written outside sled's log (see `repair`).
    let mut repaired =
        repair::before_open(path).map_err(|e| io_error("checking the database files", e))?;
    let mut replayed_log = false;
    let db = loop {
        let opened = config.open();
        if matches!(opened, Err(::sled::Error::Corruption { .. })) && !replayed_log {
            // A snapshot sled cannot read: recover from the log alone (once; a second
            // corruption is reported below).
            replayed_log = true;
            repaired.extend(
                repair::all_snapshots(path).map_err(|e| io_error("setting snapshots aside", e))?,
            );
            continue;
        }
        match opened.map_err(|e| open_error(path, e)) {
            Err(StoreError::Locked { holder, .. })
                if own_lock
                    && holder
                        .as_ref()
                        .is_none_or(|h| h.starts_with(&format!("pid {} ", std::process::id())))
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => break opened?,
        }
    };
    if fresh || !repaired.is_empty() {
        // sled writes `conf` without a sync; a new or rewritten one must outlive a crash.
        repair::sync_conf(path).map_err(|e| io_error("fsync of the database config", e))?;
    }
    if !repaired.is_empty() {
        tracing::warn!(
            path = %path.display(),
            set_aside = repaired.len(),
            "the database opened after setting aside what a crash left half-written (in {}/)",
            repair::SET_ASIDE
        );
    }

    let trees = Trees::open(&db)?;
    let log = File::open(path.join("db")).map_err(|e| io_error("opening the database log", e))?;
    match trees.meta.get(FORMAT_KEY).map_err(|e| backend("reading the format", e))? {
        Some(bytes) => {
            let found = bytes.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(u32::MAX);
            if found > DB_FORMAT {
                return Err(StoreError::NewerFormat {
                    path: path.to_owned(),
                    found,
                    supported: DB_FORMAT,
                });
            }
            // Commits a crash cut off half-applied are completed first.
            super::journal::replay(&db, &trees, path, &log)?;
            if found < DB_FORMAT {
                migrate(&db, &trees, path, &log, found)?;
            }
        }
        // A new directory, or one whose creation was cut off (a crash between sled creating
        // its files and the marker being written): nothing in it but empty trees.
        None if fresh || holds_nothing(&db)? => {
            trees
                .meta
                .insert(FORMAT_KEY, &DB_FORMAT.to_be_bytes())
                .map_err(|e| backend("writing the format", e))?;
            db.flush().map_err(|e| backend("flushing the database", e))?;
        }
        None => {
            return Err(StoreError::NotADatabase {
                path: path.to_owned(),
                reason: "it is a sled database without steadfast's format marker".into(),
            });
        }
    }
    write_owner(path);
    let first_batch = super::journal::last_batch(&trees)?;
    if fresh {
        // Make the new directory entries themselves durable.
        sync_dir(path).map_err(|e| io_error("fsync of the database directory", e))?;
    }
    Ok(Engine {
        id: super::engine::next_id(),
        committer: Committer::start(Writer {
            db: db.clone(),
            trees: trees.clone(),
            path: path.to_owned(),
            durability: options.durability,
            group_commit: options.group_commit,
            log,
            first_batch,
        })
        .map_err(|e| io_error("starting the committer thread", e))?,
        db,
        trees,
    })
}

/// Brings a database of layout `found` to [`DB_FORMAT`]: from 1, the counters computed from
/// the runs (once; a crash before the new format marker is durable computes them again).
fn migrate(
    db: &::sled::Db,
    trees: &Trees,
    path: &Path,
    log: &File,
    found: u32,
) -> Result<(), StoreError> {
    let started = std::time::Instant::now();
    let mut counts: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
    let mut runs = 0u64;
    for entry in trees.runs.iter() {
        let (_, bytes) = entry.map_err(|e| backend("reading the runs to count them", e))?;
        let run = super::codec::decode_run(&bytes)?;
        for key in super::keys::counter_keys(&run.agent, run.state) {
            *counts.entry(key).or_default() += 1;
        }
        runs += 1;
    }
    trees.counts.clear().map_err(|e| backend("clearing the counts", e))?;
    for (key, n) in counts {
        trees.counts.insert(key, &n.to_be_bytes()).map_err(|e| backend("writing a count", e))?;
    }
    // The counts durable first, then the marker that says they are there.
    make_durable(db, log, path)?;
    trees
        .meta
        .insert(FORMAT_KEY, &DB_FORMAT.to_be_bytes())
        .map_err(|e| backend("writing the format", e))?;
    make_durable(db, log, path)?;
    tracing::info!(
        path = %path.display(),
        from = found,
        to = DB_FORMAT,
        runs,
        took_ms = started.elapsed().as_millis() as u64,
        "migrated the database: counts per state and agent are now kept with every commit"
    );
    Ok(())
}

/// The databases this process has open, so that opening one twice in a process fails at once
/// while reopening one just dropped waits for the lock (see [`open`]).
static OPEN: std::sync::Mutex<Option<HashSet<PathBuf>>> = std::sync::Mutex::new(None);

/// A database counted in [`OPEN`] while its store lives.
pub(super) struct Registration(Option<PathBuf>);

impl Registration {
    /// Counts `path` as open; `Registration(None)` if this process has it open already.
    fn new(path: &Path) -> Self {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        let open = open.get_or_insert_with(HashSet::new);
        if open.insert(path.clone()) { Registration(Some(path)) } else { Registration(None) }
    }

    fn is_some(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
            open.get_or_insert_with(HashSet::new).remove(path);
        }
    }
}

/// Whether every tree of `db` (its default tree included) is empty.
fn holds_nothing(db: &sled::Db) -> Result<bool, StoreError> {
    for name in db.tree_names() {
        let tree = db.open_tree(&name).map_err(|e| backend("opening a tree", e))?;
        if !tree.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Refuses a path that cannot be a database; returns whether it is new (absent or empty).
fn check_directory(path: &Path) -> Result<bool, StoreError> {
    let not_db =
        |reason: &str| StoreError::NotADatabase { path: path.to_owned(), reason: reason.into() };
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_error(&format!("reading {}", path.display()), e)),
        Ok(meta) if !meta.is_dir() => Err(not_db("it is a file, not a directory")),
        Ok(_) => {
            let mut entries = fs::read_dir(path)
                .map_err(|e| io_error(&format!("reading {}", path.display()), e))?;
            if entries.next().is_none() {
                return Ok(true);
            }
            if path.join("conf").is_file() && path.join("db").is_file() {
                return Ok(false);
            }
            if creation_cut_off(path)? {
                return Ok(true);
            }
            Err(not_db(
                "the directory has other files and no database in it; choose an empty or new directory",
            ))
        }
    }
}

/// Whether `path` holds only what sled creates before its log (an empty `blobs/`, then
/// `conf`), from a first open killed before it made the `db` file: such a directory is new.
fn creation_cut_off(path: &Path) -> Result<bool, StoreError> {
    let read = |e| io_error(&format!("reading {}", path.display()), e);
    for entry in fs::read_dir(path).map_err(read)? {
        let entry = entry.map_err(read)?;
        let name = entry.file_name();
        let empty_dir = || fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none());
        let ours = match name.to_str() {
            Some("conf") => entry.path().is_file(),
            Some("blobs") => empty_dir(),
            Some(OWNER_FILE) | Some(repair::SET_ASIDE) => true,
            _ => false,
        };
        if !ours {
            return Ok(false);
        }
    }
    Ok(!path.join("db").exists())
}

fn open_error(path: &Path, error: ::sled::Error) -> StoreError {
    match &error {
        ::sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked {
                path: path.to_owned(),
                holder: fs::read_to_string(path.join(OWNER_FILE)).ok().map(|s| s.trim().to_owned()),
            }
        }
        ::sled::Error::Unsupported(_) | ::sled::Error::Corruption { .. } => {
            StoreError::NotADatabase { path: path.to_owned(), reason: error.to_string() }
        }
        _ => backend("opening the database", error),
    }
}

/// The least time between two openings after failed writes.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl SledStore {
    /// The open database as it is now, without opening it again if its committer failed.
    pub(super) fn current_engine(&self) -> Option<Arc<Engine>> {
        self.inner.engine.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The open database: the current engine, or a new one if the current one's committer
    /// failed a write.
    pub(super) fn engine(&self) -> Result<Arc<Engine>, StoreError> {
        let inner = &self.inner;
        {
            let slot = inner.engine.read().unwrap_or_else(|p| p.into_inner());
            if let Some(engine) = slot.as_ref().filter(|e| !e.committer.failed()) {
                return Ok(engine.clone());
            }
        }
        let mut slot = inner.engine.write().unwrap_or_else(|p| p.into_inner());
        if let Some(engine) = slot.as_ref().filter(|e| !e.committer.failed()) {
            return Ok(engine.clone()); // another caller reopened it meanwhile
        }
        // Opening reads the whole log: while the disk stays full, at most once a second.
        let mut last = inner.reopened.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = *last
            && at.elapsed() < REOPEN_EVERY
        {
            return Err(StoreError::Backend {
                context: "reopening the database after a failed write",
                source: Box::new(std::io::Error::other(
                    "the last attempt was less than a second ago; tried again at the next call after that",
                )),
            });
        }
        *last = Some(std::time::Instant::now());
        drop(last);
        if let Some(old) = slot.take() {
            // Claims acknowledged before their sync may be gone with the old engine's memory:
            // their claimers must not act on them. The ones it synced are durable: forget them.
            // The rest stay, naming an opening that is gone, which `Store::wait_durable`
            // reports lost.
            let mut unsynced = inner.unsynced_claims.lock().unwrap_or_else(|p| p.into_inner());
            unsynced.retain(|_, at| !(at.engine == old.id && old.committer.is_synced(at.batch)));
            drop(unsynced);
            tracing::warn!(
                path = %inner.path.display(),
                "reopening the database after a failed write"
            );
            drop(old); // its committer thread ends; sled lets go of the files
        }
        let engine = Arc::new(open_engine(&inner.path, &inner.options, false, true)?);
        tracing::warn!(path = %inner.path.display(), "the database is open again and takes writes");
        *slot = Some(engine.clone());
        Ok(engine)
    }
}

/// Records which process holds the database, for the "locked by" message of the next opener:
/// its pid, program name, host and start time, never its arguments (a command line can carry a
/// secret, and this file outlives the process). Readable by its owner only.
fn write_owner(path: &Path) {
    let program = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown program".to_owned());
    let host = fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host = host.trim();
    let owner = format!(
        "pid {} ({}) on {}, since {}\n",
        std::process::id(),
        program.escape_debug(),
        if host.is_empty() { "localhost" } else { host },
        crate::clock::Timestamp::now()
    );
    let file = path.join(OWNER_FILE);
    let _ = fs::write(&file, owner);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&file, fs::Permissions::from_mode(0o600));
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod owner_tests {
    #[test]
    fn the_owner_file_names_the_process_never_its_arguments() {
        let dir = tempfile::tempdir().unwrap();
        super::write_owner(dir.path());
        let text = std::fs::read_to_string(dir.path().join(super::OWNER_FILE)).unwrap();
        let exe = std::env::current_exe().unwrap();
        let program = exe.file_name().unwrap().to_string_lossy().into_owned();
        let head = format!("pid {} ({program}) on ", std::process::id());
        assert!(text.starts_with(&head), "{text}");
        // `<host>, since <RFC 3339>`, and nothing else: no argument has a place to be.
        let (host, since) = text[head.len()..].split_once(", since ").expect("a start time");
        assert!(!host.is_empty() && !host.contains(' '), "{text}");
        let since = since.strip_suffix('\n').expect("one line");
        assert!(since.len() == 24 && since.starts_with("20") && since.ends_with('Z'), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let mode = std::fs::metadata(dir.path().join(super::OWNER_FILE)).unwrap().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}

#[cfg(test)]
mod orphan_tests {
    use std::time::Duration;

    use crate::lifecycle::RunState;
    use crate::store::{Claim, NewRun, SledStore, Store};

    /// A lease left by a process that ended (here: a store dropped with a run claimed) is
    /// recovered as soon as the database is opened again, not when it expires in ten minutes,
    /// as the same move an expiry makes.
    #[tokio::test]
    async fn a_lease_found_at_open_is_recovered_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let run = {
            let store = SledStore::open(dir.path()).unwrap();
            let new = NewRun::new("agent", "key", serde_json::json!(1));
            let id = store.create(new).await.unwrap().run.id;
            let lease = Duration::from_secs(600);
            let claimed = store.claim(Claim::new("gone", 1, lease).runs([id])).await.unwrap();
            assert_eq!(claimed.len(), 1);
            store.wait_durable(id).await.unwrap();
            id
        };
        let store = SledStore::open(dir.path()).unwrap();
        let due = store.next_due().await.unwrap().expect("something is due");
        assert!(due <= store.now(), "the ended process's lease is due now, not in 10 minutes");
        let recovered = store.recover_expired(256).await.unwrap();
        assert_eq!(recovered.iter().map(|r| r.id).collect::<Vec<_>>(), [run]);
        let moved = &recovered[0];
        assert_eq!(moved.state, RunState::FailedTransient);
        let error = moved.last_error.as_ref().unwrap();
        assert!(error.message.starts_with(crate::store::LEASE_EXPIRED), "{}", error.message);
        assert!(error.message.contains("ended with its process"), "{}", error.message);
        let history = store.history(run).await.unwrap();
        assert_eq!(history.last().unwrap().actor, crate::store::Actor::Timer);
        assert!(store.recover_expired(256).await.unwrap().is_empty(), "recovered once");
        // A lease taken by this opening is not an orphan: it waits for its expiry.
        let new = NewRun::new("agent", "other", serde_json::json!(2));
        let live = store.create(new).await.unwrap().run.id;
        let lease = Duration::from_secs(600);
        assert_eq!(store.claim(Claim::new("alive", 1, lease).runs([live])).await.unwrap().len(), 1);
        assert!(store.recover_expired(256).await.unwrap().is_empty(), "a live lease stays");
        assert_eq!(store.get(live).await.unwrap().unwrap().state, RunState::Processing);
    }
}
