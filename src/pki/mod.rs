//! Certificate authorities and forged leaf certificates.
//!
//! Loading is strict and up front: every policy's CA is checked once, when
//! the configuration is loaded, against the product's rules (a CA
//! certificate with keyCertSign, RSA >= 2048 or ECDSA P-256, valid now, key
//! matching, chain linked), so that the data plane never meets a CA it cannot
//! use. Minting is then a short, allocation-light path: the leaf keys are
//! made once at start-up, the leaf is written directly as DER around the CA's
//! raw subject bytes (see [`der`]), signed once, and cached.

mod ca;
mod cache;
pub(crate) mod der;
pub mod export;
mod issue;
mod keys;
mod mint;
pub mod show;
pub mod trial;

use std::path::PathBuf;

pub use ca::{CaSummary, PolicyCa};
pub use keys::KeyKind;
pub use mint::{MintStats, Minter};

/// Why a CA could not be loaded, created or exported.
///
/// Every variant names the file it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file was supposed to hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A file was read but its contents do not parse.
    #[error("{what} {path} is malformed: {detail}")]
    Malformed {
        /// What the file was supposed to hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The certificate is not usable as a CA.
    #[error("{path} is not usable as a CA certificate: {detail}")]
    NotCa {
        /// The certificate file.
        path: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// The key algorithm, curve or size is refused by policy.
    #[error("{what} {path} has an unsupported key: {detail}; a CA key must be RSA with at least 2048 bits or ECDSA P-256")]
    UnsupportedKey {
        /// Certificate or private key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The algorithm found.
        detail: String,
    },
    /// The certificate's notAfter has passed.
    #[error("{what} {path} has expired (notAfter {not_after})")]
    Expired {
        /// Which certificate.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its notAfter, RFC 3339.
        not_after: String,
    },
    /// The certificate's notBefore is in the future.
    #[error("{what} {path} is not valid yet (notBefore {not_before})")]
    NotYetValid {
        /// Which certificate.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its notBefore, RFC 3339.
        not_before: String,
    },
    /// The private key is not the key of the certificate.
    #[error("private key {key} does not match CA certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A chain certificate is not the issuer of the certificate below it.
    #[error("broken CA chain at {path}: {detail}")]
    BrokenChain {
        /// The chain file at which linkage fails.
        path: PathBuf,
        /// What does not link.
        detail: String,
    },
    /// `ca trial` or `ca export` would overwrite a file.
    #[error("{path} already exists; refusing to overwrite it (choose another --out directory or move the file away)")]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// Key generation or signing failed inside the crypto library.
    #[error("internal PKI error: {0}")]
    Internal(String),
}

/// Formats unix seconds as RFC 3339 UTC, for messages and summaries.
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

/// Converts a `SystemTime` to unix seconds (negative before 1970).
pub(crate) fn unix_secs(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Entry points for the fuzz targets (`fuzz/fuzz_targets/pki_*.rs`).
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    /// Parses bytes as a CA private-key file; must never panic.
    pub fn key_file(data: &[u8]) -> bool {
        super::keys::parse_ca_key(data, Path::new("fuzz.key")).is_ok()
    }

    /// Parses bytes as a certificate file and each certificate in it; must never panic.
    pub fn cert_file(data: &[u8]) -> usize {
        match super::keys::parse_certs(data, Path::new("fuzz.crt"), "certificate") {
            Ok(certs) => certs
                .iter()
                .filter(|c| x509_parser::parse_x509_certificate(c).is_ok())
                .count(),
            Err(_) => 0,
        }
    }
}
