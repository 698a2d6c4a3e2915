//! The schema of a type in the subset that OpenAI-compatible strict structured output accepts.
//!
//! Strict mode wants every object closed (`additionalProperties: false`) with every property
//! listed in `required` (an optional one becomes nullable instead), and rejects validation
//! keywords it does not support. Dropping those keywords loses nothing: the model's answer
//! still goes through [`parse`](super::parse), which checks the full schema.

use serde_json::{Map, Value, json};

/// Keywords strict mode rejects (or ignores); removed everywhere in the schema.
const UNSUPPORTED: &[&str] = &[
    "$schema",
    "default",
    "examples",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "patternProperties",
    "propertyNames",
    "unevaluatedProperties",
    "dependentRequired",
    "dependentSchemas",
    "if",
    "then",
    "else",
    "not",
    "contentEncoding",
    "contentMediaType",
    "readOnly",
    "writeOnly",
    "deprecated",
];

/// Rewrites `schema` (as schemars generates it) into the strict subset.
pub(crate) fn make_strict(schema: &Value) -> Value {
    let mut schema = schema.clone();
    rewrite(&mut schema);
    schema
}

fn rewrite(node: &mut Value) {
    match node {
        Value::Array(items) => items.iter_mut().for_each(rewrite),
        Value::Object(map) => {
            for keyword in UNSUPPORTED {
                map.remove(*keyword);
            }
            // `oneOf` (schemars' externally tagged enums) becomes `anyOf`: the variants are
            // disjoint anyway, and strict mode supports only `anyOf`.
            if let Some(one_of) = map.remove("oneOf") {
                map.insert("anyOf".into(), one_of);
            }
            // An `allOf` of one schema is that schema.
            if let Some(Value::Array(all)) = map.get("allOf")
                && all.len() == 1
            {
                let only = all[0].clone();
                map.remove("allOf");
                if let Value::Object(inner) = only {
                    for (k, v) in inner {
                        map.entry(k).or_insert(v);
                    }
                }
            }
            if map.contains_key("properties") {
                close_object(map);
            }
            for (key, value) in map.iter_mut() {
                // Property names are data, not keywords: recurse into their schemas only.
                if key == "properties" || key == "$defs" || key == "definitions" {
                    if let Value::Object(children) = value {
                        children.values_mut().for_each(rewrite);
                    }
                } else {
                    rewrite(value);
                }
            }
        }
        _ => {}
    }
}

/// Every property required, the optional ones nullable, no other properties allowed.
fn close_object(map: &mut Map<String, Value>) {
    let required: Vec<String> = map
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let Some(Value::Object(properties)) = map.get_mut("properties") else { return };
    let names: Vec<String> = properties.keys().cloned().collect();
    for (name, property) in properties.iter_mut() {
        if !required.contains(name) {
            make_nullable(property);
        }
    }
    map.insert("required".into(), json!(names));
    map.insert("additionalProperties".into(), Value::Bool(false));
}

fn make_nullable(schema: &mut Value) {
    let Value::Object(map) = schema else {
        // `true` (anything) stays anything, null included.
        return;
    };
    match map.get_mut("type") {
        Some(Value::String(t)) if t != "null" => {
            let t = t.clone();
            map.insert("type".into(), json!([t, "null"]));
        }
        Some(Value::Array(types)) => {
            if !types.iter().any(|t| t == "null") {
                types.push(json!("null"));
            }
        }
        Some(_) => {}
        None => {
            let accepts_null = map
                .get("anyOf")
                .and_then(Value::as_array)
                .is_some_and(|any| any.iter().any(|s| s.get("type").is_some_and(|t| t == "null")));
            if !accepts_null {
                let inner = std::mem::take(map);
                map.insert("anyOf".into(), json!([Value::Object(inner), {"type": "null"}]));
            }
        }
    }
    // `enum`/`const` must list null too, or the type's null is unreachable.
    if let Some(Value::Array(values)) = map.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
}
