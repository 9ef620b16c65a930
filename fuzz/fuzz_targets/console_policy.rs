//! Feeds arbitrary bytes, as the console's JSON API receives them, to the
//! policy body conversion (JSON -> `[[policy]]` table), the in-place edit of
//! a config document and its validation, and to the Log audit query parser:
//! any input must give a table or problems, never a panic.
#![no_main]
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;

const DOC: &str = r#"# comment
[appliance]
mode = "tun"
lan = "a"
wan = "b"
cpus = [0]
log = "t.jsonl"
control = "c.sock"

[[policy]]
id = "pol-a"   # kept
ca_cert = "ca.crt"
ca_key = "ca.key"
  [[policy.scope]]
  id = "s1"
  source_ips = ["192.0.2.1"]
  source_ports = ["0/65535"]
  destinations = ["0.0.0.0/0"]
  destination_ports = ["443/443"]
"#;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let file = Path::new("fuzz/console.toml");
    if let Ok(params) = serde_json::from_value::<tlsinspect::console::records::LogParams>(v.clone())
    {
        let _ = tlsinspect::console::records::LogQuery::new(&params, SystemTime::now());
    }
    match tlsinspect::console::change::policy_table(&v, file, 1) {
        Ok(t) => {
            let mut doc: toml_edit::DocumentMut = DOC.parse().expect("the fixed document parses");
            let replace = if data.len() % 2 == 0 {
                Some("pol-a")
            } else {
                None
            };
            if tlsinspect::control::edit::put_policy_in(&mut doc, file, replace, t).is_ok() {
                let _ =
                    tlsinspect::config::parse(&doc.to_string(), file).map_err(|e| e.to_string());
            }
        }
        Err(problems) => assert!(!problems.is_empty()),
    }
});
