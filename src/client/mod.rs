//! The operator's calls over HTTP to a running server (feature `client`): [`Client`]
//! implements [`Operate`] on the server's API, returning the same [`view`](crate::view) types
//! as the local [`Runtime`](crate::Runtime) does. The CLI uses it to operate `steadfast serve`
//! (or any process that serves the API), and so can a program of yours:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use steadfast::client::Client;
//! use steadfast::runtime::Operate;
//! use steadfast::store::Actor;
//!
//! let server = Client::new("http://127.0.0.1:7420", std::env::var("STEADFAST_TOKEN").ok())?;
//! for held in server.review().await? {
//!     server.approve(held.run.id, Actor::Operator("ada".into()), Some("checked")).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! On the same machine, [`Client::local`] reaches a process through the socket in its data
//! directory (see `steadfast::ops::LocalSocket`), with no token.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::lifecycle::RunId;
use crate::runtime::{Operate, OperateError, Replayed};
use crate::store::{Actor, DeadLetter, Note, RunRecord};
use crate::view::{
    Controlled, Held, Replay, ReviewItem, ReviewList, RunFilter, RunView, RunsPage, Stats,
};

/// A server's operator API (see the module docs).
pub struct Client {
    base: String,
    /// Where the server is, as messages name it (its URL, or its socket's path).
    at: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("at", &self.at)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(60);

impl Client {
    /// The server at `url` (`http://host:port`, or `https://`), sent `token` as `Authorization:
    /// Bearer` on every call when given. The token goes to this address only.
    pub fn new(url: &str, token: Option<String>) -> Result<Client, OperateError> {
        let url = url.trim().trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(OperateError::Unreachable(format!(
                "`{url}` is not a server address (http://host:port)"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| OperateError::Unreachable(format!("cannot make an HTTP client: {e}")))?;
        let token = token.filter(|t| !t.trim().is_empty());
        Ok(Client { base: format!("{url}/api/v1"), at: url.to_owned(), token, http })
    }

    /// The process serving the API on the Unix socket at `path` (a data directory's
    /// `steadfast.sock`), sent no token: the socket's file mode decides who may call.
    #[cfg(unix)]
    pub fn local(path: &Path) -> Result<Client, OperateError> {
        let http =
            reqwest::Client::builder().unix_socket(path).timeout(TIMEOUT).build().map_err(|e| {
                OperateError::Unreachable(format!("cannot make an HTTP client: {e}"))
            })?;
        Ok(Client {
            base: "http://localhost/api/v1".to_owned(),
            at: path.display().to_string(),
            token: None,
            http,
        })
    }

    /// Where the server is: its URL, or its socket's path.
    pub fn address(&self) -> &str {
        &self.at
    }

    /// Whether the server answers `/healthz` within `wait`.
    pub async fn is_alive(&self, wait: Duration) -> bool {
        let health = format!("{}/healthz", self.base.trim_end_matches("/api/v1"));
        let request = self.http.get(health).timeout(wait);
        request.send().await.is_ok_and(|r| r.status().is_success())
    }

    fn request(&self, method: reqwest::Method, path: &str, by: &Actor) -> reqwest::RequestBuilder {
        let name = match by {
            Actor::Operator(name) => name.trim().to_owned(),
            other => other.to_string(),
        };
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-steadfast-operator", name);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    /// `GET /api/v1<path>`, the answer as `T`: for the API's calls [`Operate`] does not cover.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, OperateError> {
        self.send(self.request(reqwest::Method::GET, path, &Actor::System)).await
    }

    /// `POST /api/v1<path>` with `body` as JSON, acting as `by`, the answer as `T`: for the
    /// API's calls [`Operate`] does not cover.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        by: &Actor,
        body: &impl Serialize,
    ) -> Result<T, OperateError> {
        self.send(self.request(reqwest::Method::POST, path, by).json(body)).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, OperateError> {
        let unreachable = |e: reqwest::Error| {
            use std::error::Error;
            // reqwest's own words ("error sending request") hide the cause ("connection refused").
            let mut text = e.to_string();
            let mut source = e.source();
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            OperateError::Unreachable(format!("cannot reach the server at {}: {text}", self.at))
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body: Value = response.json().await.map_err(unreachable)?;
        if status.is_success() {
            return serde_json::from_value(body).map_err(|e| {
                OperateError::Unreachable(format!(
                    "the server at {} answered unexpectedly: {e}",
                    self.at
                ))
            });
        }
        // The server's words are the runtime's, as the CLI would have printed them.
        let message = body["error"].as_str().unwrap_or("the server refused the call").to_owned();
        let code = body["code"].as_u64().and_then(|c| u8::try_from(c).ok()).unwrap_or(3);
        Err(OperateError::Server { status: status.as_u16(), code, message })
    }
}

/// A query string of `filter` (encoded by `url`).
fn query_of(filter: &RunFilter) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(state) = filter.state {
        query.append_pair("state", &state.to_string());
    }
    if let Some(agent) = &filter.agent {
        query.append_pair("agent", agent);
    }
    if let Some(since) = filter.since {
        query.append_pair("since", &format!("{}s", since.0.as_secs()));
    }
    if let Some(limit) = filter.limit {
        query.append_pair("limit", &limit.to_string());
    }
    if let Some(cursor) = filter.cursor {
        query.append_pair("cursor", &cursor.to_string());
    }
    match query.finish() {
        q if q.is_empty() => q,
        q => format!("?{q}"),
    }
}

#[async_trait]
impl Operate for Client {
    fn is_remote(&self) -> bool {
        true
    }

    async fn runs(&self, filter: RunFilter) -> Result<RunsPage, OperateError> {
        self.get(&format!("/runs{}", query_of(&filter))).await
    }

    async fn run(&self, id: RunId) -> Result<RunView, OperateError> {
        self.get(&format!("/runs/{id}")).await
    }

    async fn replay(&self, id: RunId, by: Actor, force: bool) -> Result<Replay, OperateError> {
        self.post(&format!("/runs/{id}/replay"), &by, &json!({"force": force})).await
    }

    async fn cancel(&self, id: RunId, by: Actor) -> Result<RunRecord, OperateError> {
        self.post(&format!("/runs/{id}/cancel"), &by, &json!({})).await
    }

    async fn signal(
        &self,
        id: RunId,
        name: &str,
        payload: Value,
        by: Actor,
    ) -> Result<RunRecord, OperateError> {
        let body = json!({"name": name, "payload": payload});
        self.post(&format!("/runs/{id}/signal"), &by, &body).await
    }

    async fn note(&self, id: RunId, by: Actor, text: &str) -> Result<Note, OperateError> {
        self.post(&format!("/runs/{id}/notes"), &by, &json!({"text": text})).await
    }

    async fn review(&self) -> Result<Vec<Held>, OperateError> {
        Ok(self.get::<ReviewList>("/review").await?.review)
    }

    async fn review_item(&self, id: RunId) -> Result<ReviewItem, OperateError> {
        self.get(&format!("/review/{id}")).await
    }

    async fn approve(
        &self,
        id: RunId,
        by: Actor,
        note: Option<&str>,
    ) -> Result<RunRecord, OperateError> {
        self.post(&format!("/review/{id}/approve"), &by, &json!({"note": note})).await
    }

    async fn reject(
        &self,
        id: RunId,
        by: Actor,
        note: Option<&str>,
    ) -> Result<RunRecord, OperateError> {
        self.post(&format!("/review/{id}/reject"), &by, &json!({"note": note})).await
    }

    async fn resolve(
        &self,
        id: RunId,
        by: Actor,
        output: Value,
    ) -> Result<RunRecord, OperateError> {
        self.post(&format!("/review/{id}/resolve"), &by, &json!({"output": output})).await
    }

    async fn stats(&self, window: Duration) -> Result<Stats, OperateError> {
        self.get(&format!("/stats?window={}s", window.as_secs())).await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, OperateError> {
        self.get(&format!("/dlq?limit={limit}")).await
    }

    async fn replay_dead_letters(
        &self,
        agent: Option<&str>,
        by: Actor,
        force: bool,
    ) -> Result<Vec<Replayed>, OperateError> {
        self.post("/dlq/replay", &by, &json!({"agent": agent, "force": force})).await
    }

    async fn pause(
        &self,
        agent: &str,
        by: Actor,
        reason: &str,
    ) -> Result<Controlled, OperateError> {
        self.post(&format!("/agents/{agent}/pause"), &by, &json!({"reason": reason})).await
    }

    async fn resume(
        &self,
        agent: &str,
        by: Actor,
        rate: Option<f64>,
    ) -> Result<Controlled, OperateError> {
        self.post(&format!("/agents/{agent}/resume"), &by, &json!({"rate": rate})).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_is_the_apis_query_string() {
        let filter = RunFilter::new()
            .state(crate::RunState::NeedsReview)
            .agent("digest.1.classifier")
            .since(Duration::from_secs(7200))
            .limit(5);
        assert_eq!(
            query_of(&filter),
            "?state=needs_review&agent=digest.1.classifier&since=7200s&limit=5"
        );
        assert_eq!(query_of(&RunFilter::new()), "");
    }

    #[test]
    fn debug_hides_the_token() {
        let client = Client::new("http://127.0.0.1:7420/", Some("s3cret".repeat(8))).unwrap();
        let shown = format!("{client:?}");
        assert!(shown.contains("127.0.0.1:7420") && !shown.contains("s3cret"), "{shown}");
        assert!(Client::new("127.0.0.1:7420", None).is_err(), "a scheme is required");
    }
}
