//! Fuzzes GENEVE mode's decapsulation (`geneve::parse`) and what follows
//! it on hostile frames: parsing never panics; a frame that parses still
//! parses after `swap_outer`, with the same parts and the addresses
//! swapped; a stored header wraps any packet into a frame that parses
//! again with the same VNI and options; and the dispatcher takes every
//! parsed frame without panicking.
#![no_main]
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use libfuzzer_sys::fuzz_target;
use tlsinspect_pipeline::api::{Alert, FlowLog, FlowMeta, FlowRecord};
use tlsinspect_pipeline::geneve::{self, Encap};
use tlsinspect_pipeline::io::Offload;
use tlsinspect_pipeline::dispatch::{Clock, Dispatcher};
use tlsinspect_pipeline::{ScopeSpec, ScopeTable};

#[derive(Default)]
struct Sink(Mutex<u64>);

impl FlowLog for Sink {
    fn record(&self, _: &FlowRecord) {
        *self.0.lock().unwrap() += 1;
    }
    fn alert(&self, _: &FlowMeta, _: &Alert, _: SystemTime) {}
}

fuzz_target!(|data: &[u8]| {
    let Ok(t) = geneve::parse(data) else {
        return;
    };
    assert!(t.udp < t.inner && t.inner <= data.len());
    let mut swapped = data.to_vec();
    geneve::swap_outer(&mut swapped);
    let s = geneve::parse(&swapped).expect("a swapped frame parses");
    assert_eq!((s.inner, s.udp, s.vni, s.proto), (t.inner, t.udp, t.vni, t.proto));
    assert_eq!(&swapped[t.udp..], &data[t.udp..]);

    // The stored header around another packet (the inner one, cut short).
    let e = Encap::of(data, &t).expect("header");
    let inner = &data[t.inner..];
    let packet = &inner[..inner.len().min(1 + inner.len() / 2)];
    let mut out = Vec::new();
    e.write(packet, &mut out);
    assert_eq!(out.len(), e.len() + packet.len());
    if let Ok(w) = geneve::parse(&out) {
        assert_eq!((w.inner, w.vni), (t.inner, t.vni));
        assert_eq!(&out[t.udp + 8..t.inner], &data[t.udp + 8..t.inner]);
    }

    // The dispatcher (tracking, no interception) on the frame.
    let table = Arc::new(ArcSwap::new(Arc::new(ScopeTable::compile(&[ScopeSpec {
        policy_id: "p".into(),
        scope_id: "s".into(),
        source_ips: vec!["192.0.2.10".parse().unwrap(), "2001:db8::10".parse().unwrap()],
        source_ports: vec![],
        destinations: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
        destination_ports: vec![],
    }]))));
    let now = Instant::now();
    let mut d = Dispatcher::new(
        0,
        16,
        Duration::from_secs(1),
        table,
        Arc::new(Sink::default()),
        Clock::new(now, SystemTime::UNIX_EPOCH),
    );
    let parsed = tlsinspect_pipeline::frame::parse_ip(&data[t.inner..]);
    d.on_geneve(data, t, parsed, Offload::default(), now);
    d.finish(now);
});
