//! The flagship agents (feature `agents`, on by default through `cli`): the four stages of the
//! digest pipeline that `steadfast demo` runs.
//!
//! ```text
//! Collector ──Vec<Item>──▶ Classifier (fan-out) ──Vec<Labeled>──▶ Reporter ──Report──▶ Mailer ──▶ Receipt
//! ```
//!
//! - [`Collector`] reads a folder of `.md`/`.txt`/`.json` items, or RSS/Atom/JSON feeds over
//!   HTTP through [`Fetcher`], which refuses private, loopback, link-local and metadata
//!   addresses unless the operator allow-lists them, caps bodies and times out.
//! - [`Classifier`] asks an OpenAI-compatible endpoint ([`ChatClient`]) for a [`Verdict`]
//!   that must pass the schema gate (with the repair loop); when that fails it falls back to
//!   [`Rules`] (keywords and regexes from TOML), and an item neither can label is held for
//!   review.
//! - [`Reporter`] renders a Markdown and an HTML digest (HTML auto-escaped), grouped by label.
//! - [`Mailer`] sends it over SMTP or writes it to a file outbox, with a `Message-ID` made from
//!   the effect key, so a re-sent copy is recognisable.
//!
//! [`digest`] puts them together:
//!
//! ```no_run
//! use steadfast::agents::{self, Classifier, Collector, Mailer, Reporter, Rules, Transport};
//! use steadfast::prelude::*;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = agents::digest(
//!     Collector::folder("items"),
//!     Classifier::rules(Rules::builtin()),
//!     Reporter::new("reports"),
//!     Mailer::new(Transport::outbox("outbox"), "digest@example.com", ["team@example.com"])?,
//! );
//! let rt = Runtime::builder().store(SledStore::open("steadfast-data")?).pipeline(pipeline).build()?;
//! rt.submit("digest", agents::Edition::new("2026-11-23")).await?;
//! rt.run_until_idle().await?;
//! # Ok(()) }
//! ```

mod address;
mod classifier;
mod collector;
mod fetch;
mod llm;
mod mail_notifier;
mod mailer;
mod reporter;
mod rules;
mod secret;
mod webhook;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::pipeline::{FanIn, Pipeline};

pub use self::classifier::Classifier;
pub use self::collector::{
    Collector, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_ITEMS, MAX_TITLE_CHARS, Source,
};
pub use self::fetch::{FetchError, Fetcher};
pub use self::llm::{ChatClient, ChatError, ResponseFormat};
pub use self::mail_notifier::MailNotifier;
pub use self::mailer::{AddressError, Mailer, Receipt, SmtpSecurity, Transport};
pub use self::reporter::{Report, Reporter};
pub use self::rules::{Rule, Rules, RulesError};
pub use self::secret::Secret;
pub use self::webhook::{
    Delivered, EVENT_HEADER, ID_HEADER, SIGNATURE_HEADER, Webhook, WebhookError, signature, verify,
};

/// Which digest a pipeline run makes: the same edition submitted twice is the same run, so it
/// collects, reports and mails once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Edition {
    /// A name for the edition, usually a date (`2026-11-23`).
    #[schemars(length(min = 1, max = 100))]
    pub name: String,
}

impl Edition {
    /// The edition `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Edition { name: name.into() }
    }
}

/// One collected item: an article, a post, an announcement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Item {
    /// Stable identity: the feed entry's id, the file's name, or a hash of the content.
    pub id: String,
    /// Where it came from (a file path or a feed URL).
    pub source: String,
    /// Its title, as collected (untrusted text).
    pub title: String,
    /// Its text, as collected (untrusted text).
    #[serde(default)]
    pub body: String,
    /// A link to the original, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// When it was published (RFC 3339), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
}

/// The labels of the digest.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// Vulnerabilities, advisories, breaches.
    Security,
    /// Outages, incidents, post-mortems.
    Incident,
    /// Releases, new versions, changelogs.
    Release,
    /// Papers, benchmarks, studies.
    Research,
    /// Events, talks, hiring, community news.
    Community,
}

impl Label {
    /// Every label, in the digest's order.
    pub const ALL: [Label; 5] =
        [Label::Security, Label::Incident, Label::Release, Label::Research, Label::Community];

    /// The label's name (`security`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Security => "security",
            Label::Incident => "incident",
            Label::Release => "release",
            Label::Research => "research",
            Label::Community => "community",
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Label {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Label::ALL.into_iter().find(|l| l.as_str().eq_ignore_ascii_case(s.trim())).ok_or_else(
            || {
                let names: Vec<&str> = Label::ALL.iter().map(|l| l.as_str()).collect();
                format!("unknown label `{s}`; the labels are {}", names.join(", "))
            },
        )
    }
}

/// What the model must answer for an item: validated against this type's JSON Schema before
/// anything is done with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// The item's label.
    pub label: Label,
    /// How sure the labeller is, from 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: f64,
    /// One sentence on what the item is about.
    #[schemars(length(min = 1, max = 300))]
    pub summary: String,
}

/// Who labelled an item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum LabeledBy {
    /// The model, after `attempts` calls (more than one: the repair loop re-asked).
    Model {
        /// The model's name.
        model: String,
        /// How many answers it took.
        attempts: u32,
    },
    /// A rule of the rule-based classifier.
    Rules {
        /// The rule that decided.
        rule: String,
    },
    /// An operator, resolving the item from review.
    Operator,
}

/// An item with its verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Labeled {
    /// The item.
    pub item: Item,
    /// Its label, confidence and summary.
    pub verdict: Verdict,
    /// Who labelled it.
    pub by: LabeledBy,
}

/// The digest pipeline, named `digest`: collect, classify each item (8 at a time; items that
/// fail or are held for review are left out of this edition, and the pipeline goes on if at
/// least half were labelled), report, mail.
pub fn digest(
    collector: Collector,
    classifier: Classifier,
    reporter: Reporter,
    mailer: Mailer,
) -> Pipeline<Edition, Receipt> {
    digest_with(collector, classifier, reporter, mailer, 8)
}

/// [`digest`], classifying `concurrency` items at a time (a local model server that answers
/// one request at a time is best asked by one or two).
pub fn digest_with(
    collector: Collector,
    classifier: Classifier,
    reporter: Reporter,
    mailer: Mailer,
    concurrency: usize,
) -> Pipeline<Edition, Receipt> {
    Pipeline::new("digest")
        .then(collector)
        .fan_out_with(classifier, concurrency.max(1), FanIn::Fraction(0.5))
        .then(reporter)
        .then(mailer)
}

/// Whether a rustls error about the peer's certificate is among `error`'s sources, looking
/// inside `io::Error`s too (whose `source` skips the error they wrap).
pub(crate) fn refused_certificate(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && refused_certificate(inner)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Writes each `(path, bytes)` atomically and durably: every file to a temporary beside it,
/// synced, renamed over the path; then each folder synced once, so the renames themselves
/// survive a crash before the effect that wrote them is journaled.
pub(crate) async fn write_atomically(files: &[(&std::path::Path, &[u8])]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut dirs: Vec<&std::path::Path> = Vec::new();
    for (path, bytes) in files {
        let tmp = path.with_extension("tmp");
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(bytes).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, path).await?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(".".as_ref());
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for dir in dirs {
        tokio::fs::File::open(dir).await?.sync_all().await?;
    }
    Ok(())
}

/// One line of untrusted text, safe for a header, a heading or a log: control characters
/// (CR, LF, NUL, ...) become spaces, runs of whitespace one space, and the result is cut at
/// `max` characters.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut count = 0;
    for c in text.chars() {
        let c = if c.is_control() || c.is_whitespace() { ' ' } else { c };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        if count == max {
            out.push('…');
            break;
        }
        out.push(c);
        count += 1;
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_strips_control_characters() {
        assert_eq!(one_line("a\r\nBcc: x@y\0z", 100), "a Bcc: x@y z");
        assert_eq!(one_line("  many   spaces\t", 100), "many spaces");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }

    proptest::proptest! {
        /// Whatever the text, a line made of it has no control characters (no CR, LF or NUL to
        /// end a header), no doubled or edge spaces, and at most `max` characters plus `…`.
        #[test]
        fn one_line_is_one_clean_line(text in "\\PC*|[\\x00-\\x20a\\r\\n]*", max in 0usize..50) {
            let line = one_line(&text, max);
            proptest::prop_assert!(!line.chars().any(char::is_control), "{line:?}");
            proptest::prop_assert!(!line.contains("  ") && line.trim() == line, "{line:?}");
            proptest::prop_assert!(line.trim_end_matches('…').chars().count() <= max);
        }
    }

    #[test]
    fn labels_parse_and_print() {
        for label in Label::ALL {
            assert_eq!(label.as_str().parse::<Label>().unwrap(), label);
            assert_eq!(serde_json::to_value(label).unwrap(), label.as_str());
        }
        assert!("weather".parse::<Label>().unwrap_err().contains("security, incident"));
    }
}
