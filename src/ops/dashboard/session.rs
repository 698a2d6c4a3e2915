//! The dashboard's sessions: a random id in an HttpOnly, SameSite=Strict cookie, kept in
//! memory (a restart signs everyone out), each with its CSRF token, its operator's name, and
//! whether it signed in with the server's token. Every form carries the CSRF token and every
//! mutating request's `Origin` must be the server's own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};

/// The session cookie's name.
const COOKIE: &str = "steadfast_session";
/// How long a session lasts without being used.
const IDLE: Duration = Duration::from_secs(8 * 3600);
/// The most sessions kept; beyond it the least recently used goes, one never signed in first.
const MAX_SESSIONS: usize = 10_000;

/// One visitor's session.
#[derive(Clone, Debug)]
pub(super) struct Session {
    /// Its id, the cookie's value.
    pub(super) id: String,
    /// The token every form of this session carries.
    pub(super) csrf: String,
    /// Whether it signed in with the server's token (or the server has none).
    pub(super) signed_in: bool,
    /// Who acts, recorded as `operator:<name>`.
    pub(super) operator: String,
    /// A message for the next page shown, once.
    pub(super) flash: Option<String>,
    used: Instant,
}

/// Every live session.
#[derive(Debug, Default)]
pub(super) struct Sessions(Mutex<HashMap<String, Session>>);

/// 32 random bytes from the operating system, as hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session id a request's cookie names, if any.
fn cookie_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

impl Sessions {
    /// The request's session, or a new one (signed in from the start when the server has no
    /// token); the second value is whether it is new (its cookie must be set).
    pub(super) fn get_or_start(&self, headers: &HeaderMap, open: bool) -> (Session, bool) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(session) = cookie_id(headers).and_then(|id| map.get_mut(id))
            && now.duration_since(session.used) < IDLE
        {
            session.used = now;
            return (session.clone(), false);
        }
        (Self::start(&mut map, open, "dashboard".to_owned()), true)
    }

    fn start(map: &mut HashMap<String, Session>, signed_in: bool, operator: String) -> Session {
        let now = Instant::now();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| now.duration_since(s.used) < IDLE);
            // Visitors who never signed in go first: a flood of them (every request without a
            // cookie starts a session) must not sign the operators out.
            let oldest = map.values().min_by_key(|s| (s.signed_in, s.used)).map(|s| s.id.clone());
            if map.len() >= MAX_SESSIONS
                && let Some(oldest) = oldest
            {
                map.remove(&oldest);
            }
        }
        let session = Session {
            id: random_hex(),
            csrf: random_hex(),
            signed_in,
            operator,
            flash: None,
            used: now,
        };
        map.insert(session.id.clone(), session.clone());
        session
    }

    /// Signs `old` in as `operator`: a new session (a new id and CSRF token, so an id fixed
    /// before signing in is worth nothing), `old` forgotten.
    pub(super) fn sign_in(&self, old: &Session, operator: String) -> Session {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&old.id);
        Self::start(&mut map, true, operator)
    }

    /// Forgets `session`.
    pub(super) fn sign_out(&self, session: &Session) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&session.id);
    }

    /// Keeps `message` for the session's next page.
    pub(super) fn flash(&self, session: &Session, message: String) {
        if let Some(s) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&session.id) {
            s.flash = Some(message);
        }
    }

    /// The message kept for this page, taken.
    pub(super) fn take_flash(&self, session: &Session) -> Option<String> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(&session.id).and_then(|s| s.flash.take())
    }
}

/// The `Set-Cookie` value for `session`.
pub(super) fn set_cookie(session: &Session) -> HeaderValue {
    let value = format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        session.id,
        IDLE.as_secs()
    );
    HeaderValue::from_str(&value).expect("hex and ASCII")
}

/// The `Set-Cookie` value that removes the session cookie.
pub(super) fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("steadfast_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether `offered` is the session's CSRF token (in constant time).
pub(super) fn csrf_matches(session: &Session, offered: &str) -> bool {
    use subtle::ConstantTimeEq;
    session.csrf.as_bytes().ct_eq(offered.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_flood_of_visitors_does_not_sign_an_operator_out() {
        let sessions = Sessions::default();
        let (visitor, _) = sessions.get_or_start(&HeaderMap::new(), false);
        let operator = sessions.sign_in(&visitor, "ada".into());
        for _ in 0..MAX_SESSIONS + 10 {
            sessions.get_or_start(&HeaderMap::new(), false);
        }
        let cookie = format!("{COOKIE}={}", operator.id);
        let (again, new) = sessions.get_or_start(&headers(&[("cookie", &cookie)]), false);
        assert!(!new && again.signed_in, "the operator's session outlived the flood");
        assert_eq!(sessions.0.lock().unwrap().len(), MAX_SESSIONS);
    }

    #[test]
    fn sessions_come_from_their_cookie_and_signing_in_changes_the_id() {
        let sessions = Sessions::default();
        let (fresh, new) = sessions.get_or_start(&HeaderMap::new(), false);
        assert!(new && !fresh.signed_in);
        assert_eq!((fresh.id.len(), fresh.csrf.len()), (64, 64));
        let cookie = format!("other=1; {COOKIE}={}", fresh.id);
        let (again, new) = sessions.get_or_start(&headers(&[("cookie", &cookie)]), false);
        assert!(!new);
        assert_eq!(again.id, fresh.id);
        let signed = sessions.sign_in(&again, "ada".into());
        assert!(signed.signed_in);
        assert_ne!((&signed.id, &signed.csrf), (&fresh.id, &fresh.csrf));
        let (old, new) = sessions.get_or_start(&headers(&[("cookie", &cookie)]), false);
        assert!(new && !old.signed_in, "the id from before signing in is gone");
        assert!(csrf_matches(&signed, &signed.csrf.clone()));
        assert!(!csrf_matches(&signed, &fresh.csrf));
        assert!(!csrf_matches(&signed, ""));
    }
}
