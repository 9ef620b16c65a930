//! Logging in: the admin password (argon2id), sessions with their CSRF
//! token, and the per-source limit on failed logins.
//!
//! Sessions live in memory: a restart logs everyone out, which is what an
//! operator expects of an appliance, and there is nothing to leak on disk.
//! The password is checked against the file as it is now, so `tlsinspect
//! console passwd` takes effect at the next login without a restart.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::config::Console;

/// How long a session lasts after login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Failed logins allowed per source address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// The window failed logins are counted in; a limited source waits until it ends.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Name of the session cookie.
pub const COOKIE: &str = "tlsinspect_session";
/// File holding the first password, inside `<state_dir>/console/`.
pub const FIRST_PASSWORD_FILE: &str = "first-password";
/// Sessions kept at most; the oldest is dropped beyond it.
const MAX_SESSIONS: usize = 1_000;
/// Sources tracked for failed logins at most; beyond it the stalest go.
const MAX_TRACKED_SOURCES: usize = 10_000;

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // The system generator failing is not recoverable; an all-zero token
    // would be guessable, so refuse to make one.
    if SystemRandom::new().fill(&mut b).is_err() {
        panic!("the system random generator failed");
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The argon2id PHC string of `password` (fresh random salt, default cost).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// `<state_dir>/console/first-password`.
pub fn first_password_path(state_dir: &Path) -> PathBuf {
    super::cert::console_dir(state_dir).join(FIRST_PASSWORD_FILE)
}

/// Without `admin_password_hash`, makes the first password (once, mode
/// 0600) and returns its file; with one, `None`.
pub fn first_password(console: &Console, state_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    if console.admin_password_hash.is_some() {
        return Ok(None);
    }
    let path = first_password_path(state_dir);
    if path.exists() {
        return Ok(Some(path));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("console: creating {}", dir.display()))?;
    }
    let password = random_hex(12);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("console: creating {}", path.display()))?;
    writeln!(f, "{password}")
        .and_then(|()| f.sync_all())
        .with_context(|| format!("console: writing {}", path.display()))?;
    Ok(Some(path))
}

/// Whether `password` is the admin password of `console`: its hash, or
/// the first password when no hash is set.
pub fn check_password(console: &Console, state_dir: &Path, password: &str) -> bool {
    match &console.admin_password_hash {
        Some(hash) => verify_password(hash, password),
        None => match std::fs::read_to_string(first_password_path(state_dir)) {
            Ok(first) => {
                let first = first.trim();
                !first.is_empty()
                    && aws_lc_rs::constant_time::verify_slices_are_equal(
                        first.as_bytes(),
                        password.as_bytes(),
                    )
                    .is_ok()
            }
            Err(_) => false,
        },
    }
}

/// A logged-in browser or API client.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token every state-changing request must carry.
    pub csrf: String,
    /// When it ends.
    pub expires: Instant,
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    since: Option<Instant>,
}

/// Sessions and failed-login counters.
#[derive(Debug)]
pub struct Auth {
    state_dir: PathBuf,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

/// Why a login was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong password.
    Wrong,
    /// Too many failures from this source; retry after this many seconds.
    Limited(u64),
}

impl Auth {
    /// No sessions yet.
    pub fn new(state_dir: PathBuf) -> Auth {
        Auth {
            state_dir,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The state dir (for the first password).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn limited(&self, from: IpAddr, now: Instant) -> Option<u64> {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let entry = f.get_mut(&from)?;
        let since = entry.since?;
        let elapsed = now.saturating_duration_since(since);
        if elapsed >= FAILURE_WINDOW {
            f.remove(&from);
            return None;
        }
        (entry.count >= MAX_FAILURES).then(|| (FAILURE_WINDOW - elapsed).as_secs().max(1))
    }

    fn fail(&self, from: IpAddr, now: Instant) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() >= MAX_TRACKED_SOURCES && !f.contains_key(&from) {
            f.retain(|_, v| {
                v.since
                    .is_some_and(|s| now.saturating_duration_since(s) < FAILURE_WINDOW)
            });
            if f.len() >= MAX_TRACKED_SOURCES {
                // Still full of live entries: forget one rather than grow.
                if let Some(k) = f.keys().next().copied() {
                    f.remove(&k);
                }
            }
        }
        let e = f.entry(from).or_default();
        if e.since.is_none() {
            e.since = Some(now);
        }
        e.count += 1;
    }

    /// Checks `password` for a login from `from`; on success returns the
    /// new session's token and the session.
    ///
    /// A limited source is refused before the password is looked at, so a
    /// guess cannot succeed while limited.
    pub fn login(
        &self,
        console: &Console,
        from: IpAddr,
        password: &str,
    ) -> Result<(String, Session), LoginError> {
        let now = Instant::now();
        if let Some(wait) = self.limited(from, now) {
            return Err(LoginError::Limited(wait));
        }
        if !check_password(console, &self.state_dir, password) {
            self.fail(from, now);
            return match self.limited(from, now) {
                Some(wait) => Err(LoginError::Limited(wait)),
                None => Err(LoginError::Wrong),
            };
        }
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&from);
        let token = random_hex(32);
        let session = Session {
            csrf: random_hex(32),
            expires: now + SESSION_LIFETIME,
        };
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        s.retain(|_, v| v.expires > now);
        if s.len() >= MAX_SESSIONS {
            if let Some(oldest) = s
                .iter()
                .min_by_key(|(_, v)| v.expires)
                .map(|(k, _)| k.clone())
            {
                s.remove(&oldest);
            }
        }
        s.insert(token.clone(), session.clone());
        Ok((token, session))
    }

    /// The live session of `token`.
    pub fn session(&self, token: &str) -> Option<Session> {
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match s.get(token) {
            Some(v) if v.expires > Instant::now() => Some(v.clone()),
            Some(_) => {
                s.remove(token);
                None
            }
            None => None,
        }
    }

    /// Ends the session of `token`.
    pub fn logout(&self, token: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(hash: Option<String>) -> Console {
        Console {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            admin_password_hash: hash,
            audit_log: "audit.jsonl".into(),
            ca_dirs: vec!["ca".into()],
        }
    }

    #[test]
    fn argon2id_hash_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct hors"));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn failures_are_limited_per_source_and_block_even_the_right_password() {
        let dir = tempfile::tempdir().unwrap();
        let c = console(Some(hash_password("pw").unwrap()));
        let auth = Auth::new(dir.path().to_path_buf());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            assert_eq!(auth.login(&c, a, "nope").unwrap_err(), LoginError::Wrong);
        }
        assert!(matches!(
            auth.login(&c, a, "nope").unwrap_err(),
            LoginError::Limited(_)
        ));
        assert!(matches!(
            auth.login(&c, a, "pw").unwrap_err(),
            LoginError::Limited(_)
        ));
        // Another source is not affected.
        let (token, session) = auth.login(&c, b, "pw").unwrap();
        assert_eq!(auth.session(&token).unwrap().csrf, session.csrf);
        auth.logout(&token);
        assert!(auth.session(&token).is_none());
    }

    #[test]
    fn first_password_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let c = console(None);
        let p = first_password(&c, dir.path()).unwrap().unwrap();
        let pw = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(first_password(&c, dir.path()).unwrap().unwrap(), p);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), pw);
        assert!(check_password(&c, dir.path(), pw.trim()));
        assert!(!check_password(&c, dir.path(), "guess"));
    }
}
