//! [`SchemaError`]: the text held no usable JSON, or the JSON did not fit the type.

use std::fmt;
use std::sync::Arc;

/// One way the JSON failed the schema (or deserialization), with where and why.
#[derive(
    Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[non_exhaustive]
pub struct Violation {
    /// A JSON pointer to the offending value (`""` is the root).
    pub pointer: String,
    /// The schema keyword that failed (`type`, `required`, `enum`, `pattern`, ...), or
    /// `deserialize` for an error from serde after the schema passed.
    pub keyword: String,
    /// What is wrong, in words a model can act on.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() { "the root" } else { &self.pointer };
        write!(f, "at {at}: {}", self.message)
    }
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text was empty (or white space).
    Empty,
    /// The bytes were not UTF-8.
    NotUtf8 {
        /// Bytes of valid UTF-8 before the first invalid one.
        valid_up_to: usize,
    },
    /// JSON was found (by `rule`) but does not parse: a syntax error such as a trailing comma.
    Syntax {
        /// Where the JSON was found.
        rule: Rule,
        /// 1-based line of the error within the JSON.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's message.
        message: String,
    },
    /// No JSON anywhere: not the whole text, no fenced block, no balanced object or array.
    NoJson {
        /// Why the whole text did not parse.
        whole: String,
    },
    /// The JSON parsed but violates the schema: every violation, not just the first.
    Invalid(Vec<Violation>),
    /// The JSON fits the schema but serde refused it (a constraint the schema cannot say).
    Deserialize(Violation),
}

impl ErrorKind {
    /// Whether the problem is the JSON's syntax (or its absence) rather than its content.
    pub fn is_syntax(&self) -> bool {
        matches!(
            self,
            ErrorKind::Empty
                | ErrorKind::NotUtf8 { .. }
                | ErrorKind::Syntax { .. }
                | ErrorKind::NoJson { .. }
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Empty => f.write_str("the text is empty"),
            ErrorKind::NotUtf8 { valid_up_to } => {
                write!(f, "the text is not UTF-8 (invalid byte at offset {valid_up_to})")
            }
            ErrorKind::Syntax { rule, message, .. } => {
                write!(f, "invalid JSON in {rule}: {message}")
            }
            ErrorKind::NoJson { whole } => write!(
                f,
                "no JSON found: the whole text is not JSON ({whole}), and it has no fenced block and no object or array"
            ),
            ErrorKind::Invalid(violations) => {
                let n = violations.len();
                write!(
                    f,
                    "schema validation failed: {n} violation{}",
                    if n == 1 { "" } else { "s" }
                )?;
                for (i, v) in violations.iter().take(3).enumerate() {
                    f.write_str(if i == 0 { " (" } else { "; " })?;
                    write!(f, "{v}")?;
                }
                match n {
                    0 => Ok(()),
                    1..=3 => f.write_str(")"),
                    _ => write!(f, "; and {} more)", n - 3),
                }
            }
            ErrorKind::Deserialize(v) => {
                write!(f, "the JSON fits the schema but cannot be read: {v}")
            }
        }
    }
}

/// The text could not be turned into a valid `T`. Carries the schema, so that
/// [`repair_prompt`](SchemaError::repair_prompt) can tell a model what to send instead.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}", .0.kind)]
pub struct SchemaError(Box<Inner>);

#[derive(Clone, Debug)]
struct Inner {
    kind: ErrorKind,
    type_name: &'static str,
    schema: Arc<str>,
}

impl SchemaError {
    pub(crate) fn new(kind: ErrorKind, type_name: &'static str, schema: Arc<str>) -> Self {
        SchemaError(Box::new(Inner { kind, type_name, schema }))
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    /// The violations, for a schema or deserialization failure (empty for a syntax problem).
    pub fn violations(&self) -> &[Violation] {
        match &self.0.kind {
            ErrorKind::Invalid(violations) => violations,
            ErrorKind::Deserialize(violation) => std::slice::from_ref(violation),
            _ => &[],
        }
    }

    /// The Rust type that was expected.
    pub fn type_name(&self) -> &'static str {
        self.0.type_name
    }

    /// A short message for re-asking the model: what was wrong, and the schema to follow.
    ///
    /// ```
    /// # use schemars::JsonSchema;
    /// # use serde::Deserialize;
    /// #[derive(Debug, Deserialize, JsonSchema)]
    /// struct Label { label: String, confidence: f64 }
    ///
    /// let err = steadfast::schema::parse::<Label>(r#"{"label": 3}"#).unwrap_err();
    /// let prompt = err.repair_prompt();
    /// assert!(prompt.contains("at /label: 3 is not of type \"string\""));
    /// assert!(prompt.contains("\"confidence\" is a required property"));
    /// ```
    pub fn repair_prompt(&self) -> String {
        const MAX_LISTED: usize = 20;
        let mut out = String::new();
        if self.0.kind.is_syntax() {
            out.push_str(&format!("Your answer could not be read as JSON: {}.\n", self.0.kind));
        } else {
            let violations = self.violations();
            out.push_str("Your JSON does not match the required schema. Fix these problems:\n");
            for v in violations.iter().take(MAX_LISTED) {
                out.push_str(&format!("- {v}\n"));
            }
            if violations.len() > MAX_LISTED {
                out.push_str(&format!("- and {} more\n", violations.len() - MAX_LISTED));
            }
        }
        out.push_str("Answer again with only the corrected JSON (no prose, no code fence), matching this JSON Schema:\n");
        out.push_str(&self.0.schema);
        out
    }
}

/// How the JSON was found in the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// The whole text (after a BOM and surrounding white space) is the JSON.
    Whole,
    /// The JSON is the content of a ```` ``` ```` or ```` ```json ```` fenced block.
    Fenced,
    /// The JSON is the first balanced `{...}` or `[...]` inside prose that parses.
    Embedded,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rule::Whole => "the whole text",
            Rule::Fenced => "a fenced code block",
            Rule::Embedded => "a JSON object or array inside the text",
        })
    }
}
