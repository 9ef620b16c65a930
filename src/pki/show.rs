//! `tlsinspect ca show`: a certificate described the way an operator checks one.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use aws_lc_rs::digest;
use x509_parser::extensions::GeneralName;
use x509_parser::public_key::PublicKey;

use super::keys::{self, KeyAlg};
use super::{ca, rfc3339, unix_secs, PkiError};

fn hex_colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn signature_name(oid: &str) -> String {
    let name = match oid {
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.3.101.112" => "Ed25519",
        "1.2.156.10197.1.501" => "SM2-with-SM3",
        _ => return oid.to_string(),
    };
    name.to_string()
}

/// Describes every certificate in a PEM or DER file, as text.
pub fn describe_file(path: &Path, now: SystemTime) -> Result<String, PkiError> {
    let certs = keys::read_certs(path, "certificate")?;
    let now = unix_secs(now);
    let mut out = String::new();
    let total = certs.len();
    for (i, der) in certs.iter().enumerate() {
        let (_, x) = x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Malformed {
            what: "certificate",
            path: path.to_path_buf(),
            detail: format!("certificate {} of {total}: {e}", i + 1),
        })?;
        if total > 1 {
            let _ = writeln!(out, "Certificate {} of {total}", i + 1);
        }
        let spki = x.public_key();
        let key = match keys::classify_spki(spki) {
            KeyAlg::EcP256 => "ECDSA P-256".to_string(),
            KeyAlg::Rsa => match spki.parsed() {
                Ok(PublicKey::RSA(r)) => format!("RSA {}", r.key_size()),
                _ => "RSA (unparsable)".to_string(),
            },
            KeyAlg::Refused(name) => format!("{name} (not accepted for a tlsinspect CA)"),
        };
        let v = x.validity();
        let (nb, na) = (v.not_before.timestamp(), v.not_after.timestamp());
        let state = if now > na {
            "EXPIRED".to_string()
        } else if now < nb {
            "NOT YET VALID".to_string()
        } else {
            format!("{} days left", (na - now) / 86_400)
        };
        let ca_flag = match x.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => match bc.value.path_len_constraint {
                Some(n) => format!("yes (pathlen {n})"),
                None => "yes".to_string(),
            },
            Ok(_) => "no".to_string(),
            Err(e) => format!("malformed basicConstraints: {e}"),
        };
        let ku = match x.key_usage() {
            Ok(Some(k)) => k.value.to_string(),
            Ok(None) => "(none)".to_string(),
            Err(e) => format!("malformed: {e}"),
        };
        let mut sans = Vec::new();
        if let Ok(Some(san)) = x.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                    GeneralName::IPAddress(b) if b.len() == 4 => {
                        let a: [u8; 4] = [b[0], b[1], b[2], b[3]];
                        sans.push(format!("IP:{}", IpAddr::from(a)));
                    }
                    GeneralName::IPAddress(b) if b.len() == 16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        sans.push(format!("IP:{}", IpAddr::from(a)));
                    }
                    other => sans.push(format!("{other}")),
                }
            }
        }
        let fp = digest::digest(&digest::SHA256, der);
        let _ = writeln!(out, "Subject:        {}", x.subject());
        let _ = writeln!(out, "Issuer:         {}", x.issuer());
        let _ = writeln!(out, "Serial:         {}", hex_colons(x.raw_serial()));
        let _ = writeln!(out, "Not before:     {}", rfc3339(nb));
        let _ = writeln!(out, "Not after:      {} ({state})", rfc3339(na));
        let _ = writeln!(out, "Key:            {key}");
        let _ = writeln!(
            out,
            "Signature:      {}",
            signature_name(&x.signature_algorithm.algorithm.to_id_string())
        );
        let _ = writeln!(out, "CA:             {ca_flag}");
        let _ = writeln!(out, "Key usage:      {ku}");
        let _ = writeln!(
            out,
            "Self-signed:    {}",
            if ca::is_self_signed(&x) { "yes" } else { "no" }
        );
        if let Some(ski) = ca::subject_key_id(&x) {
            let _ = writeln!(out, "Subject key id: {}", hex_colons(&ski));
        }
        let _ = writeln!(out, "SHA-256:        {}", hex_colons(fp.as_ref()));
        let _ = writeln!(
            out,
            "SANs:           {}",
            if sans.is_empty() {
                "(none)".to_string()
            } else {
                sans.join(", ")
            }
        );
        if i + 1 < total {
            out.push('\n');
        }
    }
    Ok(out)
}
