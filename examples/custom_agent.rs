//! A user's agent that calls a flaky HTTP service through a journaled effect, with its own
//! error type classified into faults: watch it retry through two 503s (honouring
//! `Retry-After`), and send a request the service refuses to the dead letter queue.
//!
//! The service is a small HTTP server started on 127.0.0.1 by this example; it deduplicates
//! on the `Idempotency-Key` header, as a payment or messaging API would.
//!
//! Run it with `cargo run --example custom_agent`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use steadfast::fault::Classify;
use steadfast::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the agent is asked to do.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Message {
    to: String,
    text: String,
}

/// The service's answer.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Receipt {
    id: String,
}

/// How calling the service fails, and what each failure means for the run.
#[derive(Debug, thiserror::Error)]
enum ServiceError {
    #[error("the service is unavailable (HTTP {0})")]
    Unavailable(u16, Option<Duration>),
    #[error("the service refused the message (HTTP {0}): {1}")]
    Refused(u16, String),
    #[error("the service could not be reached")]
    Network(#[from] reqwest::Error),
}

impl Classify for ServiceError {
    fn fault(&self) -> Fault {
        match self {
            ServiceError::Unavailable(..) => Fault::Transient,
            ServiceError::Refused(..) => Fault::Permanent,
            ServiceError::Network(e) => e.fault(),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ServiceError::Unavailable(_, after) => *after,
            _ => None,
        }
    }
}

struct Notify {
    client: reqwest::Client,
    url: String,
}

impl Notify {
    async fn post(&self, message: &Message, key: &str) -> Result<Receipt, ServiceError> {
        let response = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", key)
            .body(serde_json::to_string(message).expect("a message serializes"))
            .send()
            .await?;
        let status = response.status().as_u16();
        let after = steadfast::http_fault::retry_after(response.headers());
        let body = response.text().await?;
        match status {
            200..=299 => Ok(Receipt { id: body }),
            429 | 500..=599 => Err(ServiceError::Unavailable(status, after)),
            _ => Err(ServiceError::Refused(status, body)),
        }
    }
}

#[async_trait]
impl Agent for Notify {
    type Input = Message;
    type Output = Receipt;

    fn name(&self) -> &str {
        "notify"
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default().backoff(Duration::from_millis(200), Duration::from_secs(5))
    }

    async fn run(
        &self,
        ctx: &mut Context,
        message: Message,
    ) -> Result<Outcome<Receipt>, AgentError> {
        // `?` converts a ServiceError into an AgentError of the class `Classify` gives it.
        let receipt =
            ctx.effect("post", |key| async move { Ok(self.post(&message, &key).await?) }).await?;
        Ok(Outcome::Done(receipt))
    }
}

/// A flaky messaging service: two 503s per idempotency key, then 201 with the message id
/// (the same id for every later request with that key); 403 for a text containing "secret".
async fn serve(listener: tokio::net::TcpListener) {
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let ids: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        let (seen, ids) = (seen.clone(), ids.clone());
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&request).contains("\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request).to_lowercase();
            let key = text
                .lines()
                .find_map(|l| l.strip_prefix("idempotency-key:"))
                .map(|k| k.trim().to_owned())
                .unwrap_or_default();
            let calls = {
                let mut seen = seen.lock().unwrap();
                let n = seen.entry(key.clone()).or_default();
                *n += 1;
                *n
            };
            let (status, extra, body) = if text.contains("secret") {
                ("403 Forbidden", "", "messages may not contain secrets".to_owned())
            } else if calls <= 2 {
                ("503 Service Unavailable", "Retry-After: 1\r\n", "busy".to_owned())
            } else {
                let mut ids = ids.lock().unwrap();
                let next = ids.len() + 1;
                let id = *ids.entry(key).or_insert(next); // a repeated key gets its first id
                ("201 Created", "", format!("msg-{id}"))
            };
            let response = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/messages", listener.local_addr()?);
    tokio::spawn(serve(listener));

    let data = tempfile::tempdir()?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let rt = Runtime::builder()
        .store(SledStore::open(data.path())?)
        .register(Notify { client, url })
        .on_dead_letter(|run| println!("-> dead letter: run {} ({})", run.id, run.agent))
        .build()?;

    let ok =
        rt.submit("notify", Message { to: "ops".into(), text: "deploy finished".into() }).await?;
    let refused =
        rt.submit("notify", Message { to: "ops".into(), text: "the secret is 42".into() }).await?;
    rt.run_until_idle().await?;

    for id in [ok.id, refused.id] {
        let run = rt.store().get(id).await?.expect("the run exists");
        println!(
            "\nrun {id}: {} after {} attempt(s), output {:?}",
            run.state, run.attempt, run.output
        );
        for h in rt.store().history(id).await? {
            let from = h.from.map_or("-".to_owned(), |s| s.to_string());
            println!("  {from:>16} -> {:<16} {}", h.to.to_string(), h.reason);
        }
    }
    let letters = rt.store().dead_letters(None, 10).await?;
    println!("\ndead letters: {}", letters.len());
    for letter in letters {
        println!("  {}: {}", letter.run, letter.error.map(|e| e.to_string()).unwrap_or_default());
    }
    Ok(())
}
