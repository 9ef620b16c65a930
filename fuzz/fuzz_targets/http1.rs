//! Fuzzes the HTTP/1.1 framing parser (both sides) and the HTTP/1.1 flow
//! inspector with arbitrary bytes cut at arbitrary points.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tlsinspect::inspect::http1::parser::{Limits, Parser};
use tlsinspect::inspect::Engines;
use tlsinspect_pipeline::api::{Direction, Emit, FlowMeta, Inspector};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut).min(rest.len());
    for direction in [Direction::ToServer, Direction::ToClient] {
        let mut p = Parser::new(direction, Limits::default());
        let mut ev = Vec::new();
        for piece in [&rest[..at], &rest[at..]] {
            ev.clear();
            if p.push(piece, &mut ev).is_err() {
                break;
            }
            for e in &ev {
                assert!(e.end() <= piece.len());
            }
        }
    }
    let meta = FlowMeta {
        flow_id: 1,
        src: "192.0.2.1:1000".parse().unwrap(),
        dest: "203.0.113.1:443".parse().unwrap(),
        policy_id: "p".into(),
        scope_id: "s".into(),
        sni: None,
        alpn: Some((&b"http/1.1"[..]).into()),
        tunnel: None,
    };
    let mut f = Engines::pass_through().new_flow(&meta);
    let mut out = Emit::default();
    f.on_data(
        Direction::ToServer,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        &mut out,
    );
    f.on_data(Direction::ToServer, &rest[..at], &mut out);
    f.on_data(Direction::ToClient, &rest[at..], &mut out);
    f.on_data(Direction::ToServer, &rest[at..], &mut out);
    f.on_eof(Direction::ToClient, &mut out);
    let _ = f.finish();
});
