//! `tlsinspect demo` end to end: it runs, shows the in-scope request
//! intercepted (chain from the policy CA) and the out-of-scope one with the
//! origin's chain, reports the log records, and leaves nothing behind.

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

    // The in-scope HTTPS requests were inspected (TLS 1.3 with tls13 = "inspect")
    // and logged with policy and scope.
    assert!(
        stdout.contains(
            "path: in scope pol-demo/sc-https — action \"inspected\", reason \"inspected\""
        ),
        "{stdout}"
    );
    let in_scope = stdout
        .split("HTTPS GET https://www.example.com/ from 192.0.2.10")
        .nth(1)
        .unwrap_or_default();
    let first: String = in_scope.lines().take(4).collect::<Vec<_>>().join("\n");
    assert!(
        first.contains("CN=tlsinspect lab policy CA\"") && first.contains("INTERCEPTED"),
        "in-scope chain not from the policy CA: {stdout}"
    );
    // The upstream certificate the appliance verified is the origin's.
    assert!(
        in_scope.contains("upstream certificate issued by \"O=tlsinspect lab, CN=tlsinspect lab origin root\" (verified: true)"),
        "{stdout}"
    );
    // The out-of-scope client saw the real certificate.
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
            .take(8)
            .any(|l| l.contains("fast path")),
        "{stdout}"
    );
    assert!(
        out_of_scope
            .lines()
            .take(8)
            .any(|l| l.contains("not intercepted: the origin's own certificate")),
        "{stdout}"
    );

    // The engines at work: each blocked request never reached the origin,
    // and its verdict is in the log with the policy and scope.
    let section = |title: &str| -> String {
        stdout
            .split(title)
            .nth(1)
            .and_then(|s| s.split("\nHTTPS ").next())
            .unwrap_or_default()
            .to_string()
    };
    let upload = section("HTTPS POST https://www.example.com/upload/report.csv");
    assert!(upload.contains("client saw: HTTP 403"), "{stdout}");
    assert!(
        upload.contains("origin: NEVER received the request"),
        "{stdout}"
    );
    assert!(
        upload.contains("alert: webfilter rule 0")
            && upload.contains("(policy pol-demo, scope sc-https)"),
        "{stdout}"
    );
    let traversal = section("HTTPS GET https://www.example.com/static/../../etc/passwd");
    assert!(
        traversal.contains("origin: NEVER received the request"),
        "{stdout}"
    );
    assert!(traversal.contains("alert: ips rule 1000001"), "{stdout}");
    assert!(
        traversal.contains("action \"blocked\", reason \"ips\""),
        "{stdout}"
    );
    let card = section("HTTPS POST https://www.example.com/api/notes");
    assert!(
        card.contains("origin: NEVER received the request"),
        "{stdout}"
    );
    assert!(card.contains("alert: ips rule 1000050"), "{stdout}");
    let browse = section("HTTPS GET https://github.com/octo/repo");
    assert!(browse.contains("client saw: HTTP 200"), "{stdout}");
    assert!(browse.contains("origin: received the request"), "{stdout}");
    assert!(browse.contains("app github/browse"), "{stdout}");
    let push = section("HTTPS POST https://github.com/octo/repo.git/git-receive-pack");
    assert!(push.contains("client saw: HTTP 403"), "{stdout}");
    assert!(
        push.contains("origin: NEVER received the request"),
        "{stdout}"
    );
    assert!(push.contains("app github/upload"), "{stdout}");
    assert!(push.contains("alert: appcontrol rule 0"), "{stdout}");

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
