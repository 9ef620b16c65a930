//! The systemd unit in configs/systemd/ passes `systemd-analyze verify`
//! (Debian package systemd), reloads with SIGHUP, keeps only the
//! capabilities the data plane needs and creates the directories that the
//! config's defaults name.

use std::process::Command;

fn verify(unit_text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tlsinspect.service");
    // verify checks that ExecStart= names an executable: use the binary
    // this test run built in place of the installed one.
    let text = unit_text.replace(
        "/usr/local/bin/tlsinspect",
        env!("CARGO_BIN_EXE_tlsinspect"),
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; tests/run.sh installs it)");
    (
        out.status.success() && out.stderr.is_empty(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_unit_verifies_and_says_what_the_appliance_needs() {
    let unit = std::fs::read_to_string("configs/systemd/tlsinspect.service").unwrap();
    let (ok, out) = verify(&unit);
    assert!(ok, "systemd-analyze verify: {out}");
    let key = |k: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(key("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(key("CapabilityBoundingSet"), ["CAP_NET_ADMIN CAP_NET_RAW"]);
    assert_eq!(key("AmbientCapabilities"), ["CAP_NET_ADMIN CAP_NET_RAW"]);
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "tlsinspect"),
        ("LogsDirectory", "tlsinspect"),
        ("RuntimeDirectory", "tlsinspect"),
    ] {
        assert_eq!(key(k), [v], "{k}");
    }
    assert!(key("ExecStart")[0].contains("run --config /etc/tlsinspect/tlsinspect.toml"));

    // The check is real: a misspelt key fails it.
    let (ok, out) = verify(&unit.replace("ProtectHome=yes", "ProtectHomes=yes"));
    assert!(!ok, "a bad unit passed: {out}");
}
