//! `tlsinspect ca trial`: a fresh CA unique to this install.
//!
//! A shipped, shared demo CA would let anyone with the binary intercept every
//! install that trusts it; so the trial CA is generated on the machine, with
//! a new key, a random serial and the host name plus a random id in its
//! subject, so that an operator can tell installs apart in a trust store.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use super::der::{self, oid};
use super::issue;
use super::keys::KeyKind;
use super::{unix_secs, PkiError};

/// File name of the trial CA certificate inside `--out`.
pub const CERT_FILE: &str = "ca.crt";
/// File name of the trial CA private key inside `--out`.
pub const KEY_FILE: &str = "ca.key";

/// Ten years, the trial CA's lifetime.
const VALIDITY_SECS: i64 = 3_652 * 86_400;

fn host_name() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let h: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

/// Writes a new file that must not exist yet, with `mode` from the moment it is created.
fn write_new(path: &Path, mode: u32, contents: &[u8]) -> Result<(), PkiError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                PkiError::AlreadyExists {
                    path: path.to_path_buf(),
                }
            } else {
                PkiError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|source| PkiError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Creates `ca.crt` and `ca.key` (mode 0600) in `out`; returns their paths.
///
/// Refuses if either file exists. The CA is valid from one hour before
/// `now` (tolerating clients whose clock is a little behind) for ten years,
/// may sign only leaves (pathlen 0) and CRLs.
pub fn create(out: &Path, key: KeyKind, now: SystemTime) -> Result<(PathBuf, PathBuf), PkiError> {
    let cert_path = out.join(CERT_FILE);
    let key_path = out.join(KEY_FILE);
    for p in [&cert_path, &key_path] {
        if p.symlink_metadata().is_ok() {
            return Err(PkiError::AlreadyExists { path: p.clone() });
        }
    }
    fs::create_dir_all(out).map_err(|source| PkiError::Write {
        path: out.to_path_buf(),
        source,
    })?;

    let rng = SystemRandom::new();
    let mut id = [0u8; 4];
    rng.fill(&mut id)
        .map_err(|_| PkiError::Internal("random generator failed".into()))?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    // ub-common-name is 64 characters; shorten the host name to fit.
    let prefix = "tlsinspect trial CA ";
    let room = 64 - prefix.len() - 1 - id.len();
    let host: String = host_name().chars().take(room).collect();
    let cn = format!("{prefix}{host} {id}");
    let mut subject = Vec::new();
    der::name(
        &mut subject,
        &[(oid::ORGANIZATION, "tlsinspect"), (oid::COMMON_NAME, &cn)],
    );

    let (signer, pkcs8) = issue::generate_ca_key(key)?;
    let now = unix_secs(now);
    let cert = issue::self_signed_ca(&signer, &subject, now - 3_600, now + VALIDITY_SECS, &rng)?;

    let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8));
    let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", cert));
    write_new(&key_path, 0o600, key_pem.as_bytes())?;
    if let Err(e) = write_new(&cert_path, 0o644, cert_pem.as_bytes()) {
        // Do not leave a key without its certificate behind.
        let _ = fs::remove_file(&key_path);
        return Err(e);
    }
    Ok((cert_path, key_path))
}
