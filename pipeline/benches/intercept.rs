//! Inspected TLS through [`Connection`], in memory, on one core.
//!
//! Each connection runs the whole lab of `src/testkit/lab.rs`: a
//! smoltcp client host with a rustls client, the flow (both TCP legs, both
//! TLS legs, a pass-through inspector), a smoltcp server host with a rustls
//! server (ECDSA P-256 certificates everywhere; the forged chain comes from
//! a caching test minter, as the real one caches per upstream certificate).
//!
//! Two views of each workload: `total` is the wall time of everything (the
//! simulated client and server do as much TLS work as the appliance), and
//! `appliance` counts only the time spent inside the flow's methods
//! (`iter_custom`), which is what one worker core would spend.
//!
//! Run briefly: `cargo bench -p tlsinspect-pipeline --bench intercept -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

pub use tlsinspect_pipeline::{api, classify, conn, tls};

#[path = "../src/tcp/queue_dev.rs"]
pub mod queue_dev;

/// `crate::tcp` as the testkit sees it inside the library's own tests.
pub mod tcp {
    pub use super::queue_dev;
    pub use tlsinspect_pipeline::tcp::*;
}

#[allow(unused_imports)]
#[path = "../src/testkit/lab.rs"]
mod testkit;

use testkit::{inspect_all, ClientApp, Lab, ServerApp};

const LIMIT: Duration = Duration::from_secs(60);

/// One inspected TLS 1.3 connection moving `up`/`down` bytes; returns the
/// real time spent inside the flow.
fn connection(lab: &Lab, ctx: &std::sync::Arc<conn::ConnCtx>, up: usize, down: usize) -> Duration {
    let mut net = lab.net(
        ctx.clone(),
        ClientApp::Tls {
            trust_policy_ca: true,
            tls12_only: false,
            client_auth: false,
        },
        ServerApp::Tls {
            tls12_only: false,
            require_client_auth: false,
        },
        vec![0x41; up],
        vec![0x42; down],
    );
    let rec = net.run_and_finish(LIMIT);
    assert_eq!(rec.reason.as_str(), "inspected");
    assert_eq!(net.client_app().got.len(), down, "download complete");
    black_box(rec);
    net.flow_time
}

fn bench(c: &mut Criterion) {
    let lab = Lab::new();
    let ctx = lab.ctx(inspect_all(), lab.pass_inspector());

    let mut g = c.benchmark_group("inspected_tls13_connection");
    g.throughput(Throughput::Elements(1));
    g.bench_function("total", |b| b.iter(|| connection(&lab, &ctx, 100, 1000)));
    g.bench_function("appliance", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| connection(&lab, &ctx, 100, 1000)).sum())
    });
    g.finish();

    const BULK: usize = 8 << 20;
    let mut g = c.benchmark_group("inspected_tls13_bulk_8MiB_down");
    g.throughput(Throughput::Bytes(BULK as u64));
    g.sample_size(10);
    g.bench_function("total", |b| b.iter(|| connection(&lab, &ctx, 100, BULK)));
    g.bench_function("appliance", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| connection(&lab, &ctx, 100, BULK)).sum())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
