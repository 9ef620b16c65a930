//! A minimal DER writer for the certificates tlsinspect builds itself.
//!
//! Why not rcgen for the leaves: rcgen re-encodes the issuer name from a
//! parsed form, which drops repeated attributes (two `OU`s, the `DC=` lists
//! of Active Directory CAs) and multi-valued RDNs. Clients such as webpki and
//! Go compare the leaf's issuer with the CA's subject byte for byte, so the
//! leaf must carry the CA's subject exactly as it appears in the CA
//! certificate. Writing the few structures we need (TLV with definite
//! lengths) is short, keeps the raw bytes, and avoids per-leaf re-parsing of
//! the CA.

use time::OffsetDateTime;

/// ASN.1 universal tags used here.
pub(crate) mod tag {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
}

/// DER-encoded OBJECT IDENTIFIER contents (without tag and length).
pub(crate) mod oid {
    pub const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    pub const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];
    pub const ORGANIZATIONAL_UNIT: &[u8] = &[0x55, 0x04, 0x0b];
    pub const SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
    pub const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
    pub const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    pub const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
    pub const AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23];
    pub const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
    /// id-kp-serverAuth 1.3.6.1.5.5.7.3.1
    pub const KP_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
    /// id-ecPublicKey 1.2.840.10045.2.1
    pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// prime256v1 1.2.840.10045.3.1.7
    pub const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    /// rsaEncryption 1.2.840.113549.1.1.1
    pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// ecdsa-with-SHA256 1.2.840.10045.4.3.2
    pub const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    /// sha256WithRSAEncryption 1.2.840.113549.1.1.11
    pub const RSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
}

/// Key usage bits (RFC 5280 §4.2.1.3), numbered from the most significant bit.
pub(crate) mod ku {
    pub const DIGITAL_SIGNATURE: u16 = 1 << 15;
    pub const KEY_CERT_SIGN: u16 = 1 << 10;
    pub const CRL_SIGN: u16 = 1 << 9;
}

/// Writes the DER length octets of `len`.
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Writes one TLV whose content is already at hand.
pub(crate) fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    push_len(out, content.len());
    out.extend_from_slice(content);
}

/// Writes one constructed TLV whose content `body` appends to the buffer.
///
/// The content is written in place and the length patched afterwards, so
/// nesting costs no intermediate buffers beyond a short shift.
pub(crate) fn nested(out: &mut Vec<u8>, tag: u8, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    let len_at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - len_at - 1;
    if len < 0x80 {
        out[len_at] = len as u8;
    } else {
        let mut len_bytes = Vec::with_capacity(4);
        push_len(&mut len_bytes, len);
        out.splice(len_at..len_at + 1, len_bytes);
    }
}

/// Writes a positive INTEGER from big-endian magnitude bytes.
pub(crate) fn unsigned_integer(out: &mut Vec<u8>, magnitude: &[u8]) {
    let trimmed = {
        let skip = magnitude.iter().take_while(|&&b| b == 0).count();
        &magnitude[skip.min(magnitude.len().saturating_sub(1))..]
    };
    out.push(tag::INTEGER);
    if trimmed.is_empty() {
        out.push(1);
        out.push(0);
    } else if trimmed[0] & 0x80 != 0 {
        push_len(out, trimmed.len() + 1);
        out.push(0);
        out.extend_from_slice(trimmed);
    } else {
        push_len(out, trimmed.len());
        out.extend_from_slice(trimmed);
    }
}

/// Writes a BIT STRING with no unused bits.
pub(crate) fn bit_string(out: &mut Vec<u8>, bits: &[u8]) {
    out.push(tag::BIT_STRING);
    push_len(out, bits.len() + 1);
    out.push(0);
    out.extend_from_slice(bits);
}

/// Writes a time as UTCTime (1950..2049) or GeneralizedTime, as RFC 5280 §4.1.2.5 requires.
pub(crate) fn time(out: &mut Vec<u8>, unix: i64) {
    let t = OffsetDateTime::from_unix_timestamp(unix).unwrap_or(if unix < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        // Far beyond any certificate: 9999-12-31T23:59:59Z.
        OffsetDateTime::from_unix_timestamp(253_402_300_799).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    });
    let year = t.year().clamp(0, 9999);
    let rest = format!(
        "{:02}{:02}{:02}{:02}{:02}Z",
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if (1950..2050).contains(&year) {
        tlv(
            out,
            tag::UTC_TIME,
            format!("{:02}{rest}", year % 100).as_bytes(),
        );
    } else {
        tlv(
            out,
            tag::GENERALIZED_TIME,
            format!("{year:04}{rest}").as_bytes(),
        );
    }
}

/// Writes an AlgorithmIdentifier; `null_params` adds the NULL RSA requires.
pub(crate) fn algorithm(
    out: &mut Vec<u8>,
    oid: &[u8],
    params_oid: Option<&[u8]>,
    null_params: bool,
) {
    nested(out, tag::SEQUENCE, |o| {
        tlv(o, tag::OID, oid);
        if let Some(p) = params_oid {
            tlv(o, tag::OID, p);
        }
        if null_params {
            tlv(o, tag::NULL, &[]);
        }
    });
}

/// Writes a Name made of single-valued RDNs, each a UTF8String.
pub(crate) fn name(out: &mut Vec<u8>, attrs: &[(&[u8], &str)]) {
    nested(out, tag::SEQUENCE, |o| {
        for (attr_oid, value) in attrs {
            nested(o, tag::SET, |o| {
                nested(o, tag::SEQUENCE, |o| {
                    tlv(o, tag::OID, attr_oid);
                    tlv(o, tag::UTF8_STRING, value.as_bytes());
                })
            })
        }
    });
}

/// Writes one Extension; `value` appends the DER that goes into the OCTET STRING.
pub(crate) fn extension(
    out: &mut Vec<u8>,
    ext_oid: &[u8],
    critical: bool,
    value: impl FnOnce(&mut Vec<u8>),
) {
    nested(out, tag::SEQUENCE, |o| {
        tlv(o, tag::OID, ext_oid);
        if critical {
            tlv(o, tag::BOOLEAN, &[0xff]);
        }
        nested(o, tag::OCTET_STRING, value);
    });
}

/// Writes a KeyUsage extension value (a BIT STRING, trailing zero bits trimmed as DER requires).
pub(crate) fn key_usage_value(out: &mut Vec<u8>, bits: u16) {
    let bytes = bits.to_be_bytes();
    let used = if bytes[1] != 0 { 2 } else { 1 };
    let last = bytes[used - 1];
    let unused = if last == 0 {
        0
    } else {
        last.trailing_zeros() as u8
    };
    out.push(tag::BIT_STRING);
    out.push(used as u8 + 1);
    out.push(unused);
    out.extend_from_slice(&bytes[..used]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_are_patched() {
        let mut out = Vec::new();
        nested(&mut out, tag::SEQUENCE, |o| {
            tlv(o, tag::OCTET_STRING, &[7u8; 300])
        });
        assert_eq!(&out[..4], &[0x30, 0x82, 0x01, 0x30]);
        assert_eq!(&out[4..8], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(out.len(), 4 + 4 + 300);
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        let mut out = Vec::new();
        unsigned_integer(&mut out, &[0, 0, 0x80, 1]);
        assert_eq!(out, [0x02, 0x03, 0x00, 0x80, 0x01]);
        out.clear();
        unsigned_integer(&mut out, &[0, 0]);
        assert_eq!(out, [0x02, 0x01, 0x00]);
    }

    #[test]
    fn key_usage_encodings_match_openssl() {
        let mut out = Vec::new();
        key_usage_value(&mut out, ku::DIGITAL_SIGNATURE);
        assert_eq!(out, [0x03, 0x02, 0x07, 0x80]);
        out.clear();
        key_usage_value(&mut out, ku::KEY_CERT_SIGN | ku::CRL_SIGN);
        assert_eq!(out, [0x03, 0x02, 0x01, 0x06]);
    }

    #[test]
    fn times_switch_to_generalized_after_2049() {
        let mut out = Vec::new();
        time(&mut out, 0);
        assert_eq!(&out[2..], b"700101000000Z");
        out.clear();
        time(&mut out, 2_524_608_000); // 2050-01-01
        assert_eq!(&out[2..], b"20500101000000Z");
    }
}
