//! The lab's own PKI: a test root, an origin certificate and a policy CA.
//!
//! Made in-process with rcgen so the demo and the lab tests need no files
//! and no `openssl` invocations; every run gets fresh keys, so nothing made
//! here can be trusted anywhere outside the lab.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Common name of the lab's test root (the origin's issuer).
pub const ORIGIN_ROOT_CN: &str = "tlsinspect lab origin root";
/// Common name of the lab's policy CA.
pub const POLICY_CA_CN: &str = "tlsinspect lab policy CA";

/// PEM files of the lab PKI, written to one directory.
#[derive(Debug, Clone)]
pub struct LabPki {
    /// Root that issued the origin certificate (what clients trust).
    pub origin_root: PathBuf,
    /// Origin leaf certificate for the server names.
    pub origin_cert: PathBuf,
    /// Origin private key.
    pub origin_key: PathBuf,
    /// Policy CA certificate (the appliance's issuing CA).
    pub policy_ca_cert: PathBuf,
    /// Policy CA private key.
    pub policy_ca_key: PathBuf,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "tlsinspect lab");
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::days(1);
    p.not_after = now + Duration::days(3 * 365);
    p
}

/// Creates the lab PKI in `dir`: a root and an origin leaf for `names`
/// (DNS names or IP addresses), and a separate policy CA.
pub fn create(dir: &Path, names: &[&str]) -> anyhow::Result<LabPki> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let root_key = KeyPair::generate().context("generating the lab root key")?;
    let root_params = ca_params(ORIGIN_ROOT_CN);
    let root = root_params
        .self_signed(&root_key)
        .context("self-signing the lab root")?;

    let leaf_key = KeyPair::generate().context("generating the origin key")?;
    let mut leaf_params =
        CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .context("origin certificate names")?;
    leaf_params.distinguished_name = dn(names.first().copied().unwrap_or("origin"));
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    leaf_params.not_before = now - Duration::days(1);
    leaf_params.not_after = now + Duration::days(90);
    let leaf = leaf_params
        .signed_by(&leaf_key, &root, &root_key)
        .context("signing the origin certificate")?;

    let ca_key = KeyPair::generate().context("generating the policy CA key")?;
    let ca = ca_params(POLICY_CA_CN)
        .self_signed(&ca_key)
        .context("self-signing the policy CA")?;

    let pki = LabPki {
        origin_root: dir.join("origin-root.crt"),
        origin_cert: dir.join("origin.crt"),
        origin_key: dir.join("origin.key"),
        policy_ca_cert: dir.join("policy-ca.crt"),
        policy_ca_key: dir.join("policy-ca.key"),
    };
    write(&pki.origin_root, &root.pem())?;
    write(&pki.origin_cert, &leaf.pem())?;
    write(&pki.origin_key, &leaf_key.serialize_pem())?;
    write(&pki.policy_ca_cert, &ca.pem())?;
    write(&pki.policy_ca_key, &ca_key.serialize_pem())?;
    Ok(pki)
}

fn write(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // Keys are private to the owner, as the appliance's CA checks expect.
    let mode = if path.extension().is_some_and(|e| e == "key") {
        0o600
    } else {
        0o644
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut f, pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
