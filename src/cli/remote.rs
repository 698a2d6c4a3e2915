//! The CLI over HTTP: when a server works on the data directory (it names its address in
//! `steadfast.server` there), or `--server URL` / `STEADFAST_SERVER` names one, operator
//! commands are sent to its API instead of opening the store (which the server holds). The
//! answers are the same values, so output and exit codes are the same either way.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::args::operator;
use super::{CliError, Session};
use crate::reqwest;
use crate::store::Actor;

/// A server's API.
#[derive(Debug)]
pub(crate) struct Remote {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Remote {
    fn new(url: &str) -> Result<Remote, CliError> {
        let url = url.trim().trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(CliError::usage(format!(
                "`{url}` is not a server address (http://host:port)"
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::usage(format!("cannot make an HTTP client: {e}")))?;
        let token = std::env::var("STEADFAST_TOKEN").ok().filter(|t| !t.trim().is_empty());
        // The server records who acts from a header, and refuses a name it cannot record.
        if let Actor::Operator(name) = operator()
            && !crate::ops::is_operator_name(name.trim())
        {
            return Err(CliError::usage(format!(
                "the operator name `{}` (STEADFAST_OPERATOR, else USER) must be 1 to {} printable ASCII characters to act through a server",
                name.trim(),
                crate::ops::OPERATOR_MAX
            )));
        }
        Ok(Remote { base: format!("{url}/api/v1"), token, client })
    }

    /// The server `session` should talk to: `--server`/`STEADFAST_SERVER`, else the one that
    /// named itself in the data directory, if it answers (a file left by a killed server is
    /// ignored, and the store opened as usual).
    pub(crate) async fn find(session: &Session) -> Result<Option<Remote>, CliError> {
        if let Some(url) = &session.server {
            return Remote::new(url).map(Some);
        }
        let file = session.data_dir().join(super::serve::SERVER_FILE);
        let Ok(url) = std::fs::read_to_string(&file) else { return Ok(None) };
        let remote = Remote::new(&url)?;
        let health = format!("{}/healthz", url.trim().trim_end_matches('/'));
        let alive = remote
            .client
            .get(health)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        Ok(alive.then_some(remote))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let name = match operator() {
            Actor::Operator(name) => name.trim().to_owned(),
            other => other.to_string(),
        };
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("x-steadfast-operator", name);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    /// `GET path`, the answer as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with `body`, the answer as `T`.
    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, CliError> {
        self.send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, CliError> {
        let unreachable = |e: reqwest::Error| {
            CliError::store(format!("cannot reach the server at {}: {e}", self.base))
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body: Value = response.json().await.map_err(unreachable)?;
        if status.is_success() {
            return serde_json::from_value(body).map_err(|e| {
                CliError::store(format!("the server at {} answered unexpectedly: {e}", self.base))
            });
        }
        // The server's words are the runtime's, as the CLI would have printed them.
        let message = body["error"].as_str().unwrap_or("the server refused the call").to_owned();
        let code = body["code"].as_u64().and_then(|c| u8::try_from(c).ok()).unwrap_or(3);
        Err(CliError::with_code(code, message))
    }
}

/// A query string of the given pairs (`None` values left out), encoded by `url`.
pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        if let Some(value) = value {
            query.append_pair(key, value);
        }
    }
    match query.finish() {
        q if q.is_empty() => q,
        q => format!("?{q}"),
    }
}
