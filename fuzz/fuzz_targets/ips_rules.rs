//! Fuzzes the IPS rule loader with arbitrary rule text, then runs whatever
//! loaded against the input itself in every buffer (the certificate chain
//! included) and every phase, with flowbits, xbits and thresholds live, and
//! checks the Suricata vars of `[ips.address_groups]` on the same text.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tlsinspect::inspect::ips::{Buffer, Buffers, EvalCtx, FlowBits, Phase, Ruleset, Scratch, Vars};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (set, report) = Ruleset::from_text(text, "fuzz.rules", &Vars::default());
    let _ = report.problems();
    let mut bufs = Buffers::default();
    for b in Buffer::ALL {
        bufs.set(b, data);
    }
    let chain = [data, data];
    bufs.set_certs(&chain);
    let mut hits = Vec::new();
    let mut scratch = Scratch::default();
    let mut bits = FlowBits::default();
    let mut ctx = EvalCtx {
        bits: &mut bits,
        src: "192.0.2.1".parse().unwrap(),
        dst: "203.0.113.1".parse().unwrap(),
        tls_version: Some(0x0304),
        // The hello step's state and this input's size as the stream's, so
        // ssl_state, stream_size and dsize rules are evaluated too.
        ssl_state: Some(1),
        stream_bytes: Some((data.len() as u64, data.len() as u64)),
        chunk_len: Some(data.len()),
    };
    for phase in [
        Phase::Request,
        Phase::Response,
        Phase::Raw,
        Phase::TlsHello,
        Phase::TlsCert,
    ] {
        set.eval(phase, &bufs, &|_| true, &mut scratch, &mut ctx, &mut hits);
    }
    for &h in &hits {
        let _ = set.should_alert(h, ctx.src, ctx.dst);
    }
    let mut lines = text.lines();
    if let (Some(a), Some(p)) = (lines.next(), lines.next()) {
        let _ = Vars::with_groups(
            Some(a.to_string()),
            &[("G".into(), a.to_string())],
            &[("P".into(), p.to_string())],
        );
    }
});
