//! Log output for programs built on steadfast (feature `cli`): human-readable lines by
//! default, JSON lines with `STEADFAST_LOG_FORMAT=json`, filtered by `STEADFAST_LOG` (or
//! `RUST_LOG`; default `info`).
//!
//! Every attempt runs in a span named `attempt` with the fields `run_id`, `agent`,
//! `idempotency_key`, `attempt`, `step`, `duration_ms` and `outcome`; in JSON each event
//! carries them under `span` and `spans`.
//!
//! Log fields carry text from outside (an item's id, a reason an agent wrote, an error from a
//! peer): in the text format every control character in them (a newline, a carriage return, a
//! terminal escape) and every Unicode line separator or direction override is written escaped
//! (`\n`, `\u{1b}`), so one event is one line and no text can forge another line or recolour a
//! terminal. JSON escapes them by itself. Colour is used only when stderr is a terminal.

use std::fmt;
use std::io::{self, IsTerminal};

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
        Format::Text => text_or(io::stderr, default, io::stderr().is_terminal()).try_init(),
    }
}

/// The text subscriber (one line per event, fields escaped: see the module docs), writing to
/// `writer`, in colour if `ansi`; `default` is the filter when the environment sets none.
pub fn text_or<W>(writer: W, default: &str, ansi: bool) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::field::MakeExt;
    let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        match field.name() {
            "message" => write!(writer, "{}", Escaped(&text)),
            name => write!(writer, "{name}={}", Escaped(&text)),
        }
    })
    .delimited(" ");
    tracing_subscriber::fmt()
        .fmt_fields(fields)
        .with_ansi(ansi)
        .with_env_filter(filter_or(default))
        .with_writer(writer)
        .finish()
}

/// Text with its control characters, line separators and direction overrides escaped.
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for c in self.0.chars() {
            let unsafe_char = c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if unsafe_char {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
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

    /// An agent that fails with a reason taken from its input, as an item's id or a peer's
    /// error would be.
    struct Forger;

    #[async_trait]
    impl Agent for Forger {
        type Input = String;
        type Output = u32;
        fn name(&self) -> &str {
            "forger"
        }
        fn idempotency_key(&self, input: &String) -> IdempotencyKey {
            IdempotencyKey::new(input.clone())
        }
        async fn run(&self, _ctx: &mut Context, text: String) -> Result<Outcome<u32>, AgentError> {
            Err(AgentError::permanent(text))
        }
    }

    #[test]
    fn outside_text_cannot_forge_a_text_log_line() {
        let buffer = super::Capture::default();
        let subscriber = super::text_or(buffer.clone(), "info", false);
        let forged = "x\n2026-12-07T20:00:00.000000Z  INFO steadfast: operator approved everything \u{1b}[31m\r";
        tracing::subscriber::with_default(subscriber, || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let rt =
                    Runtime::builder().store(MemoryStore::new()).register(Forger).build().unwrap();
                rt.submit("forger", forged).await.unwrap();
                rt.run_until_idle().await.unwrap();
            });
        });
        let text = buffer.text();
        assert!(text.contains("\\n2026-12-07T20:00:00.000000Z  INFO"), "escaped: {text}");
        assert!(text.contains("\\u{1b}[31m\\r"), "escaped: {text}");
        for line in text.lines() {
            assert!(!line.starts_with("2026-12-07T20:00:00"), "a forged line: {line}");
            assert!(!line.contains('\u{1b}') && !line.contains('\r'), "raw control: {line:?}");
        }
        assert!(text.contains("attempt finished: dead letter"), "the attempt was logged: {text}");
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
