//! The `ca` commands through the real binary, and `export_chain`.

#[path = "fixtures/pki/support.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

use support::{read_pem_certs, Lab};
use tlsinspect::pki::{export, PolicyCa};

fn tlsinspect(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tlsinspect"))
        .args(args)
        .output()
        .expect("run tlsinspect")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .trim()
}

#[test]
fn ca_trial_makes_a_unique_ca_and_refuses_to_overwrite() {
    let lab = Lab::new();
    let dir1 = lab.path("one");
    let dir2 = lab.path("two");
    for d in [&dir1, &dir2] {
        let o = tlsinspect(&["ca", "trial", "--out", d.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        let key = d.join("ca.key");
        assert!(d.join("ca.crt").is_file());
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // A second run into the same directory refuses and leaves the files alone.
    let before = std::fs::read(dir1.join("ca.key")).unwrap();
    let o = tlsinspect(&["ca", "trial", "--out", dir1.to_str().unwrap()]);
    assert!(!o.status.success());
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(
        msg.contains("already exists") && msg.contains("ca.crt"),
        "{msg}"
    );
    assert_eq!(std::fs::read(dir1.join("ca.key")).unwrap(), before);

    // openssl agrees it is a CA limited to signing leaves.
    let t = lab.openssl(&[
        "x509",
        "-in",
        dir1.join("ca.crt").to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(t.contains("CA:TRUE, pathlen:0"), "{t}");
    assert!(t.contains("Certificate Sign, CRL Sign"), "{t}");
    assert!(t.contains("tlsinspect trial CA"), "{t}");
    let (ok, out) = lab.openssl_status(&[
        "verify",
        "-CAfile",
        dir1.join("ca.crt").to_str().unwrap(),
        dir1.join("ca.crt").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");

    // The two CAs differ in key, serial and subject.
    let a = lab.openssl(&[
        "x509",
        "-in",
        dir1.join("ca.crt").to_str().unwrap(),
        "-noout",
        "-serial",
        "-subject",
        "-pubkey",
    ]);
    let b = lab.openssl(&[
        "x509",
        "-in",
        dir2.join("ca.crt").to_str().unwrap(),
        "-noout",
        "-serial",
        "-subject",
        "-pubkey",
    ]);
    for (la, lb) in a
        .lines()
        .zip(b.lines())
        .filter(|(l, _)| l.starts_with("serial") || l.starts_with("subject"))
    {
        assert_ne!(la, lb);
    }
    assert_ne!(
        std::fs::read(dir1.join("ca.key")).unwrap(),
        std::fs::read(dir2.join("ca.key")).unwrap()
    );
    let pk = |s: &str| {
        s.split("-----BEGIN PUBLIC KEY-----")
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_ne!(pk(&a), pk(&b));

    // It passes the policy checks, without warnings (0600 key, ten years).
    let ca = PolicyCa::load(
        &dir1.join("ca.crt"),
        &dir1.join("ca.key"),
        &[],
        SystemTime::now(),
    )
    .unwrap();
    let s = ca.summary();
    assert_eq!(s.key_type, "ECDSA P-256");
    assert!(s.days_left >= 3650, "{}", s.days_left);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn ca_trial_rsa() {
    let lab = Lab::new();
    let d = lab.path("rsa");
    let o = tlsinspect(&[
        "ca",
        "trial",
        "--out",
        d.to_str().unwrap(),
        "--key",
        "rsa-2048",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let ca = PolicyCa::load(&d.join("ca.crt"), &d.join("ca.key"), &[], SystemTime::now()).unwrap();
    assert_eq!(ca.summary().key_type, "RSA 2048");
    let t = lab.openssl(&[
        "x509",
        "-in",
        d.join("ca.crt").to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(
        t.contains("sha256WithRSAEncryption") && t.contains("CA:TRUE"),
        "{t}"
    );
}

#[test]
fn ca_show_prints_what_openssl_sees() {
    let lab = Lab::new();
    let leaf = lab.upstream_leaf("sha256");
    let o = tlsinspect(&["ca", "show", leaf.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let fp = lab.openssl(&[
        "x509",
        "-in",
        leaf.to_str().unwrap(),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]);
    let fp = fp.trim().split('=').nth(1).unwrap();
    assert_eq!(field(&out, "SHA-256:"), fp);
    let serial = lab.openssl(&["x509", "-in", leaf.to_str().unwrap(), "-noout", "-serial"]);
    assert_eq!(
        field(&out, "Serial:").replace(':', ""),
        serial
            .trim()
            .trim_start_matches("serial=")
            .trim_start_matches('0')
    );
    assert_eq!(
        field(&out, "Subject:"),
        "O=Example Ltd, CN=www.example.test"
    );
    assert_eq!(field(&out, "Issuer:"), "O=tlsinspect tests, CN=origin root");
    assert_eq!(field(&out, "Key:"), "RSA 2048");
    assert_eq!(field(&out, "CA:"), "no");
    assert_eq!(
        field(&out, "SANs:"),
        "DNS:www.example.test, DNS:*.cdn.example.test, IP:203.0.113.5"
    );
    assert!(field(&out, "Not after:").contains("days left"));

    let (root, _) = lab.ec_root("ec");
    let o = tlsinspect(&["ca", "show", root.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(field(&out, "CA:"), "yes");
    assert_eq!(field(&out, "Key:"), "ECDSA P-256");
    assert_eq!(field(&out, "Self-signed:"), "yes");

    // DER input.
    lab.openssl(&[
        "x509",
        "-in",
        root.to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        "ec.der",
    ]);
    let o = tlsinspect(&["ca", "show", lab.path("ec.der").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let o = tlsinspect(&["ca", "show", lab.path("nope.crt").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.crt"));
}

fn one_cert_per_file(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap()
        .matches("-----BEGIN CERTIFICATE-----")
        .count()
}

#[test]
fn export_chain_writes_one_certificate_per_file_and_the_bundle() {
    let lab = Lab::new();
    let (root, sub, sub_key) = lab.sub_ca("corp");
    std::fs::set_permissions(&sub_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ca = PolicyCa::load(
        &sub,
        &sub_key,
        std::slice::from_ref(&root),
        SystemTime::now(),
    )
    .unwrap();
    let out = lab.path("export");
    let files = export::export_chain(&ca, &out).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["00-issuing-ca.crt", "01-root.crt", "bundle.pem"]);
    assert_eq!(one_cert_per_file(&files[0]), 1);
    assert_eq!(one_cert_per_file(&files[1]), 1);
    assert_eq!(one_cert_per_file(&files[2]), 2);
    assert_eq!(read_pem_certs(&files[0]), read_pem_certs(&sub));
    assert_eq!(read_pem_certs(&files[1]), read_pem_certs(&root));
    let bundle = read_pem_certs(&files[2]);
    assert_eq!(bundle[0], read_pem_certs(&sub)[0]);
    assert_eq!(bundle[1], read_pem_certs(&root)[0]);
    // The exported files verify as a chain with openssl.
    let (ok, o) = lab.openssl_status(&[
        "verify",
        "-CAfile",
        files[1].to_str().unwrap(),
        files[0].to_str().unwrap(),
    ]);
    assert!(ok, "{o}");
    // A second export into the same directory refuses.
    let e = export::export_chain(&ca, &out).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
}

#[test]
fn ca_export_through_the_config() {
    let lab = Lab::new();
    let (root, sub, sub_key) = lab.sub_ca("corp");
    std::fs::set_permissions(&sub_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = lab.path("tlsinspect.toml");
    std::fs::write(
        &config,
        format!(
            r#"[appliance]
mode = "af_packet"
lan = "eth1"
wan = "eth2"
cpus = [0]
log = "traffic.jsonl"
control = "control.sock"

[[policy]]
id = "pol-a"
ca_cert = "{}"
ca_key = "{}"
ca_chain = ["{}"]

  [[policy.scope]]
  id = "sc-1"
  source_ips = ["192.0.2.10"]
  source_ports = ["0/65535"]
  destinations = ["203.0.113.0/24"]
  destination_ports = ["443/443"]
"#,
            sub.file_name().unwrap().to_str().unwrap(),
            sub_key.file_name().unwrap().to_str().unwrap(),
            root.file_name().unwrap().to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = lab.path("export");
    let args = [
        "ca",
        "export",
        "--config",
        config.to_str().unwrap(),
        "--policy",
        "pol-a",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = tlsinspect(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        read_pem_certs(&out.join("00-issuing-ca.crt")),
        read_pem_certs(&sub)
    );
    assert_eq!(
        read_pem_certs(&out.join("01-root.crt")),
        read_pem_certs(&root)
    );
    assert_eq!(read_pem_certs(&out.join("bundle.pem")).len(), 2);
    assert!(text(&o).contains("00-issuing-ca.crt"));
    // Again: refuses to overwrite.
    let o = tlsinspect(&args);
    assert!(!o.status.success());
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    // Unknown policy: named, with the known ones.
    let o = tlsinspect(&[
        "ca",
        "export",
        "--config",
        config.to_str().unwrap(),
        "--policy",
        "pol-x",
        "--out",
        lab.path("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("pol-x") && t.contains("pol-a"), "{t}");
}
