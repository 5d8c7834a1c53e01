//! The dashboard's sign-in sessions, kept by the daemon: a session is a random id (the
//! cookie's value, not derived from the token) with its own random anti-forgery value, made
//! at each sign-in, ended at sign-out, after [`IDLE`] unused or [`LIFETIME`] in all, and with
//! the daemon (a new token means a restart, which ends them all). The daemon keeps only the
//! ids' digests, so its memory never holds a usable cookie.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::http::{HeaderMap, header};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

/// The cookie a browser carries after the sign-in.
pub const SESSION_COOKIE: &str = "hourglass_session";
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(60 * 60);
/// A session ends this long after its sign-in, used or not.
pub const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions held at most (the oldest goes first).
const MOST: usize = 1_000;

/// The sessions open now, by the digest of their id.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Session>>,
}

/// One signed-in browser.
#[derive(Debug, Clone)]
struct Session {
    started: Instant,
    used: Instant,
    csrf: String,
}

/// A session found for a request: the anti-forgery value its forms carry.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The value the session's forms must carry.
    pub csrf: String,
}

impl Sessions {
    /// Starts a session; its id for the cookie. Any session `headers` carried ends (a new id
    /// at every sign-in).
    pub fn start(&self, headers: &HeaderMap) -> String {
        let id = random_hex();
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for old in cookie_ids(headers) {
            open.remove(&digest(old));
        }
        open.retain(|_, s| alive(s, now));
        if open.len() >= MOST
            && let Some(oldest) = open.iter().min_by_key(|(_, s)| s.started).map(|(k, _)| *k)
        {
            open.remove(&oldest);
        }
        open.insert(
            digest(&id),
            Session {
                started: now,
                used: now,
                csrf: random_hex(),
            },
        );
        id
    }

    /// The live session `headers` carry, if any (its last use is now).
    pub fn find(&self, headers: &HeaderMap) -> Option<SignedIn> {
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for id in cookie_ids(headers) {
            let key = digest(id);
            match open.get_mut(&key) {
                Some(s) if alive(s, now) => {
                    s.used = now;
                    return Some(SignedIn {
                        csrf: s.csrf.clone(),
                    });
                }
                Some(_) => {
                    open.remove(&key);
                }
                None => {}
            }
        }
        None
    }

    /// Ends the session `headers` carry.
    pub fn end(&self, headers: &HeaderMap) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for id in cookie_ids(headers) {
            open.remove(&digest(id));
        }
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.used) < IDLE && now.duration_since(s.started) < LIFETIME
}

/// The session cookie's values among `headers`' cookies.
fn cookie_ids(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// 32 random bytes from the operating system's generator, in hex.
fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("a=b; {SESSION_COOKIE}={id}").parse().unwrap(),
        );
        h
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_is_random_ends_at_sign_out_and_when_idle_or_old() {
        let sessions = Sessions::default();
        let id = sessions.start(&HeaderMap::new());
        let other = sessions.start(&HeaderMap::new());
        assert_ne!(id, other);
        assert_eq!(id.len(), 64);
        let found = sessions.find(&with_cookie(&id)).unwrap();
        assert_ne!(
            found.csrf,
            sessions.find(&with_cookie(&other)).unwrap().csrf
        );
        assert!(sessions.find(&with_cookie("forged")).is_none());

        sessions.end(&with_cookie(&id));
        assert!(sessions.find(&with_cookie(&id)).is_none());

        tokio::time::advance(IDLE - Duration::from_secs(1)).await;
        assert!(
            sessions.find(&with_cookie(&other)).is_some(),
            "used: idle again from now"
        );
        tokio::time::advance(IDLE).await;
        assert!(
            sessions.find(&with_cookie(&other)).is_none(),
            "idle too long"
        );

        // Used every half hour: it lasts its lifetime, then ends.
        let busy = sessions.start(&HeaderMap::new());
        let mut lasted = Duration::ZERO;
        while sessions.find(&with_cookie(&busy)).is_some() {
            assert!(lasted <= LIFETIME, "outlived its lifetime");
            tokio::time::advance(IDLE / 2).await;
            lasted += IDLE / 2;
        }
        assert_eq!(lasted, LIFETIME);
    }

    #[test]
    fn signing_in_again_ends_the_session_the_browser_had() {
        let sessions = Sessions::default();
        let first = sessions.start(&HeaderMap::new());
        let second = sessions.start(&with_cookie(&first));
        assert!(sessions.find(&with_cookie(&first)).is_none());
        assert!(sessions.find(&with_cookie(&second)).is_some());
    }
}
