//! Log output for programs built on steadfast (feature `cli`): human-readable lines by
//! default, JSON lines with `STEADFAST_LOG_FORMAT=json`, filtered by `STEADFAST_LOG` (or
//! `RUST_LOG`; default `info`).
//!
//! Every attempt runs in a span named `attempt` with the fields `run_id`, `agent`,
//! `idempotency_key`, `attempt`, `step`, `duration_ms` and `outcome`; in JSON each event
//! carries them under `span` and `spans`.

use std::io;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The two output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One human-readable line per event (colour on a terminal).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Format {
    /// The format `STEADFAST_LOG_FORMAT` asks for (`json` or `text`; default `text`).
    pub fn from_env() -> Self {
        match std::env::var("STEADFAST_LOG_FORMAT").as_deref().map(str::trim) {
            Ok(f) if f.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Text,
        }
    }
}

/// The filter from `STEADFAST_LOG`, else `RUST_LOG`, else `default`.
fn filter_or(default: &str) -> EnvFilter {
    std::env::var("STEADFAST_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default))
}

/// Installs the global subscriber as the environment says, writing to stderr. Returns an
/// error if one is installed already.
pub fn init() -> Result<(), tracing_subscriber::util::TryInitError> {
    init_or("info")
}

/// [`init`], with `default` (an `EnvFilter` directive such as `warn`) as the filter when the
/// environment sets none: command-line tools that print their own output log less.
pub fn init_or(default: &str) -> Result<(), tracing_subscriber::util::TryInitError> {
    use tracing_subscriber::util::SubscriberInitExt;
    match Format::from_env() {
        Format::Json => json_or(io::stderr, default).try_init(),
        Format::Text => tracing_subscriber::fmt()
            .with_env_filter(filter_or(default))
            .with_writer(io::stderr)
            .finish()
            .try_init(),
    }
}

/// Log output kept in memory, for tests that check what was (or was not) logged: give it to
/// [`json`] or to `tracing_subscriber::fmt().with_writer(..)`, then read [`Capture::text`].
#[derive(Clone, Debug, Default)]
pub struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    /// Everything written so far (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Capture {
    type Writer = Capture;

    fn make_writer(&'w self) -> Capture {
        self.clone()
    }
}

/// The JSON subscriber, writing to `writer` (public for programs and tests that capture logs).
pub fn json<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    json_or(writer, "info")
}

/// [`json`], with `default` as the filter when the environment sets none (as [`init_or`]).
pub fn json_or<W>(writer: W, default: &str) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_env_filter(filter_or(default))
        .with_writer(writer)
        .finish()
}

#[cfg(test)]
mod tests {

    use async_trait::async_trait;
    use serde_json::Value;

    use crate::prelude::*;
    use crate::store::MemoryStore;

    struct Echo;

    #[async_trait]
    impl Agent for Echo {
        type Input = u32;
        type Output = u32;
        fn name(&self) -> &str {
            "echo"
        }
        async fn run(&self, _ctx: &mut Context, n: u32) -> Result<Outcome<u32>, AgentError> {
            Ok(Outcome::Done(n))
        }
    }

    #[test]
    fn attempts_log_json_lines_with_their_span_fields() {
        let buffer = super::Capture::default();
        let subscriber = super::json(buffer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let rt =
                    Runtime::builder().store(MemoryStore::new()).register(Echo).build().unwrap();
                rt.submit("echo", 7).await.unwrap();
                rt.run_until_idle().await.unwrap();
            });
        });
        let text = buffer.text();
        let lines: Vec<Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect();
        let finished = lines
            .iter()
            .find(|l| l["fields"]["message"] == "attempt finished")
            .unwrap_or_else(|| panic!("no `attempt finished` event in {text}"));
        let span = &finished["span"];
        assert_eq!(span["name"], "attempt");
        assert_eq!(span["agent"], "echo");
        assert_eq!(span["attempt"], 1);
        assert_eq!(span["outcome"], "succeeded");
        assert!(span["run_id"].as_str().is_some_and(|id| id.len() == 26));
        assert!(span["idempotency_key"].as_str().is_some_and(|k| k.starts_with("echo:")));
        assert!(span["duration_ms"].is_u64());
        assert_eq!(finished["fields"]["state"], "succeeded");
        // The move's reason as plain text, not a Rust `Option`'s debug form.
        assert_eq!(finished["fields"]["reason"], "done");
    }
}
