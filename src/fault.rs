//! Failure classes: every error an agent returns is routed by its [`Fault`].

use serde::{Deserialize, Serialize};

/// The class of a failure, which decides what happens to the run next.
///
/// | fault | level | routing |
/// |---|---|---|
/// | `Transient` | L1 | `failed_transient`, exponential backoff with full jitter, then `queued`; after `max_attempts`, `failed_permanent` and the dead letter queue |
/// | `Resource` | L2 | `cleanup()`, then `failed_transient` with the resource cooldown; after its budget, `needs_review` |
/// | `Logic` | L3 | compensate completed steps in reverse (saga), then `needs_review` |
/// | `Permanent` | — | `failed_permanent` and the dead letter queue at once |
/// | `Unknown` | — | one short retry, then `failed_permanent` and the dead letter queue |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fault {
    /// L1: a network blip, a rate limit, a timeout. Worth retrying soon.
    Transient,
    /// L2: an exhausted resource (disk, memory, a connection pool). Clean up, cool down.
    Resource,
    /// L3: inconsistent data or a broken business rule. Undo what was done, ask a human.
    Logic,
    /// Retrying cannot help: bad input, bad credentials, a schema mismatch.
    Permanent,
    /// Not classified: retried once, then dead-lettered with the full error chain.
    Unknown,
}

impl Fault {
    /// The fault's serialized name (`transient`, `resource`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Fault::Transient => "transient",
            Fault::Resource => "resource",
            Fault::Logic => "logic",
            Fault::Permanent => "permanent",
            Fault::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A boxed error, the source of an [`AgentError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An agent's failure: its [`Fault`] class, a message, its source chain, and for a rate limit
/// the time the other side asked us to wait.
///
/// Most agents write `?`: every error type that implements [`Classify`] converts, with the
/// fault it classifies itself as.
///
/// ```
/// use steadfast::fault::{AgentError, Fault};
///
/// fn read_config() -> Result<String, AgentError> {
///     Ok(std::fs::read_to_string("/definitely/not/here")?) // NotFound: permanent
/// }
/// let err = read_config().unwrap_err();
/// assert_eq!(err.fault(), Fault::Permanent);
///
/// let busy = AgentError::transient("HTTP 429 Too Many Requests")
///     .retry_after(std::time::Duration::from_secs(30));
/// assert_eq!(busy.retry_after_delay(), Some(std::time::Duration::from_secs(30)));
/// ```
#[derive(Debug)]
pub struct AgentError {
    fault: Fault,
    message: String,
    source: Option<BoxError>,
    /// The error only wraps `source` (same message): its chain starts at the source's source.
    transparent: bool,
    retry_after: Option<std::time::Duration>,
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AgentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let source: &(dyn std::error::Error + 'static) = self.source.as_deref()?;
        if self.transparent { source.source() } else { Some(source) }
    }
}

impl AgentError {
    /// An error of class `fault`.
    pub fn new(fault: Fault, message: impl Into<String>) -> Self {
        AgentError {
            fault,
            message: message.into(),
            source: None,
            transparent: false,
            retry_after: None,
        }
    }

    /// An error of class `fault` caused by `source` (its message is `source`'s).
    pub fn from_source(fault: Fault, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        AgentError {
            fault,
            message: source.to_string(),
            source: Some(source),
            transparent: true,
            retry_after: None,
        }
    }

    /// Adds context: `message` becomes this error's message, the old error its source.
    #[must_use]
    pub fn context(self, message: impl Into<String>) -> Self {
        let fault = self.fault;
        let retry_after = self.retry_after;
        AgentError {
            fault,
            message: message.into(),
            source: Some(Box::new(self)),
            transparent: false,
            retry_after,
        }
    }

    /// A [`Fault::Transient`] error.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(Fault::Transient, message)
    }

    /// A [`Fault::Resource`] error.
    pub fn resource(message: impl Into<String>) -> Self {
        Self::new(Fault::Resource, message)
    }

    /// A [`Fault::Logic`] error.
    pub fn logic(message: impl Into<String>) -> Self {
        Self::new(Fault::Logic, message)
    }

    /// A [`Fault::Permanent`] error.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(Fault::Permanent, message)
    }

    /// A [`Fault::Unknown`] error.
    pub fn unknown(message: impl Into<String>) -> Self {
        Self::new(Fault::Unknown, message)
    }

    /// The other side asked us to wait this long (`Retry-After`): the next attempt is not
    /// earlier, whatever the backoff says.
    #[must_use]
    pub fn retry_after(mut self, delay: std::time::Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// The class this error is routed by.
    pub fn fault(&self) -> Fault {
        self.fault
    }

    /// The delay the other side asked for, if any.
    pub fn retry_after_delay(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    /// The error as stored on the run and its dead letter: class, message, source chain.
    pub fn to_info(&self) -> ErrorInfo {
        ErrorInfo::from_error(self.fault, self)
    }
}

/// An error type that knows which [`Fault`] it is, so `?` routes it correctly.
pub trait Classify {
    /// The class of this error.
    fn fault(&self) -> Fault;

    /// How long the other side asked us to wait before retrying, if it said.
    fn retry_after(&self) -> Option<std::time::Duration> {
        None
    }
}

impl<E> From<E> for AgentError
where
    E: Classify + std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        let fault = error.fault();
        let retry_after = error.retry_after();
        AgentError { retry_after, ..AgentError::from_source(fault, error) }
    }
}

impl Classify for std::io::Error {
    /// Timeouts and broken connections are transient; a full disk or memory is a resource;
    /// a missing file, a denied permission or bad data is permanent; the rest is unknown.
    fn fault(&self) -> Fault {
        use std::io::ErrorKind::*;
        match self.kind() {
            TimedOut | Interrupted | WouldBlock | ConnectionReset | ConnectionAborted
            | ConnectionRefused | NotConnected | BrokenPipe | AddrInUse | UnexpectedEof
            | NetworkDown | NetworkUnreachable | HostUnreachable | ResourceBusy => Fault::Transient,
            StorageFull | OutOfMemory | QuotaExceeded | FileTooLarge => Fault::Resource,
            NotFound | PermissionDenied | InvalidInput | InvalidData | AlreadyExists
            | Unsupported | IsADirectory | NotADirectory | ReadOnlyFilesystem => Fault::Permanent,
            _ => Fault::Unknown,
        }
    }
}

impl Classify for serde_json::Error {
    /// Bad JSON or JSON of the wrong shape is permanent; an I/O error while reading it is
    /// transient.
    fn fault(&self) -> Fault {
        match self.classify() {
            serde_json::error::Category::Io => Fault::Transient,
            _ => Fault::Permanent,
        }
    }
}

impl Classify for tokio::time::error::Elapsed {
    /// A timeout is transient.
    fn fault(&self) -> Fault {
        Fault::Transient
    }
}

impl Classify for crate::schema::SchemaError {
    /// Output that does not fit the schema will not fit it next time either: permanent (the
    /// repair loop is the place to retry).
    fn fault(&self) -> Fault {
        Fault::Permanent
    }
}

/// A failure, kept on the run and in the dead letter queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct ErrorInfo {
    /// The class the failure was routed by.
    pub fault: Fault,
    /// The error's message.
    pub message: String,
    /// The messages of its sources, outermost first.
    pub chain: Vec<String>,
}

impl ErrorInfo {
    /// An error of `fault` class with `message` and no sources.
    pub fn new(fault: Fault, message: impl Into<String>) -> Self {
        ErrorInfo { fault, message: message.into(), chain: Vec::new() }
    }

    /// The error of `fault` class built from `error` and its `source()` chain.
    pub fn from_error(fault: Fault, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = Vec::new();
        let mut source = error.source();
        while let Some(e) = source {
            chain.push(e.to_string());
            source = e.source();
        }
        ErrorInfo { fault, message: error.to_string(), chain }
    }
}

impl std::fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} fault: {}", self.fault, self.message)?;
        for cause in &self.chain {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

/// How an agent's failures are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all before a transient failure is dead-lettered (default 5).
    pub max_attempts: u32,
    /// The first backoff's upper bound (default 1 s); it doubles with each attempt.
    pub base_delay: std::time::Duration,
    /// The largest backoff (default 5 min).
    pub max_delay: std::time::Duration,
    /// How long a resource fault cools down before the next attempt (default 30 s).
    pub resource_cooldown: std::time::Duration,
    /// Resource faults tolerated before the run pauses in `needs_review` (default 3).
    pub resource_budget: u32,
    /// The delay of the single retry after an unknown fault (default 1 s).
    pub unknown_retry_delay: std::time::Duration,
    /// The longest one attempt may take; past it the attempt fails as transient (default
    /// 5 min; `None` for no limit).
    pub attempt_timeout: Option<std::time::Duration>,
    /// How many attempts in a row may end with their worker process gone (its lease expired:
    /// a crash, an OOM kill, a hang) without journaling an effect, before the run is taken
    /// for a poison pill and dead-lettered (default 3). Every run in flight in a process that
    /// dies is charged, whoever killed it, so keep some room for ordinary crashes.
    pub max_crashes: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: std::time::Duration::from_secs(1),
            max_delay: std::time::Duration::from_secs(300),
            resource_cooldown: std::time::Duration::from_secs(30),
            resource_budget: 3,
            unknown_retry_delay: std::time::Duration::from_secs(1),
            attempt_timeout: Some(std::time::Duration::from_secs(300)),
            max_crashes: 3,
        }
    }
}

impl RetryPolicy {
    /// At most `n` attempts.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Backoff from `base` doubling up to `max`.
    #[must_use]
    pub fn backoff(mut self, base: std::time::Duration, max: std::time::Duration) -> Self {
        self.base_delay = base;
        self.max_delay = max.max(base);
        self
    }

    /// At most `n` attempts in a row that end with their worker gone (see
    /// [`RetryPolicy::max_crashes`]); at least 1.
    #[must_use]
    pub fn max_crashes(mut self, n: u32) -> Self {
        self.max_crashes = n.max(1);
        self
    }

    /// The per-attempt timeout.
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The cooldown and budget of resource faults.
    #[must_use]
    pub fn resource(mut self, cooldown: std::time::Duration, budget: u32) -> Self {
        self.resource_cooldown = cooldown;
        self.resource_budget = budget;
        self
    }

    /// The upper bound of the backoff after failed attempt `attempt` (1-based):
    /// `min(max_delay, base_delay * 2^(attempt-1))`.
    pub fn backoff_ceiling(&self, attempt: u32) -> std::time::Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.base_delay.saturating_mul(1u32 << doublings.min(31)).min(self.max_delay)
    }

    /// The delay before retrying after failed attempt `attempt`: "full jitter", uniform in
    /// `[0, backoff_ceiling(attempt)]`, so that many runs failing together do not retry
    /// together.
    pub fn backoff_delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> std::time::Duration {
        let ceiling = self.backoff_ceiling(attempt).as_millis() as u64;
        std::time::Duration::from_millis(rng.u64(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let policy =
            RetryPolicy::default().backoff(Duration::from_millis(100), Duration::from_secs(2));
        let ceilings: Vec<u128> = (1..=7).map(|a| policy.backoff_ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(policy.backoff_ceiling(1000), Duration::from_secs(2));
        let mut rng = fastrand::Rng::with_seed(7);
        for attempt in 1..10 {
            let delays: Vec<Duration> =
                (0..200).map(|_| policy.backoff_delay(attempt, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= policy.backoff_ceiling(attempt)));
            let spread =
                delays.iter().max().unwrap().as_millis() - delays.iter().min().unwrap().as_millis();
            assert!(
                spread * 2 > policy.backoff_ceiling(attempt).as_millis(),
                "jitter spans the range"
            );
        }
    }

    #[test]
    fn io_errors_classify_by_kind() {
        use std::io::{Error, ErrorKind};
        assert_eq!(Error::from(ErrorKind::TimedOut).fault(), Fault::Transient);
        assert_eq!(Error::from(ErrorKind::StorageFull).fault(), Fault::Resource);
        assert_eq!(Error::from(ErrorKind::PermissionDenied).fault(), Fault::Permanent);
        assert_eq!(Error::other("?").fault(), Fault::Unknown);
        let err: AgentError = Error::from(ErrorKind::ConnectionReset).into();
        assert_eq!(err.fault(), Fault::Transient);
        let json: AgentError = serde_json::from_str::<u8>("x").unwrap_err().into();
        assert_eq!(json.fault(), Fault::Permanent);
    }

    #[test]
    fn context_keeps_the_chain_and_the_class() {
        let err = AgentError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
            .context("fetching the feed");
        assert_eq!(err.fault(), Fault::Transient);
        let info = err.to_info();
        assert_eq!(info.message, "fetching the feed");
        assert_eq!(info.chain, ["timed out"]);
    }
}
