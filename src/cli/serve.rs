//! `serve`: the workers and the HTTP API together, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::output::say;
use super::{CliError, Session, runtime_error};
use crate::ops::{LocalSocket, OpsConfig, ServeLimits, Token};

/// What `serve` was asked to do.
#[derive(Debug, clap::Args)]
pub(super) struct ServeArgs {
    /// The address to listen on. Anything but a loopback address needs a token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7420", env = "STEADFAST_BIND")]
    bind: SocketAddr,
    /// How many runs at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: u16,
    /// A file holding the token every API call must carry (else `$STEADFAST_TOKEN`; at least
    /// 32 bytes). It must be yours and readable by you only (`chmod 600`).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Also take requests whose Host header names HOST (repeat for several): the name the
    /// server is reached by through a reverse proxy or on a network. IP addresses and
    /// `localhost` are always taken; any other name is refused (421), against DNS rebinding.
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Let /readyz, /metrics and /alarms answer without the token (for probes and scrapers
    /// that cannot send it). Without a token they are open anyway.
    #[arg(long)]
    public_health: bool,
    /// The silent-failure alarm's window: an agent whose due work has waited this long with
    /// no success within it is reported (`/alarms`, the `steadfast_alarm` metric, a WARN line).
    #[arg(long, value_name = "AGE", default_value = "15m", value_parser = super::input::parse_duration)]
    alarm_window: std::time::Duration,
    /// Prune runs at rest that have not moved for this long (as `prune` does), at start and
    /// then every --prune-every.
    #[arg(long, value_name = "AGE", value_parser = super::input::parse_duration)]
    prune_older_than: Option<std::time::Duration>,
    /// A state --prune-older-than prunes (repeat for several; default succeeded).
    #[arg(long = "prune-state", value_name = "STATE", requires = "prune_older_than")]
    prune_states: Vec<crate::lifecycle::RunState>,
    /// How often --prune-older-than prunes.
    #[arg(long, value_name = "PERIOD", default_value = "1h", value_parser = super::input::parse_duration)]
    prune_every: std::time::Duration,
    #[command(flatten)]
    notify: super::notify::NotifyArgs,
}

/// The token from `--token-file`, else `$STEADFAST_TOKEN`.
fn token(args: &ServeArgs) -> Result<Option<Token>, CliError> {
    let text = match &args.token_file {
        Some(path) => Some(super::private::read_secret_file(path, "token file")?),
        None => std::env::var("STEADFAST_TOKEN").ok().filter(|t| !t.trim().is_empty()),
    };
    text.map(|t| Token::new(&t).map_err(CliError::usage)).transpose()
}

pub(super) async fn serve(session: &Session, args: ServeArgs) -> Result<(), CliError> {
    let token = token(&args)?;
    if token.is_none() && !args.bind.ip().is_loopback() {
        return Err(CliError::usage(format!(
            "refusing to listen on {} without a token: anyone who reaches it could approve, replay and cancel runs; set STEADFAST_TOKEN (at least 32 bytes) or --token-file, or bind a loopback address (127.0.0.1)",
            args.bind
        )));
    }
    let store = session.open_store()?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| CliError::usage(format!("cannot listen on {}: {e}", args.bind)))?;
    let address = listener
        .local_addr()
        .map_err(|e| CliError::usage(format!("cannot listen on {}: {e}", args.bind)))?;
    let url = format!("http://{address}");
    let metrics = crate::ops::Metrics::new(crate::ops::Alarm::window(args.alarm_window));
    let mut builder =
        session.runtime(store).workers(usize::from(args.workers)).observe(metrics.clone());
    if let Some(older_than) = args.prune_older_than {
        let policy = super::prune::policy(older_than, args.prune_states.clone())?;
        builder = builder.retention(policy, args.prune_every);
    }
    let (builder, notifiers) = args.notify.apply(builder, session.data_dir(), Some(&url))?;
    let runtime = Arc::new(builder.build().map_err(runtime_error)?);
    let mut config =
        OpsConfig::default().metrics(metrics.clone()).public_health(args.public_health);
    for host in &args.allow_hosts {
        config = config.allow_host(host.clone());
    }
    // The CLI on this machine operates the server through its socket, never over TCP.
    let socket = open_socket(session, runtime.clone(), config.clone()).await;
    tracing::info!(
        data = %session.data_dir().display(),
        bind = %address,
        workers = args.workers,
        token = if token.is_some() { "set (redacted)" } else { "none (loopback only)" },
        socket = %socket.as_ref().map_or("none".into(), |s| s.path().display().to_string()),
        allowed_hosts = %if args.allow_hosts.is_empty() { "IP addresses and localhost".to_owned() } else { format!("IP addresses, localhost, {}", args.allow_hosts.join(", ")) },
        public_health = args.public_health,
        alarm_window_secs = args.alarm_window.as_secs(),
        prune_older_than_secs = args.prune_older_than.map(|d| d.as_secs()),
        notifications = %if notifiers.is_empty() { "none".to_owned() } else { notifiers.join(", ") },
        agents = %runtime.agents().join(", "),
        "serving the API and running the workers until SIGINT or SIGTERM"
    );
    if runtime.has_notifiers() {
        // Looks at twice the rate the window allows, but at least every 30 s.
        let period = (args.alarm_window / 2)
            .clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(30));
        tokio::spawn(crate::ops::notify_alarms(runtime.clone(), metrics.clone(), period));
    }
    if let Some(token) = token {
        config = config.token(token);
    }
    let app = crate::ops::router(runtime.clone(), config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::ops::serve(listener, app, ServeLimits::default(), async {
        let _ = stopped.await;
    }));
    // Workers until a signal: then they stop claiming, finish or release what they hold, and
    // only then does the server close.
    let workers = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.run_until_signal().await }
    });
    // Said once the workers run, so that whoever waits for this line finds the server ready.
    while !runtime.is_working() && !workers.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    say!("serving on {url}")?;
    let worked = workers.await.map_err(|e| CliError::store(format!("the workers failed: {e}")))?;
    let _ = stop.send(());
    let served = server.await;
    if let Some(socket) = socket {
        socket.close().await;
    }
    worked.map_err(|e| CliError::store(e.to_string()))?;
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CliError::store(format!("the server failed: {e}"))),
        Err(e) => Err(CliError::store(format!("the server failed: {e}"))),
    }
}

/// The operator API on the data directory's socket, for the CLI on this machine (`serve` and
/// `work`); `None`, with a warning, when it cannot be opened (the CLI then cannot reach this
/// process but through `--server`).
pub(super) async fn open_socket(
    session: &Session,
    runtime: Arc<crate::runtime::Runtime>,
    config: OpsConfig,
) -> Option<LocalSocket> {
    if session.shared_store().is_some() {
        // Every process reaches a shared store itself; several may serve one data directory.
        return None;
    }
    match LocalSocket::open(runtime, session.data_dir(), config).await {
        Ok(socket) => Some(socket),
        Err(error) => {
            tracing::warn!(
                %error,
                "no operator socket: the CLI on this machine cannot reach this process but through --server"
            );
            None
        }
    }
}
