//! Building and signing certificates: forged leaves and tlsinspect's own CAs.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{self, EcdsaKeyPair};

use super::der::{self, oid, tag};
use super::keys::CaSigner;
use super::keys::KeyKind;
use super::PkiError;

/// A fresh random serial: 16 bytes, positive, never starting with a zero
/// byte (so always 16 bytes long once encoded); 126 random bits.
pub(crate) fn random_serial(rng: &SystemRandom) -> Result<[u8; 16], PkiError> {
    let mut serial = [0u8; 16];
    rng.fill(&mut serial)
        .map_err(|_| PkiError::Internal("random generator failed".into()))?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

/// Writes a SubjectPublicKeyInfo for an EC P-256 point or a PKCS#1 RSA public key.
pub(crate) fn write_spki(out: &mut Vec<u8>, rsa: bool, public_key_bits: &[u8]) {
    der::nested(out, tag::SEQUENCE, |o| {
        if rsa {
            der::algorithm(o, oid::RSA_ENCRYPTION, None, true);
        } else {
            der::algorithm(o, oid::EC_PUBLIC_KEY, Some(oid::P256), false);
        }
        der::bit_string(o, public_key_bits);
    });
}

/// The parts of a certificate that differ between the ones we make.
pub(crate) struct CertSpec<'a> {
    pub serial: [u8; 16],
    /// Issuer Name, DER (the issuing CA's subject bytes, verbatim).
    pub issuer: &'a [u8],
    /// Subject Name, DER.
    pub subject: &'a [u8],
    pub not_before: i64,
    pub not_after: i64,
    /// SubjectPublicKeyInfo, DER.
    pub spki: &'a [u8],
    /// The Extension elements, concatenated (without the outer SEQUENCE).
    pub extensions: &'a [u8],
}

/// Encodes the TBSCertificate and signs it with `signer`; returns the certificate DER.
pub(crate) fn sign_cert(
    spec: &CertSpec<'_>,
    signer: &CaSigner,
    rng: &SystemRandom,
) -> Result<Vec<u8>, PkiError> {
    let mut tbs = Vec::with_capacity(512 + spec.extensions.len());
    der::nested(&mut tbs, tag::SEQUENCE, |o| {
        // [0] EXPLICIT Version v3
        der::tlv(o, 0xa0, &[tag::INTEGER, 1, 2]);
        der::unsigned_integer(o, &spec.serial);
        signer.write_signature_algorithm(o);
        o.extend_from_slice(spec.issuer);
        der::nested(o, tag::SEQUENCE, |o| {
            der::time(o, spec.not_before);
            der::time(o, spec.not_after);
        });
        o.extend_from_slice(spec.subject);
        o.extend_from_slice(spec.spki);
        der::nested(o, 0xa3, |o| {
            der::tlv(o, tag::SEQUENCE, spec.extensions);
        });
    });
    let sig = signer.sign(rng, &tbs)?;
    let mut cert = Vec::with_capacity(tbs.len() + sig.len() + 32);
    der::nested(&mut cert, tag::SEQUENCE, |o| {
        o.extend_from_slice(&tbs);
        signer.write_signature_algorithm(o);
        der::bit_string(o, &sig);
    });
    Ok(cert)
}

/// Generates a CA key; returns the signer and its PKCS#8 DER.
pub(crate) fn generate_ca_key(kind: KeyKind) -> Result<(CaSigner, Vec<u8>), PkiError> {
    match kind {
        KeyKind::EcdsaP256 => {
            let key = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING)
                .map_err(|_| PkiError::Internal("P-256 key generation failed".into()))?;
            let pkcs8 = key
                .to_pkcs8v1()
                .map_err(|_| PkiError::Internal("P-256 key encoding failed".into()))?
                .as_ref()
                .to_vec();
            Ok((CaSigner::Ecdsa(key), pkcs8))
        }
        KeyKind::Rsa2048 => {
            let key = RsaKeyPair::generate(KeySize::Rsa2048)
                .map_err(|_| PkiError::Internal("RSA key generation failed".into()))?;
            let pkcs8 = key
                .as_der()
                .map_err(|_| PkiError::Internal("RSA key encoding failed".into()))?
                .as_ref()
                .to_vec();
            Ok((CaSigner::Rsa(key), pkcs8))
        }
    }
}

/// Makes a self-signed CA certificate (pathlen 0, keyCertSign + cRLSign, SKI by method 1).
pub(crate) fn self_signed_ca(
    signer: &CaSigner,
    subject: &[u8],
    not_before: i64,
    not_after: i64,
    rng: &SystemRandom,
) -> Result<Vec<u8>, PkiError> {
    let rsa = matches!(signer, CaSigner::Rsa(_));
    let mut spki = Vec::new();
    write_spki(&mut spki, rsa, signer.public_key_bits());
    let ski = super::ca::method1_key_id(signer.public_key_bits());
    let mut exts = Vec::new();
    der::extension(&mut exts, oid::BASIC_CONSTRAINTS, true, |o| {
        // CA:TRUE, pathLenConstraint 0: it signs leaves only.
        der::tlv(
            o,
            tag::SEQUENCE,
            &[tag::BOOLEAN, 1, 0xff, tag::INTEGER, 1, 0],
        );
    });
    der::extension(&mut exts, oid::KEY_USAGE, true, |o| {
        der::key_usage_value(o, der::ku::KEY_CERT_SIGN | der::ku::CRL_SIGN)
    });
    der::extension(&mut exts, oid::SUBJECT_KEY_ID, false, |o| {
        der::tlv(o, tag::OCTET_STRING, &ski)
    });
    let spec = CertSpec {
        serial: random_serial(rng)?,
        issuer: subject,
        subject,
        not_before,
        not_after,
        spki: &spki,
        extensions: &exts,
    };
    sign_cert(&spec, signer, rng)
}
