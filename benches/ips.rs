//! IPS and engine throughput on one core.
//!
//! * `ips_scan/N`: prefilter + full evaluation of N raw-stream rules (random
//!   literals, a few of which occur in the data) over a 1 MiB mixed buffer
//!   (HTTP heads, HTML, JSON, base64, binary).
//! * `engine/*`: the per-flow inspector on a 16 MiB HTTP/1.1 response body fed
//!   in 16 KiB chunks (TLS-record sized), pass-through engines vs the shipped
//!   default rules; and a 200 KiB upload held and inspected.
//!
//! Run: `cargo bench --bench ips -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tlsinspect::inspect::ips::{Buffer, Buffers, EvalCtx, FlowBits, Phase, Ruleset, Scratch, Vars};
use tlsinspect::inspect::{AppControl, AppTable, Engines, Mode, WebFilter};
use tlsinspect_pipeline::api::{Direction, Emit, FlowMeta, Inspector};

fn mixed_buffer(len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(7);
    let parts: [&[u8]; 4] = [
        b"GET /api/v2/items?id=42&sort=desc HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: text/html,application/json\r\nCookie: session=3f9a0c1d2e\r\n\r\n",
        b"<div class=\"product\"><h2>Blue widget</h2><p>The quick brown fox jumps over the lazy dog. Price: 19.99 EUR</p><a href=\"/cart/add?sku=1234\">Add to cart</a></div>\n",
        b"{\"id\": 1234, \"name\": \"widget\", \"tags\": [\"blue\", \"small\"], \"price\": 19.99, \"stock\": true, \"updated\": \"2026-11-24T10:00:00Z\"}\n",
        b"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==\n",
    ];
    let mut out = Vec::with_capacity(len + 4096);
    while out.len() < len {
        match rng.gen_range(0..5) {
            4 => {
                let n = rng.gen_range(64..512);
                out.extend((0..n).map(|_| rng.gen::<u8>()));
            }
            i => out.extend_from_slice(parts[i]),
        }
    }
    out.truncate(len);
    out
}

fn raw_ruleset(n: usize) -> Ruleset {
    let mut rng = StdRng::seed_from_u64(n as u64);
    let vocab = [
        "content-type",
        "<div class=",
        "\"price\":",
        "user-agent",
        "lazy dog",
        "sku=",
        "session=",
    ];
    let mut text = String::new();
    for i in 0..n {
        // About 1 rule in 200 keys on a literal that occurs in the data.
        let lit: String = if i % 200 == 0 {
            vocab[(i / 200) % vocab.len()].to_string()
        } else {
            let l = rng.gen_range(6..14);
            (0..l).map(|_| rng.gen_range(b'a'..=b'z') as char).collect()
        };
        let lit = lit.replace('"', "|22|");
        text.push_str(&format!(
            "alert tcp any any -> any any (msg:\"bench {i}\"; content:\"{lit}\"; nocase; content:\"zz{i}\"; distance:0; sid:{};)\n",
            i + 1
        ));
    }
    let (set, rep) = Ruleset::from_text(&text, "bench", &Vars::default());
    assert!(rep.problems().is_empty(), "{:?}", rep.problems());
    set
}

fn eval_raw(set: &Ruleset, bufs: &Buffers<'_>, scratch: &mut Scratch, hits: &mut Vec<u32>) {
    let mut bits = FlowBits::default();
    let mut ctx = EvalCtx {
        bits: &mut bits,
        src: "192.0.2.10".parse().unwrap(),
        dst: "203.0.113.5".parse().unwrap(),
        tls_version: None,
    };
    set.eval(Phase::Raw, bufs, &|_| true, scratch, &mut ctx, hits);
}

fn ips_scan(c: &mut Criterion) {
    let data = mixed_buffer(1 << 20);
    let mut g = c.benchmark_group("ips_scan");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for n in [10usize, 1_000, 10_000] {
        let set = raw_ruleset(n);
        let mut scratch = Scratch::default();
        let mut hits = Vec::new();
        g.bench_with_input(BenchmarkId::from_parameter(n), &data, |b, data| {
            b.iter(|| {
                let mut bufs = Buffers::default();
                bufs.set(Buffer::Raw, data);
                hits.clear();
                eval_raw(&set, &bufs, &mut scratch, &mut hits);
                black_box(hits.len())
            })
        });
    }
    g.finish();
}

fn meta() -> FlowMeta {
    FlowMeta {
        flow_id: 1,
        src: "192.0.2.10:40000".parse().unwrap(),
        dest: "203.0.113.5:443".parse().unwrap(),
        policy_id: "p".into(),
        scope_id: "s".into(),
        sni: Some("shop.example.com".into()),
        alpn: Some((&b"http/1.1"[..]).into()),
    }
}

fn default_engines() -> Engines {
    engines_with("")
}

/// The default rules plus `extra` rule text.
fn engines_with(extra: &str) -> Engines {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("configs/rules/default.rules")).unwrap();
    text.push_str(extra);
    let (set, rep) = Ruleset::from_text(&text, "default.rules", &Vars::default());
    assert!(rep.problems().is_empty());
    let apps = AppTable::load(&root.join("configs/apps.toml")).unwrap();
    Engines::new(
        WebFilter::default(),
        apps,
        AppControl::default(),
        Arc::new(set),
        Mode::Prevent,
    )
}

fn engine(c: &mut Criterion) {
    const BODY: usize = 16 << 20;
    let body = mixed_buffer(BODY);
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BODY}\r\n\r\n");
    let req =
        b"GET /download/big.bin HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: curl/8.5\r\n\r\n";
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Bytes(BODY as u64));
    g.sample_size(10);
    // A response-body rule forces every body byte through the prefilter.
    let body_rule = "alert http any any -> any any (msg:\"EICAR test file in response\"; flow:to_client; http.response_body; content:\"EICAR-STANDARD-ANTIVIRUS-TEST-FILE\"; classtype:bad-unknown; sid:1900001; rev:1;)\n";
    for (name, e) in [
        ("download_pass_through", Engines::pass_through()),
        ("download_default_rules", default_engines()),
        ("download_default_plus_body_rule", engines_with(body_rule)),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut f = e.new_flow(&meta());
                let mut out = Emit::default();
                f.on_data(Direction::ToServer, req, &mut out);
                f.on_data(Direction::ToClient, head.as_bytes(), &mut out);
                let mut n = 0usize;
                for chunk in body.chunks(16 * 1024) {
                    let mut out = Emit::default();
                    f.on_data(Direction::ToClient, chunk, &mut out);
                    n += out.to_client.len();
                }
                assert_eq!(n, BODY);
                black_box(f.finish())
            })
        });
    }
    g.finish();

    const UP: usize = 200 * 1024;
    let upload = mixed_buffer(UP);
    let mut req = format!(
        "POST /api/upload HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: {UP}\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(&upload);
    let mut g = c.benchmark_group("engine_upload");
    g.throughput(Throughput::Bytes(req.len() as u64));
    for (name, e) in [
        ("upload_pass_through", Engines::pass_through()),
        ("upload_default_rules", default_engines()),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut f = e.new_flow(&meta());
                let mut n = 0usize;
                for chunk in req.chunks(16 * 1024) {
                    let mut out = Emit::default();
                    f.on_data(Direction::ToServer, chunk, &mut out);
                    n += out.to_server.len();
                }
                assert_eq!(n, req.len());
                black_box(f.finish())
            })
        });
    }
    g.finish();
}

/// This thread's CPU time in seconds (from /proc; 10 ms resolution).
///
/// The shared build machine is often loaded far beyond its cores, so wall
/// time understates throughput; CPU time measures the work itself.
fn thread_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is [0]; utime [11], stime [12].
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn cpu_rate(name: &str, bytes: usize, mut f: impl FnMut()) {
    let start = thread_cpu_secs();
    let mut n = 0usize;
    while thread_cpu_secs() - start < 2.0 {
        f();
        n += 1;
    }
    let secs = thread_cpu_secs() - start;
    println!(
        "cpu-time {name:<40} {:>8.3} GB/s per CPU-second ({n} iterations)",
        (bytes * n) as f64 / secs / 1e9
    );
}

/// With `IPS_CPU_TABLE=1`, prints throughput per CPU-second for every case.
fn cpu_table(_c: &mut Criterion) {
    if std::env::var_os("IPS_CPU_TABLE").is_none() {
        return;
    }
    let data = mixed_buffer(1 << 20);
    for n in [10usize, 1_000, 10_000] {
        let set = raw_ruleset(n);
        let mut scratch = Scratch::default();
        let mut hits = Vec::new();
        cpu_rate(&format!("ips_scan/{n}"), data.len(), || {
            let mut bufs = Buffers::default();
            bufs.set(Buffer::Raw, &data);
            hits.clear();
            eval_raw(&set, &bufs, &mut scratch, &mut hits);
        });
    }
    const BODY: usize = 16 << 20;
    let body = mixed_buffer(BODY);
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
    let req = b"GET /download/big.bin HTTP/1.1\r\nHost: shop.example.com\r\n\r\n";
    let body_rule = "alert http any any -> any any (msg:\"EICAR\"; flow:to_client; http.response_body; content:\"EICAR-STANDARD-ANTIVIRUS-TEST-FILE\"; classtype:bad-unknown; sid:1900001; rev:1;)\n";
    for (name, e) in [
        ("download_pass_through", Engines::pass_through()),
        ("download_default_rules", default_engines()),
        ("download_default_plus_body_rule", engines_with(body_rule)),
    ] {
        cpu_rate(name, BODY, || {
            black_box(download(&e, &meta(), req, head.as_bytes(), &body));
        });
    }
    const UP: usize = 200 * 1024;
    let mut up = format!(
        "POST /api/upload HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: {UP}\r\n\r\n"
    )
    .into_bytes();
    up.extend_from_slice(&mixed_buffer(UP));
    for (name, e) in [
        ("upload_pass_through", Engines::pass_through()),
        ("upload_default_rules", default_engines()),
    ] {
        cpu_rate(name, up.len(), || {
            let mut f = e.new_flow(&meta());
            for chunk in up.chunks(16 * 1024) {
                let mut out = Emit::default();
                f.on_data(Direction::ToServer, chunk, &mut out);
                black_box(out.to_server.len());
            }
        });
    }
}

/// One download through a fresh flow, in TLS-record-sized chunks.
fn download(e: &Engines, m: &FlowMeta, req: &[u8], head: &[u8], body: &[u8]) -> usize {
    let mut f = e.new_flow(m);
    let mut out = Emit::default();
    f.on_data(Direction::ToServer, req, &mut out);
    f.on_data(Direction::ToClient, head, &mut out);
    let mut n = 0;
    for chunk in body.chunks(16 * 1024) {
        let mut out = Emit::default();
        f.on_data(Direction::ToClient, chunk, &mut out);
        n += out.to_client.len();
    }
    black_box(f.finish());
    n
}

fn et_paths() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/et-open");
    vec![
        dir.join("et-open-http.rules"),
        dir.join("et-open-tls.rules"),
    ]
}

fn engines_of(set: Ruleset) -> Engines {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Engines::new(
        WebFilter::default(),
        AppTable::load(&root.join("configs/apps.toml")).unwrap(),
        AppControl::default(),
        Arc::new(set),
        Mode::Detect,
    )
}

/// ET Open's HTTP and TLS rules (issue 14): loading the set, and the same
/// work with the set and without rules in one run, so ratios compare like
/// with like. The client is in the default HOME_NET (10/8), the server
/// outside it, as ET's `$HOME_NET -> $EXTERNAL_NET` headers expect.
fn et_open(c: &mut Criterion) {
    let mut g = c.benchmark_group("et_open_load");
    g.sample_size(10);
    g.bench_function("load_http_and_tls", |b| {
        b.iter(|| {
            black_box(
                Ruleset::load_files(&et_paths(), &Vars::default())
                    .0
                    .rules()
                    .len(),
            )
        })
    });
    g.finish();
    let et = engines_of(Ruleset::load_files(&et_paths(), &Vars::default()).0);
    let none = Engines::pass_through();
    let mut m = meta();
    m.src = "10.0.0.10:40000".parse().unwrap();

    const BODY: usize = 16 << 20;
    let body = mixed_buffer(BODY);
    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nServer: nginx\r\nContent-Length: {BODY}\r\n\r\n");
    let req: &[u8] = b"GET /download/big.html HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: text/html\r\nAccept-Language: en-US\r\nCookie: session=3f9a0c1d2e\r\n\r\n";
    let mut g = c.benchmark_group("et_open_bulk");
    g.throughput(Throughput::Bytes(BODY as u64));
    g.sample_size(10);
    for (name, e) in [("no_rules", &none), ("et_http_tls", &et)] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(download(e, &m, req, head.as_bytes(), &body)))
        });
    }
    g.finish();

    // One new connection's engine work: its ClientHello, its certificate,
    // one page request and response (the TLS legs are measured elsewhere).
    let hello = tlsinspect_pipeline::tls::ClientHello {
        len: 512,
        legacy_version: 0x0303,
        sni: Some("www.shop.example.com".into()),
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        supported_versions: vec![0x0304, 0x0303],
        cipher_suites: vec![0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f],
        extensions: vec![0, 10, 11, 13, 16, 43, 45, 51],
        signature_algorithms: vec![0x0403, 0x0804, 0x0401],
        supported_groups: vec![0x001d, 0x0017],
        ech: false,
        ja4: "t13d0508h2_aaaaaaaaaaaa_bbbbbbbbbbbb".into(),
    };
    let hello_bytes = vec![0x16u8; 512];
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["www.shop.example.com".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let chain = vec![leaf.der().clone()];
    let page = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2048\r\n\r\n";
    let page_body = mixed_buffer(2048);
    let mut g = c.benchmark_group("et_open_connection");
    for (name, e) in [("no_rules", &none), ("et_http_tls", &et)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                use tlsinspect_pipeline::api::TlsHandshake;
                black_box(e.on_tls(
                    &m,
                    &TlsHandshake {
                        hello: &hello,
                        hello_bytes: &hello_bytes,
                        upstream_chain: None,
                    },
                ));
                black_box(e.on_tls(
                    &m,
                    &TlsHandshake {
                        hello: &hello,
                        hello_bytes: &[],
                        upstream_chain: Some(&chain),
                    },
                ));
                let mut f = e.new_flow(&m);
                let mut out = Emit::default();
                f.on_data(Direction::ToServer, req, &mut out);
                f.on_data(Direction::ToClient, page, &mut out);
                f.on_data(Direction::ToClient, &page_body, &mut out);
                black_box(f.finish())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ips_scan, engine, et_open, cpu_table);
criterion_main!(benches);
