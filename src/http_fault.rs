//! HTTP responses and errors as faults (feature `http`): 429, 408 and 5xx are transient (with
//! `Retry-After` honoured), other 4xx permanent, timeouts and refused connections transient.
//!
//! ```no_run
//! # async fn fetch(client: reqwest::Client) -> Result<String, steadfast::AgentError> {
//! let response = client.get("http://127.0.0.1:8080/feed.xml").send().await?; // `?`: classified
//! let body = steadfast::http_fault::check(response)?.text().await?;
//! # Ok(body) }
//! ```

use std::time::{Duration, SystemTime};

use crate::fault::{AgentError, Classify, Fault};

/// The fault class of an HTTP status: 408, 425, 429 and 5xx are transient, other 4xx
/// permanent; `None` for a success or redirect.
pub fn status_fault(status: reqwest::StatusCode) -> Option<Fault> {
    match status.as_u16() {
        408 | 425 | 429 | 500..=599 => Some(Fault::Transient),
        400..=499 => Some(Fault::Permanent),
        _ => None,
    }
}

/// The delay a `Retry-After` header asks for: seconds, or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// Passes a successful response through; turns an error status into an [`AgentError`] of its
/// class, with the `Retry-After` delay the server asked for.
pub fn check(response: reqwest::Response) -> Result<reqwest::Response, AgentError> {
    let status = response.status();
    let Some(fault) = status_fault(status) else {
        return Ok(response);
    };
    let mut error = AgentError::new(fault, format!("HTTP {status} from {}", response.url()));
    if let Some(delay) = retry_after(response.headers()) {
        error = error.retry_after(delay);
    }
    Err(error)
}

impl Classify for reqwest::Error {
    /// Timeouts, refused or broken connections: transient; an error status: by its class;
    /// a body that cannot be read or decoded, a bad URL, too many redirects: permanent.
    fn fault(&self) -> Fault {
        if let Some(status) = self.status() {
            return status_fault(status).unwrap_or(Fault::Unknown);
        }
        if self.is_timeout() || self.is_connect() || self.is_request() {
            return Fault::Transient;
        }
        if self.is_body() || self.is_decode() || self.is_builder() || self.is_redirect() {
            return Fault::Permanent;
        }
        Fault::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_faults() {
        use reqwest::StatusCode;
        assert_eq!(status_fault(StatusCode::OK), None);
        assert_eq!(status_fault(StatusCode::TOO_MANY_REQUESTS), Some(Fault::Transient));
        assert_eq!(status_fault(StatusCode::SERVICE_UNAVAILABLE), Some(Fault::Transient));
        assert_eq!(status_fault(StatusCode::REQUEST_TIMEOUT), Some(Fault::Transient));
        assert_eq!(status_fault(StatusCode::NOT_FOUND), Some(Fault::Permanent));
        assert_eq!(status_fault(StatusCode::UNAUTHORIZED), Some(Fault::Permanent));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", "120".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
        let later = SystemTime::now() + Duration::from_secs(90);
        headers.insert("retry-after", httpdate::fmt_http_date(later).parse().unwrap());
        let delay = retry_after(&headers).unwrap();
        assert!(delay > Duration::from_secs(85) && delay <= Duration::from_secs(90), "{delay:?}");
        headers.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
