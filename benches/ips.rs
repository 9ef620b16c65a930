//! IPS and engine throughput on one core.
//!
//! * `ips_scan/N`: prefilter + full evaluation of N raw-stream rules (random
//!   literals, a few of which occur in the data) over a 1 MiB mixed buffer
//!   (HTTP heads, HTML, JSON, base64, binary).
//! * `engine/*`: the per-flow inspector on a 16 MiB HTTP/1.1 response body fed
//!   in 16 KiB chunks (TLS-record sized), pass-through engines vs the shipped
//!   default rules; and a 200 KiB upload held and inspected.
//!
//! * `et_open_*`: ET Open's HTTP + TLS set loaded vs no rules, same run.
//!
//! Run: `cargo bench --bench ips -- --warm-up-time 1 --measurement-time 3`.
//! CPU-time tables instead of criterion's wall time (the shared machine is
//! loaded): `IPS_CPU_TABLE=1` (scan and engine cases), `IPS_ET_TABLE=1`
//! (ET Open: load time, CPU per MB and per connection with and without the
//! rules), e.g. `IPS_ET_TABLE=1 cargo bench --bench ips -- et_table`.

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
        ssl_state: None,
        stream_bytes: None,
        chunk_len: None,
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
        tunnel: None,
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
    let w = EtWork::new();
    let mut g = c.benchmark_group("et_open_bulk");
    g.throughput(Throughput::Bytes(w.body.len() as u64));
    g.sample_size(10);
    for (name, e) in [("no_rules", &none), ("et_http_tls", &et)] {
        g.bench_function(name, |b| b.iter(|| w.bulk(e)));
    }
    g.finish();

    // One new connection's engine work: its ClientHello, its certificate,
    // one page request and response (the TLS legs are measured elsewhere).
    let mut g = c.benchmark_group("et_open_connection");
    for (name, e) in [("no_rules", &none), ("et_http_tls", &et)] {
        g.bench_function(name, |b| b.iter(|| w.connection(e)));
    }
    g.finish();
}

/// CPU seconds of this thread per call of `f`, over at least `min` CPU
/// seconds (the clock ticks every 10 ms).
fn cpu_per(min: f64, mut f: impl FnMut()) -> f64 {
    let start = thread_cpu_secs();
    let mut n = 0usize;
    while thread_cpu_secs() - start < min {
        f();
        n += 1;
    }
    (thread_cpu_secs() - start) / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// With `IPS_ET_TABLE=1`: ET Open's HTTP + TLS set against no rules in one
/// run, in CPU time (rounds alternate so drift hits both alike): the set's
/// load time, CPU per MB of an inspected download, CPU per new connection
/// (its ClientHello, certificate, one request and response).
fn et_table(_c: &mut Criterion) {
    if std::env::var_os("IPS_ET_TABLE").is_none() {
        return;
    }
    let rounds: usize = std::env::var("IPS_ET_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut load_wall = Vec::new();
    let mut load_cpu = Vec::new();
    let mut loaded = 0;
    for _ in 0..rounds {
        let (t, c) = (std::time::Instant::now(), thread_cpu_secs());
        let (set, _) = Ruleset::load_files(&et_paths(), &Vars::default());
        load_cpu.push(thread_cpu_secs() - c);
        load_wall.push(t.elapsed().as_secs_f64());
        loaded = set.rules().len();
    }
    println!(
        "et-table prefilter {}: {loaded} rules load in {:.3} s wall, {:.2} s CPU (median of {rounds})",
        tlsinspect::inspect::ips::MATCHER,
        median(load_wall),
        median(load_cpu)
    );
    let et = engines_of(Ruleset::load_files(&et_paths(), &Vars::default()).0);
    let none = Engines::pass_through();
    let w = EtWork::new();
    let (mut bulk_none, mut bulk_et, mut conn_none, mut conn_et) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut pages_none, mut pages_et) = (Vec::new(), Vec::new());
    let mb = w.body.len() as f64 / 1e6;
    let pages_mb = w.pages_bytes() as f64 / 1e6;
    for _ in 0..rounds {
        bulk_none.push(cpu_per(1.0, || w.bulk(&none)) / mb);
        bulk_et.push(cpu_per(1.0, || w.bulk(&et)) / mb);
        pages_none.push(cpu_per(1.0, || w.pages(&none)) / pages_mb);
        pages_et.push(cpu_per(1.0, || w.pages(&et)) / pages_mb);
        conn_none.push(cpu_per(1.0, || w.connection(&none)));
        conn_et.push(cpu_per(1.0, || w.connection(&et)));
    }
    let legs = TlsLegs::new();
    let mut pair = legs.pair();
    let (mut bulk_tls, mut conn_tls) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        bulk_tls.push(cpu_per(1.0, || legs.bulk(&mut pair, &w.body)) / mb);
        conn_tls.push(cpu_per(1.0, || legs.connection()));
    }
    let (bt, ct) = (median(bulk_tls), median(conn_tls));
    let (bn, be) = (median(bulk_none), median(bulk_et));
    let (pn, pe) = (median(pages_none), median(pages_et));
    let (cn, ce) = (median(conn_none), median(conn_et));
    println!(
        "et-table TLS legs alone: {:.3} ms per MB, {:.1} us per connection",
        bt * 1e3,
        ct * 1e6
    );
    println!(
        "et-table inspected 64 KiB pages CPU per MB (TLS legs + engines, every body byte scanned): no rules {:.3} ms, ET {:.3} ms, ratio {:.2} (target <= 1.5)",
        (bt + pn) * 1e3,
        (bt + pe) * 1e3,
        (bt + pe) / (bt + pn)
    );
    println!(
        "et-table inspected bulk CPU per MB (TLS legs + engines): no rules {:.3} ms, ET {:.3} ms, ratio {:.2} (target <= 1.5)",
        (bt + bn) * 1e3,
        (bt + be) * 1e3,
        (bt + be) / (bt + bn)
    );
    println!(
        "et-table inspected connection CPU (TLS legs + engines): no rules {:.1} us, ET {:.1} us, ratio {:.3} (target <= 1.2)",
        (ct + cn) * 1e6,
        (ct + ce) * 1e6,
        (ct + ce) / (ct + cn)
    );
    println!(
        "et-table pages CPU per MB (engines only): no rules {:.3} ms, ET {:.3} ms, +{:.3} ms/MB",
        pn * 1e3,
        pe * 1e3,
        (pe - pn) * 1e3
    );
    println!(
        "et-table bulk CPU per MB: no rules {:.3} ms, ET {:.3} ms, +{:.3} ms/MB (x{:.2} engine only)",
        bn * 1e3,
        be * 1e3,
        (be - bn) * 1e3,
        be / bn
    );
    println!(
        "et-table connection CPU: no rules {:.1} us, ET {:.1} us, +{:.1} us (x{:.2} engine only)",
        cn * 1e6,
        ce * 1e6,
        (ce - cn) * 1e6,
        ce / cn
    );
}

/// The work of [`et_open`], shared with [`et_table`].
struct EtWork {
    meta: FlowMeta,
    body: Vec<u8>,
    head: Vec<u8>,
    req: &'static [u8],
    hello: tlsinspect_pipeline::tls::ClientHello,
    hello_bytes: Vec<u8>,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    page: &'static [u8],
    page_body: Vec<u8>,
}

impl EtWork {
    fn new() -> EtWork {
        let mut meta = meta();
        meta.src = "10.0.0.10:40000".parse().unwrap();
        const BODY: usize = 16 << 20;
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["www.shop.example.com".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        EtWork {
            meta,
            body: mixed_buffer(BODY),
            head: format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nServer: nginx\r\nContent-Length: {BODY}\r\n\r\n").into_bytes(),
            req: b"GET /download/big.html HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: text/html\r\nAccept-Language: en-US\r\nCookie: session=3f9a0c1d2e\r\n\r\n",
            hello: tlsinspect_pipeline::tls::ClientHello {
                len: 512,
                legacy_version: 0x0303,
                sni: Some("www.shop.example.com".into()),
                alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                supported_versions: vec![0x0304, 0x0303],
                cipher_suites: vec![0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f],
                extensions: vec![0, 10, 11, 13, 16, 43, 45, 51],
                signature_algorithms: vec![0x0403, 0x0804, 0x0401],
                supported_groups: vec![0x001d, 0x0017],
                ec_point_formats: vec![0],
                ech: false,
                ja4: "t13d0508h2_aaaaaaaaaaaa_bbbbbbbbbbbb".into(),
            },
            hello_bytes: vec![0x16u8; 512],
            chain: vec![leaf.der().clone()],
            page: b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2048\r\n\r\n",
            page_body: mixed_buffer(2048),
        }
    }

    fn bulk(&self, e: &Engines) {
        black_box(download(e, &self.meta, self.req, &self.head, &self.body));
    }

    /// Bytes of [`EtWork::pages`]: 16 responses of 64 KiB.
    fn pages_bytes(&self) -> usize {
        16 * (64 * 1024)
    }

    /// 16 requests and 64 KiB responses on one keep-alive flow: every body
    /// byte is within the body rules' reach (Suricata's 100 KiB).
    fn pages(&self, e: &Engines) {
        const PAGE: usize = 64 * 1024;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nServer: nginx\r\nContent-Length: {PAGE}\r\n\r\n"
        );
        let mut f = e.new_flow(&self.meta);
        for _ in 0..16 {
            let mut out = Emit::default();
            f.on_data(Direction::ToServer, self.req, &mut out);
            f.on_data(Direction::ToClient, head.as_bytes(), &mut out);
            for chunk in self.body[..PAGE].chunks(16 * 1024) {
                let mut out = Emit::default();
                f.on_data(Direction::ToClient, chunk, &mut out);
                black_box(out.to_client.len());
            }
        }
        black_box(f.finish());
    }

    fn connection(&self, e: &Engines) {
        use tlsinspect_pipeline::api::TlsHandshake;
        black_box(e.on_tls(
            &self.meta,
            &TlsHandshake {
                hello: &self.hello,
                hello_bytes: &self.hello_bytes,
                upstream_chain: None,
            },
        ));
        black_box(e.on_tls(
            &self.meta,
            &TlsHandshake {
                hello: &self.hello,
                hello_bytes: &[],
                upstream_chain: Some(&self.chain),
            },
        ));
        let mut f = e.new_flow(&self.meta);
        let mut out = Emit::default();
        f.on_data(Direction::ToServer, self.req, &mut out);
        f.on_data(Direction::ToClient, self.page, &mut out);
        f.on_data(Direction::ToClient, &self.page_body, &mut out);
        black_box(f.finish());
    }
}

/// The TLS work an inspected connection costs the appliance besides its
/// engines, in memory: one rustls client and server (TLS 1.3, ECDSA P-256,
/// X25519, AES-128-GCM) — a handshake pair per new connection (the
/// appliance is server to the client and client to the origin), one
/// encryption and one decryption per byte of bulk. No TCP, no packet I/O:
/// a lower bound on what the appliance spends without rules, so a ratio
/// against it overstates the rules' share.
struct TlsLegs {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl TlsLegs {
    fn new() -> TlsLegs {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["www.shop.example.com".into()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let mut client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.resumption = rustls::client::Resumption::disabled();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let mut server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        server.send_tls13_tickets = 0;
        TlsLegs {
            server: Arc::new(server),
            client: Arc::new(client),
        }
    }

    /// A connected pair, handshake done.
    fn pair(&self) -> (rustls::Connection, rustls::Connection) {
        let name = rustls_pki_types::ServerName::try_from("www.shop.example.com").unwrap();
        let mut c: rustls::Connection = rustls::ClientConnection::new(self.client.clone(), name)
            .unwrap()
            .into();
        let mut s: rustls::Connection = rustls::ServerConnection::new(self.server.clone())
            .unwrap()
            .into();
        while c.is_handshaking() || s.is_handshaking() {
            let a = move_tls(&mut c, &mut s);
            let b = move_tls(&mut s, &mut c);
            assert!(a + b > 0, "handshake stalled");
        }
        (c, s)
    }

    /// CPU work of one new connection's TLS (both sides of one handshake).
    fn connection(&self) {
        black_box(self.pair());
    }

    /// Sends `body` from the server side to the client side in 16 KiB
    /// records: one encryption and one decryption per byte.
    fn bulk(&self, pair: &mut (rustls::Connection, rustls::Connection), body: &[u8]) {
        use std::io::Write as _;
        let (c, s) = pair;
        for chunk in body.chunks(16 * 1024) {
            s.writer().write_all(chunk).unwrap();
            move_tls(s, c);
        }
    }
}

/// Moves `from`'s pending TLS records into `to` (and drains what `to`
/// decrypted); the bytes moved.
fn move_tls(from: &mut rustls::Connection, to: &mut rustls::Connection) -> usize {
    use std::io::Read as _;
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rest = &buf[..];
    let mut sink = [0u8; 16 * 1024];
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets().unwrap();
        while let Ok(n) = to.reader().read(&mut sink) {
            if n == 0 {
                break;
            }
            black_box(&sink[..n]);
        }
    }
    buf.len()
}

criterion_group!(benches, ips_scan, engine, et_open, cpu_table, et_table);
criterion_main!(benches);
