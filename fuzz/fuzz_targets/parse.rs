//! Fuzzes the schema gate: any bytes, as UTF-8 or not, must give a value or a `SchemaError`,
//! never a panic, and a value that comes out must re-serialize to JSON that parses back equal.
//!
//! Run with `cargo +nightly fuzz run parse -- -max_total_time=300` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Item {
    id: String,
    label: Label,
    #[schemars(range(min = 0.0, max = 1.0))]
    confidence: f64,
    #[schemars(regex(pattern = r"^[a-z]+$"))]
    slug: String,
    tags: Vec<String>,
    note: Option<Box<Item>>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Label {
    Urgent,
    Normal,
}

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = steadfast::schema::parse_bytes::<Item>(data) {
        let json = serde_json_roundtrip(&item);
        assert_eq!(steadfast::schema::parse::<Item>(&json).ok().as_ref(), Some(&item));
    }
    let _ = steadfast::schema::parse_bytes::<serde_json::Value>(data);
});

fn serde_json_roundtrip(item: &Item) -> String {
    serde_json::to_string(item).expect("a parsed item serializes")
}
