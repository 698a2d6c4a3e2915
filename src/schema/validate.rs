//! The compiled schema of each type, built once and shared by every thread, and validation
//! against it.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use schemars::JsonSchema;
use serde_json::Value;

use super::error::{ErrorKind, Violation};

/// A type's JSON Schema, its compiled validator and its hash.
pub(crate) struct Compiled {
    /// The schema as schemars generates it.
    pub(crate) schema: Value,
    /// The schema as compact JSON text (for repair prompts).
    pub(crate) text: Arc<str>,
    /// A stable hash of `text` (16 hex digits).
    pub(crate) hash: String,
    validator: jsonschema::Validator,
}

impl Compiled {
    /// Compiles `T`'s schema. Panics if schemars produced a schema jsonschema rejects, which
    /// would be a bug in one of them, not bad input.
    pub(crate) fn build<T: JsonSchema>() -> Self {
        let schema = schemars::schema_for!(T).to_value();
        let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| {
            panic!("the schema of {} does not compile: {e}", std::any::type_name::<T>())
        });
        let text: Arc<str> = serde_json::to_string(&schema).expect("a schema serializes").into();
        let hash = format!("{:016x}", crate::hash::fnv1a(text.as_bytes()));
        Compiled { schema, text, hash, validator }
    }

    /// Compiles a schema given as JSON text (one the store kept for an agent whose Rust types
    /// this process does not have).
    pub(crate) fn from_text(text: &str) -> Result<Self, String> {
        let schema: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
        let hash = format!("{:016x}", crate::hash::fnv1a(text.as_bytes()));
        Ok(Compiled { schema, text: text.into(), hash, validator })
    }

    /// Every violation of the schema by `value`, in the validator's order.
    pub(crate) fn violations(&self, value: &Value) -> Vec<Violation> {
        self.validator
            .iter_errors(value)
            .map(|e| Violation {
                pointer: e.instance_path().to_string(),
                keyword: e.kind().keyword().to_owned(),
                message: message(&e),
            })
            .collect()
    }

    /// Checks `value` against the schema: every violation, or none.
    pub(crate) fn check(&self, value: &Value) -> Result<(), ErrorKind> {
        if self.validator.is_valid(value) {
            return Ok(());
        }
        Err(ErrorKind::Invalid(self.violations(value)))
    }
}

/// The violation's message. jsonschema's own, except where it leaves out what a model needs
/// to fix the value: its `enum` message names only two options.
fn message(error: &jsonschema::ValidationError<'_>) -> String {
    match error.kind() {
        jsonschema::error::ValidationErrorKind::Enum { options } => {
            let allowed = match options.as_ref() {
                Value::Array(options) => {
                    options.iter().map(Value::to_string).collect::<Vec<_>>().join(", ")
                }
                other => other.to_string(),
            };
            format!("{} is not one of: {allowed}", error.instance())
        }
        _ => error.to_string(),
    }
}

/// The compiled schema of `T`, built on first use and cached for the life of the process.
pub(crate) fn compiled<T: JsonSchema + 'static>() -> Arc<Compiled> {
    static CACHE: OnceLock<RwLock<HashMap<TypeId, Arc<Compiled>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let id = TypeId::of::<T>();
    if let Some(found) = cache.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return found.clone();
    }
    // Build outside the lock; if two threads race, the first insert wins and both use it.
    let built = Arc::new(Compiled::build::<T>());
    by_hash()
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(built.hash.clone(), built.text.clone());
    cache.write().unwrap_or_else(|p| p.into_inner()).entry(id).or_insert(built).clone()
}

fn by_hash() -> &'static RwLock<HashMap<String, Arc<str>>> {
    static BY_HASH: OnceLock<RwLock<HashMap<String, Arc<str>>>> = OnceLock::new();
    BY_HASH.get_or_init(Default::default)
}

/// The text of a schema compiled in this process, by its hash.
pub(crate) fn text_by_hash(hash: &str) -> Option<Arc<str>> {
    by_hash().read().unwrap_or_else(|p| p.into_inner()).get(hash).cloned()
}
