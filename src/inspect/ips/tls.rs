//! The TLS buffers as Suricata spells them, from the upstream certificate.
//!
//! `tls.cert_subject` / `tls.cert_issuer` are the distinguished names in
//! certificate order, `C=US, O=Example, CN=host` (x509-parser's rendering,
//! which is also what Suricata's Rust x509 module produces);
//! `tls.cert_serial` is the serial's DER bytes in upper-case hex joined by
//! `:`; `tls.cert_fingerprint` the SHA-1 of the DER in lower-case hex joined
//! by `:`. `ja3.string` / `ja3.hash` are the ClientHello's JA3 fingerprint
//! as Suricata computes it (see [`ja3_string`]).

#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;

use md5::{Digest as _, Md5};
use tlsinspect_pipeline::tls::client_hello::is_grease;
use tlsinspect_pipeline::tls::ClientHello;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The JA3 string of a ClientHello:
/// `SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats`.
///
/// Numbers are decimal and `-` joined, in the client's order; GREASE values
/// (RFC 8701) are left out of the three u16 lists, as Suricata does; the
/// version is the hello's `legacy_version` (771 for TLS 1.2 and 1.3
/// hellos); an absent extension leaves its field empty.
pub fn ja3_string(h: &ClientHello) -> String {
    let mut s = String::with_capacity(256);
    let _ = write!(s, "{}", h.legacy_version);
    let list = |s: &mut String, vals: &mut dyn Iterator<Item = u16>| {
        s.push(',');
        for (i, v) in vals.filter(|v| !is_grease(*v)).enumerate() {
            if i > 0 {
                s.push('-');
            }
            let _ = write!(s, "{v}");
        }
    };
    list(&mut s, &mut h.cipher_suites.iter().copied());
    list(&mut s, &mut h.extensions.iter().copied());
    list(&mut s, &mut h.supported_groups.iter().copied());
    list(
        &mut s,
        &mut h.ec_point_formats.iter().map(|&f| u16::from(f)),
    );
    s
}

/// `ja3.hash`: the lower-case hex MD5 of the JA3 string.
pub fn ja3_hash(ja3: &str) -> String {
    let d = Md5::digest(ja3.as_bytes());
    let mut s = String::with_capacity(32);
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ja3_of_a_hello_leaves_grease_out() {
        let h = ClientHello {
            len: 0,
            legacy_version: 0x0303,
            sni: Some("a.example".into()),
            alpn: Vec::new(),
            supported_versions: vec![0x0a0a, 0x0304],
            cipher_suites: vec![0x2a2a, 0x1301, 0xc02f],
            extensions: vec![0x1a1a, 0, 11, 10, 43],
            signature_algorithms: vec![0x0403],
            supported_groups: vec![0x3a3a, 29, 23],
            ec_point_formats: vec![0, 1],
            ech: false,
            ja4: String::new(),
        };
        let s = ja3_string(&h);
        assert_eq!(s, "771,4865-49199,0-11-10-43,29-23,0-1");
        // `printf %s "771,4865-49199,0-11-10-43,29-23,0-1" | md5sum`.
        assert_eq!(ja3_hash(&s), "2c2fd40b0c825611677aeb4c6fee8701");
        // A hello without extensions: empty fields, commas kept.
        let bare = ClientHello {
            legacy_version: 0x0301,
            extensions: Vec::new(),
            supported_groups: Vec::new(),
            ec_point_formats: Vec::new(),
            cipher_suites: vec![47, 53],
            ..h
        };
        assert_eq!(ja3_string(&bare), "769,47-53,,,");
        // The MD5 of the empty string (RFC 1321's test suite).
        assert_eq!(ja3_hash(""), "d41d8cd98f00b204e9800998ecf8427e");
    }

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
