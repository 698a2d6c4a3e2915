//! The rule-based classifier: keywords and regular expressions from a TOML file.

use std::path::Path;

use regex::Regex;
use serde::Deserialize;

use super::{Item, Label, Verdict, one_line};

/// A rules file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// The file cannot be read.
    #[error("cannot read the rules file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML does not parse or does not fit (an unknown label, a missing field).
    #[error("the rules are not valid TOML of the expected shape: {0}")]
    Toml(#[from] toml::de::Error),
    /// A pattern is not a valid regular expression.
    #[error("rule `{rule}`: pattern `{pattern}` is not a valid regular expression: {source}")]
    Pattern {
        /// The rule.
        rule: String,
        /// The pattern.
        pattern: String,
        /// The regex error.
        source: Box<regex::Error>,
    },
    /// A rule with nothing to match.
    #[error("rule `{0}` has neither keywords nor patterns")]
    Empty(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(rename = "rule", default)]
    rules: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    label: Label,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

/// One rule: a label, and what in an item's title or text points to it.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The rule's name (shown as who labelled an item).
    pub name: String,
    /// The label it votes for.
    pub label: Label,
    keywords: Option<Regex>,
    patterns: Vec<Regex>,
    weight: u32,
}

impl Rule {
    /// How strongly this rule points at `text`: distinct keywords found plus patterns that
    /// match, times the rule's weight.
    fn score(&self, text: &str) -> u32 {
        let keywords = self.keywords.as_ref().map_or(0, |re| {
            let mut seen: Vec<String> =
                re.find_iter(text).map(|m| m.as_str().to_lowercase()).collect();
            seen.sort();
            seen.dedup();
            seen.len()
        });
        let patterns = self.patterns.iter().filter(|re| re.is_match(text)).count();
        (keywords + patterns) as u32 * self.weight
    }
}

/// Keyword and regex rules, loaded from TOML:
///
/// ```toml
/// [[rule]]
/// name = "advisories"
/// label = "security"                       # one of the labels
/// keywords = ["vulnerability", "CVE"]      # whole words, any case
/// patterns = ['CVE-\d{4}-\d{4,}']          # regular expressions
/// weight = 2                               # optional, 1 by default
/// ```
///
/// An item's score for a label is the sum of its rules' scores over the title and text; the
/// highest-scoring label wins (earlier rules win ties), and an item no rule matches gets no
/// label.
#[derive(Clone, Debug)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// The rules bundled with steadfast (the demo's), for the five labels.
    pub fn builtin() -> Rules {
        Rules::from_toml(include_str!("rules.toml")).expect("the bundled rules are valid")
    }

    /// Rules from TOML text.
    pub fn from_toml(text: &str) -> Result<Rules, RulesError> {
        let file: File = toml::from_str(text)?;
        let mut rules = Vec::with_capacity(file.rules.len());
        for spec in file.rules {
            if spec.keywords.is_empty() && spec.patterns.is_empty() {
                return Err(RulesError::Empty(spec.name));
            }
            let keywords = (!spec.keywords.is_empty()).then(|| {
                let words: Vec<String> = spec.keywords.iter().map(|k| regex::escape(k)).collect();
                Regex::new(&format!(r"(?i)\b(?:{})\b", words.join("|")))
                    .expect("escaped keywords form a valid regex")
            });
            let mut patterns = Vec::with_capacity(spec.patterns.len());
            for pattern in &spec.patterns {
                patterns.push(Regex::new(pattern).map_err(|e| RulesError::Pattern {
                    rule: spec.name.clone(),
                    pattern: pattern.clone(),
                    source: Box::new(e),
                })?);
            }
            rules.push(Rule {
                name: spec.name,
                label: spec.label,
                keywords,
                patterns,
                weight: spec.weight,
            });
        }
        Ok(Rules { rules })
    }

    /// Rules from a TOML file.
    pub fn load(path: impl AsRef<Path>) -> Result<Rules, RulesError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| RulesError::Io { path: path.display().to_string(), source })?;
        Rules::from_toml(&text)
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The verdict for `item` and the rule that decided it, or `None` when no rule matches.
    pub fn classify(&self, item: &Item) -> Option<(Verdict, String)> {
        let text = format!("{}\n{}", item.title, item.body);
        let mut totals: Vec<(Label, u32, &Rule, u32)> = Vec::new(); // label, total, best rule, its score
        for rule in &self.rules {
            let score = rule.score(&text);
            if score == 0 {
                continue;
            }
            match totals.iter_mut().find(|t| t.0 == rule.label) {
                Some(t) => {
                    t.1 += score;
                    if score > t.3 {
                        (t.2, t.3) = (rule, score);
                    }
                }
                None => totals.push((rule.label, score, rule, score)),
            }
        }
        let best = totals.iter().fold(None::<&(Label, u32, &Rule, u32)>, |best, t| match best {
            Some(b) if b.1 >= t.1 => Some(b),
            _ => Some(t),
        })?;
        let others: u32 = totals.iter().map(|t| t.1).sum::<u32>() - best.1;
        // More evidence, and less for other labels, is more confidence; never certainty.
        let confidence = (0.5 + 0.1 * f64::from(best.1) - 0.1 * f64::from(others)).clamp(0.3, 0.95);
        let verdict = Verdict { label: best.0, confidence, summary: summary_of(item) };
        Some((verdict, best.2.name.clone()))
    }
}

/// The first sentence of the item's text (or its title), one line, at most 300 characters.
pub(crate) fn summary_of(item: &Item) -> String {
    let text = if item.body.trim().is_empty() { &item.title } else { &item.body };
    let text = one_line(text, 1000);
    let end = text.find(". ").map(|i| i + 1).unwrap_or(text.len());
    let summary = one_line(&text[..end], 299);
    if summary.is_empty() { one_line(&item.title, 299) } else { summary }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(title: &str, body: &str) -> Item {
        Item {
            id: "1".into(),
            source: "t".into(),
            title: title.into(),
            body: body.into(),
            link: None,
            published: None,
        }
    }

    #[test]
    fn the_strongest_label_wins() {
        let rules = Rules::builtin();
        let (verdict, rule) = rules
            .classify(&item(
                "Critical vulnerability in libfoo",
                "CVE-2026-12345 allows remote code execution. Upgrade now.",
            ))
            .unwrap();
        assert_eq!(verdict.label, Label::Security, "{rule}");
        assert!(verdict.confidence > 0.5);
        assert_eq!(verdict.summary, "CVE-2026-12345 allows remote code execution.");
        assert!(rules.classify(&item("Lunch menu", "Soup and bread.")).is_none());
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let err =
            Rules::from_toml("[[rule]]\nname = \"x\"\nlabel = \"weather\"\nkeywords = [\"a\"]")
                .unwrap_err();
        assert!(err.to_string().contains("unknown variant `weather`"), "{err}");
        let err =
            Rules::from_toml("[[rule]]\nname = \"x\"\nlabel = \"release\"\npatterns = [\"(\"]")
                .unwrap_err();
        assert!(err.to_string().contains("rule `x`: pattern `(`"), "{err}");
        let err = Rules::from_toml("[[rule]]\nname = \"x\"\nlabel = \"release\"").unwrap_err();
        assert!(matches!(err, RulesError::Empty(_)));
    }

    proptest::proptest! {
        /// The bundled rules label any text or decline, with a bounded confidence and a
        /// summary that fits the schema.
        #[test]
        fn any_text_gets_a_valid_verdict_or_none(title in "\\PC{0,80}", body in "\\PC{0,400}") {
            static RULES: std::sync::LazyLock<Rules> = std::sync::LazyLock::new(Rules::builtin);
            if let Some((verdict, rule)) = RULES.classify(&item(&title, &body)) {
                proptest::prop_assert!((0.3..=0.95).contains(&verdict.confidence));
                proptest::prop_assert!(!rule.is_empty());
                let value = serde_json::to_value(&verdict).unwrap();
                crate::schema::check::<Verdict>(&value).unwrap();
            }
        }
    }

    /// One keyword of each bundled rule, with its label.
    const KEYWORDS: [(&str, Label); 5] = [
        ("CVE", Label::Security),
        ("outage", Label::Incident),
        ("released", Label::Release),
        ("arXiv", Label::Research),
        ("meetup", Label::Community),
    ];

    proptest::proptest! {
        /// Text that holds keywords (in any case, among noise that holds no words or version
        /// numbers, which the release rule's patterns take) is always
        /// labelled, by a rule whose keyword it holds, with a verdict that fits the schema:
        /// the body of the property above, run on every case instead of almost none.
        #[test]
        fn text_with_keywords_is_labelled_by_one_of_them(
            noise in proptest::collection::vec("[,;:!?()\\- ]{0,12}", 1..6),
            picks in proptest::collection::vec((0..KEYWORDS.len(), proptest::bool::ANY), 1..4),
            in_title in proptest::bool::ANY,
        ) {
            static RULES: std::sync::LazyLock<Rules> = std::sync::LazyLock::new(Rules::builtin);
            let mut words = noise.clone();
            for (k, &(pick, upper)) in picks.iter().enumerate() {
                let keyword = KEYWORDS[pick].0;
                let keyword = if upper { keyword.to_uppercase() } else { keyword.to_lowercase() };
                words.insert(k.min(words.len()), keyword);
            }
            let text = words.join(" ");
            let (title, body) = if in_title { (text.as_str(), "") } else { ("", text.as_str()) };
            let labelled = RULES.classify(&item(title, body));
            proptest::prop_assert!(labelled.is_some(), "no label for {text:?}");
            let (verdict, _) = labelled.unwrap();
            let allowed: Vec<Label> = picks.iter().map(|&(p, _)| KEYWORDS[p].1).collect();
            proptest::prop_assert!(allowed.contains(&verdict.label), "{:?} for {text:?}", verdict.label);
            proptest::prop_assert!((0.3..=0.95).contains(&verdict.confidence));
            crate::schema::check::<Verdict>(&serde_json::to_value(&verdict).unwrap()).unwrap();
        }
    }

    #[test]
    fn keywords_match_whole_words_in_any_case() {
        let rules = Rules::from_toml(
            "[[rule]]\nname = \"r\"\nlabel = \"release\"\nkeywords = [\"release\", \"v1.0\"]",
        )
        .unwrap();
        assert!(rules.classify(&item("RELEASE notes", "")).is_some());
        assert!(rules.classify(&item("prereleased", "")).is_none());
        assert!(rules.classify(&item("ships v1.0 today", "")).is_some());
    }
}
