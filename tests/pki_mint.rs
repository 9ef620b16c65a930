//! Forged leaves: checked with `openssl verify`, a real rustls client, and by
//! reading the certificates back.

#[path = "fixtures/pki/support.rs"]
mod support;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use support::{handshake, read_pem_certs, write_pem, Lab};
use tlsinspect::pki::{Minter, PolicyCa};
use tlsinspect_pipeline::api::{CertMinter, LeafKeyType, MintError, MintRequest};
use x509_parser::extensions::{GeneralName, ParsedExtension};

fn policy_ca(cert: &Path, key: &Path, chain: &[std::path::PathBuf]) -> Arc<PolicyCa> {
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    Arc::new(PolicyCa::load(cert, key, chain, SystemTime::now()).expect("load CA"))
}

fn minter(ca: Arc<PolicyCa>, cache: usize) -> Minter {
    Minter::new(vec![(Arc::from("pol-a"), ca)], cache).expect("minter")
}

fn request<'a>(
    upstream: &'a CertificateDer<'a>,
    sni: Option<&'a str>,
    key_type: LeafKeyType,
) -> MintRequest<'a> {
    MintRequest {
        policy_id: "pol-a",
        sni,
        upstream_leaf: upstream,
        upstream_verified: true,
        key_type,
    }
}

fn ext_key_ids(der: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let (_, x) = x509_parser::parse_x509_certificate(der).unwrap();
    let mut ski = None;
    let mut aki = None;
    for e in x.extensions() {
        match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => {}
        }
    }
    (ski, aki)
}

/// Writes the minted chain and runs `openssl verify` on it; returns openssl's output.
fn openssl_verify(
    lab: &Lab,
    tag: &str,
    root: &Path,
    chain: &[CertificateDer<'_>],
) -> (bool, String) {
    let leaf = lab.path(&format!("{tag}-leaf.pem"));
    write_pem(&leaf, &chain[..1]);
    let mut args = vec![
        "verify".to_string(),
        "-x509_strict".into(),
        "-purpose".into(),
        "sslserver".into(),
        "-verify_hostname".into(),
        "www.example.test".into(),
        "-CAfile".into(),
        root.to_str().unwrap().into(),
    ];
    if chain.len() > 1 {
        let untrusted = lab.path(&format!("{tag}-untrusted.pem"));
        write_pem(&untrusted, &chain[1..]);
        args.push("-untrusted".into());
        args.push(untrusted.to_str().unwrap().into());
    }
    args.push(leaf.to_str().unwrap().into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.openssl_status(&args)
}

fn check_chain(lab: &Lab, tag: &str, root: &Path, ca: Arc<PolicyCa>, expect_chain_len: usize) {
    let upstream = read_pem_certs(&lab.upstream_leaf("sha256")).remove(0);
    let m = minter(ca.clone(), 100);
    let roots = read_pem_certs(root);
    for kt in [LeafKeyType::EcdsaP256, LeafKeyType::Rsa2048] {
        let ck = m
            .mint(&request(&upstream, Some("www.example.test"), kt))
            .unwrap();
        assert_eq!(ck.cert.len(), expect_chain_len, "{tag}");
        for c in &ck.cert {
            assert!(!roots.contains(c), "{tag}: the root must never be sent");
        }
        let (ok, out) = openssl_verify(lab, tag, root, &ck.cert);
        assert!(ok && out.contains(": OK"), "{tag} {kt:?}: {out}");
        handshake(&roots, "www.example.test", ck.clone())
            .unwrap_or_else(|e| panic!("{tag} {kt:?}: {e}"));
        handshake(&roots, "foo.cdn.example.test", ck.clone()).unwrap();
        let e = handshake(&roots, "other.example.test", ck.clone()).unwrap_err();
        assert!(
            e.contains("NotValidForName") || e.contains("not valid for name"),
            "{tag}: {e}"
        );

        // AKI is the issuing CA's SKI; the leaf's SKI differs.
        let (leaf_ski, leaf_aki) = ext_key_ids(&ck.cert[0]);
        let (ca_ski, _) = ext_key_ids(ca.certificate());
        assert_eq!(leaf_aki, ca_ski, "{tag}");
        assert_ne!(leaf_ski, ca_ski, "{tag}");
        assert!(leaf_ski.is_some());
    }
}

#[test]
fn ecdsa_ca_chain_verifies() {
    let lab = Lab::new();
    let (root, key) = lab.ec_root("ec");
    let ca = policy_ca(&root, &key, &[]);
    check_chain(&lab, "ec", &root, ca, 1);
}

#[test]
fn rsa_ca_chain_verifies() {
    let lab = Lab::new();
    let (root, key) = lab.rsa_root("rsa");
    let ca = policy_ca(&root, &key, &[]);
    check_chain(&lab, "rsa", &root, ca, 1);
}

#[test]
fn sub_ca_chain_verifies_and_excludes_root() {
    let lab = Lab::new();
    let (root, sub, sub_key) = lab.sub_ca("corp");
    let ca = policy_ca(&sub, &sub_key, std::slice::from_ref(&root));
    check_chain(&lab, "sub", &root, ca.clone(), 2);
    // The issuer bytes of the leaf are the sub-CA's subject, multi-OU name intact.
    let upstream = read_pem_certs(&lab.upstream_leaf("sha256")).remove(0);
    let ck = minter(ca.clone(), 0)
        .mint(&request(&upstream, None, LeafKeyType::EcdsaP256))
        .unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
    let (_, subca) = x509_parser::parse_x509_certificate(ca.certificate()).unwrap();
    assert_eq!(leaf.issuer().as_raw(), subca.subject().as_raw());
    assert_eq!(ck.cert[1], *ca.certificate());
}

#[test]
fn leaf_mirrors_names_and_uses_fixed_profile() {
    let lab = Lab::new();
    let (root, key) = lab.ec_root("ec");
    let ca = policy_ca(&root, &key, &[]);
    let m = minter(ca.clone(), 100);
    // Upstream signed with SHA-1: the leaf must still be SHA-256.
    let upstream = read_pem_certs(&lab.upstream_leaf("sha1")).remove(0);
    let ck = m
        .mint(&request(
            &upstream,
            Some("Extra.Example.Test"),
            LeafKeyType::EcdsaP256,
        ))
        .unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
    assert_eq!(x.subject().to_string(), "CN=www.example.test");
    assert_eq!(
        x.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.10045.4.3.2"
    );
    let san = x.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(ip) => format!("{ip:?}"),
            other => format!("{other}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "www.example.test",
            "*.cdn.example.test",
            "extra.example.test",
            "[203, 0, 113, 5]"
        ]
    );
    let bc = x.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && !bc.value.ca);
    let ku = x.key_usage().unwrap().unwrap();
    assert!(ku.value.digital_signature() && !ku.value.key_cert_sign());
    let eku = x.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth);
    // The leaf key is not the CA key.
    let (_, cax) = x509_parser::parse_x509_certificate(ca.certificate()).unwrap();
    assert_ne!(x.public_key().raw, cax.public_key().raw);
    // Validity is copied from upstream (inside the CA's window).
    let (_, up) = x509_parser::parse_x509_certificate(&upstream).unwrap();
    assert_eq!(x.validity().not_before, up.validity().not_before);
    assert_eq!(x.validity().not_after, up.validity().not_after);

    // An SNI covered by a wildcard SAN is not added.
    let ck = m
        .mint(&request(
            &upstream,
            Some("img.cdn.example.test"),
            LeafKeyType::EcdsaP256,
        ))
        .unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
    assert_eq!(
        x.subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .len(),
        3
    );
    // The RSA leaf is signed with the CA's algorithm (ECDSA SHA-256) and carries an RSA key.
    let ck = m
        .mint(&request(&upstream, None, LeafKeyType::Rsa2048))
        .unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
    assert_eq!(
        x.public_key().algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.1"
    );
}

#[test]
fn validity_is_clipped_to_the_ca() {
    let lab = Lab::new();
    // CA valid for 30 days; upstream made by rcgen valid 2000..2090.
    let key = lab.key("short", "ec:P-256");
    let root = lab.self_signed("short", &key, "short", "ca_ext", 30);
    let ca = policy_ca(&root, &key, &[]);
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["long.example.test".to_string()]).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.not_before = rcgen::date_time_ymd(2000, 1, 1);
    p.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let upstream = p.self_signed(&kp).unwrap().der().clone();
    let ck = minter(ca.clone(), 10)
        .mint(&request(
            &upstream,
            Some("long.example.test"),
            LeafKeyType::EcdsaP256,
        ))
        .unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
    let (_, cax) = x509_parser::parse_x509_certificate(ca.certificate()).unwrap();
    assert_eq!(leaf.validity().not_before, cax.validity().not_before);
    assert_eq!(leaf.validity().not_after, cax.validity().not_after);
    // rcgen's leaf has no CN: the forged subject is empty and the SAN critical.
    assert_eq!(leaf.subject().as_raw(), &[0x30, 0x00]);
    assert!(leaf.subject_alternative_name().unwrap().unwrap().critical);
    let roots = read_pem_certs(&root);
    handshake(&roots, "long.example.test", ck).unwrap();
}

#[test]
fn serials_are_unique() {
    let lab = Lab::new();
    let (root, key) = lab.ec_root("ec");
    let ca = policy_ca(&root, &key, &[]);
    let m = minter(ca, 0); // no cache: every call signs a new leaf
    let upstream = read_pem_certs(&lab.upstream_leaf("sha256")).remove(0);
    let mut serials = HashSet::new();
    for _ in 0..2000 {
        let ck = m
            .mint(&request(
                &upstream,
                Some("www.example.test"),
                LeafKeyType::EcdsaP256,
            ))
            .unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
        assert_eq!(x.raw_serial().len(), 16);
        assert!(serials.insert(x.raw_serial().to_vec()), "serial repeated");
    }
    assert_eq!(m.stats().misses, 2000);
}

#[test]
fn cache_hits_misses_and_bound() {
    let lab = Lab::new();
    let (root, key) = lab.ec_root("ec");
    let ca = policy_ca(&root, &key, &[]);
    let m = Minter::new(
        vec![(Arc::from("pol-a"), ca.clone()), (Arc::from("pol-b"), ca)],
        4,
    )
    .unwrap();
    let upstream = read_pem_certs(&lab.upstream_leaf("sha256")).remove(0);
    let a = m
        .mint(&request(
            &upstream,
            Some("www.example.test"),
            LeafKeyType::EcdsaP256,
        ))
        .unwrap();
    let b = m
        .mint(&request(
            &upstream,
            Some("www.example.test"),
            LeafKeyType::EcdsaP256,
        ))
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    // Same upstream, SNI covered by the SANs: the same entry.
    let c = m
        .mint(&request(
            &upstream,
            Some("x.cdn.example.test"),
            LeafKeyType::EcdsaP256,
        ))
        .unwrap();
    assert!(Arc::ptr_eq(&a, &c));
    let s = m.stats();
    assert_eq!((s.hits, s.misses, s.entries), (2, 1, 1));
    // Key type and policy are part of the key.
    let d = m
        .mint(&request(
            &upstream,
            Some("www.example.test"),
            LeafKeyType::Rsa2048,
        ))
        .unwrap();
    assert!(!Arc::ptr_eq(&a, &d));
    let mut other = request(&upstream, Some("www.example.test"), LeafKeyType::EcdsaP256);
    other.policy_id = "pol-b";
    let e = m.mint(&other).unwrap();
    assert!(!Arc::ptr_eq(&a, &e));
    // An SNI outside the SANs gets its own leaf containing it, cached separately.
    let f = m
        .mint(&request(
            &upstream,
            Some("alias.example.test"),
            LeafKeyType::EcdsaP256,
        ))
        .unwrap();
    let g = m
        .mint(&request(
            &upstream,
            Some("alias.example.test"),
            LeafKeyType::EcdsaP256,
        ))
        .unwrap();
    assert!(Arc::ptr_eq(&f, &g));
    assert!(!Arc::ptr_eq(&a, &f));
    let roots = read_pem_certs(&root);
    handshake(&roots, "alias.example.test", f).unwrap();
    assert!(handshake(&roots, "alias.example.test", a.clone()).is_err());
    let s = m.stats();
    assert_eq!((s.hits, s.misses, s.entries), (3, 4, 4));
    // Bounded: ten more distinct SNIs keep the cache at four entries.
    for i in 0..10 {
        let sni = format!("n{i}.example.test");
        m.mint(&request(&upstream, Some(&sni), LeafKeyType::EcdsaP256))
            .unwrap();
    }
    let s = m.stats();
    assert_eq!(s.entries, 4);
    assert_eq!(s.evictions, 10);
    assert_eq!(s.misses, 14);
}

#[test]
fn unverified_upstream_gets_the_untrusted_issuer() {
    let lab = Lab::new();
    let (root, key) = lab.ec_root("ec");
    let ca = policy_ca(&root, &key, &[]);
    let m = minter(ca, 10);
    let upstream = read_pem_certs(&lab.upstream_leaf("sha256")).remove(0);
    let mut req = request(&upstream, Some("www.example.test"), LeafKeyType::EcdsaP256);
    req.upstream_verified = false;
    let ck = m.mint(&req).unwrap();
    assert_eq!(ck.cert.len(), 1, "the untrusted issuer is never sent");
    let (_, x) = x509_parser::parse_x509_certificate(&ck.cert[0]).unwrap();
    let issuer = x.issuer().to_string();
    assert!(
        issuer.contains("untrusted issuer") && issuer.contains("failed verification"),
        "{issuer}"
    );
    let (_, ui) = x509_parser::parse_x509_certificate(m.untrusted_issuer()).unwrap();
    assert_eq!(x.issuer().as_raw(), ui.subject().as_raw());
    // The client trusting the policy CA rejects it, as it would reject the real one.
    let roots = read_pem_certs(&root);
    let e = handshake(&roots, "www.example.test", ck.clone()).unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    let (ok, out) = openssl_verify(&lab, "untrusted", &root, &ck.cert);
    assert!(!ok, "{out}");
    // Verified and unverified leaves are cached apart.
    req.upstream_verified = true;
    let good = m.mint(&req).unwrap();
    handshake(&roots, "www.example.test", good).unwrap();
    // A second minter has a different untrusted issuer (made at start-up).
    let ca2 = policy_ca(&root, &key, &[]);
    assert_ne!(minter(ca2, 1).untrusted_issuer(), m.untrusted_issuer());
}

#[test]
fn bad_requests_are_errors() {
    let lab = Lab::new();
    let (root, key) = lab.ec_root("ec");
    let m = minter(policy_ca(&root, &key, &[]), 10);
    let upstream = read_pem_certs(&lab.upstream_leaf("sha256")).remove(0);
    let mut req = request(&upstream, None, LeafKeyType::EcdsaP256);
    req.policy_id = "nope";
    assert!(matches!(m.mint(&req), Err(MintError::UnknownPolicy(p)) if p == "nope"));
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    let e = m.mint(&request(&garbage, Some("a.test"), LeafKeyType::EcdsaP256));
    assert!(matches!(e, Err(MintError::BadUpstreamCertificate(_))));
    // Every prefix of a real certificate is refused without panicking.
    for n in 0..upstream.len() {
        let p = CertificateDer::from(upstream[..n].to_vec());
        assert!(m
            .mint(&request(&p, Some("a.test"), LeafKeyType::EcdsaP256))
            .is_err());
    }
    assert_eq!(m.stats().errors as usize, 2 + upstream.len());
}
