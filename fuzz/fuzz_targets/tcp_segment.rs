//! Fuzzes `tcp::segment` on arbitrary bytes as an IP packet: the parser
//! with and without checksum verification, the RST that refuses a parsed
//! SYN, the checksum filler, and the SYN-ACK MSS rewrite (reached through a
//! splice in `Connecting`, the only place it runs).
//!
//! Nothing may panic, and: a packet that parses with its checksums verified
//! parses the same without; the payload fits in the packet; the refusal RST
//! of a parsed segment parses (checksums verified) as an RST|ACK from its
//! destination to its source acknowledging `seq + 1`; filling in the
//! checksums of a packet that parses without verification makes it parse
//! with it, as the same segment.
#![no_main]
#![forbid(unsafe_code)]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use tlsinspect_pipeline::tcp::segment::{self, Segment};
use tlsinspect_pipeline::tcp::{self, FlowConfig, Leg, Splice};

/// The SYN a client in 192.0.2.0/24 sends to a server in 203.0.113.0/24,
/// with MSS, window scale, SACK-permitted and timestamps options.
fn client_syn() -> &'static [u8] {
    static SYN: OnceLock<Vec<u8>> = OnceLock::new();
    SYN.get_or_init(|| {
        let mut p = vec![
            0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 10, 203, 0, 113, 5, // IPv4
            0x9c, 0x40, 0x01, 0xbb, 0, 0, 0x10, 0, 0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0, 0, 0, 0,
            0, // TCP: 40000 -> 443, seq 4096, SYN, window 64240
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        tcp::fill_checksums(&mut p);
        p
    })
}

fn check_refusal(seg: &Segment) {
    let rst = segment::refusal_rst(seg);
    let r = segment::parse(&rst).expect("the refusal RST parses with its checksums");
    assert!(r.rst && !r.syn && !r.fin);
    assert_eq!((r.src, r.dst), (seg.dst, seg.src));
    assert_eq!(r.ack, Some(seg.seq.wrapping_add(1)));
    assert_eq!(r.payload_len, 0);
}

fuzz_target!(|data: &[u8]| {
    let verified = segment::parse(data);
    let unverified = segment::parse_with(data, false);
    if let Ok(seg) = &verified {
        assert_eq!(unverified.as_ref().ok(), Some(seg));
    }
    if let Ok(seg) = &unverified {
        assert!(seg.payload_len <= data.len());
        check_refusal(seg);
        // Filling in the checksums is all a crafted packet lacks.
        let mut fixed = data.to_vec();
        tcp::fill_checksums(&mut fixed);
        match segment::parse(&fixed) {
            Ok(s) => assert_eq!(&s, seg),
            // Only an IPv4 header whose lengths overrun the buffer is left
            // without its header checksum; such a packet did not parse.
            Err(e) => panic!("checksums filled, still {e}: {seg:?}"),
        }
    }

    // In `Connecting`, a server packet goes through the SYN-ACK MSS rewrite
    // and a client packet is read as a possible new SYN.
    let now = Instant::now();
    let cfg = FlowConfig::default();
    let mut flow = Splice::from_syn(client_syn(), &cfg, 7, now).expect("valid SYN");
    while flow.poll_transmit(now).is_some() {}
    flow.handle_packet(Leg::Server, data, now);
    flow.handle_packet(Leg::Client, data, now);
    while let Some(t) = flow.poll_transmit(now) {
        let seg = segment::parse(&t.packet).unwrap_or_else(|e| {
            panic!(
                "the splice sent a malformed packet toward {:?}: {e}: {:02x?}",
                t.side, t.packet
            )
        });
        if t.side == Leg::Client && !seg.rst {
            assert_eq!(seg.src, flow.server_addr());
        }
    }
    // A SYN the splice accepts as its client's is a segment the parser reads.
    if let Ok(seg) = Splice::from_syn(data, &cfg, 7, now).map(|f| *f.client_syn()) {
        assert!(seg.is_opening_syn());
        assert_eq!(Some(seg), verified.ok());
    }
});
