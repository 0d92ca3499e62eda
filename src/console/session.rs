//! The console's login sessions (SPEC §6 "Console"): a random 256-bit session id in an
//! `HttpOnly; SameSite=Strict` cookie, kept server-side with an idle and an absolute expiry.
//! The store holds only the SHA-256 of each id (a memory dump gives no usable cookie) and the
//! digest of the admin token it was opened with, so a new token file (reload) ends every
//! session opened with the old one. Sessions belong to one process.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cookie's name.
pub const COOKIE: &str = "tg_console";
/// A session unused for this long ends.
pub const IDLE: Duration = Duration::from_secs(60 * 60);
/// A session ends this long after login, used or not.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions kept at most; a login beyond it ends the least recently used one.
pub const MAX_SESSIONS: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Entry {
    created: Instant,
    last_used: Instant,
    token: [u8; 32],
}

/// The server-side session store.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<[u8; 32], Entry>>,
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

impl Sessions {
    /// Opens a session for a caller who presented `token` (already verified) at `now`;
    /// returns the id for the cookie (64 hex digits).
    ///
    /// # Errors
    /// When the system's random source fails: no session is opened.
    pub fn open(&self, token: &str, now: Instant) -> Result<String, getrandom::Error> {
        let mut id = [0u8; 32];
        getrandom::fill(&mut id)?;
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut m = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, e| alive(e, now));
        if m.len() >= MAX_SESSIONS {
            if let Some(k) = m.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| *k) {
                m.remove(&k);
            }
        }
        m.insert(
            digest(hex.as_bytes()),
            Entry {
                created: now,
                last_used: now,
                token: digest(token.as_bytes()),
            },
        );
        Ok(hex)
    }

    /// Whether `id` names a live session opened with `token` (the admin token now); a live
    /// one is marked used at `now`.
    pub fn check(&self, id: &str, token: &str, now: Instant) -> bool {
        if id.len() != 64 {
            return false;
        }
        let key = digest(id.as_bytes());
        let mut m = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let Some(e) = m.get_mut(&key) else {
            return false;
        };
        if !alive(e, now) || e.token != digest(token.as_bytes()) {
            m.remove(&key);
            return false;
        }
        e.last_used = now;
        true
    }

    /// Ends the session `id` (logout).
    pub fn close(&self, id: &str) {
        let key = digest(id.as_bytes());
        self.by_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// Live sessions (for tests).
    pub fn len(&self) -> usize {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn alive(e: &Entry, now: Instant) -> bool {
    now.saturating_duration_since(e.last_used) < IDLE
        && now.saturating_duration_since(e.created) < ABSOLUTE
}

/// The session id in a `Cookie` header value, if any.
pub fn from_cookie(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_idle_or_absolute_expiry_and_logout() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let id = s.open("tok", t0).unwrap();
        assert_eq!(id.len(), 64);
        assert!(s.check(&id, "tok", t0 + Duration::from_secs(60)));
        // Another token (the token file was replaced): the session is over.
        assert!(!s.check(&id, "other", t0 + Duration::from_secs(61)));
        assert!(!s.check(&id, "tok", t0 + Duration::from_secs(62)));

        let id = s.open("tok", t0).unwrap();
        assert!(!s.check(&id, "tok", t0 + IDLE + Duration::from_secs(1)));

        // Used every 50 minutes, it still ends at the absolute limit.
        let id = s.open("tok", t0).unwrap();
        let mut t = t0;
        while t + Duration::from_secs(3000) < t0 + ABSOLUTE {
            t += Duration::from_secs(3000);
            assert!(s.check(&id, "tok", t));
        }
        assert!(!s.check(&id, "tok", t0 + ABSOLUTE));

        let id = s.open("tok", t0).unwrap();
        s.close(&id);
        assert!(!s.check(&id, "tok", t0));
        assert!(!s.check("", "tok", t0));
        assert!(!s.check(&"0".repeat(64), "tok", t0));
    }

    #[test]
    fn the_store_is_bounded() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let first = s.open("tok", t0).unwrap();
        for i in 1..=MAX_SESSIONS {
            s.open("tok", t0 + Duration::from_millis(i as u64)).unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(!s.check(&first, "tok", t0 + Duration::from_secs(1)));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(from_cookie("a=1; tg_console=abc; b=2"), Some("abc"));
        assert_eq!(from_cookie("tg_consolex=abc"), None);
        assert_eq!(from_cookie(""), None);
    }
}
