//! The reporter: a Markdown and an HTML digest of the labelled items.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Label, Labeled, LabeledBy, one_line};
use crate::agent::{Agent, Context, Outcome};
use crate::fault::{AgentError, Fault};

/// A rendered digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// The digest's title (also the mail's subject).
    pub title: String,
    /// The title of the most confident item of the first label, if any (the mail's subject
    /// shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline: Option<String>,
    /// How many items it holds.
    pub total: usize,
    /// Items per label, for the labels that have any.
    pub counts: BTreeMap<String, usize>,
    /// The Markdown digest.
    pub markdown: String,
    /// The HTML digest (every collected text escaped).
    pub html: String,
    /// Where the Markdown digest was written.
    pub markdown_path: String,
    /// Where the HTML digest was written.
    pub html_path: String,
}

/// Renders the digest, grouped by label (most confident first), and writes it as
/// `digest-<run id>.md` and `.html` into its folder. Collected text is untrusted: the HTML is
/// rendered with auto-escaping, Markdown control characters in titles are escaped, and only
/// `http(s)` links are linked.
#[derive(Clone, Debug)]
pub struct Reporter {
    dir: PathBuf,
    title: String,
}

impl Reporter {
    /// A reporter writing into `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Reporter { dir: dir.into(), title: "Digest".to_owned() }
    }

    /// Titles the digest `title` (default: `Digest`); the item count is appended.
    #[must_use]
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }
}

#[derive(Serialize)]
struct Entry {
    title: String,
    summary: String,
    link: Option<String>,
    source: String,
    confidence: String,
    by: String,
}

#[derive(Serialize)]
struct Group {
    label: &'static str,
    entries: Vec<Entry>,
}

const MARKDOWN: &str = "# {{ title }}\n\
{% for g in groups %}\n## {{ g.label }} ({{ g.entries|length }})\n\n\
{% for e in g.entries %}- **{{ e.title|md }}**{% if e.link %} ([link](<{{ e.link }}>)){% endif %}: \
{{ e.summary|md }} _({{ e.by }}, {{ e.confidence }})_\n{% endfor %}{% endfor %}";

const HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto;line-height:1.5}
h2{text-transform:capitalize;border-bottom:1px solid #ddd}.meta{color:#666;font-size:.85em}</style>
</head><body>
<h1>{{ title }}</h1>
<p>{% for g in groups %}{{ g.label }}: {{ g.entries|length }}{% if not loop.last %} · {% endif %}{% endfor %}</p>
{% for g in groups %}<h2>{{ g.label }}</h2>
<ul>
{% for e in g.entries %}<li><strong>{% if e.link %}<a href="{{ e.link }}">{{ e.title }}</a>{% else %}{{ e.title }}{% endif %}</strong>: {{ e.summary }} <span class="meta">({{ e.by }}, {{ e.confidence }}; {{ e.source }})</span></li>
{% endfor %}</ul>
{% endfor %}</body></html>
"#;

/// Escapes what Markdown would read as markup inside a list item: emphasis, code, links
/// (with `[` and `]` escaped, a `(` cannot start one) and inline HTML.
fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The digest's text, in both forms.
pub(crate) fn render(
    title: &str,
    items: &[Labeled],
) -> Result<(String, String, Option<String>), minijinja::Error> {
    let mut groups = Vec::new();
    for label in Label::ALL {
        let mut entries: Vec<&Labeled> =
            items.iter().filter(|l| l.verdict.label == label).collect();
        if entries.is_empty() {
            continue;
        }
        entries.sort_by(|a, b| {
            b.verdict
                .confidence
                .total_cmp(&a.verdict.confidence)
                .then(a.item.title.cmp(&b.item.title))
        });
        let entries = entries
            .into_iter()
            .map(|l| Entry {
                title: one_line(&l.item.title, 200),
                summary: one_line(&l.verdict.summary, 300),
                link: l
                    .item
                    .link
                    .as_deref()
                    .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                    .map(|u| one_line(u, 2000).replace(['<', '>', ' '], "")),
                source: one_line(&l.item.source, 200),
                confidence: format!("{:.0}%", l.verdict.confidence * 100.0),
                by: match &l.by {
                    LabeledBy::Model { model, attempts: 1 } => format!("model {model}"),
                    LabeledBy::Model { model, attempts } => {
                        format!("model {model} after {attempts} answers")
                    }
                    LabeledBy::Rules { rule } => format!("rule {rule}"),
                    LabeledBy::Operator => "operator".to_owned(),
                },
            })
            .collect();
        groups.push(Group { label: label.as_str(), entries });
    }
    let mut env = minijinja::Environment::new();
    env.add_filter("md", |s: String| escape_markdown(&s));
    env.add_template("digest.md", MARKDOWN)?;
    env.add_template("digest.html", HTML)?;
    let context = minijinja::context! { title => title, groups => groups };
    let markdown = env.get_template("digest.md")?.render(&context)?;
    let html = env.get_template("digest.html")?.render(&context)?;
    let headline = groups.first().and_then(|g| g.entries.first()).map(|e| e.title.clone());
    Ok((markdown, html, headline))
}

#[async_trait]
impl Agent for Reporter {
    type Input = Vec<Labeled>;
    type Output = Report;

    fn name(&self) -> &str {
        "reporter"
    }

    async fn run(
        &self,
        ctx: &mut Context,
        items: Vec<Labeled>,
    ) -> Result<Outcome<Report>, AgentError> {
        let title = format!(
            "{} — {} item{}",
            one_line(&self.title, 100),
            items.len(),
            if items.len() == 1 { "" } else { "s" }
        );
        let (markdown, html, headline) = render(&title, &items).map_err(|e| {
            AgentError::from_source(Fault::Permanent, e).context("rendering the digest")
        })?;
        let mut counts = BTreeMap::new();
        for l in &items {
            *counts.entry(l.verdict.label.as_str().to_owned()).or_insert(0) += 1;
        }
        let stem = format!("digest-{}", ctx.run_id());
        let markdown_path = self.dir.join(format!("{stem}.md"));
        let html_path = self.dir.join(format!("{stem}.html"));
        let (dir, md, ht) = (&self.dir, &markdown, &html);
        let (mp, hp) = (&markdown_path, &html_path);
        ctx.effect("write report", |_| async move {
            tokio::fs::create_dir_all(dir).await.map_err(|e| {
                AgentError::from(e).context(format!("creating the report folder {}", dir.display()))
            })?;
            super::write_atomically(&[(mp, md.as_bytes()), (hp, ht.as_bytes())]).await?;
            Ok(())
        })
        .await?;
        Ok(Outcome::Done(Report {
            title,
            headline,
            total: items.len(),
            counts,
            markdown,
            html,
            markdown_path: markdown_path.display().to_string(),
            html_path: html_path.display().to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::{Item, Verdict};

    fn labeled(title: &str, label: Label, link: Option<&str>) -> Labeled {
        Labeled {
            item: Item {
                id: title.into(),
                source: "feed".into(),
                title: title.into(),
                body: String::new(),
                link: link.map(Into::into),
                published: None,
            },
            verdict: Verdict { label, confidence: 0.8, summary: format!("about {title}") },
            by: LabeledBy::Rules { rule: "r".into() },
        }
    }

    #[test]
    fn untrusted_text_is_escaped() {
        let items = [
            labeled("<script>alert(1)</script>", Label::Security, Some("javascript:alert(1)")),
            labeled("Fine [x](y)", Label::Release, Some("https://example.com/a\"onmouseover=\"x")),
        ];
        let (markdown, html, headline) = render("Digest — 2 items", &items).unwrap();
        assert_eq!(headline.as_deref(), Some("<script>alert(1)</script>"));
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("javascript:"));
        assert!(!html.contains("\"onmouseover"), "{html}");
        assert!(markdown.contains(r"Fine \[x\](y)"), "{markdown}");
        assert!(markdown.contains("## security (1)"));
        assert!(markdown.find("## security").unwrap() < markdown.find("## release").unwrap());
    }
}
