//! Criterion benchmark of the ClientHello peek parser on captured hellos.
//!
//! With `CLIENT_HELLO_ITERS=N` set it skips criterion and parses each hello
//! N times, for instruction counts under callgrind on a busy machine:
//! `valgrind --tool=callgrind <bench binary>` with N=0 and N=1000; the
//! difference divided by 1000 is the cost of one chromium + one curl parse.

use criterion::{black_box, criterion_group, Criterion, Throughput};
use tlsinspect_pipeline::tls::client_hello;

const CHROMIUM: &[u8] = include_bytes!("../src/tls/testdata/chromium.bin");
const CURL: &[u8] = include_bytes!("../src/tls/testdata/curl.bin");

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("client_hello");
    for (name, bytes) in [("chromium", CHROMIUM), ("curl", CURL)] {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                client_hello::parse(black_box(bytes))
                    .ok()
                    .flatten()
                    .map(|h| h.len)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    if let Some(n) = std::env::var("CLIENT_HELLO_ITERS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        let mut total = 0usize;
        for _ in 0..n {
            for bytes in [CHROMIUM, CURL] {
                total += client_hello::parse(black_box(bytes))
                    .ok()
                    .flatten()
                    .map_or(0, |h| h.len);
            }
        }
        println!("parsed {total} bytes");
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
