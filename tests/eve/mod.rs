//! Checks traffic-log records against Suricata's EVE schema
//! (`tests/fixtures/suricata/eve-schema.json`, DESIGN.md §7) with
//! python3-jsonschema, after removing the `tlsinspect` extension object.
#![allow(dead_code)] // each test binary uses a different part

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Suricata's schema: `TLSINSPECT_EVE_SCHEMA`, or the copy in
/// `tests/fixtures/suricata/` (see its README).
pub fn schema_path() -> PathBuf {
    std::env::var_os("TLSINSPECT_EVE_SCHEMA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/suricata/eve-schema.json")
        })
}

/// Panics naming every record that is not valid EVE once `tlsinspect` is
/// removed, and every per-connection record (one with `src_ip`) that lacks
/// `tlsinspect.policy_id` or `tlsinspect.scope_id`.
pub fn assert_valid(records: &[Value]) {
    for r in records {
        if r.get("src_ip").is_some() {
            let ext = &r["tlsinspect"];
            assert!(
                ext["policy_id"].is_string() && ext["scope_id"].is_string(),
                "an in-scope record without policy and scope ids: {r}"
            );
        }
    }
    let schema = schema_path();
    assert!(
        schema.exists(),
        "Suricata's EVE schema is not at {} (set TLSINSPECT_EVE_SCHEMA)",
        schema.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/eve/validate.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(&schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 with python3-jsonschema (tests/run.sh installs it)");
    let mut input = Vec::new();
    for r in records {
        input.extend_from_slice(r.to_string().as_bytes());
        input.push(b'\n');
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "records that are not Suricata EVE:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
