//! Every validation error of DESIGN.md §3 / issue 2, reproduced by a small
//! config under `tests/configs/` and checked the way an operator reads it:
//! the message names the file, policy, scope, field, the value and the limit.

use std::path::Path;
use std::process::Command;

use tlsinspect::config::{self, ConfigError, ConfigErrors};

fn load_err(name: &str) -> ConfigErrors {
    let path = format!("tests/configs/{name}");
    match config::load(Path::new(&path)) {
        Ok(_) => panic!("{path} was accepted, but it must be refused"),
        Err(e) => e,
    }
}

fn lines(e: &ConfigErrors) -> Vec<String> {
    e.errors().iter().map(ConfigError::to_string).collect()
}

/// Asserts that exactly one error line contains every fragment.
fn has(e: &ConfigErrors, fragments: &[&str]) {
    let found: Vec<String> = lines(e)
        .into_iter()
        .filter(|l| fragments.iter().all(|f| l.contains(f)))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one error containing {fragments:?}, found {found:?} in:\n{e}"
    );
}

#[test]
fn scope_with_1001_source_ips_is_refused_with_file_policy_scope_field_value_and_limit() {
    let e = load_err("err_source_ips_1001.toml");
    assert_eq!(
        lines(&e),
        vec![
            "tests/configs/err_source_ips_1001.toml: policy \"pol-office\" scope #2 \"sc-web\": source_ips has 1,001 entries; the limit is 1,000"
        ]
    );
    let only = &e.errors()[0];
    assert_eq!(
        only.policy.as_ref().unwrap().id.as_deref(),
        Some("pol-office")
    );
    assert_eq!(only.scope.as_ref().unwrap().index, 2);
    assert_eq!(only.scope.as_ref().unwrap().id.as_deref(), Some("sc-web"));
    assert_eq!(only.field, "source_ips");
}

#[test]
fn exactly_1000_source_ips_are_accepted() {
    let c = config::load(Path::new("tests/configs/ok_source_ips_1000.toml")).unwrap();
    assert_eq!(c.policies[0].scopes[0].source_ips.len(), 1_000);
    assert_eq!(c.quota(), 1_000);
}

#[test]
fn more_than_100_ports_or_destinations_are_refused() {
    let e = load_err("err_source_ports_101.toml");
    has(
        &e,
        &[
            "tests/configs/err_source_ports_101.toml: policy \"pol-a\" scope #1 \"sc-ports\": source_ports has 101 entries; the limit is 100",
        ],
    );
    assert_eq!(e.len(), 1);
    let e = load_err("err_destination_ports_101.toml");
    has(
        &e,
        &["policy \"pol-a\" scope #1 \"sc-ports\": destination_ports has 101 entries; the limit is 100"],
    );
    assert_eq!(e.len(), 1);
    let e = load_err("err_destinations_101.toml");
    has(
        &e,
        &["policy \"pol-a\" scope #1 \"sc-dst\": destinations has 101 entries; the limit is 100"],
    );
    assert_eq!(e.len(), 1);
}

#[test]
fn eleven_scopes_are_refused_ten_accepted() {
    let e = load_err("err_scopes_11.toml");
    assert_eq!(
        lines(&e),
        vec![
            "tests/configs/err_scopes_11.toml: policy \"pol-many\": has 11 scopes; the limit is 10"
        ]
    );
    let c = config::load(Path::new("tests/configs/ok_scopes_10.toml")).unwrap();
    assert_eq!(c.policies[0].scopes.len(), 10);
    let indexes: Vec<usize> = c.policies[0].scopes.iter().map(|s| s.index).collect();
    assert_eq!(indexes, (1..=10).collect::<Vec<_>>());
}

#[test]
fn quota_of_exactly_20000_is_allowed() {
    let c = config::load(Path::new("tests/configs/ok_quota_20000.toml")).unwrap();
    let s = &c.policies[0].scopes[0];
    assert_eq!(
        (
            s.source_ips.len(),
            s.source_ports.len(),
            s.destinations.len(),
            s.destination_ports.len()
        ),
        (100, 2, 10, 10)
    );
    assert_eq!(s.quota(), 20_000);
    assert_eq!(c.policies[0].quota(), 20_000);
    assert_eq!(c.quota(), 20_000);
}

#[test]
fn quota_of_20001_is_refused_naming_the_policies() {
    let e = load_err("err_quota_20001.toml");
    assert_eq!(
        lines(&e),
        vec!["tests/configs/err_quota_20001.toml: quota of all policies together is 20,001 (\"pol-big\" 20,000 + \"pol-one\" 1); the limit is 20,000"]
    );
}

#[test]
fn bad_port_ranges_name_value_and_limit() {
    let e = load_err("err_ports.toml");
    let at = "tests/configs/err_ports.toml: policy \"pol-ports\" scope #1 \"sc-ports\": ";
    has(
        &e,
        &[at, "source_ports #1 \"0/65536\"", "end 65536", "0..=65535"],
    );
    has(
        &e,
        &[
            at,
            "source_ports #2 \"9000/8000\"",
            "start 9000 greater than end 8000",
        ],
    );
    has(
        &e,
        &[
            at,
            "destination_ports #1 \"443\"",
            "\"start/end\"",
            "\"8080/8080\"",
        ],
    );
    has(
        &e,
        &[at, "destination_ports #3 \"-1/5\"", "not a port range"],
    );
    has(
        &e,
        &[
            at,
            "destination_ports #4 \"70000/70001\"",
            "start 70000",
            "0..=65535",
        ],
    );
    // "8080/8080" (entry #2) is valid and not reported.
    assert_eq!(e.len(), 5, "{e}");
}

#[test]
fn bad_addresses_are_reported_each() {
    let e = load_err("err_addresses.toml");
    let at = "policy \"pol-addr\" scope #1 \"sc-addr\": ";
    has(&e, &[at, "source_ips #1 \"192.0.2.0/24\"", "not networks"]);
    has(
        &e,
        &[
            at,
            "source_ips #2 \"192.0.2.300\"",
            "not an IPv4 or IPv6 address",
        ],
    );
    has(
        &e,
        &[
            at,
            "source_ips #3 \"2001:db8::g\"",
            "not an IPv4 or IPv6 address",
        ],
    );
    has(
        &e,
        &[
            at,
            "destinations #1 \"203.0.113.5/24\"",
            "host bits",
            "\"203.0.113.0/24\"",
        ],
    );
    has(
        &e,
        &[at, "destinations #2 \"2001:db8::/129\"", "128 for IPv6"],
    );
    has(
        &e,
        &[
            at,
            "destinations #3 \"example.com\"",
            "not an IP address or CIDR",
        ],
    );
    assert_eq!(e.len(), 6, "{e}");
}

#[test]
fn only_tcp_is_accepted() {
    let e = load_err("err_protocol.toml");
    assert_eq!(
        lines(&e),
        vec!["tests/configs/err_protocol.toml: policy \"pol-dns\" scope #1 \"sc-dns\": protocol is \"udp\"; only \"tcp\" is accepted"]
    );
}

#[test]
fn duplicate_policy_and_scope_ids_are_refused() {
    let e = load_err("err_duplicate_ids.toml");
    has(
        &e,
        &["policy \"pol-office\" scope #2 \"sc-web\": id \"sc-web\" is already used by scope #1 of this policy"],
    );
    has(
        &e,
        &["policy \"pol-office\": id \"pol-office\" of policy #2 is already used by policy #1"],
    );
    // The same scope id in a different policy is fine.
    assert_eq!(e.len(), 2, "{e}");
}

#[test]
fn empty_and_missing_ids_are_refused() {
    let e = load_err("err_empty_ids.toml");
    has(&e, &["policy #1: id \"\" is empty; an id is required"]);
    has(
        &e,
        &["policy #1 scope #1: id \"\" is empty; an id is required"],
    );
    has(
        &e,
        &["policy #1 scope #2: id \"\" is empty; an id is required"],
    );
    has(&e, &["policy #2: missing required key \"id\""]);
    has(&e, &["policy #2 scope #1: missing required key \"id\""]);
    has(
        &e,
        &["policy \"pol office\": id \"pol office\" contains ' '"],
    );
    assert_eq!(e.len(), 6, "{e}");
}

#[test]
fn unknown_keys_are_errors_everywhere_with_their_path() {
    let e = load_err("err_unknown_keys.toml");
    let f = "tests/configs/err_unknown_keys.toml: ";
    has(&e, &[f, "unknown key \"colour\""]);
    has(
        &e,
        &[
            f,
            "unknown key \"appliance.max_flow\" (did you mean \"appliance.max_flows\"?)",
        ],
    );
    has(
        &e,
        &[
            f,
            "unknown key \"upstream.root\" (did you mean \"upstream.roots\"?)",
        ],
    );
    has(
        &e,
        &[
            f,
            "policy \"pol-office\": unknown key \"tls_13\" (did you mean \"tls13\"?)",
        ],
    );
    has(
        &e,
        &[f, "policy \"pol-office\" scope #1 \"sc-web\": unknown key \"sorce_ips\" (did you mean \"source_ips\"?)"],
    );
    has(&e, &[f, "unknown key \"ips.rule\""]);
    has(
        &e,
        &[
            f,
            "webfilter.rule #1: unknown key \"method\" (did you mean \"methods\"?)",
        ],
    );
    has(&e, &[f, "unknown key \"appcontrol.signature\""]);
    has(
        &e,
        &[
            f,
            "appcontrol.rule #1: unknown key \"acton\" (did you mean \"action\"?)",
        ],
    );
    assert_eq!(e.len(), 9, "{e}");
}

#[test]
fn wrong_types_are_reported_with_path_and_value() {
    let e = load_err("err_wrong_types.toml");
    has(
        &e,
        &["appliance.cpus must be an array of core numbers, found a string \"0\""],
    );
    has(
        &e,
        &["appliance.max_flows must be an integer, found a string \"many\""],
    );
    has(
        &e,
        &["policy \"pol-office\": enabled must be true or false, found a string \"yes\""],
    );
    has(
        &e,
        &[
            "policy \"pol-office\": exclude_sni must be an array",
            "\"*.bank.example\"",
        ],
    );
    has(
        &e,
        &["policy \"pol-office\" scope #1 \"sc-web\": source_ips must be an array of strings, found a string \"192.0.2.10\""],
    );
    has(
        &e,
        &["policy \"pol-office\" scope #1 \"sc-web\": source_ports #1 must be a string, found an integer 443"],
    );
    assert_eq!(e.len(), 6, "{e}");
}

#[test]
fn missing_required_keys_and_empty_lists() {
    let e = load_err("err_missing.toml");
    has(&e, &["missing required key \"appliance.wan\""]);
    // cpus, log and control have defaults (one worker per core, the unit's
    // directories): a minimal config names the mode, the ports and a policy.
    has(
        &e,
        &["policy \"pol-office\": missing required key \"ca_key\""],
    );
    has(
        &e,
        &["policy \"pol-office\" scope #1 \"sc-web\": missing required key \"source_ports\""],
    );
    has(
        &e,
        &["policy \"pol-office\" scope #1 \"sc-web\": destinations is empty; a scope needs at least one entry"],
    );
    assert_eq!(e.len(), 4, "{e}");
    let e = load_err("err_no_appliance.toml");
    assert_eq!(
        lines(&e),
        vec!["tests/configs/err_no_appliance.toml: missing required key \"appliance\""]
    );
}

#[test]
fn settings_outside_their_choices() {
    let e = load_err("err_settings.toml");
    has(
        &e,
        &["appliance.mode is \"bridge\"; it must be \"af_packet\", \"tun\" or \"geneve\""],
    );
    has(
        &e,
        &["upstream.invalid_certificate is \"ignore\"; it must be \"untrusted\" or \"block\""],
    );
    has(&e, &["policy \"pol-office\": tls13 is \"inpsect\"; it must be \"passthrough\" or \"inspect\""]);
    has(
        &e,
        &["policy \"pol-office\": ech is \"block\"; it must be \"passthrough\" or \"inspect\""],
    );
    has(&e, &["policy \"pol-office\": legacy_tls is \"inspect\"; it must be \"passthrough\" or \"block\""]);
    has(&e, &["policy \"pol-office\": no_sni is \"drop\""]);
    has(&e, &["policy \"pol-office\": non_tls is \"allow\""]);
    has(
        &e,
        &["policy \"pol-office\": on_disable is \"pause\"; it must be \"interrupt\" or \"drain\""],
    );
    has(
        &e,
        &["ips.mode is \"ids\"; it must be \"detect\" or \"prevent\""],
    );
    assert_eq!(e.len(), 9, "{e}");
}

#[test]
fn appliance_values_outside_their_ranges() {
    let e = load_err("err_appliance.toml");
    has(
        &e,
        &["appliance.wan is \"tun0\", the same interface as appliance.lan"],
    );
    has(&e, &["appliance.cpus #3 is core 0 again"]);
    has(
        &e,
        &["appliance.cpus #4 is 4,096; core numbers are 0..=1023"],
    );
    has(
        &e,
        &["appliance.max_flows is 0; it must be between 1 and 100,000,000"],
    );
    has(
        &e,
        &["appliance.flow_idle_timeout_secs is 0; it must be between 1 and 86,400"],
    );
    has(
        &e,
        &["appliance.tcp_buffer_bytes is 100; it must be between 4,096 and 16,777,216"],
    );
    has(
        &e,
        &["appliance.cert_cache_entries is -5; it must be between 1 and 10,000,000"],
    );
    has(
        &e,
        &["appliance.bypass_cache_entries is 20,000,000; it must be between 1 and 10,000,000"],
    );
    has(
        &e,
        &["appliance.pinning_bypass_clients is 0; it must be between 1 and 1,000"],
    );
    has(&e, &["appliance.log \"\" is empty"]);
    has(
        &e,
        &["appliance.metrics \"localhost\" is not an address:port"],
    );
    assert_eq!(e.len(), 11, "{e}");
}

#[test]
fn geneve_mode_has_one_interface_a_health_address_and_a_bounded_drain() {
    let e = load_err("err_geneve.toml");
    has(
        &e,
        &["appliance.wan is not used with mode = \"geneve\" (the load balancer reaches lan only); remove it"],
    );
    has(&e, &["appliance.health \"0.0.0.0\" is not an address:port"]);
    has(
        &e,
        &["appliance.drain_secs is 4,000; it must be between 0 and 3,600"],
    );
    assert_eq!(e.len(), 3, "{e}");
}

#[test]
fn engine_rules_with_bad_values() {
    let e = load_err("err_engines.toml");
    has(&e, &["webfilter.rule #1 host \"bad host\" contains ' '"]);
    has(
        &e,
        &["webfilter.rule #1 path \"upload\" must start with '/' or '*'"],
    );
    has(
        &e,
        &["webfilter.rule #1 methods #1 \"PO ST\" is not an HTTP method"],
    );
    has(
        &e,
        &["webfilter.rule #1 action is \"block\"; it must be \"allow\" or \"deny\""],
    );
    has(&e, &["webfilter.rule #2: missing required key \"action\""]);
    has(&e, &["appcontrol.rule #1 app \"git hub\" contains ' '"]);
    has(&e, &["appcontrol.rule #2: missing required key \"app\""]);
    has(&e, &["appcontrol.rule #2 verdict is \"maybe\""]);
    assert_eq!(e.len(), 8, "{e}");
}

#[test]
fn toml_syntax_error_names_line_and_column() {
    let e = load_err("err_syntax.toml");
    assert_eq!(e.len(), 1);
    let l = &lines(&e)[0];
    assert!(
        l.starts_with("tests/configs/err_syntax.toml: is not valid TOML: line 5, column"),
        "{l}"
    );
}

#[test]
fn unreadable_file_is_one_error_naming_it() {
    let e = config::load(Path::new("tests/configs/does-not-exist.toml")).unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(
        e.to_string()
            .starts_with("tests/configs/does-not-exist.toml: cannot be read:"),
        "{e}"
    );
}

#[test]
fn a_file_with_many_mistakes_shows_all_of_them() {
    let e = load_err("err_multi.toml");
    let f = "tests/configs/err_multi.toml: ";
    let web = "policy \"pol-office\" scope #2 \"sc-web\": ";
    has(&e, &[f, "appliance.max_flows is -1"]);
    has(&e, &[f, "policy \"pol-office\": tls13 is \"inpsect\""]);
    has(&e, &[f, web, "unknown key \"sorce_ips\""]);
    has(&e, &[f, web, "protocol is \"udp\""]);
    has(&e, &[f, web, "source_ips #1 \"192.0.2.300\""]);
    has(&e, &[f, web, "source_ports #1 \"0/65536\""]);
    has(&e, &[f, web, "destinations #1 \"203.0.113.0/33\""]);
    has(&e, &[f, web, "destination_ports #1 \"9000/8000\""]);
    has(&e, &[f, "already used by policy #1"]);
    assert_eq!(e.len(), 9, "{e}");
    // Display prints one error per line, in file order.
    assert_eq!(e.to_string().lines().count(), 9);
}

#[test]
fn a_long_list_of_bad_entries_is_summarised() {
    let ips: Vec<String> = (0..50).map(|i| format!("\"bad-{i}\"")).collect();
    let text = format!(
        "[appliance]\nmode = \"tun\"\nlan = \"a\"\nwan = \"b\"\ncpus = [0]\nlog = \"l\"\ncontrol = \"c\"\n\
         [[policy]]\nid = \"p\"\nca_cert = \"c\"\nca_key = \"k\"\n[[policy.scope]]\nid = \"s\"\n\
         source_ips = [{}]\nsource_ports = [\"0/65535\"]\ndestinations = [\"::/0\"]\ndestination_ports = [\"1/1\"]\n",
        ips.join(", ")
    );
    let e = config::parse(&text, Path::new("gen.toml")).unwrap_err();
    assert_eq!(e.len(), 11, "{e}");
    has(&e, &["source_ips #10 \"bad-9\""]);
    has(&e, &["source_ips has 40 more invalid entries not shown"]);
}

#[test]
fn ipv6_sources_and_destinations_are_accepted() {
    let c = config::load(Path::new("tests/configs/valid_ipv6.toml")).unwrap();
    let s = &c.policies[0].scopes[0];
    assert_eq!(
        s.source_ips,
        vec![
            "2001:db8::10".parse::<std::net::IpAddr>().unwrap(),
            "2001:db8::11".parse().unwrap(),
            "192.0.2.10".parse().unwrap()
        ]
    );
    let dst: Vec<String> = s.destinations.iter().map(ToString::to_string).collect();
    assert_eq!(
        dst,
        [
            "2001:db8:100::/48",
            "2001:db8:200::1/128",
            "::/0",
            "203.0.113.5/32"
        ]
    );
    assert_eq!(s.quota(), 3 * 4);
    assert!(s.matches(
        "2001:db8::10".parse().unwrap(),
        40000,
        "2001:db8:100::7".parse().unwrap(),
        443
    ));
    assert!(!s.matches(
        "2001:db8::12".parse().unwrap(),
        40000,
        "2001:db8:100::7".parse().unwrap(),
        443
    ));
}

/// Runs the real binary.
fn validate_bin(config: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tlsinspect"))
        .args(["validate", "--config", config])
        .output()
        .expect("run tlsinspect");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn binary_exits_nonzero_with_every_error_on_stderr() {
    let (code, stdout, stderr) = validate_bin("tests/configs/err_multi.toml");
    assert_ne!(code, 0);
    assert!(stdout.is_empty(), "{stdout}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.ends_with("the configuration is not valid"))
        .collect();
    assert_eq!(errors.len(), 9, "{stderr}");
    assert!(errors
        .iter()
        .all(|l| l.starts_with("tests/configs/err_multi.toml: ")));
    assert!(stderr.contains(
        "policy \"pol-office\" scope #2 \"sc-web\": destination_ports #1 \"9000/8000\" has start 9000 greater than end 8000"
    ));
    assert!(
        stderr.contains("tests/configs/err_multi.toml: 9 errors; the configuration is not valid")
    );
}

#[test]
fn binary_refuses_1001_source_ips_and_20001_quota() {
    let (code, _, stderr) = validate_bin("tests/configs/err_source_ips_1001.toml");
    assert_eq!(code, 1);
    assert!(stderr.contains(
        "tests/configs/err_source_ips_1001.toml: policy \"pol-office\" scope #2 \"sc-web\": source_ips has 1,001 entries; the limit is 1,000"
    ), "{stderr}");
    let (code, _, stderr) = validate_bin("tests/configs/err_quota_20001.toml");
    assert_eq!(code, 1);
    assert!(
        stderr.contains("quota of all policies together is 20,001"),
        "{stderr}"
    );
    assert!(stderr.contains("the limit is 20,000"), "{stderr}");
}

#[test]
fn binary_accepts_quota_20000_and_prints_it() {
    let (code, stdout, stderr) = validate_bin("tests/configs/ok_quota_20000.toml");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(stdout.contains("quota: 20,000 of 20,000"), "{stdout}");
    assert!(
        stdout.contains("quota: 100 x 2 x 10 x 10 = 20,000"),
        "{stdout}"
    );
}

#[test]
fn binary_reports_unknown_keys() {
    let (code, _, stderr) = validate_bin("tests/configs/err_unknown_keys.toml");
    assert_eq!(code, 1);
    assert!(stderr.contains("unknown key \"sorce_ips\""), "{stderr}");
    assert!(stderr.contains("9 errors"), "{stderr}");
}

#[test]
fn binary_reports_a_missing_file() {
    let (code, _, stderr) = validate_bin("tests/configs/nope.toml");
    assert_eq!(code, 1);
    assert!(
        stderr.contains("tests/configs/nope.toml: cannot be read"),
        "{stderr}"
    );
}

#[test]
fn ips_groups_are_validated_like_the_rest() {
    let e = load_err("err_ips_groups.toml");
    let at = "tests/configs/err_ips_groups.toml";
    has(&e, &[at, "ips.address_groups.HOME_NET", "192.0.2.999"]);
    has(&e, &[at, "ips.address_groups.DC_SERVERS", "$NO_SUCH_GROUP"]);
    has(&e, &[at, "ips.address_groups.bad name", "letters, digits"]);
    has(&e, &[at, "ips.port_groups.HTTP_PORTS", "8080:70000"]);
    has(&e, &[at, "ips.port_groups.SSH_PORTS", "must be a string"]);
}

#[test]
fn ips_groups_reach_the_rules_and_home_net_defaults_to_the_scopes() {
    use tlsinspect::inspect::Ruleset;
    let c = config::load(Path::new("tests/configs/valid_ips_groups.toml")).unwrap();
    assert_eq!(c.ips.address_groups.len(), 3);
    let vars = tlsinspect::appliance::build::ips_vars(&c).unwrap();
    let rule =
        r#"alert http $HOME_NET any -> $HTTP_SERVERS $HTTP_PORTS (http.uri; content:"/x"; sid:1;)"#;
    let (set, rep) = Ruleset::from_text(rule, "t", &vars);
    assert!(rep.problems().is_empty(), "{:?}", rep.problems());
    let r = &set.rules()[0];
    let ip = |s: &str| s.parse().unwrap();
    assert!(r.src.contains(ip("198.51.100.7")) && !r.src.contains(ip("10.0.0.1")));
    assert!(r.dst.contains(ip("203.0.113.9")) && !r.dst.contains(ip("203.0.113.1")));
    assert!(r.dport.contains(8050) && !r.dport.contains(443));
    // Without [ips.address_groups], HOME_NET is RFC 1918 plus the scopes' clients.
    let c = config::load(Path::new("tests/configs/valid_minimal.toml")).unwrap();
    let vars = tlsinspect::appliance::build::ips_vars(&c).unwrap();
    let (set, _) = Ruleset::from_text(rule, "t", &vars);
    let r = &set.rules()[0];
    assert!(r.src.contains(ip("192.0.2.10")) && r.src.contains(ip("10.1.2.3")));
    assert!(!r.src.contains(ip("192.0.2.11")));
    // HTTP_PORTS covers the decrypted HTTPS the appliance inspects.
    assert!(r.dport.contains(443) && r.dport.contains(80) && !r.dport.contains(8443));
}

#[test]
fn faults_are_validated_like_the_rest() {
    let e = load_err("err_faults.toml");
    let at = "tests/configs/err_faults.toml";
    has(&e, &[at, "faults.lan_in.loss", "between 0 and 1"]);
    has(
        &e,
        &[at, "faults.lan_in.reorder", "a number between 0 and 1"],
    );
    has(&e, &[at, "faults.wan_out.duplicat", "duplicate"]);
    has(&e, &[at, "faults.wan_out.delay_ms", "10,000"]);
}

#[test]
fn faults_reach_the_pipeline_and_warn() {
    use std::time::Duration;
    let c = config::load(Path::new("tests/configs/valid_faults.toml")).unwrap();
    let plan = tlsinspect::runtime::pipeline_config(&c).faults;
    assert_eq!(plan.seed, 42);
    assert_eq!(plan.lan_in.loss, 0.05);
    assert_eq!(plan.lan_in.corrupt, 0.01);
    assert_eq!(plan.lan_in.reorder_hold, Duration::from_millis(3));
    assert_eq!(plan.wan_out.delay, Duration::from_millis(1));
    assert_eq!(plan.wan_in.corrupt, 0.0);
    assert!(c.warnings().iter().any(|w| w.contains("[faults]")));
    let plain = config::load(Path::new("tests/configs/valid_minimal.toml")).unwrap();
    assert!(plain.faults.is_none());
    assert!(!plain.warnings().iter().any(|w| w.contains("[faults]")));
}

#[test]
fn capture_is_validated_like_the_rest() {
    let e = load_err("err_capture.toml");
    let at = "tests/configs/err_capture.toml";
    has(
        &e,
        &[
            at,
            "capture.policies #1",
            "pol-nobody",
            "names no [[policy]]",
        ],
    );
    has(&e, &[at, "capture.max_file_bytes", "10,000"]);
    has(&e, &[at, "capture.pcap_over_ip", "localhost"]);
    // Without a dir.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let text = std::fs::read_to_string("tests/configs/valid_minimal.toml").unwrap()
        + "\n[capture]\nmax_files = 2\n";
    std::fs::write(&path, text).unwrap();
    let e = config::load(&path).unwrap_err().to_string();
    assert!(e.contains("capture.dir"), "{e}");
}
