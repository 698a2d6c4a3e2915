//! The collector: items from a folder of files or from feeds over HTTP.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::fetch::Fetcher;
use super::{Edition, Item};
use crate::agent::{Agent, Context, Outcome};
use crate::fault::{AgentError, Classify, Fault, RetryPolicy};

/// The longest body kept for an item, in characters (the rest is cut).
const MAX_BODY_CHARS: usize = 20_000;

/// The longest title kept for an item, in characters (the rest is cut).
pub const MAX_TITLE_CHARS: usize = 300;

/// The largest item file read from a folder by default, in bytes (2 MiB, like the
/// fetcher's body cap); a larger file is skipped with a note.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// How many items an edition keeps by default.
pub const DEFAULT_MAX_ITEMS: usize = 500;

/// Where items come from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A folder of `.md`, `.txt` and `.json` files (not recursive, in file-name order).
    Folder(PathBuf),
    /// An RSS, Atom or JSON Feed URL, fetched through the collector's [`Fetcher`].
    Feed(String),
}

/// Collects the items of an edition from its sources, deduplicated by id and by content.
///
/// - `.md`: the first `# ` heading is the title (else the file name), the rest the body.
/// - `.txt`: the first non-empty line is the title, the rest the body.
/// - `.json`: one object or an array of objects `{"title", "body"?, "id"?, "link"?,
///   "published"?}`, each checked against that schema; an item that does not fit is skipped.
/// - feeds: every entry (title, summary or content with tags stripped, link, date).
///
/// A file or feed that cannot be read or parsed is skipped with a warning and a note on the
/// run (`steadfast runs show`), so one bad file does not hold the digest; a feed that fails
/// transiently (a timeout, a 503) fails the attempt, which is retried. If no source could be
/// read at all, the run fails.
///
/// Bounds, each said in a note when it applies: a file over [`max_file_bytes`] (2 MiB by
/// default) is skipped; a title is cut at [`MAX_TITLE_CHARS`] characters and a body at
/// 20,000; an edition keeps the first [`max_items`] items (500 by default) and says how
/// many it left out.
///
/// [`max_file_bytes`]: Collector::max_file_bytes
/// [`max_items`]: Collector::max_items
#[derive(Clone, Debug)]
pub struct Collector {
    sources: Vec<Source>,
    fetcher: Fetcher,
    max_items: usize,
    max_file_bytes: u64,
}

impl Collector {
    /// A collector of `sources`.
    pub fn new(sources: impl IntoIterator<Item = Source>) -> Self {
        Collector {
            sources: sources.into_iter().collect(),
            fetcher: Fetcher::new(),
            max_items: DEFAULT_MAX_ITEMS,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }

    /// A collector of one folder.
    pub fn folder(path: impl Into<PathBuf>) -> Self {
        Collector::new([Source::Folder(path.into())])
    }

    /// A collector of one feed.
    pub fn feed(url: impl Into<String>) -> Self {
        Collector::new([Source::Feed(url.into())])
    }

    /// Adds a source.
    #[must_use]
    pub fn source(mut self, source: Source) -> Self {
        self.sources.push(source);
        self
    }

    /// Fetches feeds with `fetcher` (its timeout, size cap and allow-list).
    #[must_use]
    pub fn fetcher(mut self, fetcher: Fetcher) -> Self {
        self.fetcher = fetcher;
        self
    }

    /// Keeps at most `n` items per edition (500 by default); the rest are left out, and a
    /// note on the run says how many.
    #[must_use]
    pub fn max_items(mut self, n: usize) -> Self {
        self.max_items = n;
        self
    }

    /// Skips item files larger than `bytes` (2 MiB by default), with a note.
    #[must_use]
    pub fn max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }
}

/// An item as written in a `.json` file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FileItem {
    #[serde(default)]
    id: Option<String>,
    #[schemars(length(min = 1, max = 1000))]
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    link: Option<String>,
    #[serde(default)]
    published: Option<String>,
}

/// What reading one source gave: its items, and what was skipped and why.
#[derive(Default)]
struct Harvest {
    items: Vec<Item>,
    skipped: Vec<String>,
}

#[async_trait]
impl Agent for Collector {
    type Input = Edition;
    type Output = Vec<Item>;

    fn name(&self) -> &str {
        "collector"
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default().max_attempts(4)
    }

    async fn run(
        &self,
        ctx: &mut Context,
        edition: Edition,
    ) -> Result<Outcome<Vec<Item>>, AgentError> {
        let mut all = Vec::new();
        let mut failures = Vec::new();
        for source in &self.sources {
            let harvest = match source {
                Source::Folder(path) => read_folder(path, self.max_file_bytes).await,
                Source::Feed(url) => match self.fetcher.get(url).await {
                    Ok((url, body)) => parse_feed(&url, &body),
                    // The error names the feed's URL.
                    Err(e) if e.fault() == Fault::Permanent => Err(AgentError::from(e)),
                    Err(e) => return Err(AgentError::from(e)),
                },
            };
            match harvest {
                Ok(harvest) => {
                    for why in &harvest.skipped {
                        tracing::warn!(parent: ctx.span(), edition = %edition.name, "skipped: {why}");
                        ctx.note(&format!("skipped {why}")).await?;
                    }
                    all.extend(harvest.items);
                }
                Err(error) => {
                    // With its causes ("reading the folder x: No such file or directory").
                    let why = error.to_info();
                    let why =
                        why.chain.iter().fold(why.message.clone(), |m, c| format!("{m}: {c}"));
                    tracing::warn!(parent: ctx.span(), error = %why, "source skipped");
                    ctx.note(&format!("source skipped: {why}")).await?;
                    failures.push(error);
                }
            }
        }
        if !self.sources.is_empty() && failures.len() == self.sources.len() {
            let first = failures.swap_remove(0);
            return Err(first.context("no source could be read"));
        }
        let (kept, left_out) = dedupe(all, self.max_items);
        if left_out > 0 {
            let why = format!(
                "left out {left_out} of {} items: an edition keeps at most {} \
                 (Collector::max_items; `steadfast demo --max-items N`)",
                kept.len() + left_out,
                self.max_items
            );
            tracing::warn!(parent: ctx.span(), edition = %edition.name, "{why}");
            ctx.note(&why).await?;
        }
        Ok(Outcome::Done(kept))
    }
}

/// Drops items whose id or content was seen before, keeping the first; keeps at most `max`
/// and returns how many distinct items it left out over that cap.
fn dedupe(items: Vec<Item>, max: usize) -> (Vec<Item>, usize) {
    let mut ids = HashSet::new();
    let mut contents = HashSet::new();
    let mut kept = Vec::new();
    let mut left_out = 0;
    for item in items {
        let content =
            crate::hash::fnv1a([item.title.trim(), "\0", item.body.trim()].concat().as_bytes());
        if ids.insert(item.id.clone()) & contents.insert(content) {
            if kept.len() < max {
                kept.push(item);
            } else {
                left_out += 1;
            }
        }
    }
    (kept, left_out)
}

/// `text`, trimmed, cut at `max` characters (with an ellipsis).
fn cut(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

fn clip(text: &str) -> String {
    cut(text, MAX_BODY_CHARS)
}

/// A title on one line, cut at [`MAX_TITLE_CHARS`].
fn clip_title(text: &str) -> String {
    let one: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    cut(&one, MAX_TITLE_CHARS)
}

async fn read_folder(path: &Path, max_bytes: u64) -> Result<Harvest, AgentError> {
    let shown = path.display();
    let mut entries = tokio::fs::read_dir(path)
        .await
        .map_err(|e| AgentError::from(e).context(format!("reading the folder {shown}")))?;
    let mut files = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| AgentError::from(e).context(format!("listing the folder {shown}")))?
    {
        let file = entry.path();
        let wanted = file.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            matches!(e.to_ascii_lowercase().as_str(), "md" | "markdown" | "txt" | "json")
        });
        if wanted && entry.file_type().await.is_ok_and(|t| t.is_file()) {
            files.push(file);
        }
    }
    files.sort();
    let mut harvest = Harvest::default();
    for file in files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let source = file.display().to_string();
        let too_big = |size: u64| {
            format!("{source}: {size} bytes, over the {max_bytes}-byte limit for an item file")
        };
        match tokio::fs::metadata(&file).await {
            Ok(meta) if meta.len() > max_bytes => {
                harvest.skipped.push(too_big(meta.len()));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                harvest.skipped.push(format!("{source}: {e}"));
                continue;
            }
        }
        let bytes = match tokio::fs::read(&file).await {
            // It may have grown since.
            Ok(bytes) if bytes.len() as u64 > max_bytes => {
                harvest.skipped.push(too_big(bytes.len() as u64));
                continue;
            }
            Ok(bytes) => bytes,
            Err(e) => {
                harvest.skipped.push(format!("{source}: {e}"));
                continue;
            }
        };
        let Ok(text) = String::from_utf8(bytes) else {
            harvest.skipped.push(format!("{source}: not UTF-8 text"));
            continue;
        };
        let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "json" => read_json(&name, &source, &text, &mut harvest),
            _ => {
                let (title, body) = if ext == "txt" { split_txt(&text) } else { split_md(&text) };
                let title = title.unwrap_or_else(|| {
                    file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
                });
                harvest.items.push(Item {
                    id: format!("file:{name}"),
                    source,
                    title: clip_title(&title),
                    body: clip(&body),
                    link: None,
                    published: None,
                });
            }
        }
    }
    Ok(harvest)
}

fn split_md(text: &str) -> (Option<String>, String) {
    let mut title = None;
    let mut body = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("# ") {
            Some(heading) if title.is_none() => title = Some(heading.trim().to_owned()),
            _ => body.push(line),
        }
    }
    (title, body.join("\n"))
}

fn split_txt(text: &str) -> (Option<String>, String) {
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let title = lines.next().map(|l| l.trim().to_owned());
    (title, lines.collect::<Vec<_>>().join("\n"))
}

fn read_json(name: &str, source: &str, text: &str, harvest: &mut Harvest) {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            harvest.skipped.push(format!("{source}: not JSON: {e}"));
            return;
        }
    };
    let values = match value {
        Value::Array(values) => values,
        other => vec![other],
    };
    for (i, value) in values.into_iter().enumerate() {
        match crate::schema::from_value::<FileItem>(value) {
            Ok(item) => harvest.items.push(Item {
                id: item.id.unwrap_or_else(|| format!("file:{name}#{i}")),
                source: source.to_owned(),
                title: clip_title(&item.title),
                body: clip(&item.body),
                link: item.link,
                published: item.published,
            }),
            Err(e) => harvest.skipped.push(format!("{source} item {i}: {e}")),
        }
    }
}

/// The items of an RSS, Atom or JSON feed.
fn parse_feed(url: &str, body: &[u8]) -> Result<Harvest, AgentError> {
    let parser = feed_rs::parser::Builder::new().base_uri(Some(url)).build();
    let feed = parser.parse(body).map_err(|e| {
        AgentError::new(Fault::Permanent, format!("`{url}` is not an RSS, Atom or JSON feed: {e}"))
    })?;
    let mut harvest = Harvest::default();
    for entry in feed.entries {
        let title = entry.title.map(|t| strip_tags(&t.content)).unwrap_or_default();
        let summary: Option<String> = entry.summary.map(|s| s.content);
        let content: Option<String> = entry.content.and_then(|c| c.body);
        let body = summary.or(content).map(|b: String| strip_tags(&b)).unwrap_or_default();
        if title.trim().is_empty() && body.trim().is_empty() {
            harvest.skipped.push(format!("{url}: entry `{}` has no title and no text", entry.id));
            continue;
        }
        harvest.items.push(Item {
            id: entry.id,
            source: url.to_owned(),
            title: clip_title(&title),
            body: clip(&body),
            link: entry.links.first().map(|l| l.href.clone()),
            published: entry.published.or(entry.updated).map(|d| d.to_rfc3339()),
        });
    }
    Ok(harvest)
}

/// Text without HTML tags, with the common entities decoded (feeds often carry HTML
/// summaries; the text goes to a classifier and, escaped again, into the report).
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_text_split_into_title_and_body() {
        assert_eq!(
            split_md("# Title\n\nBody\n# Second\n"),
            (Some("Title".into()), "\nBody\n# Second".into())
        );
        assert_eq!(split_txt("\n\nFirst line\nrest\n"), (Some("First line".into()), "rest".into()));
        assert_eq!(split_md("no heading"), (None, "no heading".into()));
    }

    #[test]
    fn duplicates_by_id_or_content_are_dropped() {
        let item = |id: &str, title: &str| Item {
            id: id.into(),
            source: "s".into(),
            title: title.into(),
            body: "b".into(),
            link: None,
            published: None,
        };
        let (kept, left_out) =
            dedupe(vec![item("1", "a"), item("1", "b"), item("2", "a"), item("3", "c")], 10);
        assert_eq!(kept.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(left_out, 0);
        // Over the cap: the first are kept, the distinct rest counted (duplicates are not).
        let (kept, left_out) =
            dedupe(vec![item("1", "a"), item("2", "b"), item("2", "b"), item("3", "c")], 1);
        assert_eq!((kept.len(), left_out), (1, 2));
    }

    #[test]
    fn titles_are_one_line_and_bounded() {
        let long = "x".repeat(MAX_TITLE_CHARS * 3);
        let title = clip_title(&long);
        assert_eq!(title.chars().count(), MAX_TITLE_CHARS + 1, "cut, with an ellipsis");
        assert_eq!(clip_title("  a\nb\tc "), "a b c");
    }

    #[test]
    fn tags_are_stripped_and_entities_decoded() {
        assert_eq!(strip_tags("<p>Fish &amp; <b>chips</b></p>&lt;3"), "Fish & chips <3");
    }

    #[test]
    fn json_items_are_checked() {
        let mut harvest = Harvest::default();
        read_json(
            "x.json",
            "x.json",
            r#"[{"title": "ok"}, {"title": 3}, {"title": "", "body": "b"}, {"title": "t", "extra": 1}]"#,
            &mut harvest,
        );
        assert_eq!(harvest.items.len(), 1);
        assert_eq!(harvest.items[0].id, "file:x.json#0");
        assert_eq!(harvest.skipped.len(), 3, "{:?}", harvest.skipped);
        read_json("y.json", "y.json", "{not json", &mut harvest);
        assert!(harvest.skipped[3].contains("not JSON"));
    }
}
