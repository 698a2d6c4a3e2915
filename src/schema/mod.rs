//! The schema gate: text from a model (or anyone) becomes a typed value only after its JSON
//! has been checked against the JSON Schema of the Rust type.
//!
//! [`parse`] finds the JSON in the text (the whole text, a fenced block, or one object or
//! array inside prose), validates it against `schemars`' schema of `T` (compiled once per type
//! and cached), and only then deserializes it. It fails with a [`SchemaError`] that keeps a
//! syntax problem (no JSON, a trailing comma) apart from a data problem (every violation, each
//! with its JSON pointer and keyword), and renders a re-ask for the model with
//! [`SchemaError::repair_prompt`]. [`Repair`] runs that loop.
//!
//! ```
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//!
//! #[derive(Debug, Deserialize, JsonSchema)]
//! struct Triage {
//!     label: Label,
//!     #[schemars(range(min = 0.0, max = 1.0))]
//!     confidence: f64,
//! }
//!
//! #[derive(Debug, Deserialize, JsonSchema, PartialEq)]
//! #[serde(rename_all = "snake_case")]
//! enum Label { Urgent, Normal, Spam }
//!
//! let answer = "Sure! Here is the classification:\n```json\n{\"label\": \"urgent\", \"confidence\": 0.92}\n```";
//! let triage: Triage = steadfast::schema::parse(answer)?;
//! assert_eq!(triage.label, Label::Urgent);
//!
//! let err = steadfast::schema::parse::<Triage>(r#"{"label": "URGENT", "confidence": 1.7}"#).unwrap_err();
//! assert_eq!(err.violations().len(), 2);
//! # Ok::<(), steadfast::schema::SchemaError>(())
//! ```

mod error;
mod extract;
mod repair;
mod strict;
mod template;
mod validate;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use self::error::Rule;
pub use self::error::{ErrorKind, SchemaError, Violation};
pub use self::repair::{Ask, Attempt, Reask, Repair, RepairError, Repaired};
pub use self::template::template;
pub(crate) use self::validate::text_by_hash;

/// Parses `text` into a `T` through the gate: extract the JSON, validate it against `T`'s
/// schema (every violation reported), then deserialize.
pub fn parse<T: JsonSchema + DeserializeOwned + 'static>(text: &str) -> Result<T, SchemaError> {
    parse_with_rule(text).map(|(value, _)| value)
}

/// [`parse`], also saying how the JSON was found.
pub fn parse_with_rule<T: JsonSchema + DeserializeOwned + 'static>(
    text: &str,
) -> Result<(T, Rule), SchemaError> {
    let compiled = validate::compiled::<T>();
    let fail = |kind| SchemaError::new(kind, std::any::type_name::<T>(), compiled.text.clone());
    let (value, rule) = extract::extract(text).map_err(fail)?;
    compiled.check(&value).map_err(fail)?;
    deserialize(&value).map(|v| (v, rule)).map_err(fail)
}

/// [`parse`] for bytes that may not be UTF-8 (a response body, a file).
pub fn parse_bytes<T: JsonSchema + DeserializeOwned + 'static>(
    bytes: &[u8],
) -> Result<T, SchemaError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => {
            let compiled = validate::compiled::<T>();
            let kind = ErrorKind::NotUtf8 { valid_up_to: e.valid_up_to() };
            Err(SchemaError::new(kind, std::any::type_name::<T>(), compiled.text.clone()))
        }
    }
}

/// Validates an already-parsed JSON value against `T`'s schema and deserializes it (for
/// inputs submitted as JSON and outputs about to be stored).
pub fn from_value<T: JsonSchema + DeserializeOwned + 'static>(
    value: Value,
) -> Result<T, SchemaError> {
    let compiled = validate::compiled::<T>();
    let fail = |kind| SchemaError::new(kind, std::any::type_name::<T>(), compiled.text.clone());
    compiled.check(&value).map_err(fail)?;
    deserialize(&value).map_err(fail)
}

/// Checks a JSON value against `T`'s schema without deserializing it.
pub fn check<T: JsonSchema + 'static>(value: &Value) -> Result<(), SchemaError> {
    let compiled = validate::compiled::<T>();
    compiled
        .check(value)
        .map_err(|kind| SchemaError::new(kind, std::any::type_name::<T>(), compiled.text.clone()))
}

/// Checks a JSON value against a JSON Schema given as text (as [`Store::schema`] returns it),
/// for tools that validate without the Rust type; `name` names the type in messages. A schema
/// that does not compile is a [`SchemaError`] with a single violation saying so.
///
/// [`Store::schema`]: crate::store::Store::schema
pub fn check_with(schema: &str, name: &'static str, value: &Value) -> Result<(), SchemaError> {
    let compiled = validate::Compiled::from_text(schema).map_err(|message| {
        let violation = Violation {
            pointer: String::new(),
            keyword: "$schema".into(),
            message: format!("the stored schema does not compile: {message}"),
        };
        SchemaError::new(ErrorKind::Invalid(vec![violation]), name, schema.into())
    })?;
    compiled.check(value).map_err(|kind| SchemaError::new(kind, name, compiled.text.clone()))
}

/// `T`'s JSON Schema, as schemars generates it.
pub fn json_schema<T: JsonSchema + 'static>() -> Value {
    validate::compiled::<T>().schema.clone()
}

/// A stable hash of `T`'s JSON Schema (16 hex digits), stored with runs so that a replay
/// under a changed type can be noticed.
pub fn schema_hash<T: JsonSchema + 'static>() -> String {
    validate::compiled::<T>().hash.clone()
}

/// `T`'s schema in the subset that OpenAI-compatible strict structured output accepts: every
/// object closed (`additionalProperties: false`) with all its properties required, optional
/// ones nullable instead, and the validation keywords strict mode rejects removed (the gate
/// still checks them when the answer comes back).
///
/// ```
/// # use schemars::JsonSchema;
/// #[derive(JsonSchema)]
/// struct Item { title: String, note: Option<String> }
///
/// let schema = steadfast::schema::strict::<Item>();
/// assert_eq!(schema["required"], serde_json::json!(["title", "note"]));
/// assert_eq!(schema["additionalProperties"], false);
/// assert_eq!(schema["properties"]["note"]["type"], serde_json::json!(["string", "null"]));
/// ```
pub fn strict<T: JsonSchema + 'static>() -> Value {
    strict::make_strict(&validate::compiled::<T>().schema)
}

/// Deserializes a validated value. The common case (it fits) takes the fast path; only a
/// failure is deserialized again with path tracking, to say where.
fn deserialize<T: DeserializeOwned>(value: &Value) -> Result<T, ErrorKind> {
    if let Ok(v) = T::deserialize(value) {
        return Ok(v);
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let pointer = pointer_of(e.path());
        ErrorKind::Deserialize(Violation {
            pointer,
            keyword: "deserialize".into(),
            message: e.inner().to_string(),
        })
    })
}

/// serde_path_to_error's path as a JSON pointer.
fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.replace('~', "~0").replace('/', "~1")),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .fold(String::new(), |acc, s| acc + "/" + &s)
}
