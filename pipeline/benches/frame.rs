//! Frame parsing and steering-hash cost per frame.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tlsinspect_pipeline::frame::parse_ethernet;
use tlsinspect_pipeline::steer::packet_hash;

fn tcp_frame(payload: usize) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let total = 40 + payload;
    let mut ip = vec![0u8; total];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[192, 0, 2, 10]);
    ip[16..20].copy_from_slice(&[203, 0, 113, 5]);
    ip[20..22].copy_from_slice(&40000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&443u16.to_be_bytes());
    ip[32] = 5 << 4;
    ip[33] = 0x10;
    f.extend_from_slice(&ip);
    f
}

fn bench(c: &mut Criterion) {
    let frame = tcp_frame(1448);
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_ethernet_tcp_1500", |b| {
        b.iter(|| parse_ethernet(black_box(&frame)).is_ok())
    });
    g.bench_function("parse_and_hash", |b| {
        b.iter(|| {
            let f = black_box(&frame);
            let eth = parse_ethernet(f).unwrap();
            packet_hash(eth.ip().unwrap(), &f[14..])
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
