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

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Whether a sample only ever grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic (exported with the `_total` suffix).
    Counter,
    /// Any value.
    Gauge,
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

struct SourceCollector(Arc<dyn MetricsSource>);

impl std::fmt::Debug for SourceCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceCollector")
    }
}

impl Collector for SourceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut by_name: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
        for s in self.0.samples() {
            by_name.entry(s.name).or_default().push(s);
        }
        for (name, samples) in by_name {
            let first = &samples[0];
            match first.kind {
                Kind::Counter => {
                    let proto = ConstCounter::new(0u64);
                    let mut family =
                        encoder.encode_descriptor(name, first.help, None, proto.metric_type())?;
                    for s in &samples {
                        let m = ConstCounter::new(s.value.max(0.0) as u64);
                        m.encode(family.encode_family(&s.labels)?)?;
                    }
                }
                Kind::Gauge => {
                    let proto = ConstGauge::new(0f64);
                    let mut family =
                        encoder.encode_descriptor(name, first.help, None, proto.metric_type())?;
                    for s in &samples {
                        let m = ConstGauge::new(s.value);
                        m.encode(family.encode_family(&s.labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Renders the samples of `source` in the Prometheus text format.
pub fn render(source: Arc<dyn MetricsSource>) -> String {
    let mut registry = Registry::with_prefix("tlsinspect");
    registry.register_collector(Box::new(SourceCollector(source)));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}

/// A minimal HTTP/1.1 server for `GET /metrics`, one thread.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

fn answer(stream: TcpStream, source: &Arc<dyn MetricsSource>) -> std::io::Result<()> {
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
    let (method, target) = (parts.next(), parts.next());
    let (status, ctype, body) = match (method, target) {
        (Some("GET"), Some("/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(source.clone()),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "only GET /metrics is served here\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut w = &stream;
    w.write_all(head.as_bytes())?;
    w.write_all(body.as_bytes())
}

impl MetricsServer {
    /// Listens on `addr` and serves `source` until dropped.
    pub fn start(
        addr: SocketAddr,
        source: Arc<dyn MetricsSource>,
    ) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| std::io::Error::new(e.kind(), format!("metrics endpoint {addr}: {e}")))?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            let _ = answer(stream, &source);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(200)),
                    }
                }
            })?;
        Ok(MetricsServer {
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

impl Drop for MetricsServer {
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
                Sample::gauge("ca_days_left", "Days of validity left", 364.5)
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
            text.contains("# TYPE tlsinspect_ca_days_left gauge"),
            "{text}"
        );
        assert!(
            text.contains(r#"tlsinspect_ca_days_left{policy_id="pol-a"} 364.5"#),
            "{text}"
        );

        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.write_all(b"GET /other HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    }
}
