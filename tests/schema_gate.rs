//! The schema gate from a user's side: extraction rules, every violation with its pointer and
//! keyword, deserialization errors, repair prompts and loops, strict schemas, and a property
//! test that any value survives being wrapped in prose or fences.

use std::collections::BTreeMap;

use proptest::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use steadfast::schema::{self, Ask, ErrorKind, Repair, RepairError, Rule};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Label {
    Urgent,
    Normal,
    Spam,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Labeled {
    id: String,
    label: Label,
    #[schemars(range(min = 0.0, max = 1.0))]
    confidence: f64,
    #[schemars(regex(pattern = r"^[a-z]+(-[a-z]+)*$"))]
    slug: String,
    tags: Vec<String>,
    note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Batch {
    items: Vec<Labeled>,
    summary: Summary,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Summary {
    counts: BTreeMap<String, u32>,
    reviewer: Option<Reviewer>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Reviewer {
    Model { name: String },
    Human { email: String, shift: Option<u8> },
}

fn item() -> Value {
    json!({"id": "a1", "label": "urgent", "confidence": 0.9, "slug": "server-down", "tags": ["ops"], "note": null})
}

#[test]
fn plain_json_is_the_whole_text() {
    let (value, rule) = schema::parse_with_rule::<Labeled>(&item().to_string()).unwrap();
    assert_eq!(rule, Rule::Whole);
    assert_eq!(value.label, Label::Urgent);
    // A BOM and surrounding white space are fine.
    let text = format!("\u{feff}\n  {}  \n", item());
    assert_eq!(schema::parse_with_rule::<Labeled>(&text).unwrap().1, Rule::Whole);
}

#[test]
fn fenced_blocks_with_or_without_a_tag() {
    for fence in ["```json", "```JSON", "```"] {
        let text = format!("Here you go:\n{fence}\n{:#}\n```\nAnything else?", item());
        let (value, rule) = schema::parse_with_rule::<Labeled>(&text).unwrap();
        assert_eq!((value.id.as_str(), rule), ("a1", Rule::Fenced), "{fence}");
    }
}

#[test]
fn prose_wrapped_and_the_first_of_several_objects() {
    let text = format!("I think {} is right; an alternative: {}", item(), json!({"id": "b2"}));
    let (value, rule) = schema::parse_with_rule::<Labeled>(&text).unwrap();
    assert_eq!((value.id.as_str(), rule), ("a1", Rule::Embedded));
    // A braced aside that is not JSON comes first: the first candidate that parses wins.
    let text = format!("Label {{urgent}} because: {}", item());
    assert_eq!(schema::parse::<Labeled>(&text).unwrap().id, "a1");
}

#[test]
fn trailing_commas_are_an_error_not_fixed() {
    let err = schema::parse::<Value>(r#"{"a": 1,}"#).unwrap_err();
    match err.kind() {
        ErrorKind::Syntax { rule: Rule::Whole, line: 1, column, message } => {
            assert_eq!(*column, 9);
            assert!(message.contains("trailing comma"), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(err.kind().is_syntax());
    let err = schema::parse::<Value>("```json\n[1, 2,]\n```").unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Syntax { rule: Rule::Fenced, .. }), "{err}");
}

#[test]
fn no_json_says_what_was_tried() {
    let err = schema::parse::<Labeled>("I cannot help with that.").unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::NoJson { .. }));
    assert!(err.to_string().starts_with("no JSON found: the whole text is not JSON"), "{err}");
    assert!(err.to_string().contains("no fenced block and no object or array"), "{err}");
    let err = schema::parse::<Labeled>("   \n").unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Empty);
    assert_eq!(err.to_string(), "the text is empty");
}

#[test]
fn every_violation_with_pointer_and_keyword() {
    let bad = json!({
        "items": [
            item(),
            {"id": 7, "label": "URGENT", "confidence": 1.5, "slug": "Not A Slug", "tags": "ops", "extra": true}
        ],
        "summary": {"counts": {"urgent": -1}}
    });
    let err = schema::from_value::<Batch>(bad).unwrap_err();
    let mut found: Vec<(String, String)> =
        err.violations().iter().map(|v| (v.pointer.clone(), v.keyword.clone())).collect();
    found.sort();
    let expected = [
        ("/items/1", "additionalProperties"),
        ("/items/1/confidence", "maximum"),
        ("/items/1/id", "type"),
        ("/items/1/label", "enum"),
        ("/items/1/slug", "pattern"),
        ("/items/1/tags", "type"),
        ("/summary/counts/urgent", "minimum"),
    ];
    let found_ref: Vec<(&str, &str)> =
        found.iter().map(|(p, k)| (p.as_str(), k.as_str())).collect();
    for e in expected {
        assert!(found_ref.contains(&e), "missing {e:?} in {found_ref:?}");
    }
    assert!(
        err.to_string()
            .starts_with(&format!("schema validation failed: {} violations (at /", found.len())),
        "{err}"
    );
    assert!(!err.kind().is_syntax());
}

#[test]
fn missing_required_fields_are_named() {
    let err = schema::parse::<Labeled>(r#"{"id": "x"}"#).unwrap_err();
    let messages: Vec<String> = err.violations().iter().map(ToString::to_string).collect();
    for field in ["label", "confidence", "slug", "tags"] {
        assert!(
            messages.contains(&format!("at the root: \"{field}\" is a required property")),
            "{field}: {messages:?}"
        );
    }
}

#[test]
fn serde_errors_after_the_schema_passed_are_mapped() {
    /// A type whose serde rule the schema cannot express.
    #[derive(Debug, Deserialize, JsonSchema)]
    struct Even {
        #[serde(deserialize_with = "even")]
        #[allow(dead_code)]
        n: u32,
    }
    fn even<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let n = u32::deserialize(d)?;
        if n % 2 == 0 { Ok(n) } else { Err(serde::de::Error::custom(format!("{n} is odd"))) }
    }
    let err = schema::parse::<Even>(r#"{"n": 3}"#).unwrap_err();
    match err.kind() {
        ErrorKind::Deserialize(v) => {
            assert_eq!((v.pointer.as_str(), v.keyword.as_str()), ("/n", "deserialize"));
            assert!(v.message.contains("3 is odd"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn huge_input_is_linear() {
    // 1 MB of brackets and prose with the answer at the end: a quadratic scan would take
    // minutes; this must finish (the benchmark measures the speed, not this test).
    let mut text = "{[".repeat(250_000);
    text.push_str(" prose ");
    text.push_str(&item().to_string());
    let err = schema::parse::<Labeled>(&text).unwrap_err();
    assert!(err.kind().is_syntax(), "unbalanced brackets do not hide a syntax problem: {err}");
    let mut text = "nothing here; ".repeat(75_000);
    text.push_str(&item().to_string());
    assert!(text.len() > 1_000_000);
    assert_eq!(schema::parse::<Labeled>(&text).unwrap().id, "a1");
}

#[test]
fn bytes_that_are_not_utf8() {
    let mut bytes = b"{\"id\": \"".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    let err = schema::parse_bytes::<Labeled>(&bytes).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotUtf8 { valid_up_to: 8 });
    assert_eq!(schema::parse_bytes::<Labeled>(item().to_string().as_bytes()).unwrap().id, "a1");
}

#[test]
fn repair_prompt_lists_violations_and_the_schema() {
    let err = schema::parse::<Labeled>(
        r#"{"id": "x", "label": "meh", "confidence": 2, "slug": "ok", "tags": []}"#,
    )
    .unwrap_err();
    let prompt = err.repair_prompt();
    assert!(
        prompt.starts_with(
            "Your JSON does not match the required schema. Fix these problems:\n- at /"
        )
    );
    assert!(prompt.contains("- at /label: \"meh\" is not one of"), "{prompt}");
    assert!(prompt.contains("- at /confidence: 2 is greater than the maximum of 1"), "{prompt}");
    let schema_text = prompt.lines().last().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(schema_text).unwrap(),
        schema::json_schema::<Labeled>()
    );
    let syntax = schema::parse::<Labeled>("{\"id\": }").unwrap_err().repair_prompt();
    assert!(
        syntax.starts_with("Your answer could not be read as JSON: invalid JSON in the whole text"),
        "{syntax}"
    );
}

#[tokio::test]
async fn repair_loop_records_attempts_and_gives_up() {
    let answers = ["no idea", r#"{"id": "x"}"#, "still wrong"];
    let err = Repair::new(3)
        .run::<Labeled, _, _, std::convert::Infallible>(|ask: Ask| async move {
            Ok(answers[ask.attempt as usize - 1].to_owned())
        })
        .await
        .unwrap_err();
    let RepairError::Exhausted { last, attempts } = err else { panic!("expected Exhausted") };
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| a.error.is_some()));
    assert_eq!(attempts[1].answer, r#"{"id": "x"}"#);
    assert!(matches!(last.kind(), ErrorKind::NoJson { .. }));

    // The second question carries the first answer and its violations.
    let mut seen = Vec::new();
    let repaired = Repair::default()
        .run::<Labeled, _, _, std::convert::Infallible>(|ask: Ask| {
            seen.push(ask.clone());
            async move {
                Ok(if ask.attempt == 1 { r#"{"id": "x"}"#.to_owned() } else { item().to_string() })
            }
        })
        .await
        .unwrap();
    assert_eq!(repaired.attempts.len(), 2);
    assert_eq!(repaired.attempts[1].error, None);
    let reask = seen[1].reask.as_ref().unwrap();
    assert_eq!(reask.previous_answer, r#"{"id": "x"}"#);
    assert!(reask.prompt.contains("\"label\" is a required property"));

    // A failing ask stops the loop at once with the caller's error.
    let err = Repair::default()
        .run::<Labeled, _, _, &str>(|_| async { Err("HTTP 429") })
        .await
        .unwrap_err();
    assert!(matches!(err, RepairError::Ask { attempt: 1, source: "HTTP 429", .. }));
}

/// Walks a schema, calling `f` on every object node.
fn each_object(node: &Value, f: &mut impl FnMut(&serde_json::Map<String, Value>)) {
    match node {
        Value::Object(map) => {
            f(map);
            map.values().for_each(|v| each_object(v, f));
        }
        Value::Array(items) => items.iter().for_each(|v| each_object(v, f)),
        _ => {}
    }
}

#[test]
fn strict_schema_closes_every_object_and_drops_unsupported_keywords() {
    let strict = schema::strict::<Batch>();
    let mut objects = 0;
    each_object(&strict, &mut |map| {
        for keyword in ["pattern", "minimum", "maximum", "format", "oneOf", "$schema", "default"] {
            assert!(!map.contains_key(keyword), "`{keyword}` left in {map:?}");
        }
        if let Some(Value::Object(properties)) = map.get("properties") {
            objects += 1;
            assert_eq!(map["additionalProperties"], false, "{map:?}");
            let required: Vec<&str> =
                map["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            let names: Vec<&str> = properties.keys().map(String::as_str).collect();
            assert_eq!(required, names);
        }
    });
    assert!(objects >= 5, "Batch, Labeled, Summary and both Reviewer variants: {objects}");
    let labeled = &strict["$defs"]["Labeled"];
    assert_eq!(labeled["properties"]["note"]["type"], json!(["string", "null"]));
    // An optional struct becomes nullable.
    let reviewer = &strict["$defs"]["Summary"]["properties"]["reviewer"];
    assert!(
        reviewer["anyOf"].as_array().unwrap().iter().any(|s| s["type"] == "null"),
        "{reviewer}"
    );

    // Values of the type validate against the strict schema (options serialize as null).
    let value = Batch {
        items: vec![serde_json::from_value(item()).unwrap()],
        summary: Summary {
            counts: BTreeMap::from([("urgent".into(), 1)]),
            reviewer: Some(Reviewer::Human { email: "a@b.c".into(), shift: None }),
        },
    };
    let validator = jsonschema::validator_for(&strict).unwrap();
    let instance = serde_json::to_value(&value).unwrap();
    let errors: Vec<String> = validator.iter_errors(&instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn schema_hash_is_stable_per_type() {
    // Hashes are kept in stores (a run's `input_schema`/`output_schema`, the schemas kept for
    // the CLI): one that changed between builds (a new schemars, another JSON layout, another
    // hash) would make every stored run look like it has another type. Pinned to the values
    // recorded when this was written; a change here is a format change to be handled on
    // purpose, not a test to update.
    assert_eq!(schema::schema_hash::<Labeled>(), "b58951c4d4272d2c");
    assert_eq!(schema::schema_hash::<String>(), "a91175ebe8858240");
    assert_ne!(schema::schema_hash::<Labeled>(), schema::schema_hash::<Batch>());
    assert_eq!(schema::schema_hash::<Labeled>().len(), 16);
}

fn labeled() -> impl Strategy<Value = Labeled> {
    (
        "[a-z0-9]{1,8}",
        prop_oneof![Just(Label::Urgent), Just(Label::Normal), Just(Label::Spam)],
        0.0f64..=1.0,
        "[a-z]{1,5}(-[a-z]{1,5}){0,2}",
        proptest::collection::vec("[ -~]{0,12}", 0..4),
        proptest::option::of("\\PC{0,20}"),
    )
        .prop_map(|(id, label, confidence, slug, tags, note)| Labeled {
            id,
            label,
            confidence,
            slug,
            tags,
            note,
        })
}

fn batch() -> impl Strategy<Value = Batch> {
    let reviewer = prop_oneof![
        "[a-z]{1,8}".prop_map(|name| Reviewer::Model { name }),
        ("[a-z]{1,8}@[a-z]{1,5}\\.io", proptest::option::of(0u8..3))
            .prop_map(|(email, shift)| Reviewer::Human { email, shift }),
    ];
    (
        proptest::collection::vec(labeled(), 0..5),
        proptest::collection::btree_map("[a-z]{1,6}", 0u32..100, 0..4),
        proptest::option::of(reviewer),
    )
        .prop_map(|(items, counts, reviewer)| Batch {
            items,
            summary: Summary { counts, reviewer },
        })
}

/// Prose without brackets or backticks (those would be candidates of their own).
fn prose() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 ,.!?:;'\n-]{0,60}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_value_survives_prose_and_fences(value in batch(), before in prose(), after in prose(), wrap in 0u8..4, pretty in any::<bool>()) {
        let json = if pretty { serde_json::to_string_pretty(&value).unwrap() } else { serde_json::to_string(&value).unwrap() };
        let text = match wrap {
            0 => json,
            1 => format!("{before}\n```json\n{json}\n```\n{after}"),
            2 => format!("{before}\n```\n{json}\n```{after}"),
            _ => format!("{before} {json} {after}"),
        };
        let parsed: Batch = schema::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(parsed, value);
    }
}
