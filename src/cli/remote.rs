//! The CLI over HTTP: when a process works on the data directory (`serve`, `work`, or a user's
//! program with [`LocalSocket`](crate::ops::LocalSocket)), operator commands go to its API
//! through the socket `steadfast.sock` there, instead of opening the store (which the process
//! holds); `--server URL` / `STEADFAST_SERVER` names a server elsewhere. The answers are the
//! same values, so output and exit codes are the same either way.
//!
//! The token (`$STEADFAST_TOKEN`) goes only to a server named with `--server`: never through
//! the socket (the file system decides who may use it), and never to an address found in a
//! file, which a process that outlived its server, or another user, could have put there.

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
    /// Where the server is, as messages name it (its URL, or its socket's path).
    at: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Remote {
    /// The server `--server` names, sent the token if one is set.
    fn named(url: &str) -> Result<Remote, CliError> {
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
        Self::check_operator()?;
        Ok(Remote { base: format!("{url}/api/v1"), at: url.to_owned(), token, client })
    }

    /// The process serving the socket at `path`, sent no token.
    fn local(path: &std::path::Path) -> Result<Remote, CliError> {
        let client = reqwest::Client::builder()
            .unix_socket(path)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::usage(format!("cannot make an HTTP client: {e}")))?;
        Self::check_operator()?;
        Ok(Remote {
            base: "http://localhost/api/v1".to_owned(),
            at: path.display().to_string(),
            token: None,
            client,
        })
    }

    fn check_operator() -> Result<(), CliError> {
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
        Ok(())
    }

    /// The server `session` should talk to: `--server`/`STEADFAST_SERVER`, else the process
    /// that answers on the data directory's socket (a socket left by a killed process is
    /// ignored, and the store opened as usual). A data directory another user owns is refused
    /// before anything is sent.
    pub(crate) async fn find(session: &Session) -> Result<Option<Remote>, CliError> {
        if let Some(url) = &session.server {
            return Remote::named(url).map(Some);
        }
        let path = session.data_dir().join(crate::ops::SOCKET_FILE);
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(None);
        }
        super::private::secure_data_dir(session.data_dir(), false)?;
        let remote = Remote::local(&path)?;
        let alive = remote
            .client
            .get("http://localhost/healthz")
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
            use std::error::Error;
            // reqwest's own words ("error sending request") hide the cause ("connection refused").
            let mut text = e.to_string();
            let mut source = e.source();
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            CliError::store(format!("cannot reach the server at {}: {text}", self.at))
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body: Value = response.json().await.map_err(unreachable)?;
        if status.is_success() {
            return serde_json::from_value(body).map_err(|e| {
                CliError::store(format!("the server at {} answered unexpectedly: {e}", self.at))
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
