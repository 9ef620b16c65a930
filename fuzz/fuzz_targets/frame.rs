//! Fuzzes the frame parsers: Ethernet (with VLAN tags), bare IP, and the
//! steering hash over whatever parses. Nothing may panic.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use tlsinspect_pipeline::frame::{parse_ethernet, parse_ip};
use tlsinspect_pipeline::steer::packet_hash;

fuzz_target!(|data: &[u8]| {
    if let Ok(eth) = parse_ethernet(data) {
        if let (Some(ip), Some(raw)) = (eth.ip(), data.get(14..)) {
            let _ = packet_hash(ip, raw);
        }
    }
    if let Ok(ip) = parse_ip(data) {
        let _ = packet_hash(&ip, data);
        if let Some(tcp) = ip.tcp() {
            assert!(tcp.payload.len() <= data.len());
        }
    }
});
