//! Forging leaf certificates for intercepted connections (DESIGN.md §5).
//!
//! The leaf mirrors what the client would have checked on the real
//! certificate (subject CN, DNS and IP SANs, validity) and nothing else:
//! extensions such as OCSP/CRL pointers or SCTs would be lies about our CA.
//! The two leaf keys are made once at start-up, so the per-leaf cost is one
//! parse of the upstream certificate, one DER encoding and one CA signature;
//! the bounded cache turns repeat visits into a hash lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use hashbrown::HashMap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use tlsinspect_pipeline::api::{CertMinter, LeafKeyType, MintError, MintRequest};
use x509_parser::extensions::GeneralName;

use super::ca::PolicyCa;
use super::cache::ClockCache;
use super::der::{self, oid, tag};
use super::issue::{self, CertSpec};
use super::keys::KeyKind;
use super::PkiError;

/// Subject of the untrusted issuer; the OU says why a client sees it.
const UNTRUSTED_CN: &str = "tlsinspect untrusted issuer";
const UNTRUSTED_OU: &str = "upstream certificate failed verification";

/// A leaf key made at start-up and shared by every leaf of its type.
struct LeafKey {
    spki: Vec<u8>,
    ski: Vec<u8>,
    signing: Arc<dyn SigningKey>,
}

impl LeafKey {
    fn generate(kind: LeafKeyType) -> Result<LeafKey, PkiError> {
        let (pkcs8, rsa, public) = match kind {
            LeafKeyType::EcdsaP256 => {
                let k = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING)
                    .map_err(|_| PkiError::Internal("leaf P-256 key generation failed".into()))?;
                let pkcs8 = k
                    .to_pkcs8v1()
                    .map_err(|_| PkiError::Internal("leaf key encoding failed".into()))?;
                (
                    pkcs8.as_ref().to_vec(),
                    false,
                    k.public_key().as_ref().to_vec(),
                )
            }
            LeafKeyType::Rsa2048 => {
                let k = RsaKeyPair::generate(KeySize::Rsa2048)
                    .map_err(|_| PkiError::Internal("leaf RSA key generation failed".into()))?;
                let pkcs8 = k
                    .as_der()
                    .map_err(|_| PkiError::Internal("leaf key encoding failed".into()))?;
                (
                    pkcs8.as_ref().to_vec(),
                    true,
                    k.public_key().as_ref().to_vec(),
                )
            }
        };
        let mut spki = Vec::new();
        issue::write_spki(&mut spki, rsa, &public);
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8));
        let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
            .map_err(|e| PkiError::Internal(format!("rustls refused the leaf key: {e}")))?;
        Ok(LeafKey {
            spki,
            ski: super::ca::method1_key_id(&public),
            signing,
        })
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    policy: Arc<str>,
    upstream_sha256: [u8; 32],
    key_type: LeafKeyType,
    verified: bool,
    /// The SNI, only when it is not covered by the upstream certificate's
    /// own names (then it was added to the leaf, which is thus SNI-specific).
    added_sni: Option<Box<str>>,
}

#[derive(Clone)]
struct CacheEntry {
    certified: Arc<CertifiedKey>,
    /// Lower-cased dNSName SANs of the leaf, to decide whether an SNI is covered.
    names: Arc<[Box<str>]>,
}

/// Cache and minting counters, for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MintStats {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests that minted a new leaf.
    pub misses: u64,
    /// Entries pushed out of the full cache.
    pub evictions: u64,
    /// Requests that failed (unknown policy, unparsable upstream certificate, ...).
    pub errors: u64,
    /// Entries currently cached.
    pub entries: u64,
}

/// Forges leaf certificates signed by the policies' CAs, with a bounded cache.
pub struct Minter {
    cas: HashMap<Arc<str>, Arc<PolicyCa>>,
    untrusted: PolicyCa,
    ecdsa: LeafKey,
    rsa: LeafKey,
    rng: SystemRandom,
    cache: ClockCache<CacheKey, CacheEntry>,
    /// Shared with the minters of later reloads (see [`Minter::continuing`]).
    counters: Arc<MintCounters>,
}

/// The monotonic part of [`MintStats`].
#[derive(Debug, Default)]
struct MintCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    errors: AtomicU64,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("policies", &self.cas.keys().collect::<Vec<_>>())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Normalises an SNI for use as a dNSName: lower case, no trailing dot, DNS characters only.
fn normalize_sni(sni: &str) -> Option<String> {
    let s = sni.strip_suffix('.').unwrap_or(sni);
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && s.split('.')
            .all(|label| !label.is_empty() && label.len() <= 63);
    ok.then(|| s.to_ascii_lowercase())
}

/// Whether a (lower-case) dNSName SAN, possibly a wildcard, covers `host`.
///
/// Certificate semantics, not the host globs of the policies
/// (`tlsinspect_pipeline::hostglob`), on purpose: a client checks the forged
/// leaf by RFC 6125 §6.4.3, where only a whole left-most `*` label is a
/// wildcard and it covers exactly one label (`*.example.com` covers
/// `a.example.com`, not `a.b.example.com`); matching more loosely here
/// would mirror names onto hosts the upstream certificate does not cover.
fn name_covers(pattern: &str, host: &str) -> bool {
    if pattern == host {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        None => false,
    }
}

/// The names of an upstream certificate that a forged leaf mirrors.
struct Mirrored {
    common_name: Option<String>,
    dns: Vec<String>,
    ips: Vec<Vec<u8>>,
    not_before: i64,
    not_after: i64,
}

fn mirror(upstream: &[u8]) -> Result<Mirrored, MintError> {
    let bad = |m: String| MintError::BadUpstreamCertificate(m);
    let (_, x) = x509_parser::parse_x509_certificate(upstream).map_err(|e| bad(e.to_string()))?;
    let common_name = x
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    match x.subject_alternative_name() {
        Ok(Some(san)) => {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) if d.is_ascii() => dns.push(d.to_ascii_lowercase()),
                    GeneralName::IPAddress(ip) if ip.len() == 4 || ip.len() == 16 => {
                        ips.push(ip.to_vec())
                    }
                    _ => {}
                }
            }
        }
        Ok(None) => {}
        Err(e) => return Err(bad(format!("subjectAltName: {e}"))),
    }
    Ok(Mirrored {
        common_name,
        dns,
        ips,
        not_before: x.validity().not_before.timestamp(),
        not_after: x.validity().not_after.timestamp(),
    })
}

impl Minter {
    /// Creates a minter for the given policies' CAs; makes the leaf keys and the untrusted issuer.
    ///
    /// `cache_entries` bounds the leaf cache (0 disables caching).
    pub fn new(
        cas: Vec<(Arc<str>, Arc<PolicyCa>)>,
        cache_entries: usize,
    ) -> Result<Minter, PkiError> {
        let rng = SystemRandom::new();
        let (signer, _) = issue::generate_ca_key(KeyKind::EcdsaP256)?;
        let mut subject = Vec::new();
        der::name(
            &mut subject,
            &[
                (oid::ORGANIZATION, "tlsinspect"),
                (oid::ORGANIZATIONAL_UNIT, UNTRUSTED_OU),
                (oid::COMMON_NAME, UNTRUSTED_CN),
            ],
        );
        // Valid from 1970 to 9999 so that an upstream certificate's own
        // validity (expired, not yet valid) is mirrored unclipped: the client
        // then reports the same problem it would have seen without us.
        let cert = issue::self_signed_ca(&signer, &subject, 0, 253_402_300_799, &rng)?;
        let untrusted =
            PolicyCa::generated("<untrusted issuer>", CertificateDer::from(cert), signer)?;
        Ok(Minter {
            cas: cas.into_iter().collect(),
            untrusted,
            ecdsa: LeafKey::generate(LeafKeyType::EcdsaP256)?,
            rsa: LeafKey::generate(LeafKeyType::Rsa2048)?,
            rng,
            cache: ClockCache::new(cache_entries),
            counters: Arc::default(),
        })
    }

    /// This minter, counting on from `earlier`'s counters: a reload's new
    /// minter keeps the metrics monotonic while flows born before the
    /// reload go on minting with `earlier` (and counting into the same
    /// totals).
    pub fn continuing(mut self, earlier: &Minter) -> Minter {
        self.counters = earlier.counters.clone();
        self
    }

    /// Counters of the leaf cache.
    pub fn stats(&self) -> MintStats {
        MintStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
            entries: self.cache.len() as u64,
        }
    }

    /// The self-signed certificate of the untrusted issuer made at start-up.
    pub fn untrusted_issuer(&self) -> &CertificateDer<'static> {
        self.untrusted.certificate()
    }

    fn mint_inner(&self, req: &MintRequest<'_>) -> Result<Arc<CertifiedKey>, MintError> {
        let (policy, ca) = self
            .cas
            .get_key_value(req.policy_id)
            .ok_or_else(|| MintError::UnknownPolicy(req.policy_id.to_string()))?;
        let issuer: &PolicyCa = if req.upstream_verified {
            ca
        } else {
            &self.untrusted
        };
        let sni = req.sni.and_then(normalize_sni);
        let mut upstream_sha256 = [0u8; 32];
        upstream_sha256
            .copy_from_slice(digest::digest(&digest::SHA256, req.upstream_leaf).as_ref());
        let mut key = CacheKey {
            policy: policy.clone(),
            upstream_sha256,
            key_type: req.key_type,
            verified: req.upstream_verified,
            added_sni: None,
        };
        if let Some(hit) = self.cache.get(&key) {
            let covered = sni
                .as_deref()
                .is_none_or(|s| hit.names.iter().any(|n| name_covers(n, s)));
            if covered {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(hit.certified);
            }
        }
        if let Some(s) = &sni {
            key.added_sni = Some(s.as_str().into());
            if let Some(hit) = self.cache.get(&key) {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(hit.certified);
            }
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);

        let mut m = mirror(req.upstream_leaf)?;
        let added = match &sni {
            Some(s) if !m.dns.iter().any(|n| name_covers(n, s)) => {
                m.dns.push(s.clone());
                true
            }
            _ => false,
        };
        if !added {
            key.added_sni = None;
        }
        let leaf_key = match req.key_type {
            LeafKeyType::EcdsaP256 => &self.ecdsa,
            LeafKeyType::Rsa2048 => &self.rsa,
        };
        let leaf = build_leaf(issuer, leaf_key, &m, &self.rng)
            .map_err(|e| MintError::Internal(e.to_string()))?;
        let mut chain = Vec::with_capacity(1 + issuer.sent_chain.len());
        chain.push(CertificateDer::from(leaf));
        chain.extend(issuer.sent_chain.iter().cloned());
        let certified = Arc::new(CertifiedKey::new(chain, leaf_key.signing.clone()));
        let entry = CacheEntry {
            certified: certified.clone(),
            names: m.dns.into_iter().map(String::into_boxed_str).collect(),
        };
        if self.cache.insert(key, entry) {
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(certified)
    }
}

/// Encodes and signs one forged leaf.
fn build_leaf(
    issuer: &PolicyCa,
    leaf_key: &LeafKey,
    m: &Mirrored,
    rng: &SystemRandom,
) -> Result<Vec<u8>, PkiError> {
    if m.common_name.is_none() && m.dns.is_empty() && m.ips.is_empty() {
        return Err(PkiError::Internal(
            "the upstream certificate has no name to mirror (no CN, no SAN, no SNI)".into(),
        ));
    }
    // Clip to the CA's window; an upstream window entirely outside it
    // collapses to one instant at the nearer edge, so the leaf is (honestly)
    // expired or not yet valid rather than silently extended.
    let mut not_before = m.not_before.max(issuer.not_before);
    let mut not_after = m.not_after.min(issuer.not_after);
    if not_after < not_before {
        not_before = not_before.min(issuer.not_after);
        not_after = not_before;
    }
    let mut subject = Vec::with_capacity(64);
    match &m.common_name {
        Some(cn) => der::name(&mut subject, &[(oid::COMMON_NAME, cn)]),
        None => der::tlv(&mut subject, tag::SEQUENCE, &[]),
    }
    // A leaf SKI equal to the CA's would let path builders confuse the two.
    let ski: &[u8] = if leaf_key.ski == issuer.ski {
        &leaf_key.ski[..8]
    } else {
        &leaf_key.ski
    };

    let mut exts = Vec::with_capacity(256 + 32 * m.dns.len());
    der::extension(&mut exts, oid::BASIC_CONSTRAINTS, true, |o| {
        der::tlv(o, tag::SEQUENCE, &[])
    });
    der::extension(&mut exts, oid::KEY_USAGE, true, |o| {
        der::key_usage_value(o, der::ku::DIGITAL_SIGNATURE)
    });
    der::extension(&mut exts, oid::EXT_KEY_USAGE, false, |o| {
        der::nested(o, tag::SEQUENCE, |o| {
            der::tlv(o, tag::OID, oid::KP_SERVER_AUTH)
        })
    });
    if !m.dns.is_empty() || !m.ips.is_empty() {
        // RFC 5280 §4.2.1.6: critical when the subject is empty.
        der::extension(
            &mut exts,
            oid::SUBJECT_ALT_NAME,
            m.common_name.is_none(),
            |o| {
                der::nested(o, tag::SEQUENCE, |o| {
                    for d in &m.dns {
                        der::tlv(o, 0x82, d.as_bytes());
                    }
                    for ip in &m.ips {
                        der::tlv(o, 0x87, ip);
                    }
                })
            },
        );
    }
    der::extension(&mut exts, oid::SUBJECT_KEY_ID, false, |o| {
        der::tlv(o, tag::OCTET_STRING, ski)
    });
    der::extension(&mut exts, oid::AUTHORITY_KEY_ID, false, |o| {
        der::nested(o, tag::SEQUENCE, |o| der::tlv(o, 0x80, &issuer.ski))
    });
    let spec = CertSpec {
        serial: issue::random_serial(rng)?,
        issuer: &issuer.subject_der,
        subject: &subject,
        not_before,
        not_after,
        spki: &leaf_key.spki,
        extensions: &exts,
    };
    issue::sign_cert(&spec, &issuer.signer, rng)
}

impl CertMinter for Minter {
    fn mint(&self, req: &MintRequest<'_>) -> Result<Arc<CertifiedKey>, MintError> {
        let r = self.mint_inner(req);
        if r.is_err() {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_covers("*.example.com", "a.example.com"));
        assert!(!name_covers("*.example.com", "a.b.example.com"));
        assert!(!name_covers("*.example.com", "example.com"));
        assert!(name_covers("example.com", "example.com"));
    }

    #[test]
    fn sni_is_normalised() {
        assert_eq!(
            normalize_sni("WWW.Example.COM."),
            Some("www.example.com".into())
        );
        assert_eq!(normalize_sni("bad name"), None);
        assert_eq!(normalize_sni("a..b"), None);
        assert_eq!(normalize_sni(""), None);
    }
}
