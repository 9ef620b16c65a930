//! Reading certificate and private-key files, and telling key algorithms apart.
//!
//! The policy rule is narrow (RSA >= 2048 bits or ECDSA P-256), but operators
//! bring keys in every format OpenSSL writes, so the file formats are broad:
//! PEM or DER; PKCS#8, SEC1 or PKCS#1. The algorithm is read from the key's
//! own header before any crypto library sees it, so that an SM2 or P-384 key
//! is refused with its name rather than with a generic parse error.

use std::fs;
use std::io::BufReader;
use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use rustls::pki_types::pem::{self, SectionKind};
use rustls::pki_types::CertificateDer;
use x509_parser::der_parser::asn1_rs::{Any, Class, FromDer, Tag};

use super::der;
use super::PkiError;

/// Key type of a CA that tlsinspect generates (`ca trial`, the console's
/// trial CA, the throw-away CA of a test mint), as `ca trial --key` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum KeyKind {
    /// ECDSA over P-256 (the default).
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    /// RSA with a 2048-bit modulus, for clients that lack ECDSA.
    #[value(name = "rsa-2048")]
    Rsa2048,
}

/// The public-key algorithm of a key or certificate, as far as policy cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyAlg {
    /// RSA (rsaEncryption).
    Rsa,
    /// ECDSA over NIST P-256, the only curve accepted.
    EcP256,
    /// Anything else, with a human name ("SM2", "ECDSA P-384", "Ed25519", ...).
    Refused(String),
}

/// Names an elliptic curve OID for messages.
fn curve_name(oid: &str) -> String {
    match oid {
        "1.2.840.10045.3.1.7" => "ECDSA P-256".into(),
        "1.3.132.0.34" => "ECDSA P-384 (secp384r1)".into(),
        "1.3.132.0.35" => "ECDSA P-521 (secp521r1)".into(),
        "1.3.132.0.10" => "ECDSA secp256k1".into(),
        "1.2.840.10045.3.1.1" => "ECDSA P-192".into(),
        "1.3.132.0.33" => "ECDSA P-224".into(),
        "1.2.156.10197.1.301" => "SM2".into(),
        o if o.starts_with("1.3.36.3.3.2.8.1.1.") => format!("ECDSA brainpool curve {o}"),
        o => format!("elliptic curve with OID {o}"),
    }
}

/// The named curve of a certificate's EC public key (its OID, dotted), if any.
pub(crate) fn spki_curve(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<String> {
    spki.algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string())
}

/// Classifies a certificate's public key (algorithm and curve).
pub(crate) fn classify_spki(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> KeyAlg {
    classify(
        &spki.algorithm.algorithm.to_id_string(),
        spki_curve(spki).as_deref(),
    )
}

/// Classifies an AlgorithmIdentifier (algorithm OID and, for EC, the curve OID).
pub(crate) fn classify(alg_oid: &str, curve_oid: Option<&str>) -> KeyAlg {
    match alg_oid {
        "1.2.840.113549.1.1.1" => KeyAlg::Rsa,
        "1.2.840.10045.2.1" => match curve_oid {
            Some("1.2.840.10045.3.1.7") => KeyAlg::EcP256,
            Some(c) => KeyAlg::Refused(curve_name(c)),
            None => KeyAlg::Refused("EC key without a named curve".into()),
        },
        "1.2.156.10197.1.301" => KeyAlg::Refused("SM2".into()),
        "1.3.101.112" => KeyAlg::Refused("Ed25519".into()),
        "1.3.101.113" => KeyAlg::Refused("Ed448".into()),
        "1.3.101.110" => KeyAlg::Refused("X25519 (not a signing key)".into()),
        "1.3.101.111" => KeyAlg::Refused("X448 (not a signing key)".into()),
        "1.2.840.10040.4.1" => KeyAlg::Refused("DSA".into()),
        "1.2.840.113549.1.1.10" => KeyAlg::Refused("RSASSA-PSS-only RSA key".into()),
        "1.2.840.10046.2.1" => KeyAlg::Refused("Diffie-Hellman (not a signing key)".into()),
        "1.2.643.7.1.1.1.1" | "1.2.643.7.1.1.1.2" => KeyAlg::Refused("GOST R 34.10-2012".into()),
        o => KeyAlg::Refused(format!("algorithm with OID {o}")),
    }
}

/// Whether a signature-algorithm OID is an SM2/SM3 one (refused outright).
pub(crate) fn is_sm_signature(oid: &str) -> bool {
    oid.starts_with("1.2.156.10197.1.5")
}

/// Reads a file, naming it in the error.
pub(crate) fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|source| PkiError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn looks_like_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Every PEM section of `data` that rustls-pki-types knows, in order.
fn pem_sections(
    data: &[u8],
    path: &Path,
    what: &'static str,
) -> Result<Vec<(SectionKind, Vec<u8>)>, PkiError> {
    let mut rd = BufReader::new(data);
    let mut out = Vec::new();
    // Each step consumes at least one line, so this ends; the cap only
    // bounds memory for absurd inputs.
    while out.len() < 1000 {
        match pem::from_buf(&mut rd) {
            Ok(Some(section)) => out.push(section),
            Ok(None) => break,
            Err(e) => {
                return Err(PkiError::Malformed {
                    what,
                    path: path.to_path_buf(),
                    detail: format!("bad PEM: {e:?}"),
                })
            }
        }
    }
    Ok(out)
}

/// Reads every certificate in a PEM file (or the one certificate of a DER file).
pub(crate) fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let data = read_file(path, what)?;
    parse_certs(&data, path, what)
}

/// Parses certificate file contents (PEM with one or more certificates, or DER).
pub(crate) fn parse_certs(
    data: &[u8],
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs: Vec<CertificateDer<'static>> = if looks_like_pem(data) {
        pem_sections(data, path, what)?
            .into_iter()
            .filter(|(kind, _)| *kind == SectionKind::Certificate)
            .map(|(_, der)| CertificateDer::from(der))
            .collect()
    } else if data.first() == Some(&der::tag::SEQUENCE) {
        vec![CertificateDer::from(data.to_vec())]
    } else {
        Vec::new()
    };
    if certs.is_empty() {
        return Err(PkiError::Malformed {
            what,
            path: path.to_path_buf(),
            detail: "no certificate in it (expected a PEM \"CERTIFICATE\" block or DER)".into(),
        });
    }
    Ok(certs)
}

/// The container format of a private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFormat {
    Pkcs8,
    Sec1,
    Pkcs1,
}

/// A CA private key that may sign certificates (RSA >= 2048 or ECDSA P-256).
pub(crate) enum CaSigner {
    /// ECDSA P-256; signs with ecdsa-with-SHA256.
    Ecdsa(EcdsaKeyPair),
    /// RSA; signs with sha256WithRSAEncryption (PKCS#1 v1.5).
    Rsa(RsaKeyPair),
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl CaSigner {
    /// A short description for messages, e.g. "ECDSA P-256" or "RSA 2048".
    pub(crate) fn describe(&self) -> String {
        match self {
            CaSigner::Ecdsa(_) => "ECDSA P-256".into(),
            CaSigner::Rsa(k) => format!("RSA {}", k.public_modulus_len() * 8),
        }
    }

    /// The subjectPublicKey bits (EC point, or PKCS#1 RSAPublicKey).
    pub(crate) fn public_key_bits(&self) -> &[u8] {
        match self {
            CaSigner::Ecdsa(k) => k.public_key().as_ref(),
            CaSigner::Rsa(k) => k.public_key().as_ref(),
        }
    }

    /// Writes the AlgorithmIdentifier of the signatures this key makes.
    pub(crate) fn write_signature_algorithm(&self, out: &mut Vec<u8>) {
        match self {
            CaSigner::Ecdsa(_) => der::algorithm(out, der::oid::ECDSA_SHA256, None, false),
            CaSigner::Rsa(_) => der::algorithm(out, der::oid::RSA_SHA256, None, true),
        }
    }

    /// Signs `msg` with SHA-256.
    pub(crate) fn sign(&self, rng: &SystemRandom, msg: &[u8]) -> Result<Vec<u8>, PkiError> {
        match self {
            CaSigner::Ecdsa(k) => k
                .sign(rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| PkiError::Internal("ECDSA signing failed".into())),
            CaSigner::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, rng, msg, &mut sig)
                    .map_err(|_| PkiError::Internal("RSA signing failed".into()))?;
                Ok(sig)
            }
        }
    }
}

/// Reads the algorithm (and curve) out of a PKCS#8 PrivateKeyInfo header.
fn pkcs8_alg(der_bytes: &[u8]) -> Option<KeyAlg> {
    let (_, outer) = Any::from_der(der_bytes).ok()?;
    if outer.tag() != Tag::Sequence {
        return None;
    }
    let (rest, version) = Any::from_der(outer.data).ok()?;
    if version.tag() != Tag::Integer {
        return None;
    }
    let (_, alg) = Any::from_der(rest).ok()?;
    if alg.tag() != Tag::Sequence {
        return None;
    }
    let (params, alg_oid) = Any::from_der(alg.data).ok()?;
    let alg_oid = alg_oid.as_oid().ok()?.to_id_string();
    let curve = Any::from_der(params)
        .ok()
        .and_then(|(_, p)| p.as_oid().ok().map(|o| o.to_id_string()));
    Some(classify(&alg_oid, curve.as_deref()))
}

/// Reads the curve out of a SEC1 ECPrivateKey (`[0] parameters`).
fn sec1_alg(der_bytes: &[u8]) -> Option<KeyAlg> {
    let (_, outer) = Any::from_der(der_bytes).ok()?;
    if outer.tag() != Tag::Sequence {
        return None;
    }
    let mut rest = outer.data;
    let mut curve = None;
    while !rest.is_empty() {
        let (next, item) = Any::from_der(rest).ok()?;
        if item.class() == Class::ContextSpecific && item.tag() == Tag(0) {
            let (_, oid) = Any::from_der(item.data).ok()?;
            curve = Some(oid.as_oid().ok()?.to_id_string());
        }
        rest = next;
    }
    Some(classify("1.2.840.10045.2.1", curve.as_deref()))
}

/// Loads a CA private key file and checks its algorithm against policy.
pub(crate) fn load_ca_key(path: &Path) -> Result<CaSigner, PkiError> {
    let data = read_file(path, "CA private key")?;
    parse_ca_key(&data, path)
}

/// Parses CA private-key file contents; see [`load_ca_key`].
pub(crate) fn parse_ca_key(data: &[u8], path: &Path) -> Result<CaSigner, PkiError> {
    let malformed = |detail: String| PkiError::Malformed {
        what: "CA private key",
        path: path.to_path_buf(),
        detail,
    };
    let text_has = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
    if text_has(b"ENCRYPTED PRIVATE KEY") || text_has(b"Proc-Type: 4,ENCRYPTED") {
        return Err(malformed(
            "the key is encrypted; tlsinspect needs it unencrypted (e.g. `openssl pkey -in KEY -out PLAIN.key`, then chmod 600)".into(),
        ));
    }
    let (format, key_der) = if looks_like_pem(data) {
        let sections = pem_sections(data, path, "CA private key")?;
        let found = sections.into_iter().find_map(|(kind, der)| match kind {
            SectionKind::PrivateKey => Some((KeyFormat::Pkcs8, der)),
            SectionKind::EcPrivateKey => Some((KeyFormat::Sec1, der)),
            SectionKind::RsaPrivateKey => Some((KeyFormat::Pkcs1, der)),
            _ => None,
        });
        found.ok_or_else(|| {
            malformed("no private key in it (expected PEM \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\")".into())
        })?
    } else if pkcs8_alg(data).is_some() {
        (KeyFormat::Pkcs8, data.to_vec())
    } else if RsaKeyPair::from_der(data).is_ok() {
        (KeyFormat::Pkcs1, data.to_vec())
    } else if sec1_alg(data).is_some() {
        (KeyFormat::Sec1, data.to_vec())
    } else {
        return Err(malformed(
            "neither PEM nor a DER PKCS#8, SEC1 or PKCS#1 private key".into(),
        ));
    };
    let alg = match format {
        KeyFormat::Pkcs8 => pkcs8_alg(&key_der),
        KeyFormat::Sec1 => sec1_alg(&key_der),
        KeyFormat::Pkcs1 => Some(KeyAlg::Rsa),
    }
    .ok_or_else(|| malformed(format!("the {format:?} structure does not parse")))?;
    match alg {
        KeyAlg::Refused(name) => Err(PkiError::UnsupportedKey {
            what: "CA private key",
            path: path.to_path_buf(),
            detail: format!("{name} key"),
        }),
        KeyAlg::EcP256 => {
            EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &key_der)
                .map(CaSigner::Ecdsa)
                .map_err(|e| malformed(format!("P-256 key rejected: {e}")))
        }
        KeyAlg::Rsa => {
            let key = match format {
                KeyFormat::Pkcs1 => RsaKeyPair::from_der(&key_der),
                _ => RsaKeyPair::from_pkcs8(&key_der),
            };
            match key {
                Ok(k) if k.public_modulus_len() * 8 >= 2048 => Ok(CaSigner::Rsa(k)),
                Ok(k) => Err(PkiError::UnsupportedKey {
                    what: "CA private key",
                    path: path.to_path_buf(),
                    detail: format!("RSA key of {} bits", k.public_modulus_len() * 8),
                }),
                Err(e) => Err(malformed(format!("RSA key rejected: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_of_a_key_fails_cleanly() {
        let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let pkcs8 = key.to_pkcs8v1().unwrap();
        let der = pkcs8.as_ref();
        let p = Path::new("k.der");
        assert!(parse_ca_key(der, p).is_ok());
        for n in 0..der.len() {
            assert!(parse_ca_key(&der[..n], p).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn every_prefix_of_a_cert_file_never_panics() {
        let pem = b"-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
        for n in 0..pem.len() {
            let _ = parse_certs(&pem[..n], Path::new("c.pem"), "CA certificate");
        }
    }
}
