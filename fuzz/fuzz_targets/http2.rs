//! Fuzzes the HTTP/2 inspector: arbitrary frames after a valid preface, in
//! both directions, with the default rules loaded.
#![no_main]
#![forbid(unsafe_code)]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tlsinspect::inspect::{
    AppControl, AppTable, Engines, Mode, Ruleset, Vars, Verdict, WebFilter, WebRule,
};
use tlsinspect_pipeline::api::{Direction, Emit, FlowMeta, Inspector};
use tlsinspect_pipeline::hostglob::HostGlob;

fn engines() -> &'static Engines {
    static E: OnceLock<Engines> = OnceLock::new();
    E.get_or_init(|| {
        let rules = include_str!("../../configs/rules/default.rules");
        let (set, _) = Ruleset::from_text(rules, "default.rules", &Vars::default());
        let apps =
            AppTable::from_toml(include_str!("../../configs/apps.toml"), "apps.toml").unwrap();
        Engines::new(
            WebFilter::new(vec![WebRule {
                host: HostGlob::new("*").unwrap(),
                path: "/upload/*".into(),
                methods: vec![],
                verdict: Verdict::Deny,
            }]),
            apps,
            AppControl::default(),
            Arc::new(set),
            Mode::Prevent,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let at = (usize::from(cut) * 4).min(rest.len());
    let meta = FlowMeta {
        flow_id: 1,
        src: "192.0.2.1:1000".parse().unwrap(),
        dest: "203.0.113.1:443".parse().unwrap(),
        policy_id: "p".into(),
        scope_id: "s".into(),
        sni: None,
        alpn: Some((&b"h2"[..]).into()),
        tunnel: None,
    };
    let mut f = engines().new_flow(&meta);
    let mut out = Emit::default();
    f.on_data(
        Direction::ToServer,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        &mut out,
    );
    f.on_data(
        Direction::ToClient,
        b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        &mut out,
    );
    f.on_data(Direction::ToServer, &rest[..at], &mut out);
    f.on_data(Direction::ToClient, &rest[at..], &mut out);
    let _ = f.take_alerts();
    let _ = f.finish();
});
