//! The webhook notifier: each [`Notification`] as a signed JSON `POST`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::secret::Secret;
use crate::agent::{Agent, Context, Outcome};
use crate::fault::{AgentError, Classify, Fault, RetryPolicy};
use crate::notify::Notification;

/// The header that carries the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "X-Steadfast-Signature";
/// The header that carries the notification's id (receivers deduplicate by it).
pub const ID_HEADER: &str = "X-Steadfast-Notification";
/// The header that carries the event (`review`, `dead_letter`, `alarm`).
pub const EVENT_HEADER: &str = "X-Steadfast-Event";

/// The signature of a webhook body sent at `timestamp` (Unix seconds): the lowercase hex
/// HMAC-SHA256, keyed with the shared secret, of `"<timestamp>.<body>"`. A receiver computes
/// the same over the raw body it got and the `t` of the [`SIGNATURE_HEADER`], compares it in
/// constant time with `v1`, and refuses a timestamp too far from its own clock (a replay).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    signed(secret, timestamp, body)
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The HMAC-SHA256 of `"<timestamp>.<body>"` keyed with `secret`, for [`signature`] to show
/// and [`verify`] to compare.
fn signed(secret: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Whether `header` (a [`SIGNATURE_HEADER`] value) signs `body` with `secret`, at a timestamp
/// within `tolerance` of `now` (Unix seconds). The check a receiver written in Rust makes;
/// the comparison is constant-time.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: u64, tolerance: Duration) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else { return false };
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return false;
    }
    let Some(mac) = signatures.iter().find_map(|hex| decode_hex(hex)) else { return false };
    signed(secret, timestamp, body).verify_slice(&mac).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
}

/// What a delivery recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct Delivered {
    /// The notification's id.
    pub id: String,
    /// Where it went: the URL's origin only (a webhook URL's path often holds a token).
    pub to: String,
    /// The receiver's HTTP status.
    pub status: u16,
}

/// A notifier that `POST`s every [`Notification`] as JSON to a URL, signed with HMAC-SHA256
/// (see [`signature`]), with the headers [`ID_HEADER`], [`EVENT_HEADER`] and
/// [`SIGNATURE_HEADER`]. The body is the notification with its `id` first:
///
/// ```json
/// {"id": "dead_letter:01J…:4", "event": "dead_letter", "agent": "reader", "run": "01J…",
///  "state": "failed_permanent", "reason": "…", "error": {…}, "actor": "worker:…", "at": 1765…}
/// ```
///
/// A 2xx answer delivers it. Refused connections, timeouts, 408, 429 (with `Retry-After`) and
/// 5xx are retried with backoff (by default 20 attempts, at most 15 minutes apart with full
/// jitter: on average over an hour, at most about two and a half); other 4xx answers
/// dead-letter it. The delivery is journaled: a retry after a recorded delivery does not send
/// again; one cut off by a crash is sent again under the same id. Neither the secret nor the
/// URL's path or query is ever logged, stored or shown.
#[derive(Clone)]
pub struct Webhook {
    name: String,
    url: reqwest::Url,
    secret: Secret,
    client: reqwest::Client,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("to", &origin(&self.url))
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// A webhook URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("webhook URL: {0}")]
pub struct WebhookError(String);

impl Webhook {
    /// A webhook named `webhook` posting to `url` (http or https), signed with `secret`.
    pub fn new(url: &str, secret: Secret) -> Result<Self, WebhookError> {
        let url = reqwest::Url::parse(url).map_err(|e| WebhookError(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(WebhookError(format!(
                "`{}` is not an http or https URL with a host",
                origin(&url)
            )));
        }
        if secret.expose().len() < 16 {
            return Err(WebhookError("the signing secret must be at least 16 bytes".into()));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("steadfast/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError(e.without_url().to_string()))?;
        Ok(Webhook {
            name: "webhook".into(),
            url,
            secret,
            client,
            retry: RetryPolicy::default()
                .max_attempts(20)
                .backoff(Duration::from_secs(1), Duration::from_secs(15 * 60)),
        })
    }

    /// Registered under `name` instead (two webhooks need two names).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Retries by `policy` instead of the default.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Where it posts, as shown: the URL's origin.
    pub fn destination(&self) -> String {
        origin(&self.url)
    }

    async fn post(&self, id: &str, event: &str, body: Vec<u8>) -> Result<Delivered, AgentError> {
        let sent_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let signed = signature(self.secret.expose().as_bytes(), sent_at, &body);
        let to = origin(&self.url);
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(ID_HEADER, id)
            .header(EVENT_HEADER, event)
            .header(SIGNATURE_HEADER, format!("t={sent_at},v1={signed}"))
            .body(body)
            .send()
            .await
            .map_err(|e| {
                AgentError::from_source(e.fault(), e.without_url())
                    .context(format!("posting to {to}"))
            })?;
        let status = response.status();
        if let Some(fault) = crate::http_fault::status_fault(status) {
            let mut error = AgentError::new(fault, format!("HTTP {status} from {to}"));
            if let Some(delay) = crate::http_fault::retry_after(response.headers()) {
                error = error.retry_after(delay);
            }
            return Err(error);
        }
        if !status.is_success() {
            return Err(AgentError::new(Fault::Permanent, format!("HTTP {status} from {to}")));
        }
        Ok(Delivered { id: id.to_owned(), to, status: status.as_u16() })
    }
}

/// `scheme://host[:port]` of `url`, without credentials, path or query.
fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

#[async_trait]
impl Agent for Webhook {
    type Input = Notification;
    type Output = Delivered;

    fn name(&self) -> &str {
        &self.name
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    async fn run(
        &self,
        ctx: &mut Context,
        notification: Notification,
    ) -> Result<Outcome<Delivered>, AgentError> {
        let id = ctx.idempotency_key().to_owned();
        let mut body = serde_json::Map::new();
        body.insert("id".into(), id.clone().into());
        match serde_json::to_value(&notification) {
            Ok(serde_json::Value::Object(fields)) => body.extend(fields),
            _ => return Err(AgentError::permanent("a notification that is not a JSON object")),
        }
        let body =
            serde_json::to_vec(&body).map_err(|e| AgentError::from_source(Fault::Permanent, e))?;
        let event = notification.event.as_str();
        let delivered =
            ctx.effect("deliver", |_| async move { self.post(&id, event, body).await }).await?;
        Ok(Outcome::Done(delivered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_a_dot_and_the_body() {
        // Computed independently, with Python's hmac module:
        // hmac.new(b"0123456789abcdef", b'1796581969.{"id":"review:x:2"}', sha256).hexdigest()
        assert_eq!(
            signature(b"0123456789abcdef", 1_796_581_969, br#"{"id":"review:x:2"}"#),
            "68f52ce54b7ca8559ae218783248dd6e2dacb196ac8b06bdf7333345f28481f0"
        );
    }

    #[test]
    fn verify_accepts_only_the_right_secret_body_and_time() {
        let secret = b"0123456789abcdef";
        let body = br#"{"id":"review:x:2"}"#;
        let header = format!("t=1000,v1={}", signature(secret, 1000, body));
        let five_min = Duration::from_secs(300);
        assert!(verify(secret, &header, body, 1100, five_min));
        assert!(!verify(b"another secret..", &header, body, 1100, five_min));
        assert!(!verify(secret, &header, br#"{"id":"review:x:3"}"#, 1100, five_min));
        assert!(!verify(secret, &header, body, 2000, five_min), "too old: a replay");
        assert!(!verify(secret, "t=1000,v1=zz", body, 1000, five_min));
        assert!(!verify(secret, "v1=00", body, 1000, five_min));
    }

    proptest::proptest! {
        /// Whatever a sender puts in the header (a receiver parses it from the network), the
        /// check answers without panicking, and accepts only a signature of this very body.
        #[test]
        fn verify_never_panics_and_accepts_only_its_own_body(
            junk in "(t=[0-9]{0,12}|v1=[0-9a-fé]{0,66}|[=,a-z ]{0,8}){0,3}",
            v1 in "[0-9a-fé]{0,66}",
            timed in proptest::bool::ANY,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            other in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            t in 0u64..4_000_000_000,
        ) {
            let secret = b"0123456789abcdef";
            // With a current timestamp, so that the signature itself gets parsed.
            let header = if timed { format!("{junk},t={t},v1={v1}") } else { format!("{junk},v1={v1}") };
            let _ = verify(secret, &header, &body, t, Duration::from_secs(300));
            let signed = format!("t={t},v1={}", signature(secret, t, &body));
            proptest::prop_assert!(verify(secret, &signed, &body, t, Duration::from_secs(300)));
            proptest::prop_assert_eq!(
                verify(secret, &signed, &other, t, Duration::from_secs(300)),
                other == body
            );
        }
    }

    #[test]
    fn a_webhook_never_shows_its_secret_or_path() {
        let hook = Webhook::new(
            "https://hooks.example.com/T000/B000/XXXX?token=t",
            Secret::new("s".repeat(32)),
        )
        .unwrap();
        let shown = format!("{hook:?}");
        assert!(!shown.contains("XXXX") && !shown.contains("token") && !shown.contains("sss"));
        assert_eq!(hook.destination(), "https://hooks.example.com");
        assert!(Webhook::new("ftp://x", Secret::new("s".repeat(32))).is_err());
        assert!(Webhook::new("http://x", Secret::new("short")).is_err());
    }
}
