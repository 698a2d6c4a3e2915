//! Extract a typed struct from messy model text with the schema gate.
//!
//! Shows: the three ways JSON is found (whole text, fenced block, inside prose), the full list
//! of violations for a bad answer, the repair prompt a model would get, a repair loop against
//! a scripted "model", and the strict schema to send as `response_format`.
//!
//! Run it with `cargo run --example llm_extract`.

use schemars::JsonSchema;
use serde::Deserialize;
use steadfast::schema::{self, Ask, Repair};

/// What we want out of a support e-mail.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Ticket {
    /// One line, for the queue.
    summary: String,
    category: Category,
    /// 1 (lowest) to 5 (page someone now).
    #[schemars(range(min = 1, max = 5))]
    severity: u8,
    /// The customer's order number, if they gave one.
    #[schemars(regex(pattern = r"^ORD-\d{6}$"))]
    order: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Category {
    Billing,
    Shipping,
    Outage,
    Other,
}

fn main() {
    let answers = [
        r#"{"summary": "Card charged twice", "category": "billing", "severity": 3, "order": "ORD-123456"}"#,
        "Sure! Here is the JSON you asked for:\n```json\n{\"summary\": \"Parcel lost\", \"category\": \"shipping\", \"severity\": 2, \"order\": null}\n```\nLet me know if you need anything else.",
        "Classification: {\"summary\": \"API down\", \"category\": \"outage\", \"severity\": 5} (high confidence)",
    ];
    for answer in answers {
        let (t, rule) = schema::parse_with_rule::<Ticket>(answer).expect("a valid answer");
        let order = t.order.as_deref().unwrap_or("no order");
        println!("found in {rule}: [sev {}] {:?}: {} ({order})", t.severity, t.category, t.summary);
    }

    // A bad answer: every problem is listed, with where it is.
    let bad = r#"{"summary": "Refund?", "category": "refunds", "severity": 9, "order": "12345", "mood": "angry"}"#;
    let err = schema::parse::<Ticket>(bad).unwrap_err();
    println!("\nrefused: {err}");
    for violation in err.violations() {
        println!("  {:<12} {:<22} {}", violation.pointer, violation.keyword, violation.message);
    }
    println!("\nthe repair prompt the model gets:\n{}\n", err.repair_prompt());

    // The repair loop with a scripted model that fixes its answer when told what was wrong.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let repaired = runtime
        .block_on(Repair::new(3).run::<Ticket, _, _, std::convert::Infallible>(|ask: Ask| async move {
            Ok(match ask.reask {
                None => bad.to_owned(),
                Some(_) => r#"{"summary": "Refund request", "category": "billing", "severity": 2, "order": null}"#.to_owned(),
            })
        }))
        .expect("the second answer is valid");
    println!("repaired after {} attempts: {:?}", repaired.attempts.len(), repaired.value);

    println!(
        "\nstrict schema for response_format (json_schema, strict: true):\n{}",
        serde_json::to_string_pretty(&schema::strict::<Ticket>()).unwrap()
    );
}
