//! `[[output]]` and the defaults that match the systemd unit: validated
//! like every other key, errors naming file, output and field.

use std::path::{Path, PathBuf};

use tlsinspect::config::{self, OutputKind};
use tlsinspect::log::output::{RedisMode, Rotation, SyslogTarget};

const POLICY: &str = r#"
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
"#;

fn load(dir: &Path, text: &str) -> Result<config::Config, String> {
    let path = dir.join("t.toml");
    std::fs::write(&path, text).unwrap();
    config::load(&path).map_err(|e| e.to_string())
}

#[test]
fn a_minimal_config_names_the_mode_the_ports_and_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(
        dir.path(),
        &format!("[appliance]\nmode = \"af_packet\"\nlan = \"eth1\"\nwan = \"eth2\"\n{POLICY}"),
    )
    .unwrap();
    assert_eq!(
        c.appliance.log,
        PathBuf::from("/var/log/tlsinspect/eve.json")
    );
    assert_eq!(
        c.appliance.control,
        PathBuf::from("/run/tlsinspect/control.sock")
    );
    assert!(!c.appliance.cpus.is_empty());
    assert_eq!(c.appliance.stats_interval.as_secs(), 60);
    let outputs = c.log_outputs();
    assert_eq!(outputs.len(), 1);
    assert_eq!(
        outputs[0].kind,
        OutputKind::File {
            path: "/var/log/tlsinspect/eve.json".into(),
            rotation: Rotation::default()
        }
    );
    // The unit's directories are the defaults.
    let unit = std::fs::read_to_string("configs/systemd/tlsinspect.service").unwrap();
    for d in ["LogsDirectory=tlsinspect", "RuntimeDirectory=tlsinspect"] {
        assert!(unit.contains(d), "{d}");
    }
}

#[test]
fn outputs_parse_with_their_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let c = load(
        dir.path(),
        &format!(
            r#"[appliance]
mode = "tun"
lan = "tl0"
wan = "tw0"
stats_interval_secs = 10

[[output]]
type = "file"
path = "eve.json"
max_bytes = 1_000_000
keep = 3

[[output]]
type = "syslog"

[[output]]
type = "syslog"
address = "tcp://127.0.0.1:601"
facility = "local0"
queue = 500

[[output]]
type = "unix_dgram"
path = "/run/eve.sock"

[[output]]
type = "redis"
mode = "channel"
key = "eve"
{POLICY}"#
        ),
    )
    .unwrap();
    let kinds: Vec<&OutputKind> = c.outputs.iter().map(|o| &o.kind).collect();
    assert_eq!(
        kinds,
        [
            &OutputKind::File {
                path: dir.path().join("eve.json"),
                rotation: Rotation {
                    max_bytes: 1_000_000,
                    keep: 3
                }
            },
            &OutputKind::Syslog {
                target: SyslogTarget::Local("/dev/log".into()),
                facility: 21
            },
            &OutputKind::Syslog {
                target: SyslogTarget::Tcp("127.0.0.1:601".into()),
                facility: 16
            },
            &OutputKind::UnixDgram("/run/eve.sock".into()),
            &OutputKind::Redis {
                address: "127.0.0.1:6379".into(),
                mode: RedisMode::Channel,
                key: "eve".into()
            },
        ]
    );
    assert_eq!(c.outputs[2].queue, 500);
    assert_eq!(
        c.log_outputs(),
        c.outputs,
        "[[output]] replaces the default file"
    );
    assert_eq!(c.appliance.stats_interval.as_secs(), 10);
}

#[test]
fn bad_outputs_are_named_by_index_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(
        dir.path(),
        &format!(
            r#"[appliance]
mode = "tun"
lan = "tl0"
wan = "tw0"
stats_interval_secs = -1

[[output]]
type = "kafka"

[[output]]
type = "syslog"
address = "udp://127.0.0.1"
facility = "local9"

[[output]]
type = "redis"
address = "localhost"
mode = "stream"
path = "/tmp/x"

[[output]]
type = "file"
queue = 0

[[output]]
path = "x"
{POLICY}"#
        ),
    )
    .unwrap_err();
    for fragment in [
        "appliance.stats_interval_secs is -1; it must be between 0 and 86,400",
        "output #1 type is \"kafka\"; it must be \"file\", \"syslog\", \"unix_stream\", \"unix_dgram\" or \"redis\"",
        "output #2 address \"udp://127.0.0.1\" needs host:port",
        "output #2 facility is \"local9\"",
        "output #3 address \"localhost\" is not host:port",
        "output #3 mode is \"stream\"; it must be \"list\" or \"channel\"",
        "output #3 path does not apply to type \"redis\"",
        "output #4 queue is 0; it must be between 1 and 1,000,000",
        "output #5: missing required key \"type\"",
    ] {
        assert!(e.contains(fragment), "missing {fragment:?} in:\n{e}");
    }
    assert!(e.contains("t.toml"), "errors name the file: {e}");
}
