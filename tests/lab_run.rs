//! `tlsinspect run` start-up failures name what failed, and the process
//! exits non-zero without leaving anything running.

mod lab;

use std::process::Command;

#[test]
fn run_with_invalid_config_names_file_and_field() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[appliance]\nmode = \"bridge\"\n")?;
    let out = Command::new(lab::exe())
        .args(["run", "--config"])
        .arg(&path)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("mode"), "{err}");
    Ok(())
}

#[test]
fn run_with_missing_interface_names_the_device() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = lab::pki::create(&dir.path().join("pki"), &["www.example.com"])?;
    let text = tlsinspect::demo::render_config(
        tlsinspect::demo::DEMO_CONFIG_TEMPLATE,
        &tlsinspect::demo::ConfigVars {
            mode: "af_packet",
            lan: "ti-nosuch0",
            wan: "ti-nosuch1",
            log: &dir.path().join("traffic.jsonl"),
            control: &dir.path().join("control.sock"),
            roots: &pki.origin_root,
            ca_cert: &pki.policy_ca_cert,
            ca_key: &pki.policy_ca_key,
            in_scope: "192.0.2.10".parse()?,
        },
    );
    let path = dir.path().join("tlsinspect.toml");
    std::fs::write(&path, text)?;
    let out = Command::new(lab::exe())
        .args(["run", "--config"])
        .arg(&path)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("starting the pipeline"), "{err}");
    assert!(err.contains("\"ti-nosuch0\""), "{err}");
    Ok(())
}
