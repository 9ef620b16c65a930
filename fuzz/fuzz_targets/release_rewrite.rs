//! Fuzzes the rewrite of a released flow's packets (`tcp::release`) on
//! hostile packets with any offsets, shifts and timestamps deltas:
//! `TcpFacts::parse` and `Rewrite::apply` never panic, a refused packet is
//! left untouched, the length never changes, and on a packet whose TCP
//! checksum was right it stays right (the incremental update is exact).
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tlsinspect_pipeline::tcp::{fill_checksums, Rewrite, TcpFacts};

fuzz_target!(|data: &[u8]| {
    if data.len() < 19 {
        return;
    }
    let word = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    let rw = Rewrite {
        seq: word(0),
        ack: word(4),
        ts: (data[16] & 1 == 1).then(|| (word(8), word(12))),
        shift_in: data[17] % 15,
        shift_out: data[18] % 15,
    };
    let partial = data[16] & 2 == 2;
    let mut packet = data[19..].to_vec();
    if data[16] & 4 == 4 {
        // A well-formed checksum to start from, where the packet allows one.
        fill_checksums(&mut packet);
    }
    let facts = TcpFacts::parse(&packet);
    let before = packet.clone();
    let valid_before = tcp_ok(&packet);
    let applied = rw.apply(&mut packet, partial);
    assert_eq!(packet.len(), before.len());
    if !applied {
        assert_eq!(packet, before);
    }
    if applied && !partial && valid_before == Some(true) {
        assert_eq!(tcp_ok(&packet), Some(true), "the checksum update must be exact");
    }
    if let (Some(f), true) = (facts, applied) {
        let g = TcpFacts::parse(&packet).expect("a rewritten packet still parses");
        assert_eq!(g.seq, f.seq.wrapping_add(rw.seq));
        assert_eq!(g.payload_len, f.payload_len);
    }
});

/// Whether the TCP checksum of an IPv4/IPv6 TCP packet verifies (None: not one).
fn tcp_ok(p: &[u8]) -> Option<bool> {
    tlsinspect_pipeline::tcp::segment::parse(p)
        .map(|_| true)
        .or_else(|e| match e {
            tlsinspect_pipeline::tcp::PacketError::Tcp => Ok(false),
            _ => Err(()),
        })
        .ok()
}
