//! The TLS buffers as Suricata spells them, from the upstream certificate.
//!
//! `tls.cert_subject` / `tls.cert_issuer` are the distinguished names in
//! certificate order, `C=US, O=Example, CN=host` (x509-parser's rendering,
//! which is also what Suricata's Rust x509 module produces);
//! `tls.cert_serial` is the serial's DER bytes in upper-case hex joined by
//! `:`; `tls.cert_fingerprint` the SHA-1 of the DER in lower-case hex joined
//! by `:`.

use x509_parser::prelude::{FromDer, X509Certificate};

/// The string buffers of one certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertBuffers {
    /// `tls.cert_subject`.
    pub subject: String,
    /// `tls.cert_issuer`.
    pub issuer: String,
    /// `tls.cert_serial`.
    pub serial: String,
    /// `tls.cert_fingerprint`.
    pub fingerprint: String,
}

fn hex_join(bytes: &[u8], upper: bool) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        if upper {
            s.push_str(&format!("{b:02X}"));
        } else {
            s.push_str(&format!("{b:02x}"));
        }
    }
    s
}

impl CertBuffers {
    /// The buffers of a DER certificate; one that does not parse keeps only
    /// its fingerprint (which is still meaningful).
    pub fn from_der(der: &[u8]) -> CertBuffers {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        let fingerprint = hex_join(digest.as_ref(), false);
        match X509Certificate::from_der(der) {
            Ok((_, c)) => CertBuffers {
                subject: c.subject().to_string(),
                issuer: c.issuer().to_string(),
                serial: hex_join(c.raw_serial(), true),
                fingerprint,
            },
            Err(_) => CertBuffers {
                fingerprint,
                ..CertBuffers::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_of_a_generated_certificate() {
        let mut p = rcgen::CertificateParams::new(vec!["www.example.com".into()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CountryName, "US");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example Org");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "www.example.com");
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0xbc, 0x01]));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let b = CertBuffers::from_der(cert.der());
        assert_eq!(b.subject, "C=US, O=Example Org, CN=www.example.com");
        assert_eq!(b.issuer, b.subject);
        assert_eq!(b.serial, "0A:BC:01");
        assert_eq!(b.fingerprint.len(), 59);
        assert!(b
            .fingerprint
            .chars()
            .all(|c| c == ':' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let junk = CertBuffers::from_der(b"not a certificate");
        assert!(junk.subject.is_empty() && junk.fingerprint.len() == 59);
    }
}
