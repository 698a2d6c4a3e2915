//! The flagship digest pipeline built in code: collector → classifier (fan-out) → reporter →
//! mailer, on the sample items bundled in `demo/items`, with the rule-based classifier and a
//! file outbox. Copy it and swap the parts: `Collector::feed(url)`, `Classifier::llm(..)`,
//! `Transport::smtp_from_env()`.
//!
//! Run it with `cargo run --example digest` (add `-- https://example.com/feed.xml` to read a
//! feed instead).

use steadfast::agents::{
    self, Classifier, Collector, Edition, Mailer, Receipt, Reporter, Rules, Transport,
};
use steadfast::prelude::*;
use steadfast::store::ListQuery;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = tempfile::tempdir()?;
    let collector = match std::env::args().nth(1) {
        Some(feed) => Collector::feed(feed),
        None => Collector::folder(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/items")),
    };
    let pipeline = agents::digest(
        collector,
        Classifier::rules(Rules::builtin()),
        Reporter::new(out.path().join("reports")).title("Engineering digest"),
        Mailer::new(
            Transport::outbox(out.path().join("outbox")),
            "digest@example.com",
            ["team@example.com"],
        )?,
    );
    println!("{}", pipeline.mermaid());

    let rt = Runtime::builder()
        .store(SledStore::open(out.path().join("db"))?)
        .workers(4)
        .pipeline(pipeline)
        .build()?;
    let run = rt.submit("digest", Edition::new("2026-11-23")).await?;
    rt.run_until_idle().await?;

    let record = rt.store().get(run.id).await?.expect("the run exists");
    println!("digest {}: {}", run.id, record.state);
    if let Some(output) = record.output {
        let receipt: Receipt = serde_json::from_value(output)?;
        println!("mailed \"{}\" as {}", receipt.subject, receipt.message_id);
        println!("outbox: {}", receipt.path.unwrap_or_default());
    }
    let stages = rt.store().list(ListQuery::new().parent(run.id)).await?.runs;
    let held = stages.iter().filter(|s| s.state == RunState::NeedsReview).count();
    let dead = stages.iter().filter(|s| s.state == RunState::FailedPermanent).count();
    println!("{} stage runs; {held} item(s) held for review, {dead} dead letter(s)", stages.len());

    // The same edition again is the same run: nothing is collected or mailed twice.
    let again = rt.submit("digest", Edition::new("2026-11-23")).await?;
    assert!(!again.created && again.id == run.id);
    println!("submitted again: same run, nothing new");
    Ok(())
}
