//! Fuzzes the control socket's requests: arbitrary bytes as what a client
//! writes on a connection, through `control::socket::serve` (the socket
//! thread's own read / parse / dispatch / answer) into a real appliance
//! assembled without a data plane from a config in a scratch directory, so
//! `reload` re-reads and rebuilds the configuration and `status` reports it.
//!
//! Nothing may panic, and: the answer is one JSON line that reads back as a
//! `Response`; a request is exactly what the first line (at most
//! `MAX_REQUEST` bytes) parses to, anything else is answered "malformed"
//! without touching the appliance; a reload of the unchanged file succeeds
//! and a status lists its one policy.
#![no_main]
#![forbid(unsafe_code)]

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tlsinspect::appliance::Appliance;
use tlsinspect::control::socket::{self, Request, Response, MAX_REQUEST};

const CA_CERT: &[u8] = include_bytes!("../../tests/configs/ca/ca.crt");
const CA_KEY: &[u8] = include_bytes!("../../tests/configs/ca/ca.key");

fn appliance() -> &'static Appliance {
    static APP: OnceLock<Appliance> = OnceLock::new();
    APP.get_or_init(|| {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("tlsinspect-fuzz-control-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("ca")).unwrap();
        std::fs::write(dir.join("ca/ca.crt"), CA_CERT).unwrap();
        std::fs::write(dir.join("ca/ca.key"), CA_KEY).unwrap();
        let path = dir.join("appliance.toml");
        let text = format!(
            r#"[appliance]
mode = "af_packet"
lan = "eth1"
wan = "eth2"
cpus = [0]
log = "{dir}/traffic.jsonl"
control = "{dir}/control.sock"

[upstream]
roots = "ca/ca.crt"

[[policy]]
id = "pol-a"
ca_cert = "ca/ca.crt"
ca_key = "ca/ca.key"
  [[policy.scope]]
  id = "sc-1"
  source_ips = ["192.0.2.10"]
  source_ports = ["0/65535"]
  destinations = ["203.0.113.0/24"]
  destination_ports = ["443/443"]
"#,
            dir = dir.display()
        );
        std::fs::write(&path, text).unwrap();
        let cfg = tlsinspect::config::load(&path).unwrap();
        Appliance::start_without_dataplane(&path, cfg).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let app = appliance();
    let mut out = Vec::new();
    socket::serve(data, &mut out, app).expect("writing to memory cannot fail");

    assert_eq!(out.last(), Some(&b'\n'), "the answer is a line");
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
    let resp: Response = serde_json::from_slice(&out).expect("the answer is a Response");

    // What the socket read: the first line, within the request cap.
    let mut line = Vec::new();
    std::io::Read::take(data, MAX_REQUEST)
        .read_until(b'\n', &mut line)
        .unwrap();
    match serde_json::from_slice::<Request>(line.trim_ascii()) {
        Ok(Request::Reload) => assert!(resp.ok, "reload of an unchanged config: {resp:?}"),
        Ok(Request::Status) => {
            assert!(resp.ok, "{resp:?}");
            assert_eq!(resp.data["enabled_policies"], serde_json::json!(["pol-a"]));
        }
        Err(_) => {
            assert!(!resp.ok);
            assert!(
                resp.message.starts_with("malformed control request"),
                "{resp:?}"
            );
        }
    }
});
