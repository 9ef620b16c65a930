//! `tlsinspect policy ...` and `reload` through the real binary against a
//! control socket served in this process.

use std::process::Command;
use std::sync::{Arc, Mutex};

use tlsinspect::control::{ControlHandler, ControlServer, Request, Response};

struct Recorder(Mutex<Vec<Request>>);

impl ControlHandler for Recorder {
    fn handle(&self, req: &Request) -> Response {
        self.0.lock().unwrap().push(req.clone());
        match req {
            Request::Reload => Response::ok("reloaded: 2 policies, 1 enabled"),
            Request::Status => Response::ok("up 5 s"),
        }
    }
}

const CONF: &str = r#"# two policies
[appliance]
mode = "af_packet"
lan = "eth1"
wan = "eth2"
cpus = [0]
log = "traffic.jsonl"
control = "control.sock"

[[policy]]
id = "pol-a"
name = "Office"
ca_cert = "ca/ca.crt"
ca_key = "ca/ca.key"
  [[policy.scope]]
  id = "sc-1"
  source_ips = ["192.0.2.10", "192.0.2.11"]
  source_ports = ["0/65535"]
  destinations = ["203.0.113.0/24"]
  destination_ports = ["443/443"]

[[policy]]
id = "pol-b"
enabled = true # lab hosts
ca_cert = "ca/ca.crt"
ca_key = "ca/ca.key"
  [[policy.scope]]
  id = "sc-1"
  source_ips = ["192.0.2.20"]
  source_ports = ["0/65535"]
  destinations = ["203.0.113.0/24"]
  destination_ports = ["443/443"]
"#;

fn bin(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tlsinspect"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn disable_delete_enable_edit_the_file_and_reload_the_appliance() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    std::fs::create_dir(&ca).unwrap();
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(format!("tests/configs/ca/{f}"), ca.join(f)).unwrap();
    }
    let conf = dir.path().join("t.toml");
    std::fs::write(&conf, CONF).unwrap();
    let c = conf.to_str().unwrap();

    // No appliance yet: the edit still lands and says when it applies.
    let (code, out, _) = bin(&["policy", "disable", "pol-b", "--config", c]);
    assert_eq!(code, 0);
    assert!(out.contains("policy \"pol-b\" disabled"), "{out}");
    assert!(out.contains("applies when the appliance starts"), "{out}");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("enabled = false # lab hosts"), "{text}");

    let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
    let _server = ControlServer::bind(&dir.path().join("control.sock"), recorder.clone()).unwrap();

    let (code, out, _) = bin(&["policy", "list", "--config", c]);
    assert_eq!(code, 0);
    assert!(out.contains("pol-a"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("pol-b") && l.contains("disabled")),
        "{out}"
    );
    assert!(out.contains("total quota: 3 of 20,000"), "{out}");
    assert!(out.contains("running appliance: up 5 s"), "{out}");

    // Deleting an enabled policy is refused and changes nothing.
    let (code, _, err) = bin(&["policy", "delete", "pol-a", "--config", c]);
    assert_eq!(code, 1);
    assert!(
        err.contains("policy \"pol-a\" is enabled; disable it first"),
        "{err}"
    );
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .contains("id = \"pol-a\""));

    let (code, out, _) = bin(&["policy", "delete", "pol-b", "--config", c]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("running appliance: reloaded"), "{out}");
    assert!(!std::fs::read_to_string(&conf).unwrap().contains("pol-b"));

    let (code, out, _) = bin(&["reload", "--config", c]);
    assert_eq!(code, 0);
    assert!(out.contains("reloaded: 2 policies"), "{out}");

    let (code, _, err) = bin(&["policy", "enable", "pol-zzz", "--config", c]);
    assert_eq!(code, 1);
    assert!(err.contains("no policy with id \"pol-zzz\""), "{err}");

    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![Request::Status, Request::Reload, Request::Reload],
        "list asks status, delete and reload ask a reload"
    );
}
