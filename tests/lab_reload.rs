//! Reload keeps its promise (issue 11): a flow keeps what it was born with,
//! and restart-only settings are reported until a restart.
//!
//! What a user would check, in af_packet and tun mode: a client whose TCP
//! connection opened before a reload that rotates the policy's CA finishes
//! its TLS handshake after the reload and is served a chain of the CA it was
//! born with (it trusts only that one); a connection opened after the reload
//! gets the new CA's chain; `tlsinspect reload` answers with what changed,
//! and a change of `tcp_buffer_bytes` is reported as pending on that reload
//! and on every later one (it is never applied silently); both flows are
//! logged as inspected with the policy and scope ids.

mod lab;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use lab::{LabMode, TestLab};
use serde_json::Value;

/// In scope of `pol-demo` / `sc-https` (configs/demo.toml).
const IN_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const OUT_OF_SCOPE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// A TLS client that opens its TCP connection at once, waits until the
/// file `argv[4]` exists, then handshakes trusting only `argv[3]` and sends
/// one request; prints one JSON line.
const HELD_CLIENT: &str = r#"
import json, os, socket, ssl, sys, time
src, dst, cafile, go = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
s = socket.socket()
s.bind((src, 0))
s.settimeout(20)
s.connect((dst, 443))
port = s.getsockname()[1]
print(json.dumps({"connected": port}), flush=True)
deadline = time.time() + 20
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.02)
ctx = ssl.create_default_context(cafile=cafile)
try:
    t = ctx.wrap_socket(s, server_hostname="www.example.com")
    t.sendall(b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n")
    body = b""
    while True:
        d = t.recv(65536)
        if not d:
            break
        body += d
    issuer = dict(x[0] for x in t.getpeercert()["issuer"])
    print(json.dumps({"ok": True, "issuer": issuer.get("commonName", ""),
                      "status": body.split(b"\r\n", 1)[0].decode(),
                      "port": port}), flush=True)
except Exception as e:
    print(json.dumps({"ok": False, "error": str(e)}), flush=True)
"#;

/// `tlsinspect reload --config`: (exit code, stdout + stderr).
fn reload(config: &Path) -> anyhow::Result<(i32, String)> {
    let o = std::process::Command::new(lab::exe())
        .args(["reload", "--config", &config.display().to_string()])
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok((o.status.code().unwrap_or(-1), text))
}

/// The last JSON line `path` holds, waiting up to 30 s for `key` in it.
fn json_line(path: &Path, key: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(v) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .rfind(|v| v.get(key).is_some())
        {
            return Ok(v);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no {key:?} from the held client: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reload_lab(mode: LabMode, tag: &str) -> anyhow::Result<()> {
    if lab::skip_without_root() {
        return Ok(());
    }
    let t = TestLab::build(tag, mode, &[IN_SCOPE, OUT_OF_SCOPE], &[SERVER])?;
    let _nginx = t.start_nginx()?;
    let (config, log) = t.write_config(IN_SCOPE)?;
    let app = t.start_appliance(&config, OUT_OF_SCOPE, SERVER)?;
    let ca_a = t.pki.policy_ca_cert.clone();

    // A second CA for the rotation, as an operator would make one.
    let ca_b_dir = t.path("ca-b");
    let o = std::process::Command::new(lab::exe())
        .args(["ca", "trial", "--out", &ca_b_dir.display().to_string()])
        .output()?;
    anyhow::ensure!(o.status.success(), "ca trial: {o:?}");
    let (ca_b, key_b) = (ca_b_dir.join("ca.crt"), ca_b_dir.join("ca.key"));

    // Born before the reload: the TCP connection opens now.
    let script = t.path("held.py");
    std::fs::write(&script, HELD_CLIENT)?;
    let (go, held_out) = (t.path("go"), t.path("held.out"));
    let mut cmd = t.lab.command(
        t.lab.client_ns(),
        "python3",
        &[
            &script.display().to_string(),
            &IN_SCOPE.to_string(),
            &SERVER.to_string(),
            &ca_a.display().to_string(),
            &go.display().to_string(),
        ],
    );
    cmd.stdout(std::fs::File::create(&held_out)?);
    let held = t.lab.spawn("held client", cmd)?;
    json_line(&held_out, "connected")?;

    // Reload 1 rotates the policy's CA.
    let text = std::fs::read_to_string(&config)?;
    let rotated = text
        .replace(
            &t.pki.policy_ca_cert.display().to_string(),
            &ca_b.display().to_string(),
        )
        .replace(
            &t.pki.policy_ca_key.display().to_string(),
            &key_b.display().to_string(),
        );
    assert_ne!(rotated, text, "the config names the policy CA's files");
    std::fs::write(&config, &rotated)?;
    let (code, reply) = reload(&config)?;
    assert_eq!(code, 0, "{mode:?}: {reply}");
    assert!(
        reply.contains("reloaded") && reply.contains("pol-demo"),
        "{mode:?}: {reply}"
    );
    assert!(!reply.contains("not applied"), "{mode:?}: {reply}");

    // The held flow handshakes now and still gets CA A's chain.
    std::fs::write(&go, b"")?;
    let r = json_line(&held_out, "ok")?;
    assert_eq!(r["ok"], true, "{mode:?}: held flow: {r}\n{}", app.stderr());
    assert_eq!(r["issuer"], lab::pki::POLICY_CA_CN, "{mode:?}: {r}");
    assert!(r["status"].as_str().unwrap_or("").contains("200"), "{r}");
    let held_port = r["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0);
    let _ = t.lab.stop(held, "TERM", Duration::from_secs(5));

    // A connection born after the reload: CA B's chain, and CA A refuses it.
    let c = t.curl(
        IN_SCOPE,
        SERVER,
        "/index.html",
        &ca_b,
        &t.path("b.html"),
        false,
    )?;
    assert_eq!(c.http_code, 200, "{mode:?}: {c:?}\n{}", app.stderr());
    assert_eq!(c.ssl_verify_result, 0, "{mode:?}: {c:?}");
    assert!(!c.issuer.contains(lab::pki::POLICY_CA_CN), "{c:?}");
    let new_port = c.local_port;
    let refused = t.curl(
        IN_SCOPE,
        SERVER,
        "/index.html",
        &ca_a,
        &t.path("a.html"),
        false,
    );
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(|c| c.http_code != 200),
        "{mode:?}: a client trusting only the old CA accepted {refused:?}"
    );

    // Reload 2 changes a restart-only setting: reported, not applied...
    let text = rotated.replace("[appliance]\n", "[appliance]\ntcp_buffer_bytes = 131072\n");
    assert_ne!(text, rotated);
    std::fs::write(&config, &text)?;
    let (code, reply) = reload(&config)?;
    assert_eq!(code, 0, "{reply}");
    assert!(
        reply.contains("not applied until a restart: appliance.tcp_buffer_bytes"),
        "{mode:?}: {reply}"
    );
    // ...and still pending on reload 3, which changes nothing else.
    let (code, reply) = reload(&config)?;
    assert_eq!(code, 0, "{reply}");
    assert!(
        reply.contains("appliance.tcp_buffer_bytes"),
        "{mode:?}: a second reload forgot the pending restart: {reply}"
    );
    // And the data plane still works after three reloads.
    let c = t.curl(
        IN_SCOPE,
        SERVER,
        "/index.html",
        &ca_b,
        &t.path("c.html"),
        false,
    )?;
    assert_eq!(c.http_code, 200, "{mode:?}: {c:?}");

    t.stop_appliance(&app)?;
    let records = lab::read_log(&log)?;
    for port in [held_port, new_port] {
        lab::assert_inspected_flow(&records, port);
    }
    Ok(())
}

#[test]
fn reload_af_packet() -> anyhow::Result<()> {
    reload_lab(LabMode::AfPacket, "rl-af")
}

#[test]
fn reload_tun() -> anyhow::Result<()> {
    reload_lab(LabMode::Tun, "rl-tun")
}
