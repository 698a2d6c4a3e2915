//! A webhook receiver for steadfast's notifications, and a runtime that notifies it.
//!
//! The receiver (an axum handler on 127.0.0.1) checks each delivery's signature over the raw
//! body with `steadfast::agents::verify`, refuses a bad or stale one with 401, and
//! deduplicates by the notification's id (a delivery cut off by a crash comes again under the
//! same id). The runtime has an agent that always fails for good, and a `Webhook` subscribed
//! to dead letters: each failed run is one signed notification.
//!
//! Run it with `cargo run --example webhook_receiver`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use steadfast::agents::{self, Secret, Webhook};
use steadfast::notify::{Event, Subscription};
use steadfast::prelude::*;
use steadfast::store::MemoryStore;

/// Refuses every order: each run ends in the dead letter queue.
struct Refuse;

#[async_trait]
impl Agent for Refuse {
    type Input = String;
    type Output = ();
    fn name(&self) -> &str {
        "orders"
    }
    async fn run(&self, _: &mut Context, order: String) -> Result<Outcome<()>, AgentError> {
        Err(AgentError::permanent(format!("order {order} names an unknown product")))
    }
}

/// The receiver's state: the shared secret and the ids seen.
struct Receiver {
    secret: Vec<u8>,
    seen: Mutex<HashSet<String>>,
}

/// One delivery: verified over the raw body, then deduplicated by id.
async fn receive(receiver: Arc<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let signature = header(agents::SIGNATURE_HEADER);
    if !agents::verify(&receiver.secret, signature, &body, now, Duration::from_secs(300)) {
        println!("refused a delivery with a bad or stale signature");
        return StatusCode::UNAUTHORIZED;
    }
    let id = header(agents::ID_HEADER).to_owned();
    let notification: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if receiver.seen.lock().unwrap().insert(id.clone()) {
        println!("verified {id}: {}", notification["reason"]);
    } else {
        println!("verified {id} again: already handled, nothing done");
    }
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In production the secret comes from the environment on both sides.
    let secret = "example-secret-of-at-least-16-bytes";
    let receiver = Arc::new(Receiver { secret: secret.into(), seen: Mutex::default() });
    let app = axum::Router::new().route(
        "/hooks/steadfast",
        axum::routing::post({
            let receiver = receiver.clone();
            move |headers, body| receive(receiver.clone(), headers, body)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks/steadfast", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let rt = Runtime::builder()
        .store(MemoryStore::new())
        .register(Refuse)
        .register(Webhook::new(&url, Secret::new(secret))?)
        .notify("webhook", Subscription::all().events([Event::DeadLetter]))
        .build()?;
    for order in ["A-17", "B-4"] {
        rt.submit("orders", order.to_owned()).await?;
    }
    rt.run_until_idle().await?;
    println!("{} notifications received", receiver.seen.lock().unwrap().len());
    Ok(())
}
