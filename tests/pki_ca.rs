//! CA loading: what is accepted, and every refusal with the file it names.

#[path = "fixtures/pki/support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use support::Lab;
use tlsinspect::pki::{PkiError, PolicyCa};

fn load(cert: &Path, key: &Path, chain: &[PathBuf]) -> Result<PolicyCa, PkiError> {
    PolicyCa::load(cert, key, chain, SystemTime::now())
}

fn err(cert: &Path, key: &Path, chain: &[PathBuf]) -> (PkiError, String) {
    let e = load(cert, key, chain).expect_err("the CA must be refused");
    let msg = e.to_string();
    (e, msg)
}

fn chmod600(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn ecdsa_ca_with_pkcs8_sec1_and_der() {
    let lab = Lab::new();
    let (cert, key) = lab.ec_root("ec");
    chmod600(&key);
    let ca = load(&cert, &key, &[]).unwrap();
    let s = ca.summary();
    assert_eq!(s.key_type, "ECDSA P-256");
    assert!(s.subject.contains("CN=ec root"), "{}", s.subject);
    assert!((3648..=3650).contains(&s.days_left), "{}", s.days_left);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    // A self-signed issuing CA is never sent.
    assert!(ca.sent_chain().is_empty());

    // SEC1 ("EC PRIVATE KEY") and a DER certificate.
    lab.openssl(&["ec", "-in", "ec.key", "-out", "ec-sec1.key"]);
    assert!(std::fs::read_to_string(lab.path("ec-sec1.key"))
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    lab.openssl(&["x509", "-in", "ec.crt", "-outform", "DER", "-out", "ec.der"]);
    chmod600(&lab.path("ec-sec1.key"));
    let ca = load(&lab.path("ec.der"), &lab.path("ec-sec1.key"), &[]).unwrap();
    assert_eq!(ca.summary().key_type, "ECDSA P-256");
    // DER key (PKCS#8).
    lab.openssl(&[
        "pkey",
        "-in",
        "ec.key",
        "-outform",
        "DER",
        "-out",
        "ec-key.der",
    ]);
    chmod600(&lab.path("ec-key.der"));
    load(&cert, &lab.path("ec-key.der"), &[]).unwrap();
}

#[test]
fn rsa_ca_with_pkcs1_key() {
    let lab = Lab::new();
    let (cert, key) = lab.rsa_root("rsa");
    lab.openssl(&[
        "rsa",
        "-in",
        key.to_str().unwrap(),
        "-traditional",
        "-out",
        "rsa-pkcs1.key",
    ]);
    let pkcs1 = lab.path("rsa-pkcs1.key");
    assert!(std::fs::read_to_string(&pkcs1)
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    chmod600(&pkcs1);
    let ca = load(&cert, &pkcs1, &[]).unwrap();
    assert_eq!(ca.summary().key_type, "RSA 2048");
}

#[test]
fn sub_ca_chain_loads_and_root_is_not_sent() {
    let lab = Lab::new();
    let (root, sub, sub_key) = lab.sub_ca("corp");
    chmod600(&sub_key);
    let ca = load(&sub, &sub_key, std::slice::from_ref(&root)).unwrap();
    assert_eq!(ca.chain().len(), 1);
    assert_eq!(ca.sent_chain().len(), 1, "only the sub-CA is sent");
    assert_eq!(ca.sent_chain()[0], *ca.certificate());
    assert!(ca.summary().subject.contains("OU=unit one"));
    // Full-chain file: sub-CA then root in the ca_cert file.
    let mut both = std::fs::read_to_string(&sub).unwrap();
    both.push_str(&std::fs::read_to_string(&root).unwrap());
    std::fs::write(lab.path("fullchain.pem"), both).unwrap();
    let ca = load(&lab.path("fullchain.pem"), &sub_key, &[]).unwrap();
    assert_eq!(ca.chain().len(), 1);
    assert_eq!(ca.sent_chain().len(), 1);
}

#[test]
fn broken_chain_names_the_file() {
    let lab = Lab::new();
    let (_root, sub, sub_key) = lab.sub_ca("corp");
    let (other_root, _) = lab.ec_root("other");
    let (e, msg) = err(&sub, &sub_key, std::slice::from_ref(&other_root));
    assert!(
        matches!(e, PkiError::BrokenChain { ref path, .. } if *path == other_root),
        "{msg}"
    );
    assert!(msg.contains("other.crt") && msg.contains("broken"), "{msg}");

    // Same name, different key: the signature check catches it.
    let lab2 = Lab::new();
    let k = lab2.key("fake", "rsa:2048");
    let fake_root = lab2.self_signed("fake", &k, "corp-root root", "ca_ext", 100);
    let (e, msg) = err(&sub, &sub_key, &[fake_root]);
    assert!(matches!(e, PkiError::BrokenChain { .. }), "{msg}");
    assert!(msg.contains("signature"), "{msg}");
}

#[test]
fn short_validity_and_loose_key_mode_are_warnings() {
    let lab = Lab::new();
    let key = lab.key("short", "ec:P-256");
    let cert = lab.self_signed("short", &key, "short", "ca_ext", 200);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ca = load(&cert, &key, &[]).unwrap();
    let left = ca
        .valid_until()
        .duration_since(SystemTime::now())
        .unwrap()
        .as_secs();
    assert!((199 * 86_400..=200 * 86_400).contains(&left), "{left}");
    let w = ca.summary().warnings;
    assert!(
        w.iter()
            .any(|w| w.contains("less than one year") && w.contains("short.crt")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("chmod 600") && w.contains("short.key")),
        "{w:?}"
    );
}

#[test]
fn ca_without_key_usage_is_accepted_with_a_warning() {
    let lab = Lab::new();
    let key = lab.key("noku", "ec:P-256");
    chmod600(&key);
    let cert = lab.self_signed("noku", &key, "noku", "ca_noku_ext", 3650);
    let ca = load(&cert, &key, &[]).unwrap();
    assert!(ca
        .summary()
        .warnings
        .iter()
        .any(|w| w.contains("no keyUsage")));
}

#[test]
fn ca_without_ski_uses_method_one() {
    let lab = Lab::new();
    let key = lab.key("noski", "ec:P-256");
    chmod600(&key);
    let cert = lab.self_signed("noski", &key, "noski", "ca_noski_ext", 3650);
    let ca = load(&cert, &key, &[]).unwrap();
    assert!(ca
        .summary()
        .warnings
        .iter()
        .any(|w| w.contains("subjectKeyIdentifier")));
    // openssl's "hash" SKI is method 1, so the derived value equals what openssl would put there.
    let text = lab.openssl(&["x509", "-in", "noski.crt", "-noout", "-text"]);
    assert!(!text.contains("Subject Key Identifier"), "{text}");
    let k2 = lab.self_signed("withski", &key, "noski", "ca_ext", 3650);
    let with = load(&k2, &key, &[]).unwrap();
    assert_eq!(ca.key_id(), with.key_id());
}

#[test]
fn refuses_sm2_key_and_sm2_certificate() {
    let lab = Lab::new();
    let (cert, _) = lab.ec_root("ec");
    let sm2 = lab.key("sm2", "sm2");
    let (e, msg) = err(&cert, &sm2, &[]);
    assert!(
        matches!(e, PkiError::UnsupportedKey { ref path, .. } if *path == sm2),
        "{msg}"
    );
    assert!(msg.contains("SM2") && msg.contains("sm2.key"), "{msg}");

    // SEC1 form with the SM2 parameters block in front.
    lab.openssl(&["ecparam", "-name", "SM2", "-genkey", "-out", "sm2-sec1.key"]);
    let (_, msg) = err(&cert, &lab.path("sm2-sec1.key"), &[]);
    assert!(msg.contains("SM2") && msg.contains("sm2-sec1.key"), "{msg}");

    // An SM2 CA certificate signed with SM3.
    let sm2_cert = lab.self_signed("sm2ca", &sm2, "sm2 ca", "ca_ext", 3650);
    let (e, msg) = err(&sm2_cert, &sm2, &[]);
    assert!(
        matches!(e, PkiError::UnsupportedKey { ref path, .. } if *path == sm2_cert),
        "{msg}"
    );
    assert!(msg.contains("SM2"), "{msg}");
}

#[test]
fn refuses_other_curves_and_algorithms() {
    let lab = Lab::new();
    for (name, spec, expect) in [
        ("p384", "ec:P-384", "P-384"),
        ("p521", "ec:P-521", "P-521"),
        ("ed", "ed25519", "Ed25519"),
        ("rsa1024", "rsa:1024", "1024 bits"),
    ] {
        let key = lab.key(name, spec);
        let cert = lab.self_signed(name, &key, name, "ca_ext", 3650);
        let (e, msg) = err(&cert, &key, &[]);
        assert!(
            matches!(e, PkiError::UnsupportedKey { ref path, .. } if *path == cert),
            "{name}: {msg}"
        );
        assert!(
            msg.contains(expect) && msg.contains(&format!("{name}.crt")),
            "{name}: {msg}"
        );
        assert!(
            msg.contains("RSA with at least 2048 bits or ECDSA P-256"),
            "{msg}"
        );
    }
    // A refused key next to an acceptable certificate: the key file is named.
    let (cert, _) = lab.ec_root("ok");
    let (e, msg) = err(&cert, &lab.path("p384.key"), &[]);
    assert!(matches!(e, PkiError::UnsupportedKey { .. }), "{msg}");
    assert!(msg.contains("P-384") && msg.contains("p384.key"), "{msg}");
    let (_, msg) = err(&cert, &lab.path("ed.key"), &[]);
    assert!(msg.contains("Ed25519") && msg.contains("ed.key"), "{msg}");
}

#[test]
fn refuses_expired_and_not_yet_valid() {
    let lab = Lab::new();
    // An expired CA made with rcgen (openssl 3.0 cannot backdate).
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "expired CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    params.not_before = rcgen::date_time_ymd(2015, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let cert = params.self_signed(&kp).unwrap();
    std::fs::write(lab.path("expired.crt"), cert.pem()).unwrap();
    std::fs::write(lab.path("expired.key"), kp.serialize_pem()).unwrap();
    let (e, msg) = err(&lab.path("expired.crt"), &lab.path("expired.key"), &[]);
    assert!(matches!(e, PkiError::Expired { .. }), "{msg}");
    assert!(
        msg.contains("expired.crt") && msg.contains("2020-01-01"),
        "{msg}"
    );

    // Not yet valid: the same openssl CA checked as of two days ago.
    let (cert, key) = lab.ec_root("fresh");
    let then = SystemTime::now() - Duration::from_secs(2 * 86_400);
    let e = PolicyCa::load(&cert, &key, &[], then).unwrap_err();
    assert!(matches!(e, PkiError::NotYetValid { .. }), "{e}");
    assert!(e.to_string().contains("fresh.crt"));

    // Expired as of ten years from now.
    let later = SystemTime::now() + Duration::from_secs(3651 * 86_400);
    let e = PolicyCa::load(&cert, &key, &[], later).unwrap_err();
    assert!(matches!(e, PkiError::Expired { .. }), "{e}");
}

#[test]
fn refuses_certificates_that_are_not_cas() {
    let lab = Lab::new();
    let key = lab.key("k", "ec:P-256");
    for (ext, expect) in [
        ("notca_ext", "CA:FALSE"),
        ("nobc_ext", "basicConstraints"),
        ("ca_nocertsign_ext", "keyCertSign"),
    ] {
        let cert = lab.self_signed(ext, &key, ext, ext, 3650);
        let (e, msg) = err(&cert, &key, &[]);
        assert!(
            matches!(e, PkiError::NotCa { ref path, .. } if *path == cert),
            "{ext}: {msg}"
        );
        assert!(
            msg.contains(expect) && msg.contains(&format!("{ext}.crt")),
            "{ext}: {msg}"
        );
    }
}

#[test]
fn refuses_a_key_that_does_not_match() {
    let lab = Lab::new();
    let (cert, _) = lab.ec_root("a");
    let other = lab.key("b", "ec:P-256");
    let (e, msg) = err(&cert, &other, &[]);
    assert!(matches!(e, PkiError::KeyMismatch { .. }), "{msg}");
    assert!(msg.contains("a.crt") && msg.contains("b.key"), "{msg}");
    // RSA too.
    let (cert, _) = lab.rsa_root("c");
    let other = lab.key("d", "rsa:2048");
    let (e, _) = err(&cert, &other, &[]);
    assert!(matches!(e, PkiError::KeyMismatch { .. }));
}

#[test]
fn refuses_unreadable_and_malformed_files() {
    let lab = Lab::new();
    let (cert, key) = lab.ec_root("a");
    let missing = lab.path("missing.crt");
    let (e, msg) = err(&missing, &key, &[]);
    assert!(matches!(e, PkiError::Read { .. }), "{msg}");
    assert!(
        msg.contains("missing.crt") && msg.contains("CA certificate"),
        "{msg}"
    );
    // A directory where the key should be.
    let (e, msg) = err(&cert, lab.dir.path(), &[]);
    assert!(matches!(e, PkiError::Read { .. }), "{msg}");
    assert!(msg.contains("CA private key"), "{msg}");
    // Missing chain file.
    let (e, msg) = err(&cert, &key, &[lab.path("nochain.crt")]);
    assert!(
        matches!(e, PkiError::Read { .. }) && msg.contains("nochain.crt"),
        "{msg}"
    );

    std::fs::write(lab.path("garbage.crt"), "hello, I am not a certificate\n").unwrap();
    let (e, msg) = err(&lab.path("garbage.crt"), &key, &[]);
    assert!(
        matches!(e, PkiError::Malformed { .. }) && msg.contains("garbage.crt"),
        "{msg}"
    );
    std::fs::write(
        lab.path("bad64.crt"),
        "-----BEGIN CERTIFICATE-----\nMIIB!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (e, msg) = err(&lab.path("bad64.crt"), &key, &[]);
    assert!(
        matches!(e, PkiError::Malformed { .. }) && msg.contains("bad64.crt"),
        "{msg}"
    );
    std::fs::write(
        lab.path("notder.crt"),
        "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (e, msg) = err(&lab.path("notder.crt"), &key, &[]);
    assert!(
        matches!(e, PkiError::Malformed { .. }) && msg.contains("notder.crt"),
        "{msg}"
    );
    // A certificate given as the key.
    let (e, msg) = err(&cert, &cert, &[]);
    assert!(
        matches!(e, PkiError::Malformed { .. }) && msg.contains("no private key"),
        "{msg}"
    );
    // An encrypted key.
    lab.openssl(&[
        "pkey", "-in", "a.key", "-aes256", "-passout", "pass:x", "-out", "enc.key",
    ]);
    let (e, msg) = err(&cert, &lab.path("enc.key"), &[]);
    assert!(
        matches!(e, PkiError::Malformed { .. }) && msg.contains("encrypted"),
        "{msg}"
    );
}
