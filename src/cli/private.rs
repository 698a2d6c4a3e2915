//! What the CLI keeps from other users of the machine: the data directory (mode 0700, the
//! user's own, its files 0600) and the files secrets are read from (refused when others can read
//! them).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::CliError;

/// The most entries of the data directory whose modes are tightened at once (the store holds a
/// handful of files; an outbox may hold many mails, each already out of reach behind the
/// directory's own 0700).
const MAX_TIGHTENED: usize = 10_000;

/// Makes the data directory `dir` the user's own and private: created with mode 0700 when
/// missing (if `create`), refused when another user owns it, else set to 0700 with its files
/// 0600. Nothing is done to a missing directory when not `create`.
pub(super) fn secure_data_dir(dir: &Path, create: bool) -> Result<(), CliError> {
    if !dir.exists() {
        if !create {
            return Ok(());
        }
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| {
            CliError::store(format!("cannot create the data directory {}: {e}", dir.display()))
        })?;
        return Ok(());
    }
    let loose = std::fs::metadata(dir).map(|m| m.mode() & 0o077 != 0).unwrap_or(false);
    crate::ops::make_private(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            CliError::usage(format!("refusing the data directory: {e}"))
        }
        _ => CliError::store(format!("cannot secure the data directory {}: {e}", dir.display())),
    })?;
    if loose {
        let tightened = tighten(dir, 0);
        tracing::info!(
            data = %dir.display(),
            files = tightened,
            "the data directory was open to other users: it is now mode 0700, its files 0600"
        );
    }
    Ok(())
}

/// Sets the files under `dir` that others can read to 0600 and its folders to 0700 (at most
/// [`MAX_TIGHTENED`] entries, three levels deep); returns how many it changed.
fn tighten(dir: &Path, depth: usize) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut changed = 0;
    for entry in entries.flatten().take(MAX_TIGHTENED) {
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        let mode = meta.mode();
        if meta.is_dir() {
            if mode & 0o077 != 0
                && std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700))
                    .is_ok()
            {
                changed += 1;
            }
            if depth < 3 {
                changed += tighten(&entry.path(), depth + 1);
            }
        } else if meta.is_file()
            && mode & 0o077 != 0
            && std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))
                .is_ok()
        {
            changed += 1;
        }
    }
    changed
}

/// The text of a file that holds a secret (`what` names it in messages): refused when other
/// users can read or change it, or when it is not the user's own.
pub(super) fn read_secret_file(path: &Path, what: &str) -> Result<String, CliError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::usage(format!("reading the {what} {}: {e}", path.display())))?;
    let own = crate::ops::own_uid()
        .map_err(|e| CliError::usage(format!("reading the {what} {}: {e}", path.display())))?;
    if meta.uid() != own {
        return Err(CliError::usage(format!(
            "refusing the {what} {}: it belongs to another user (uid {}), who could change it",
            path.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(CliError::usage(format!(
            "refusing the {what} {}: other users can read it (mode {:o}); `chmod 600 {}` first",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("reading the {what} {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_new_data_directory_is_private_and_an_open_one_is_closed() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        secure_data_dir(&fresh, true).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let open = root.path().join("open");
        std::fs::create_dir_all(open.join("db")).unwrap();
        std::fs::write(open.join("db/conf"), "x").unwrap();
        std::fs::write(open.join("steadfast.owner"), "x").unwrap();
        for p in [&open, &open.join("db")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for p in [open.join("db/conf"), open.join("steadfast.owner")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        secure_data_dir(&open, false).unwrap();
        assert_eq!(mode(&open), 0o700);
        assert_eq!(mode(&open.join("db")), 0o700);
        assert_eq!(mode(&open.join("db/conf")), 0o600);
        assert_eq!(mode(&open.join("steadfast.owner")), 0o600);
        secure_data_dir(&root.path().join("missing"), false).unwrap();
        assert!(!root.path().join("missing").exists(), "not created without `create`");
    }

    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "t".repeat(40)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = read_secret_file(&file, "token file").unwrap_err();
        assert!(error.message().contains("chmod 600"), "{}", error.message());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&file, "token file").unwrap(), "t".repeat(40));
    }
}
