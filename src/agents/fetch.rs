//! Fetching untrusted URLs: http(s) only, the address checked before connecting (and the
//! connection made to a checked address), every redirect checked again, bodies capped and
//! requests timed out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::fault::{Classify, Fault};

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL does not parse, or has no host.
    #[error("`{url}` is not a URL to fetch: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Not http or https.
    #[error("`{url}`: only http and https URLs are fetched")]
    Scheme {
        /// The URL.
        url: String,
    },
    /// The host is, or resolves to, an address the fetcher does not connect to.
    #[error("`{url}`: {addr} is a {kind} address; it is not fetched unless allow-listed")]
    Refused {
        /// The URL.
        url: String,
        /// The refused address.
        addr: IpAddr,
        /// What kind of address it is (`loopback`, `private`, `link-local`, ...).
        kind: &'static str,
    },
    /// The host name did not resolve.
    #[error("`{url}`: cannot resolve `{host}`: {source}")]
    Resolve {
        /// The URL.
        url: String,
        /// The host.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// More redirects than allowed.
    #[error("`{url}`: more than {limit} redirects")]
    TooManyRedirects {
        /// The URL first asked for.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The body is larger than the cap.
    #[error("`{url}`: the body is larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap.
        limit: usize,
    },
    /// The server answered with an error status.
    #[error("`{url}`: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
        /// The delay its `Retry-After` header asked for.
        retry_after: Option<Duration>,
    },
    /// The request failed (connection, timeout, protocol).
    #[error("`{url}`: {source}")]
    Http {
        /// The URL.
        url: String,
        /// reqwest's error.
        source: reqwest::Error,
    },
}

impl Classify for FetchError {
    /// A refused, malformed or oversized fetch will be the same next time: permanent. An error
    /// status by its class (429 and 5xx transient); connection failures and timeouts
    /// transient.
    fn fault(&self) -> Fault {
        match self {
            FetchError::Status { status, .. } => {
                crate::http_fault::status_fault(*status).unwrap_or(Fault::Unknown)
            }
            // A refused certificate will be refused next time too.
            FetchError::Http { source, .. } if super::refused_certificate(source) => {
                Fault::Permanent
            }
            FetchError::Http { source, .. } => source.fault(),
            FetchError::Resolve { source, .. } => match source.fault() {
                Fault::Permanent => Fault::Transient, // a name that does not resolve may, soon
                other => other,
            },
            _ => Fault::Permanent,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A network (`addr/prefix`) the operator allows despite its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn parse(text: &str) -> Option<Net> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.trim().parse::<IpAddr>().ok()?, Some(p.trim().parse::<u8>().ok()?)),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Net { addr, prefix })
    }

    fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The address policy: which addresses may be connected to.
#[derive(Debug, Default)]
struct Policy {
    allow: Vec<Net>,
}

impl Policy {
    /// `Err(kind)` for an address that is not public and not allow-listed.
    fn check(&self, addr: IpAddr) -> Result<(), &'static str> {
        match super::address::forbidden_kind(addr) {
            Some(kind) if !self.allow.iter().any(|n| n.contains(addr)) => Err(kind),
            _ => Ok(()),
        }
    }
}

/// The resolver behind the client: resolves, then keeps only addresses the policy allows, so
/// the connection is made to a checked address even if the name resolves differently now than
/// when it was checked (DNS rebinding).
struct CheckedResolver(Arc<Policy>);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| policy.check(a.ip()).is_ok())
                .collect();
            if addrs.is_empty() {
                return Err(format!("`{host}` resolves to no address that may be fetched").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client for these settings: the checking resolver, redirects not followed by reqwest
/// (they are followed by hand, each checked), no proxies.
fn client(
    policy: &Arc<Policy>,
    timeout: Duration,
    roots: &[reqwest::Certificate],
) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("steadfast/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(CheckedResolver(policy.clone())));
    for root in roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder.build().expect("a client with a resolver and root certificates builds")
}

/// An HTTP client for untrusted URLs.
///
/// Only `http` and `https`; the host's addresses are checked before connecting (loopback,
/// private, link-local, cloud-metadata and other special ranges refused unless allow-listed),
/// and the client's resolver connects only to checked addresses. Redirects are followed by
/// hand, at most 5, each checked like the first URL. Bodies are capped (2 MiB by default) and
/// requests time out (10 s by default). Proxies from the environment are not used (they would
/// bypass the address check).
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    policy: Arc<Policy>,
    max_bytes: usize,
    max_redirects: usize,
    timeout: Duration,
    roots: Vec<reqwest::Certificate>,
}

impl Default for Fetcher {
    fn default() -> Self {
        Fetcher::new()
    }
}

impl Fetcher {
    /// A fetcher with the defaults: 10 s timeout, 2 MiB cap, 5 redirects, nothing allow-listed.
    pub fn new() -> Self {
        let (policy, timeout) = (Arc::new(Policy::default()), Duration::from_secs(10));
        Fetcher {
            client: client(&policy, timeout, &[]),
            policy,
            max_bytes: 2 * 1024 * 1024,
            max_redirects: 5,
            timeout,
            roots: Vec::new(),
        }
    }

    fn rebuilt(mut self) -> Self {
        self.client = client(&self.policy, self.timeout, &self.roots);
        self
    }

    /// Allows addresses in `net` (`127.0.0.1`, `10.0.0.0/8`, `::1`) despite their kind: for
    /// feeds on the operator's own network, and for tests.
    ///
    /// # Panics
    /// If `net` is not an address or `address/prefix`.
    #[must_use]
    pub fn allow(mut self, net: &str) -> Self {
        let net = Net::parse(net).unwrap_or_else(|| panic!("`{net}` is not an address/prefix"));
        let mut allow = self.policy.allow.clone();
        allow.push(net);
        self.policy = Arc::new(Policy { allow });
        self.rebuilt()
    }

    /// Also trusts the root certificates in `pem` (a private CA) for HTTPS, besides the
    /// platform's.
    pub fn ca_pem(mut self, pem: &[u8]) -> Result<Self, reqwest::Error> {
        self.roots.extend(reqwest::Certificate::from_pem_bundle(pem)?);
        Ok(self.rebuilt())
    }

    /// Allow-lists each comma-separated network of environment variable `name` (as
    /// [`allow`](Self::allow)); entries that do not parse are skipped with a warning.
    #[must_use]
    pub fn allow_from_env(mut self, name: &str) -> Self {
        let value = std::env::var(name).unwrap_or_default();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if Net::parse(entry).is_some() {
                self = self.allow(entry);
            } else {
                tracing::warn!(variable = name, entry, "not an address/prefix; ignored");
            }
        }
        self
    }

    /// Times requests out after `timeout` (connecting, and the whole request).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.rebuilt()
    }

    /// Refuses bodies larger than `bytes`.
    #[must_use]
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Follows at most `n` redirects.
    #[must_use]
    pub fn max_redirects(mut self, n: usize) -> Self {
        self.max_redirects = n;
        self
    }

    /// Checks `url`'s scheme and the addresses of its host.
    async fn check(&self, url: &url::Url) -> Result<(), FetchError> {
        let shown = url.as_str().to_owned();
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Scheme { url: shown });
        }
        let refused = |addr: IpAddr, kind| FetchError::Refused { url: shown.clone(), addr, kind };
        match url.host() {
            None => Err(FetchError::BadUrl { url: shown.clone(), reason: "no host".into() }),
            Some(url::Host::Ipv4(a)) => {
                self.policy.check(a.into()).map_err(|k| refused(a.into(), k))
            }
            Some(url::Host::Ipv6(a)) => {
                self.policy.check(a.into()).map_err(|k| refused(a.into(), k))
            }
            Some(url::Host::Domain(host)) => {
                let port = url.port_or_known_default().unwrap_or(80);
                let addrs = tokio::net::lookup_host((host, port)).await.map_err(|source| {
                    FetchError::Resolve { url: shown.clone(), host: host.to_owned(), source }
                })?;
                // Every address must pass: a name that also resolves to a private address is
                // refused rather than raced.
                for addr in addrs {
                    self.policy.check(addr.ip()).map_err(|k| refused(addr.ip(), k))?;
                }
                Ok(())
            }
        }
    }

    /// Fetches `url` and returns its final URL and body.
    pub async fn get(&self, url: &str) -> Result<(String, Vec<u8>), FetchError> {
        let first = url;
        let mut url = url::Url::parse(url)
            .map_err(|e| FetchError::BadUrl { url: first.to_owned(), reason: e.to_string() })?;
        for _hop in 0..=self.max_redirects {
            self.check(&url).await?;
            let shown = url.as_str().to_owned();
            let http = |source| FetchError::Http { url: shown.clone(), source };
            let mut response = self.client.get(url.clone()).send().await.map_err(http)?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .ok_or_else(|| FetchError::BadUrl {
                        url: shown.clone(),
                        reason: format!("HTTP {status} without a Location"),
                    })?;
                url = url.join(location).map_err(|e| FetchError::BadUrl {
                    url: location.to_owned(),
                    reason: e.to_string(),
                })?;
                continue;
            }
            if !status.is_success() {
                let retry_after = crate::http_fault::retry_after(response.headers());
                return Err(FetchError::Status { url: shown, status, retry_after });
            }
            let too_large = || FetchError::TooLarge { url: shown.clone(), limit: self.max_bytes };
            if response.content_length().is_some_and(|n| n > self.max_bytes as u64) {
                return Err(too_large());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(http)? {
                if body.len() + chunk.len() > self.max_bytes {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            return Ok((shown, body));
        }
        Err(FetchError::TooManyRedirects { url: first.to_owned(), limit: self.max_redirects })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn allow_list_takes_networks() {
        let policy = Policy { allow: vec![Net::parse("10.0.0.0/8").unwrap()] };
        assert!(policy.check("10.9.9.9".parse().unwrap()).is_ok());
        assert_eq!(policy.check("192.168.0.1".parse().unwrap()), Err("private"));
        assert!(Net::parse("127.0.0.1/33").is_none());
        assert!(Net::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Net::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
    }

    proptest::proptest! {
        /// `Net::contains` agrees with comparing the first `prefix` bits.
        #[test]
        fn networks_contain_exactly_their_prefix(net: u32, addr: u32, prefix in 0u8..=32) {
            let n = Net::parse(&format!("{}/{prefix}", Ipv4Addr::from(net))).unwrap();
            let same = prefix == 0 || (net ^ addr) >> (32 - u32::from(prefix)) == 0;
            proptest::prop_assert_eq!(n.contains(IpAddr::V4(Ipv4Addr::from(addr))), same);
        }
    }

    #[tokio::test]
    async fn refuses_before_connecting() {
        let fetcher = Fetcher::new();
        let err = fetcher.get("http://127.0.0.1:9/feed").await.unwrap_err();
        assert!(matches!(err, FetchError::Refused { kind: "loopback", .. }), "{err}");
        assert_eq!(err.fault(), Fault::Permanent);
        let err = fetcher.get("file:///etc/passwd").await.unwrap_err();
        assert!(matches!(err, FetchError::Scheme { .. }), "{err}");
        let err = fetcher.get("http://localhost:9/").await.unwrap_err();
        assert!(matches!(err, FetchError::Refused { .. }), "{err}");
        let err = fetcher.get("not a url").await.unwrap_err();
        assert!(matches!(err, FetchError::BadUrl { .. }), "{err}");
    }
}
