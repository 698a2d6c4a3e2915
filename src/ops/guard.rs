//! What every request passes before any handler: its `Host` must name this server (against DNS
//! rebinding), and a state-changing API call must be one a cross-site page cannot send (against
//! CSRF on a token-less loopback server).
//!
//! Loopback is not a trust boundary: the operator's browser runs other sites' pages on the same
//! machine. Two attacks follow, and each has its check here:
//!
//! - **DNS rebinding.** A page at `http://rebind.example:7420` whose name the attacker then
//!   points at 127.0.0.1 is, to the browser, the same origin as the server: it can read every
//!   answer. Its requests carry `Host: rebind.example:7420`, which names no address of ours, so
//!   [`check_host`] answers 421 before any handler runs. An IP literal (`127.0.0.1:7420`,
//!   `[::1]:7420`, the address of a public bind) and `localhost` are always ours; other names
//!   must be given ([`OpsConfig::allow_host`](super::OpsConfig::allow_host), `serve
//!   --allow-host`).
//! - **Cross-site requests.** Any page can send a "simple" request (a form post, or `fetch` with
//!   `mode: 'no-cors'`) to any address, with no preflight: it cannot read the answer, but the
//!   call is made. A simple request's `Content-Type` is a form's or `text/plain`, and it
//!   carries no header of our own. So [`check_api_write`] answers 403 to a state-changing API
//!   call that is not `application/json` (which makes the browser ask first, and a preflight is
//!   refused: the server sends no CORS headers), or whose `Origin` is not this server. An empty
//!   body sent as JSON counts as none.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The names a request's `Host` may carry besides IP literals and `localhost` (lower case, no
/// port).
#[derive(Clone, Debug, Default)]
pub(crate) struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// Adds `name` (a host name, with or without a port: the port is not checked, since the
    /// browser's origin already includes it).
    pub(crate) fn add(&mut self, name: &str) {
        let name = host_name(name.trim()).to_ascii_lowercase();
        if !name.is_empty() && !self.0.contains(&name) {
            self.0.push(name);
        }
    }

    /// Whether a request with this `Host` header is for this server.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.is_empty() {
            return false;
        }
        // An IP literal is what the browser connected to: a page can only be the same origin as
        // this server under it if it came from this server.
        let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
        if bare.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost" || self.0.contains(&name)
    }
}

/// The host part of a `Host` value (`name`, `name:port`, `[v6]`, `[v6]:port`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => "",
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => "",
        None => host,
    }
}

/// Answers 421 to a request whose `Host` names no address of this server (see the module docs).
pub(crate) async fn check_host(hosts: &AllowedHosts, request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).map(|h| h.to_str().unwrap_or(""));
    match host {
        Some(host) if hosts.allows(host) => next.run(request).await,
        _ => ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            1,
            "the Host header does not name this server (give its name with --allow-host)",
        )
        .into_response(),
    }
}

/// Whether `method` changes nothing.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request's `Content-Type` is JSON (`application/json`, any parameters).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// Answers 403 to a state-changing API call a cross-site page could have sent (see the module
/// docs): nothing is done.
pub(crate) async fn check_api_write(request: Request, next: Next) -> Response {
    let headers = request.headers();
    if is_safe(request.method()) {
        return next.run(request).await;
    }
    if !is_json(headers) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            1,
            "a call that changes something must be sent as `Content-Type: application/json` \
             (an empty body is taken as none); nothing was done",
        )
        .into_response();
    }
    if !same_origin(headers) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            1,
            "the call comes from a page of another site (its Origin is not this server); nothing \
             was done",
        )
        .into_response();
    }
    next.run(request).await
}

/// Whether a request comes from this server's own pages, or from a program: its `Origin` (or,
/// without one, its `Referer`) names this server (`Host`), or it has neither (a program, not a
/// browser: its token, or the dashboard's CSRF token, decides).
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let from = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .map(|v| v.to_str().unwrap_or("invalid"));
    let Some(from) = from else { return true };
    let rest = from.strip_prefix("http://").or_else(|| from.strip_prefix("https://"));
    rest.map(|r| r.split('/').next().unwrap_or("")).is_some_and(|h| h.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn hosts_are_ip_literals_localhost_and_the_names_given() {
        let mut hosts = AllowedHosts::default();
        for ours in ["127.0.0.1:7420", "127.0.0.1", "[::1]:7420", "[::1]", "localhost:7420"] {
            assert!(hosts.allows(ours), "{ours}");
        }
        for ours in ["LOCALHOST:1", "localhost.", "10.1.2.3:80", "[fe80::1]:7420"] {
            assert!(hosts.allows(ours), "{ours}");
        }
        for foreign in [
            "rebind.example:7420",
            "rebind.example",
            "localhost.rebind.example",
            "127.0.0.1.nip.io:7420",
            "",
            ":7420",
            "[::1",
            "localhost:port",
            "steadfast.internal",
        ] {
            assert!(!hosts.allows(foreign), "{foreign:?}");
        }
        hosts.add("Steadfast.Internal:443");
        assert_eq!(hosts.0, ["steadfast.internal"]);
        assert!(hosts.allows("steadfast.internal:7420"));
        assert!(hosts.allows("STEADFAST.internal"));
        assert!(!hosts.allows("evil.steadfast.internal"));
    }

    #[test]
    fn the_origin_must_be_the_server_itself() {
        let host = ("host", "127.0.0.1:7420");
        assert!(same_origin(&headers(&[host, ("origin", "http://127.0.0.1:7420")])));
        assert!(!same_origin(&headers(&[host, ("origin", "http://127.0.0.1:9999")])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[host, ("origin", "http://127.0.0.1:7420.evil.com")])));
        assert!(same_origin(&headers(&[host, ("referer", "http://127.0.0.1:7420/ui/review")])));
        assert!(!same_origin(&headers(&[host, ("referer", "http://evil.com/127.0.0.1:7420")])));
        assert!(same_origin(&headers(&[host])), "a program's call: its token decides");
        assert!(!same_origin(&headers(&[("origin", "http://127.0.0.1:7420")])), "no Host");
    }

    #[test]
    fn json_is_recognised_by_its_media_type() {
        assert!(is_json(&headers(&[("content-type", "application/json")])));
        assert!(is_json(&headers(&[("content-type", "Application/JSON; charset=utf-8")])));
        for simple in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"] {
            assert!(!is_json(&headers(&[("content-type", simple)])), "{simple}");
        }
        assert!(!is_json(&headers(&[("content-type", "text/plain; a=application/json")])));
        assert!(!is_json(&HeaderMap::new()));
    }
}
