//! schemathesis (from PyPI; `tests/run.sh` installs it) generates requests
//! from the console's OpenAPI document, logged in, and finds no 5xx answer.

mod console_kit;

use std::process::Command;

use console_kit::Kit;

#[test]
fn schemathesis_finds_no_server_error() -> anyhow::Result<()> {
    if Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: schemathesis is not installed (python3 -m pip install schemathesis)");
        return Ok(());
    }
    let kit = Kit::start()?;
    let (client, csrf) = kit.api()?;
    let cookie = client.cookie.clone().unwrap_or_default();
    let cert = kit.state.join("console/console.crt");
    let out = Command::new("schemathesis")
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", kit.base))
        .args(["--url", &kit.base])
        .args(["--checks", "not_a_server_error"])
        // Logging out would end the session the rest of the run uses.
        .args(["--exclude-path", "/api/v1/logout"])
        .args(["--max-examples", "30"])
        .args(["--request-timeout", "20"])
        .arg("--tls-verify")
        .arg(&cert)
        .args(["-H", &format!("Cookie: {cookie}")])
        .args(["-H", &format!("X-CSRF-Token: {csrf}")])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(kit.dir.path())
        .output()?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis failed:\n{text}");
    assert!(!text.contains("Server error"), "{text}");
    eprintln!("{text}");
    // It did exercise the API (not only the document).
    assert!(text.contains("/api/v1/policies"), "{text}");
    assert!(!text.contains("Authentication failed"), "{text}");
    Ok(())
}
