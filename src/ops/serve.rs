//! Serving the router on a listener (TCP or a Unix domain socket) with the limits a server
//! facing a browser's machine needs: a client must send its request's headers within a time
//! limit (a slow client holding a connection open, "slowloris", is cut off), and at most so many
//! connections are open at once (past it, new ones wait in the listen queue).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// The limits [`serve`] holds connections to.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ServeLimits {
    /// How long a client may take to send a request's headers, from the connection's start or
    /// the end of its previous answer (default 10 s); a client that has not by then is cut off.
    /// A request's body and its handling are bounded by [`OpsConfig::timeout`](super::OpsConfig::timeout).
    pub header_read_timeout: Duration,
    /// The most connections open at once (default 512); a further one waits in the listen
    /// queue until one closes.
    pub max_connections: usize,
    /// How long a graceful stop waits for the answers in flight (a live page's stream never
    /// ends by itself) before it closes their connections (default 5 s).
    pub drain: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
            drain: Duration::from_secs(5),
        }
    }
}

impl ServeLimits {
    /// A client must send its request's headers within `timeout`.
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// At most `n` connections at once (at least 1).
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }
}

/// Serves `app` on `listener` (a `tokio::net::TcpListener` or `UnixListener`) over HTTP/1.1
/// within `limits`, until `shutdown` completes: then it accepts no more connections, lets the
/// answers in flight finish (for at most [`ServeLimits::drain`]), and returns.
///
/// Use it rather than `axum::serve`, which reads a request's headers for as long as the client
/// takes and opens as many connections as clients ask for.
///
/// ```no_run
/// # async fn demo(runtime: steadfast::Runtime) -> std::io::Result<()> {
/// use std::sync::Arc;
/// use steadfast::ops::{self, OpsConfig, ServeLimits};
///
/// let app = ops::router(Arc::new(runtime), OpsConfig::default());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7420").await?;
/// ops::serve(listener, app, ServeLimits::default(), std::future::pending()).await
/// # }
/// ```
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    L: Listener,
{
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopped) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone().map_request(
            |r: axum::http::Request<hyper::body::Incoming>| r.map(axum::body::Body::new),
        ));
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(io), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = async { drop(stopped.wait_for(|s| *s).await) } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.drain, connection).await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection's permit back: each has finished or been cut off after the drain.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.drain * 2, open.acquire_many(all)).await;
    Ok(())
}
