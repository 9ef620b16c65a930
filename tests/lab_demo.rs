//! `tlsinspect demo` end to end: it runs, reports the paths it observed with
//! the log records, and leaves nothing behind.

mod lab;

use std::process::Command;

#[test]
fn demo_runs_reports_and_cleans_up() -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let out = Command::new(lab::exe()).arg("demo").output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}\n{stdout}");

    // The in-scope HTTPS requests were logged with policy and scope.
    assert!(
        stdout.contains(
            "path: in scope pol-demo/sc-https — action \"pass\", reason \"not_intercepting_yet\""
        ),
        "{stdout}"
    );
    // The real certificate, identical content.
    assert!(
        stdout
            .contains("certificate issued by \"O=tlsinspect lab, CN=tlsinspect lab origin root\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("1048576 bytes, sha256 identical to the origin's"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(stdout.contains("echoed back unchanged"), "{stdout}");
    assert!(stdout.contains("3/3 replies"), "{stdout}");
    // The out-of-scope request took the fast path.
    let out_of_scope = stdout
        .split("HTTPS GET https://www.example.com/ from 192.0.2.20")
        .nth(1)
        .unwrap_or_default();
    assert!(
        out_of_scope
            .lines()
            .take(3)
            .any(|l| l.contains("fast path")),
        "{stdout}"
    );

    // Everything removed.
    let ns = stdout
        .split("namespaces: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("demo names its namespaces");
    let prefix = ns.trim_end_matches("-c");
    assert!(stdout.contains("lab removed"), "{stdout}");
    let left =
        String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output()?.stdout)
            .into_owned();
    assert!(
        !left.contains(prefix),
        "demo left namespaces behind: {left}"
    );
    Ok(())
}
