//! The Prometheus text endpoint.
//!
//! The data plane keeps its counters per worker and never touches a shared
//! registry on the packet path. At scrape time a [`MetricsSource`] gathers a
//! snapshot and a `prometheus-client` collector encodes it, so the cost of
//! metrics is paid by the scraper, not by traffic.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Whether a sample only ever grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic (exported with the `_total` suffix).
    Counter,
    /// Any value.
    Gauge,
    /// A distribution: cumulative bucket counts, sum and count.
    Histogram,
}

/// The value of a histogram sample: cumulative counts at upper bounds (in
/// increasing order; `+Inf` is added when rendered), the sum of all
/// observations and their number.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    /// (upper bound, observations at or below it).
    pub bounds: Vec<(f64, u64)>,
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// One value of one metric.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric name without the `tlsinspect_` prefix or `_total` suffix.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Label pairs.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
    /// Histograms only: the buckets.
    pub buckets: Option<Buckets>,
}

impl Sample {
    /// A counter sample.
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Sample {
        Sample {
            name,
            help,
            kind: Kind::Counter,
            labels: Vec::new(),
            value: value as f64,
            buckets: None,
        }
    }

    /// A gauge sample.
    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Sample {
        Sample {
            name,
            help,
            kind: Kind::Gauge,
            labels: Vec::new(),
            value,
            buckets: None,
        }
    }

    /// A histogram sample.
    pub fn histogram(name: &'static str, help: &'static str, buckets: Buckets) -> Sample {
        Sample {
            name,
            help,
            kind: Kind::Histogram,
            labels: Vec::new(),
            value: 0.0,
            buckets: Some(buckets),
        }
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: impl Into<String>) -> Sample {
        self.labels.push((key.to_string(), value.into()));
        self
    }
}

/// Produces the current samples at scrape time.
pub trait MetricsSource: Send + Sync + 'static {
    /// Every sample, in any order.
    fn samples(&self) -> Vec<Sample>;
}

/// Escapes a label value or HELP text as the text format asks.
fn escape(s: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

fn format_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// Renders the samples of `source` in the Prometheus text format 0.0.4,
/// every family under its HELP and TYPE lines, names prefixed `tlsinspect_`
/// and counters suffixed `_total`.
///
/// Why not `prometheus-client`'s encoder: it writes OpenMetrics only, whose
/// counter HELP/TYPE lines name the family without `_total`, which
/// `promtool check metrics` (and the classic format every scraper reads)
/// rejects; the format is a few lines of text, so it is written here.
pub fn render(source: Arc<dyn MetricsSource>) -> String {
    use std::fmt::Write as _;
    let mut by_name: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
    for s in source.samples() {
        by_name.entry(s.name).or_default().push(s);
    }
    let mut out = String::new();
    for (name, samples) in by_name {
        let first = &samples[0];
        let (full, kind) = match first.kind {
            Kind::Counter => (format!("tlsinspect_{name}_total"), "counter"),
            Kind::Gauge => (format!("tlsinspect_{name}"), "gauge"),
            Kind::Histogram => (format!("tlsinspect_{name}"), "histogram"),
        };
        let _ = writeln!(out, "# HELP {full} {}", escape(first.help, false));
        let _ = writeln!(out, "# TYPE {full} {kind}");
        for s in &samples {
            if let Some(b) = &s.buckets {
                let labels = |extra: Option<String>| -> String {
                    let mut l: Vec<String> = s
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape(v, true)))
                        .collect();
                    l.extend(extra);
                    if l.is_empty() {
                        String::new()
                    } else {
                        format!("{{{}}}", l.join(","))
                    }
                };
                for (le, n) in &b.bounds {
                    let le = format!("le=\"{}\"", format_value(*le));
                    let _ = writeln!(out, "{full}_bucket{} {n}", labels(Some(le)));
                }
                let inf = Some("le=\"+Inf\"".to_string());
                let _ = writeln!(out, "{full}_bucket{} {}", labels(inf), b.count);
                let _ = writeln!(out, "{full}_sum{} {}", labels(None), format_value(b.sum));
                let _ = writeln!(out, "{full}_count{} {}", labels(None), b.count);
                continue;
            }
            let value = match s.kind {
                Kind::Counter => s.value.max(0.0),
                Kind::Gauge | Kind::Histogram => s.value,
            };
            if s.labels.is_empty() {
                let _ = writeln!(out, "{full} {}", format_value(value));
            } else {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v, true)))
                    .collect();
                let _ = writeln!(
                    out,
                    "{full}{{{}}} {}",
                    labels.join(","),
                    format_value(value)
                );
            }
        }
    }
    out
}

/// The Prometheus endpoint: `GET /metrics` on its own thread.
#[derive(Debug)]
pub struct MetricsServer(HttpServer);

impl MetricsServer {
    /// Listens on `addr` and serves `source` until dropped.
    pub fn start(
        addr: SocketAddr,
        source: Arc<dyn MetricsSource>,
    ) -> std::io::Result<MetricsServer> {
        HttpServer::start(addr, "metrics", move |method, target| {
            match (method, target) {
                ("GET", "/metrics") => Reply {
                    status: "200 OK",
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: render(source.clone()),
                },
                _ => Reply::text("404 Not Found", "only GET /metrics is served here\n"),
            }
        })
        .map(MetricsServer)
    }

    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status line after the version, e.g. `200 OK`.
    pub status: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Reply {
    /// A plain-text answer.
    pub fn text(status: &'static str, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain",
            body: body.to_owned(),
        }
    }
}

/// A minimal HTTP/1.1 server, one thread, one request per connection: what
/// a scraper or a load balancer's health check needs and nothing more.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .finish()
    }
}

fn answer(stream: TcpStream, handler: &impl Fn(&str, &str) -> Reply) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the head so the client sees a clean response.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let reply = handler(method, target);
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    let mut w = &stream;
    w.write_all(head.as_bytes())?;
    if method != "HEAD" {
        w.write_all(reply.body.as_bytes())?;
    }
    Ok(())
}

impl HttpServer {
    /// Listens on `addr` and answers each request with `handler(method,
    /// target)` on a thread named `name`, until dropped.
    pub fn start(
        addr: SocketAddr,
        name: &str,
        handler: impl Fn(&str, &str) -> Reply + Send + 'static,
    ) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{name} endpoint {addr}: {e}")))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            let _ = answer(stream, &handler);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(200)),
                    }
                }
            })?;
        Ok(HttpServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    struct Fixed;

    impl MetricsSource for Fixed {
        fn samples(&self) -> Vec<Sample> {
            vec![
                Sample::counter("flows", "Flows by action and reason", 7)
                    .label("policy_id", "pol-a")
                    .label("scope_id", "s1")
                    .label("action", "inspected"),
                Sample::counter("flows", "Flows by action and reason", 2)
                    .label("policy_id", "pol-a")
                    .label("scope_id", "s1")
                    .label("action", "pass"),
                Sample::gauge(
                    "ca_validity_remaining_seconds",
                    "Seconds of validity left",
                    364.5,
                )
                .label("policy_id", "pol-a"),
            ]
        }
    }

    #[test]
    fn serves_prometheus_text() {
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(Fixed)).unwrap();
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(
            text.contains(
                r#"tlsinspect_flows_total{policy_id="pol-a",scope_id="s1",action="inspected"} 7"#
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE tlsinspect_ca_validity_remaining_seconds gauge"),
            "{text}"
        );
        assert!(
            text.contains(r#"tlsinspect_ca_validity_remaining_seconds{policy_id="pol-a"} 364.5"#),
            "{text}"
        );

        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.write_all(b"GET /other HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    }
}
