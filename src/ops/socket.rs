//! The operator API on a Unix domain socket in the data directory: how the CLI (and any program
//! of the same user) operates a process on the same machine, `steadfast serve`, `steadfast work`
//! or a user's own program, while it holds the store.
//!
//! The file system decides who may operate: the socket is mode 0600 in a directory of mode
//! 0700, both the user's own. No token crosses a network, and no browser can reach a Unix
//! socket, so neither a hostile page nor a listener on a freed TCP port is ever sent anything.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::oneshot;

use super::{OpsConfig, ServeLimits};
use crate::runtime::Runtime;

/// The socket's file name in a data directory.
pub const SOCKET_FILE: &str = "steadfast.sock";

/// The operator API served on `<dir>/steadfast.sock` (see [`LocalSocket::open`]); dropping it
/// stops serving and removes the socket.
#[derive(Debug)]
pub struct LocalSocket {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

/// The user id this process acts as (the owner of the files it creates).
pub(crate) fn own_uid() -> io::Result<u32> {
    use std::os::unix::fs::MetadataExt;
    // Linux: `/proc/self` belongs to the process's effective user.
    if let Ok(meta) = std::fs::metadata("/proc/self") {
        return Ok(meta.uid());
    }
    let probe = std::env::temp_dir().join(format!(".steadfast-uid-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    let uid = std::fs::metadata(&probe).map(|m| m.uid());
    let _ = std::fs::remove_file(&probe);
    uid
}

/// Makes `dir` private to its owner, who must be this process's user: mode 0700, so that what
/// is in it (the store, the socket, the outbox) is out of other users' reach. Refuses a
/// directory another user owns: they could read, change or replace what it holds.
pub fn make_private(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(dir)?;
    let own = own_uid()?;
    if meta.uid() != own {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to another user (uid {}, this process runs as uid {own}): they could read, change or replace what it holds; use a directory of your own",
                dir.display(),
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

impl LocalSocket {
    /// Serves the operator API over `runtime` on `<dir>/steadfast.sock`, so that the CLI with
    /// `--data <dir>` operates this process while it runs (`runs list`, `review approve`, …),
    /// whichever program it is. `dir` is made private first ([`make_private`]: mode 0700;
    /// another user's directory is refused), and the socket is mode 0600. A socket left by a
    /// process that is gone is replaced; one that answers is another process's, and refused.
    ///
    /// `config` is the router's (its metrics, for one); no token is asked on the socket, where
    /// the file system has decided who may connect.
    ///
    /// ```no_run
    /// # async fn demo(runtime: steadfast::Runtime) -> std::io::Result<()> {
    /// use std::sync::Arc;
    /// use steadfast::ops::{LocalSocket, OpsConfig};
    ///
    /// let runtime = Arc::new(runtime);
    /// let _socket = LocalSocket::open(runtime.clone(), "data".as_ref(), OpsConfig::default()).await?;
    /// runtime.run_until_signal().await.ok();
    /// # Ok(()) }
    /// ```
    pub async fn open(
        runtime: Arc<Runtime>,
        dir: &Path,
        mut config: OpsConfig,
    ) -> io::Result<LocalSocket> {
        use std::os::unix::fs::PermissionsExt;
        make_private(dir)?;
        let path = dir.join(SOCKET_FILE);
        if path.exists() {
            if tokio::net::UnixStream::connect(&path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another process serves {} already", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on {}: {e}", path.display()))
        })?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        config.token = None;
        let app = super::router(runtime, config);
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(super::serve(listener, app, ServeLimits::default(), async {
            let _ = stopped.await;
        }));
        Ok(LocalSocket { path, stop: Some(stop), served: Some(served) })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving (the answers in flight finish) and removes the socket.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = served.await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for LocalSocket {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
