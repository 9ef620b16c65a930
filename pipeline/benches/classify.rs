//! Scope classifier lookups per second at the full 20,000-entry quota.
//!
//! Two shapes of the same quota: one scope of 20 sources x 1 source-port
//! range x 100 destination networks x 10 destination-port ranges, and 50
//! scopes covering 1,000 sources (20 each) x 2 networks x 10 ports. Each is
//! measured for hits, misses on an unknown source, and misses on a known
//! source with a port outside every range. Throughput is in lookups.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tlsinspect_pipeline::classify::{ScopeSpec, ScopeTable};

const BATCH: usize = 1024;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn ports() -> Vec<(u16, u16)> {
    (0..10)
        .map(|i| (443 + i * 1000, 443 + i * 1000 + 5))
        .collect()
}

/// 20 x 1 x 100 x 10 in one scope.
fn wide() -> (ScopeTable, Vec<(IpAddr, u16, IpAddr, u16)>) {
    let spec = ScopeSpec {
        policy_id: "p".into(),
        scope_id: "wide".into(),
        source_ips: (0..20).map(|i| v4(192, 0, 2, i + 1)).collect(),
        source_ports: vec![(1024, 65535)],
        destinations: (0..100u32)
            .map(|i| format!("203.{}.{}.0/24", i / 256, i % 256).parse().unwrap())
            .collect(),
        destination_ports: ports(),
    };
    let hits = (0..BATCH)
        .map(|i| {
            let d = (i * 7) % 100;
            (
                v4(192, 0, 2, (i % 20) as u8 + 1),
                40000,
                v4(203, (d / 256) as u8, (d % 256) as u8, 9),
                443 + ((i % 10) * 1000) as u16,
            )
        })
        .collect();
    (ScopeTable::compile(&[spec]), hits)
}

/// 1,000 sources in 50 scopes of 20 x 1 x 2 x 10.
fn many() -> (ScopeTable, Vec<(IpAddr, u16, IpAddr, u16)>) {
    let specs: Vec<ScopeSpec> = (0..50u32)
        .map(|s| ScopeSpec {
            policy_id: format!("p{}", s / 10).into(),
            scope_id: format!("s{s}").into(),
            source_ips: (0..20u32)
                .map(|i| {
                    let n = s * 20 + i;
                    v4(192, 0, (n / 250) as u8, (n % 250) as u8 + 1)
                })
                .collect(),
            source_ports: vec![(1024, 65535)],
            destinations: vec![
                "203.0.113.0/25".parse().unwrap(),
                "198.51.100.0/24".parse().unwrap(),
            ],
            destination_ports: ports(),
        })
        .collect();
    let hits = (0..BATCH)
        .map(|i| {
            let n = (i * 13) % 1000;
            (
                v4(192, 0, (n / 250) as u8, (n % 250) as u8 + 1),
                50000,
                v4(203, 0, 113, 7),
                443 + ((i % 10) * 1000) as u16,
            )
        })
        .collect();
    (ScopeTable::compile(&specs), hits)
}

fn bench(c: &mut Criterion) {
    for (name, (table, hits)) in [("20x1x100x10", wide()), ("1000src_50scopes", many())] {
        assert!(hits
            .iter()
            .all(|&(s, sp, d, dp)| table.lookup(s, sp, d, dp).is_some()));
        let unknown: Vec<_> = hits
            .iter()
            .map(|&(_, sp, d, dp)| (v4(198, 51, 100, 250), sp, d, dp))
            .collect();
        let wrong_port: Vec<_> = hits.iter().map(|&(s, sp, d, _)| (s, sp, d, 80)).collect();
        assert!(unknown
            .iter()
            .chain(&wrong_port)
            .all(|&(s, sp, d, dp)| table.lookup(s, sp, d, dp).is_none()));
        let mut g = c.benchmark_group(format!("classify/{name}"));
        g.throughput(Throughput::Elements(BATCH as u64));
        for (case, set) in [
            ("hit", &hits),
            ("miss_unknown_source", &unknown),
            ("miss_port", &wrong_port),
        ] {
            g.bench_function(case, |b| {
                b.iter(|| {
                    let mut n = 0usize;
                    for &(s, sp, d, dp) in set.iter() {
                        n += usize::from(table.lookup(black_box(s), sp, d, dp).is_some());
                    }
                    n
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
