//! Criterion benchmark of the ClientHello peek parser on captured hellos.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
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
criterion_main!(benches);
