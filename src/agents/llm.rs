//! A small client for OpenAI-compatible chat-completions endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use schemars::JsonSchema;
use serde_json::{Value, json};

use super::secret::Secret;
use crate::fault::{Classify, Fault};

/// How the client asks for JSON. Endpoints differ: OpenAI takes a strict `json_schema`,
/// llama.cpp's server takes `json_object` with a `schema`, some take neither. The client
/// starts with the first and steps down (remembering where it landed) when the endpoint
/// refuses the request with 400 or 422, or with an error naming `response_format`; the answer
/// goes through the schema gate either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFormat {
    /// `{"type": "json_schema", "json_schema": {"strict": true, "schema": ...}}`.
    JsonSchema,
    /// `{"type": "json_object", "schema": ...}`.
    JsonObject,
    /// No `response_format`: the schema is only in the prompt.
    PromptOnly,
}

impl ResponseFormat {
    fn from_u8(n: u8) -> Self {
        match n {
            0 => ResponseFormat::JsonSchema,
            1 => ResponseFormat::JsonObject,
            _ => ResponseFormat::PromptOnly,
        }
    }

    fn next(self) -> Option<Self> {
        match self {
            ResponseFormat::JsonSchema => Some(ResponseFormat::JsonObject),
            ResponseFormat::JsonObject => Some(ResponseFormat::PromptOnly),
            ResponseFormat::PromptOnly => None,
        }
    }
}

/// Why a chat call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The endpoint answered with an error status.
    #[error("the model endpoint answered HTTP {status}: {body}")]
    Status {
        /// The status.
        status: reqwest::StatusCode,
        /// The start of the body (the endpoint's explanation).
        body: String,
        /// The delay its `Retry-After` header asked for.
        retry_after: Option<Duration>,
    },
    /// The request failed (connection refused, timeout).
    #[error("calling the model endpoint failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The model refused to answer.
    #[error("the model refused: {0}")]
    Refusal(String),
    /// The answer was cut off at the token limit (`finish_reason: length`).
    #[error("the answer was cut off at the token limit")]
    Truncated {
        /// What arrived.
        partial: String,
    },
    /// The response is not a chat completion.
    #[error("the endpoint's response is not a chat completion: {0}")]
    BadResponse(String),
}

impl Classify for ChatError {
    /// 429 and 5xx, timeouts and refused connections are transient; other statuses, refusals,
    /// truncated answers and malformed responses permanent.
    fn fault(&self) -> Fault {
        match self {
            ChatError::Status { status, .. } => {
                crate::http_fault::status_fault(*status).unwrap_or(Fault::Unknown)
            }
            ChatError::Http(e) => e.fault(),
            ChatError::Refusal(_) | ChatError::Truncated { .. } | ChatError::BadResponse(_) => {
                Fault::Permanent
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ChatError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// One message of a chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) role: &'static str,
    pub(crate) content: String,
}

/// A client for an OpenAI-compatible `/chat/completions` endpoint. The API key is a
/// [`Secret`]: sent as a bearer token, never shown in `Debug` or logs.
#[derive(Clone, Debug)]
pub struct ChatClient {
    http: reqwest::Client,
    base_url: String,
    model: String,
    key: Option<Secret>,
    format: Arc<AtomicU8>,
    max_tokens: u32,
}

impl ChatClient {
    /// A client for `base_url` (`https://api.openai.com/v1`, `http://127.0.0.1:8080/v1`) and
    /// `model`, with a 60 s timeout and 256 answer tokens.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("a client with timeouts builds");
        ChatClient {
            http,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            model: model.into(),
            key: None,
            format: Arc::new(AtomicU8::new(0)),
            max_tokens: 256,
        }
    }

    /// The endpoint from the environment: `STEADFAST_LLM_BASE_URL` (or `OPENAI_BASE_URL`),
    /// `STEADFAST_LLM_MODEL` (or `OPENAI_MODEL`) and the key `STEADFAST_LLM_API_KEY` (or
    /// `OPENAI_API_KEY`, optional for local servers).
    pub fn from_env() -> Result<Self, String> {
        let var = |a: &str, b: &str| {
            std::env::var(a).ok().or_else(|| std::env::var(b).ok()).filter(|v| !v.is_empty())
        };
        let base = var("STEADFAST_LLM_BASE_URL", "OPENAI_BASE_URL").ok_or(
            "set STEADFAST_LLM_BASE_URL to an OpenAI-compatible endpoint (for the local model: \
             `scripts/llm-server.sh`, then STEADFAST_LLM_BASE_URL=http://127.0.0.1:8088/v1)",
        )?;
        let model = var("STEADFAST_LLM_MODEL", "OPENAI_MODEL")
            .ok_or("set STEADFAST_LLM_MODEL to the model's name")?;
        let mut client = ChatClient::new(base, model);
        client.key = Secret::from_env("STEADFAST_LLM_API_KEY")
            .or_else(|| Secret::from_env("OPENAI_API_KEY"));
        Ok(client)
    }

    /// Sends `key` as the bearer token.
    #[must_use]
    pub fn api_key(mut self, key: Secret) -> Self {
        self.key = Some(key);
        self
    }

    /// Asks for at most `n` tokens per answer.
    #[must_use]
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = n;
        self
    }

    /// Starts with `format` instead of the strict JSON Schema.
    #[must_use]
    pub fn response_format(self, format: ResponseFormat) -> Self {
        self.format.store(format as u8, Ordering::Relaxed);
        self
    }

    /// The model's name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The format the next call starts with.
    pub fn current_format(&self) -> ResponseFormat {
        ResponseFormat::from_u8(self.format.load(Ordering::Relaxed))
    }

    /// One chat completion asking for a `T`: the answer's text, not yet validated.
    pub(crate) async fn complete<T: JsonSchema + 'static>(
        &self,
        messages: &[Message],
    ) -> Result<String, ChatError> {
        let mut format = self.current_format();
        loop {
            match self.call::<T>(messages, format).await {
                // A refused format: 400/422 from most servers, 500 naming `response_format`
                // from llama.cpp's Python server.
                Err(ChatError::Status { status, body, .. })
                    if format.next().is_some()
                        && (matches!(status.as_u16(), 400 | 422)
                            || body.contains("response_format")) =>
                {
                    let next = format.next().expect("checked");
                    tracing::info!(
                        ?format, ?next, %status, body = %body,
                        "the endpoint refused the response format; trying the next one"
                    );
                    format = next;
                    self.format.store(format as u8, Ordering::Relaxed);
                }
                other => return other,
            }
        }
    }

    async fn call<T: JsonSchema + 'static>(
        &self,
        messages: &[Message],
        format: ResponseFormat,
    ) -> Result<String, ChatError> {
        let messages: Vec<Value> =
            messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self.max_tokens,
        });
        match format {
            ResponseFormat::JsonSchema => {
                body["response_format"] = json!({
                    "type": "json_schema",
                    "json_schema": {
                        "name": "answer",
                        "strict": true,
                        "schema": crate::schema::strict::<T>(),
                    }
                });
            }
            ResponseFormat::JsonObject => {
                body["response_format"] =
                    json!({"type": "json_object", "schema": crate::schema::json_schema::<T>()});
            }
            ResponseFormat::PromptOnly => {}
        }
        let mut request = self.http.post(format!("{}/chat/completions", self.base_url)).json(&body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key.expose());
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = crate::http_fault::retry_after(response.headers());
            let text = response.text().await.unwrap_or_default();
            let body = super::one_line(&text, 300);
            return Err(ChatError::Status { status, body, retry_after });
        }
        let value: Value = response.json().await?;
        let choice = &value["choices"][0];
        if choice.is_null() {
            return Err(ChatError::BadResponse(super::one_line(&value.to_string(), 200)));
        }
        let message = &choice["message"];
        if let Some(refusal) = message["refusal"].as_str().filter(|r| !r.is_empty()) {
            return Err(ChatError::Refusal(super::one_line(refusal, 300)));
        }
        let content = message["content"].as_str().unwrap_or_default().to_owned();
        if choice["finish_reason"] == "length" {
            return Err(ChatError::Truncated { partial: content });
        }
        if content.trim().is_empty() {
            return Err(ChatError::BadResponse("the answer is empty".into()));
        }
        Ok(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_key() {
        let client = ChatClient::new("http://127.0.0.1:1/v1/", "m").api_key(Secret::new("sk-123"));
        let shown = format!("{client:?}");
        assert!(!shown.contains("sk-123"), "{shown}");
        assert!(shown.contains("Secret(***)"));
        assert_eq!(client.base_url, "http://127.0.0.1:1/v1");
    }

    #[test]
    fn formats_step_down() {
        assert_eq!(ResponseFormat::JsonSchema.next(), Some(ResponseFormat::JsonObject));
        assert_eq!(ResponseFormat::PromptOnly.next(), None);
        let client = ChatClient::new("http://x", "m").response_format(ResponseFormat::JsonObject);
        assert_eq!(client.current_format(), ResponseFormat::JsonObject);
    }
}
