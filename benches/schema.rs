//! Schema gate throughput (`cargo bench --bench schema`): parses per second of a realistic
//! ~2 KB classification answer (a fenced block inside prose), with the cached validator, and
//! with the schema generated and the validator compiled on every call; for a schema of plain
//! types and enums, and for the same schema with one `pattern` (an id format), whose regex
//! compilation is most of what a per-call compile costs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Classification {
    items: Vec<Labeled>,
    summary: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Labeled {
    id: String,
    label: Label,
    #[schemars(range(min = 0.0, max = 1.0))]
    confidence: f64,
    #[schemars(length(max = 200))]
    rationale: String,
    tags: Vec<String>,
}

/// The same answer, with the item id's format in the schema.
#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)]
struct PatternClassification {
    items: Vec<PatternLabeled>,
    summary: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PatternLabeled {
    #[schemars(regex(pattern = r"^item-[0-9]{3}$"))]
    id: String,
    label: Label,
    #[schemars(range(min = 0.0, max = 1.0))]
    confidence: f64,
    #[schemars(length(max = 200))]
    rationale: String,
    tags: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Label {
    Security,
    Release,
    Incident,
    Research,
    Other,
}

fn answer() -> String {
    let items: Vec<String> = (0..8)
        .map(|i| {
            format!(
                r#"{{"id": "item-{i:03}", "label": "{}", "confidence": 0.{}7, "rationale": "The item mentions a CVE identifier and a patched version, which matches the security rule set.", "tags": ["cve", "patch", "tls"]}}"#,
                ["security", "release", "incident", "research"][i % 4],
                i
            )
        })
        .collect();
    format!(
        "Here is the classification you asked for.\n```json\n{{\"items\": [\n{}\n], \"summary\": \"Eight items: two of each label.\"}}\n```\nLet me know if anything needs another look.",
        items.join(",\n")
    )
}

fn rate(mut f: impl FnMut()) -> f64 {
    let window = Duration::from_secs(2);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < window {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn compare<T: JsonSchema + serde::de::DeserializeOwned + 'static>(name: &str, text: &str) {
    assert!(steadfast::schema::parse::<T>(text).is_ok());
    let cached = rate(|| {
        black_box(steadfast::schema::parse::<T>(black_box(text)).unwrap());
    });
    let uncached = rate(|| {
        // What a gate without the cache does: generate the schema, compile it, then parse.
        let schema = schemars::schema_for!(T).to_value();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let value: serde_json::Value = {
            let start = text.find("```json").unwrap() + 7;
            let end = start + text[start..].find("```").unwrap();
            serde_json::from_str(&text[start..end]).unwrap()
        };
        assert!(validator.is_valid(&value));
        black_box(T::deserialize(&value).unwrap());
    });
    println!("| {name} | {cached:.0} | {uncached:.0} | {:.1}x |", cached / uncached);
}

fn main() {
    let text = answer();
    println!("answer: {} bytes, a fenced block inside prose", text.len());
    println!();
    println!(
        "| schema | cached validator, parses/s | schema + validator per call, parses/s | speed-up |"
    );
    println!("|---|---:|---:|---:|");
    compare::<Classification>("plain types and enums", &text);
    compare::<PatternClassification>("plus one `pattern`", &text);
}
