//! Loading and checking a policy's CA (DESIGN.md §3, "CA").
//!
//! Everything that can be wrong with a CA is found here, once, with the file
//! named, so that an operator fixes it before the appliance runs; the minter
//! can then assume a usable CA.
//!
//! Decisions where the design is silent:
//! - keyUsage absent: accepted with a warning. RFC 5280 requires the
//!   extension in CA certificates, but OpenSSL, webpki, browsers and Windows
//!   all accept a CA without it, and some older private roots lack it.
//!   Present without keyCertSign: refused.
//! - Extra certificates after the first one in the `ca_cert` file are taken
//!   as the start of the chain (a "full chain" file), before `ca_chain`.
//! - Chain certificates must be CA certificates, currently valid, and each
//!   must be the issuer (name and signature) of the one below it.
//! - No SubjectKeyIdentifier in the CA: the minted leaves' AKI is the RFC 5280
//!   method-1 value, SHA-1 of the CA's subjectPublicKey bits (a warning says so).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::public_key::PublicKey;

use super::keys::{self, CaSigner, KeyAlg};
use super::{rfc3339, unix_secs, PkiError};

/// What `validate` and start-up print about a loaded CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSummary {
    /// Subject distinguished name, e.g. `CN=Office CA, O=Example`.
    pub subject: String,
    /// Key type, e.g. `ECDSA P-256` or `RSA 2048`.
    pub key_type: String,
    /// notBefore, RFC 3339 UTC.
    pub not_before: String,
    /// notAfter, RFC 3339 UTC.
    pub not_after: String,
    /// Whole days of validity left at load time (negative never happens: expired CAs are refused).
    pub days_left: i64,
    /// Problems that do not stop the CA from being used (short validity, key file mode, ...).
    pub warnings: Vec<String>,
}

/// A policy's issuing CA with its key and chain, checked and ready to sign.
#[derive(Debug)]
pub struct PolicyCa {
    cert_path: PathBuf,
    cert: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    pub(crate) signer: CaSigner,
    /// The CA's subject Name, exactly as encoded in its certificate.
    pub(crate) subject_der: Vec<u8>,
    /// The CA's SubjectKeyIdentifier (or the method-1 value if it has none).
    pub(crate) ski: Vec<u8>,
    /// Start of the window leaves are clipped to (unix seconds).
    pub(crate) not_before: i64,
    /// End of the window leaves are clipped to (unix seconds).
    pub(crate) not_after: i64,
    /// Certificates sent after the leaf: the CA and chain, minus self-signed ones.
    pub(crate) sent_chain: Vec<CertificateDer<'static>>,
    summary: CaSummary,
}

/// One certificate of the CA's chain with the file it came from.
struct Link<'a> {
    path: &'a Path,
    what: &'static str,
    x509: X509Certificate<'a>,
}

fn parse<'a>(
    der: &'a CertificateDer<'static>,
    path: &'a Path,
    what: &'static str,
) -> Result<Link<'a>, PkiError> {
    let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Malformed {
        what,
        path: path.to_path_buf(),
        detail: format!("not an X.509 certificate: {e}"),
    })?;
    Ok(Link { path, what, x509 })
}

/// Checks that a certificate holds a policy-acceptable CA key; returns its description.
fn check_cert_key(link: &Link<'_>) -> Result<String, PkiError> {
    let refuse = |detail: String| PkiError::UnsupportedKey {
        what: link.what,
        path: link.path.to_path_buf(),
        detail,
    };
    let sig_oid = link.x509.signature_algorithm.algorithm.to_id_string();
    if keys::is_sm_signature(&sig_oid) {
        return Err(refuse(format!(
            "signed with SM2/SM3 (signature algorithm {sig_oid})"
        )));
    }
    let spki = link.x509.public_key();
    match keys::classify_spki(spki) {
        KeyAlg::Refused(name) => Err(refuse(format!("{name} public key"))),
        KeyAlg::EcP256 => Ok("ECDSA P-256".into()),
        KeyAlg::Rsa => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= 2048 => {
                Ok(format!("RSA {}", rsa.key_size()))
            }
            Ok(PublicKey::RSA(rsa)) => Err(refuse(format!("RSA key of {} bits", rsa.key_size()))),
            _ => Err(PkiError::Malformed {
                what: link.what,
                path: link.path.to_path_buf(),
                detail: "RSA public key does not parse".into(),
            }),
        },
    }
}

/// Checks that a certificate may issue certificates; adds warnings.
fn check_ca_flags(link: &Link<'_>, warnings: &mut Vec<String>) -> Result<(), PkiError> {
    let not_ca = |detail: &str| PkiError::NotCa {
        path: link.path.to_path_buf(),
        detail: detail.to_string(),
    };
    let malformed = |detail: String| PkiError::Malformed {
        what: link.what,
        path: link.path.to_path_buf(),
        detail,
    };
    match link.x509.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(Some(_)) => return Err(not_ca("basicConstraints says CA:FALSE")),
        Ok(None) => return Err(not_ca("it has no basicConstraints extension with CA:TRUE")),
        Err(e) => return Err(malformed(format!("basicConstraints: {e}"))),
    }
    match link.x509.key_usage() {
        Ok(Some(ku)) if ku.value.key_cert_sign() => {}
        Ok(Some(_)) => {
            return Err(not_ca("its keyUsage extension does not include keyCertSign"));
        }
        Ok(None) => warnings.push(format!(
            "{} has no keyUsage extension; clients accept this, but RFC 5280 wants keyCertSign set in CA certificates",
            link.path.display()
        )),
        Err(e) => return Err(malformed(format!("keyUsage: {e}"))),
    }
    if let Ok(Some(eku)) = link.x509.extended_key_usage() {
        if !eku.value.server_auth && !eku.value.any {
            warnings.push(format!(
                "{} restricts extendedKeyUsage without serverAuth; some clients will reject forged server certificates",
                link.path.display()
            ));
        }
    }
    if let Ok(Some(_)) = link.x509.name_constraints() {
        warnings.push(format!(
            "{} has name constraints; forged certificates for names outside them will be rejected by clients",
            link.path.display()
        ));
    }
    Ok(())
}

/// Checks notBefore <= now <= notAfter.
fn check_validity(link: &Link<'_>, now: i64) -> Result<(i64, i64), PkiError> {
    let v = link.x509.validity();
    let (nb, na) = (v.not_before.timestamp(), v.not_after.timestamp());
    if now > na {
        return Err(PkiError::Expired {
            what: link.what,
            path: link.path.to_path_buf(),
            not_after: rfc3339(na),
        });
    }
    if now < nb {
        return Err(PkiError::NotYetValid {
            what: link.what,
            path: link.path.to_path_buf(),
            not_before: rfc3339(nb),
        });
    }
    Ok((nb, na))
}

/// Outcome of checking one certificate's signature with a candidate issuer's key.
pub(crate) enum SigCheck {
    Valid,
    Invalid,
    /// The signature algorithm is not one we can verify; the name is given.
    Unsupported(String),
}

/// Verifies that `issuer`'s key signed `child`.
pub(crate) fn signed_by(child: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> SigCheck {
    let spki = issuer.public_key();
    let curve = keys::spki_curve(spki);
    let sig_oid = child.signature_algorithm.algorithm.to_id_string();
    let p256 = curve.as_deref() == Some("1.2.840.10045.3.1.7");
    let p384 = curve.as_deref() == Some("1.3.132.0.34");
    let alg: &'static dyn VerificationAlgorithm = match sig_oid.as_str() {
        "1.2.840.10045.4.3.2" if p256 => &signature::ECDSA_P256_SHA256_ASN1,
        "1.2.840.10045.4.3.2" if p384 => &signature::ECDSA_P384_SHA256_ASN1,
        "1.2.840.10045.4.3.3" if p256 => &signature::ECDSA_P256_SHA384_ASN1,
        "1.2.840.10045.4.3.3" if p384 => &signature::ECDSA_P384_SHA384_ASN1,
        "1.2.840.113549.1.1.11" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "1.2.840.113549.1.1.12" => &signature::RSA_PKCS1_2048_8192_SHA384,
        "1.2.840.113549.1.1.13" => &signature::RSA_PKCS1_2048_8192_SHA512,
        "1.2.840.113549.1.1.5" => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        "1.3.101.112" => &signature::ED25519,
        other => return SigCheck::Unsupported(other.to_string()),
    };
    let key = UnparsedPublicKey::new(alg, &spki.subject_public_key.data);
    match key.verify(child.tbs_certificate.as_ref(), &child.signature_value.data) {
        Ok(()) => SigCheck::Valid,
        Err(_) => SigCheck::Invalid,
    }
}

/// Whether a certificate is self-signed (a root): same name and its own key signed it.
pub(crate) fn is_self_signed(x509: &X509Certificate<'_>) -> bool {
    x509.subject().as_raw() == x509.issuer().as_raw()
        && !matches!(signed_by(x509, x509), SigCheck::Invalid)
}

/// The SubjectKeyIdentifier extension of a certificate, if any.
pub(crate) fn subject_key_id(x509: &X509Certificate<'_>) -> Option<Vec<u8>> {
    x509.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

/// RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits.
pub(crate) fn method1_key_id(public_key_bits: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, public_key_bits)
        .as_ref()
        .to_vec()
}

impl PolicyCa {
    /// Loads and checks a policy's CA certificate, private key and chain files.
    ///
    /// `chain` lists the certificates above the CA in order (its issuer
    /// first, the root last if given); each file may hold several PEM
    /// certificates. `now` is the time validity is checked against.
    pub fn load(
        cert: &Path,
        key: &Path,
        chain: &[PathBuf],
        now: SystemTime,
    ) -> Result<PolicyCa, PkiError> {
        let now = unix_secs(now);
        let mut warnings = Vec::new();

        // The CA certificate, and any chain certificates bundled after it.
        let mut ders: Vec<(CertificateDer<'static>, PathBuf, &'static str)> =
            keys::read_certs(cert, "CA certificate")?
                .into_iter()
                .enumerate()
                .map(|(i, d)| {
                    let what = if i == 0 {
                        "CA certificate"
                    } else {
                        "CA chain certificate"
                    };
                    (d, cert.to_path_buf(), what)
                })
                .collect();
        for path in chain {
            for d in keys::read_certs(path, "CA chain certificate")? {
                ders.push((d, path.clone(), "CA chain certificate"));
            }
        }
        let links = ders
            .iter()
            .map(|(d, p, what)| parse(d, p, what))
            .collect::<Result<Vec<_>, _>>()?;
        let ca = &links[0];

        let key_type = check_cert_key(ca)?;
        check_ca_flags(ca, &mut warnings)?;
        let (mut not_before, mut not_after) = check_validity(ca, now)?;
        let days_left = (not_after - now) / 86_400;
        if not_after - now < 365 * 86_400 {
            warnings.push(format!(
                "CA certificate {} expires in {days_left} days ({}); less than one year of validity left",
                cert.display(),
                rfc3339(not_after)
            ));
        }

        // The private key: algorithm first (so SM2 is named), then the match.
        if let Ok(meta) = std::fs::metadata(key) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warnings.push(format!(
                    "CA private key {} is accessible by group/others (mode {mode:04o}); run chmod 600 on it",
                    key.display()
                ));
            }
        }
        let signer = keys::load_ca_key(key)?;
        if signer.public_key_bits() != &*ca.x509.public_key().subject_public_key.data {
            return Err(PkiError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            });
        }

        // The chain: each certificate issued by the next, all of them CAs valid now.
        for pair in links.windows(2) {
            let (child, parent) = (&pair[0], &pair[1]);
            check_ca_flags(parent, &mut warnings)?;
            let (nb, na) = check_validity(parent, now)?;
            not_before = not_before.max(nb);
            not_after = not_after.min(na);
            if child.x509.issuer().as_raw() != parent.x509.subject().as_raw() {
                return Err(PkiError::BrokenChain {
                    path: parent.path.to_path_buf(),
                    detail: format!(
                        "\"{}\" (from {}) was issued by \"{}\", but the next chain certificate is \"{}\"",
                        child.x509.subject(),
                        child.path.display(),
                        child.x509.issuer(),
                        parent.x509.subject()
                    ),
                });
            }
            match signed_by(&child.x509, &parent.x509) {
                SigCheck::Valid => {}
                SigCheck::Invalid => {
                    return Err(PkiError::BrokenChain {
                        path: parent.path.to_path_buf(),
                        detail: format!(
                            "the signature of \"{}\" does not verify with the key of \"{}\"",
                            child.x509.subject(),
                            parent.x509.subject()
                        ),
                    })
                }
                SigCheck::Unsupported(alg) => warnings.push(format!(
                    "cannot verify the signature of \"{}\" (algorithm {alg}); only the names were checked",
                    child.x509.subject()
                )),
            }
        }

        let ski = match subject_key_id(&ca.x509) {
            Some(ski) => ski,
            None => {
                warnings.push(format!(
                    "CA certificate {} has no subjectKeyIdentifier; forged leaves use SHA-1 of its public key (RFC 5280 method 1) as authorityKeyIdentifier",
                    cert.display()
                ));
                method1_key_id(&ca.x509.public_key().subject_public_key.data)
            }
        };
        let sent_chain = links
            .iter()
            .zip(&ders)
            .filter(|(l, _)| !is_self_signed(&l.x509))
            .map(|(_, (d, _, _))| d.clone())
            .collect();
        let summary = CaSummary {
            subject: ca.x509.subject().to_string(),
            key_type,
            not_before: rfc3339(ca.x509.validity().not_before.timestamp()),
            not_after: rfc3339(ca.x509.validity().not_after.timestamp()),
            days_left,
            warnings,
        };
        let subject_der = ca.x509.subject().as_raw().to_vec();
        drop(links);
        let mut ders = ders.into_iter().map(|(d, _, _)| d);
        let cert_der = ders
            .next()
            .ok_or_else(|| PkiError::Internal("no CA certificate".into()))?;
        Ok(PolicyCa {
            cert_path: cert.to_path_buf(),
            cert: cert_der,
            chain: ders.collect(),
            signer,
            subject_der,
            ski,
            not_before,
            not_after,
            sent_chain,
            summary,
        })
    }

    /// Wraps a CA tlsinspect generated itself (the untrusted issuer), without policy checks.
    pub(crate) fn generated(
        label: &str,
        cert: CertificateDer<'static>,
        signer: CaSigner,
    ) -> Result<PolicyCa, PkiError> {
        let path = PathBuf::from(label);
        let link = parse(&cert, &path, "generated CA certificate")?;
        let x = &link.x509;
        let (nb, na) = (
            x.validity().not_before.timestamp(),
            x.validity().not_after.timestamp(),
        );
        let summary = CaSummary {
            subject: x.subject().to_string(),
            key_type: signer.describe(),
            not_before: rfc3339(nb),
            not_after: rfc3339(na),
            days_left: 0,
            warnings: Vec::new(),
        };
        let subject_der = x.subject().as_raw().to_vec();
        let ski = subject_key_id(x).unwrap_or_else(|| method1_key_id(signer.public_key_bits()));
        drop(link);
        Ok(PolicyCa {
            cert_path: path,
            cert,
            chain: Vec::new(),
            signer,
            subject_der,
            ski,
            not_before: nb,
            not_after: na,
            sent_chain: Vec::new(),
            summary,
        })
    }

    /// What `validate` and start-up print about this CA.
    pub fn summary(&self) -> CaSummary {
        self.summary.clone()
    }

    /// The file the CA certificate was loaded from.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The issuing CA certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The certificates above the CA, in order, including a root if configured.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The certificates a forged chain carries after the leaf (never a self-signed root).
    pub fn sent_chain(&self) -> &[CertificateDer<'static>] {
        &self.sent_chain
    }

    /// When the chain stops being usable: the earliest notAfter of the CA and
    /// its chain (for the "CA expires soon" metric; leaves never outlive it).
    pub fn valid_until(&self) -> SystemTime {
        let secs = u64::try_from(self.not_after).unwrap_or(0);
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    }

    /// The authorityKeyIdentifier that leaves signed by this CA carry.
    pub fn key_id(&self) -> &[u8] {
        &self.ski
    }
}
