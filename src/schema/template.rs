//! A value to start from for a JSON Schema: what an operator edits before giving an output.

use serde_json::{Map, Value};

/// How deep the template follows nested schemas (a recursive type stops here).
const MAX_DEPTH: usize = 16;

/// A value of the shape `schema` (a JSON Schema as schemars writes it: `$defs`, `$ref`,
/// `oneOf`/`anyOf` of tagged or constant variants, `enum`, `const`, `type`) to be edited by
/// hand: every property present, strings empty, numbers 0, the first of a choice; a
/// property of an object whose schema `fill` fits is `fill` itself (the run's input, so an
/// output that carries its input back needs no copying).
///
/// It is a starting point, not a valid value: an empty string may be too short, 0 out of
/// range. Check the edited value against the schema before using it.
pub fn template(schema: &Value, fill: Option<&Value>) -> Value {
    let defs = schema.get("$defs").or_else(|| schema.get("definitions"));
    Builder { root: schema, defs, fill }.build(schema, 0, true)
}

struct Builder<'a> {
    root: &'a Value,
    defs: Option<&'a Value>,
    fill: Option<&'a Value>,
}

impl Builder<'_> {
    fn resolve<'s>(&'s self, schema: &'s Value) -> &'s Value {
        let Some(reference) = schema.get("$ref").and_then(Value::as_str) else { return schema };
        if reference == "#" {
            return self.root;
        }
        let name = reference.rsplit('/').next().unwrap_or_default();
        self.defs.and_then(|d| d.get(name)).unwrap_or(schema)
    }

    fn build(&self, schema: &Value, depth: usize, top: bool) -> Value {
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        let schema = self.resolve(schema);
        if let Some(value) = schema.get("default").or_else(|| schema.get("const")) {
            return value.clone();
        }
        if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
            return first.clone();
        }
        for choice in ["oneOf", "anyOf"] {
            if let Some(variants) = schema.get(choice).and_then(Value::as_array) {
                // The first variant that is not just `null` (an `Option`'s other half).
                let variant = variants
                    .iter()
                    .find(|v| self.resolve(v).get("type") != Some(&Value::from("null")))
                    .or_else(|| variants.first());
                let mut value = variant.map_or(Value::Null, |v| self.build(v, depth + 1, false));
                // A tagged enum: its properties sit beside the choice.
                if let (Value::Object(own), Some(props)) =
                    (&mut value, schema.get("properties").and_then(Value::as_object))
                {
                    for (name, property) in props {
                        own.entry(name.clone())
                            .or_insert_with(|| self.build(property, depth + 1, false));
                    }
                }
                return value;
            }
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            let mut merged = Map::new();
            for part in all {
                if let Value::Object(fields) = self.build(part, depth + 1, false) {
                    merged.extend(fields);
                }
            }
            return Value::Object(merged);
        }
        let kind = match schema.get("type") {
            Some(Value::Array(kinds)) => {
                kinds.iter().find(|k| k.as_str() != Some("null")).and_then(Value::as_str)
            }
            Some(kind) => kind.as_str(),
            None if schema.get("properties").is_some() => Some("object"),
            None => None,
        };
        match kind {
            Some("object") => {
                let mut object = Map::new();
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    for (name, property) in props {
                        let value = match self.fill {
                            Some(fill) if top && fits(self.root, property, fill) => fill.clone(),
                            _ => self.build(property, depth + 1, false),
                        };
                        object.insert(name.clone(), value);
                    }
                }
                Value::Object(object)
            }
            Some("array") => Value::Array(Vec::new()),
            Some("string") => Value::String(String::new()),
            Some("integer" | "number") => {
                schema.get("minimum").cloned().unwrap_or_else(|| Value::from(0))
            }
            Some("boolean") => Value::Bool(false),
            _ => Value::Null,
        }
    }
}

/// Whether `value` fits `property` of the schema `root` (with the root's definitions).
fn fits(root: &Value, property: &Value, value: &Value) -> bool {
    let mut schema = property.clone();
    if let (Value::Object(own), Some(defs)) = (&mut schema, root.get("$defs")) {
        own.insert("$defs".into(), defs.clone());
    }
    jsonschema::validator_for(&schema).is_ok_and(|v| v.is_valid(value))
}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Item {
        id: String,
        title: String,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    enum Label {
        Security,
        Release,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    #[serde(tag = "by", rename_all = "snake_case")]
    enum By {
        Rules { rule: String },
        Operator,
    }

    #[derive(Serialize, Deserialize, JsonSchema)]
    struct Out {
        item: Item,
        label: Label,
        confidence: f64,
        note: Option<String>,
        tags: Vec<String>,
        by: By,
    }

    #[test]
    fn a_template_has_every_field_and_carries_the_input_back() {
        let schema = crate::schema::json_schema::<Out>();
        let input = json!({"id": "a1", "title": "Alpha"});
        let value = template(&schema, Some(&input));
        assert_eq!(value["item"], input);
        assert_eq!(value["label"], "security");
        assert_eq!(value["confidence"], 0);
        assert_eq!(value["tags"], json!([]));
        assert_eq!(value["by"]["by"], "rules");
        assert!(value.as_object().unwrap().contains_key("note"));
        // Edited into a valid value, it deserializes.
        let mut edited = value.clone();
        edited["by"] = json!({"by": "operator"});
        edited["note"] = Value::Null;
        serde_json::from_value::<Out>(edited).expect("the template's shape is the type's");
        // Without an input, the item is a blank one.
        assert_eq!(template(&schema, None)["item"], json!({"id": "", "title": ""}));
    }
}
