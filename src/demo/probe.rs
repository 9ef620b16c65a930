//! Small network peers built into the binary: ICMP ping, UDP echo, an HTTPS
//! origin and an HTTPS client.
//!
//! They let `tlsinspect demo` run on a machine with nothing installed but the
//! binary and iproute2, and give the lab tests a UDP echo and a ping without
//! depending on `socat` or `iputils`. Each runs inside a lab namespace as a
//! hidden subcommand (`tlsinspect lab-helper ...`) and prints one JSON line
//! with what it observed, so the caller reports facts, not expectations.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

/// Result of one ping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PingResult {
    /// Echo requests sent.
    pub sent: u32,
    /// Matching echo replies received.
    pub received: u32,
    /// Round-trip times of the replies, in microseconds.
    pub rtt_us: Vec<u64>,
}

fn icmp_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `count` ICMP echo requests from `src` to `dst` (raw socket, needs
/// root), waiting up to `timeout` for each reply.
pub fn ping(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    count: u32,
    timeout: Duration,
) -> anyhow::Result<PingResult> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .context("opening a raw ICMP socket (needs root)")?;
    sock.bind(&SocketAddrV4::new(src, 0).into())
        .with_context(|| format!("binding the ICMP socket to {src}"))?;
    let ident = (std::process::id() as u16) ^ rand::random::<u16>();
    let mut res = PingResult {
        sent: 0,
        received: 0,
        rtt_us: Vec::new(),
    };
    for seq in 0..count as u16 {
        let mut pkt = vec![8u8, 0, 0, 0];
        pkt.extend_from_slice(&ident.to_be_bytes());
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(b"tlsinspect lab ping payload.....");
        let csum = icmp_checksum(&pkt);
        pkt[2..4].copy_from_slice(&csum.to_be_bytes());
        let start = Instant::now();
        sock.send_to(&pkt, &SocketAddrV4::new(dst, 0).into())
            .with_context(|| format!("sending an echo request to {dst}"))?;
        res.sent += 1;
        let deadline = start + timeout;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))?;
            let n = match (&sock).read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e).context("receiving ICMP"),
            };
            // A raw IPv4 socket hands over the IP header too.
            let Some(&vihl) = buf.get(..n).and_then(|b| b.first()) else {
                continue;
            };
            let ihl = usize::from(vihl & 0x0f) * 4;
            if n < ihl + 8 || n < 20 {
                continue;
            }
            let from = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
            let icmp = &buf[ihl..n];
            if from == dst
                && icmp[0] == 0
                && icmp[4..6] == ident.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
            {
                res.received += 1;
                res.rtt_us.push(start.elapsed().as_micros() as u64);
                break;
            }
        }
    }
    Ok(res)
}

/// Answers every UDP datagram on `listen` with the same bytes, forever.
pub fn udp_echo_server(listen: SocketAddr) -> anyhow::Result<()> {
    let sock = UdpSocket::bind(listen).with_context(|| format!("binding UDP {listen}"))?;
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = sock.recv_from(&mut buf).context("receiving UDP")?;
        // A failed reply (e.g. the peer is gone) must not stop the echo.
        let _ = sock.send_to(&buf[..n], peer);
    }
}

/// Result of one UDP round trip.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UdpResult {
    /// Whether the echoed datagram came back identical.
    pub echoed: bool,
    /// Round-trip time in microseconds, when it came back.
    pub rtt_us: Option<u64>,
}

/// Sends `payload` from `src` to `dst` and waits up to `timeout` for the echo.
pub fn udp_probe(
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> anyhow::Result<UdpResult> {
    let sock = UdpSocket::bind(src).with_context(|| format!("binding UDP {src}"))?;
    sock.connect(dst)
        .with_context(|| format!("connecting UDP to {dst}"))?;
    let start = Instant::now();
    sock.send(payload)
        .with_context(|| format!("sending UDP to {dst}"))?;
    sock.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; 65536];
    match sock.recv(&mut buf) {
        Ok(n) => Ok(UdpResult {
            echoed: &buf[..n] == payload,
            rtt_us: Some(start.elapsed().as_micros() as u64),
        }),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(UdpResult {
                echoed: false,
                rtt_us: None,
            })
        }
        Err(e) => Err(e).with_context(|| format!("receiving the UDP echo from {dst}")),
    }
}

/// Deterministic body of `/bytes/N`: an xorshift stream, so client and test
/// can compute the expected digest without transferring a reference copy.
pub fn pattern_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Largest `/bytes/N` the origin serves.
const MAX_PATTERN: usize = 256 << 20;

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

/// Serves HTTPS on every address in `listen` until killed.
///
/// `GET /` answers a short text naming the origin address; `GET /bytes/N`
/// answers [`pattern_bytes`]`(N)`. HTTP/1.1 only, one request per connection.
pub fn https_origin(listen: &[SocketAddr], cert: &Path, key: &Path) -> anyhow::Result<()> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("building the origin's TLS config")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let mut threads = Vec::new();
    for addr in listen {
        let listener = TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
        let config = config.clone();
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let config = config.clone();
                std::thread::spawn(move || {
                    // One failed connection says nothing about the next.
                    let _ = serve_one(stream, config);
                });
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn serve_one(stream: TcpStream, config: Arc<rustls::ServerConfig>) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let local = stream.local_addr()?;
    let conn = rustls::ServerConnection::new(config)?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    let (method, path, head_len, body_len) = loop {
        let n = tls.read(&mut buf)?;
        if n == 0 {
            bail!("client closed before sending a request");
        }
        req.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Request::new(&mut headers);
        match r.parse(&req)? {
            httparse::Status::Complete(off) => {
                let len = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (
                    r.method.unwrap_or("GET").to_owned(),
                    r.path.unwrap_or("/").to_owned(),
                    off,
                    len,
                );
            }
            httparse::Status::Partial if req.len() > 16384 => bail!("request head too long"),
            httparse::Status::Partial => {}
        }
    };
    // Read the request body, if any, so uploads complete.
    while req.len() < head_len + body_len.min(MAX_PATTERN) {
        let n = tls.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    // Every request that reaches the origin is written to its log (stderr):
    // the demo reads it back to show what a blocked request never did.
    eprintln!("origin {local}: {method} {path} ({body_len} body bytes)");
    let (status, body) = match path.strip_prefix("/bytes/").map(str::parse::<usize>) {
        Some(Ok(n)) if n <= MAX_PATTERN => ("200 OK", pattern_bytes(n)),
        Some(_) => ("400 Bad Request", b"bad length\n".to_vec()),
        None if path == "/" => (
            "200 OK",
            format!("hello from the lab origin {local}\n").into_bytes(),
        ),
        None => (
            "200 OK",
            format!("{method} {path} reached the lab origin ({body_len} body bytes)\n")
                .into_bytes(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nServer: tlsinspect-lab-origin\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())?;
    tls.write_all(&body)?;
    tls.flush()?;
    tls.conn.send_close_notify();
    tls.flush()?;
    Ok(())
}

/// One certificate as the client saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeenCert {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
}

/// What the HTTPS client observed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchResult {
    /// Whether the TLS handshake (with verification) and the request succeeded.
    pub ok: bool,
    /// The client's source port (to find the flow in the traffic log).
    pub local_port: u16,
    /// The error, when not ok.
    pub error: Option<String>,
    /// HTTP status code.
    pub status: Option<u16>,
    /// TLS version negotiated.
    pub tls_version: Option<String>,
    /// ALPN negotiated.
    pub alpn: Option<String>,
    /// The chain the server presented, leaf first.
    pub chain: Vec<SeenCert>,
    /// Body length.
    pub body_len: usize,
    /// Hex SHA-256 of the body.
    pub body_sha256: Option<String>,
    /// Start of the body, for text answers.
    pub body_head: String,
}

/// The HTTP request `https_fetch` sends.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// Method, e.g. `GET` or `POST`.
    pub method: String,
    /// Request target as sent (not normalized).
    pub path: String,
    /// Extra header lines (`Name: value`).
    pub headers: Vec<String>,
    /// Request body, sent with a Content-Length.
    pub body: Option<String>,
}

impl FetchRequest {
    /// A plain `GET path`.
    pub fn get(path: &str) -> FetchRequest {
        FetchRequest {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
            body: None,
        }
    }
}

/// Fetches `https://sni/path` from `dst`, sourcing the connection from `src`
/// and verifying against the roots in `ca_files`.
pub fn https_fetch(
    src: Ipv4Addr,
    dst: SocketAddr,
    sni: &str,
    ca_files: &[PathBuf],
    req: &FetchRequest,
    timeout: Duration,
) -> anyhow::Result<FetchResult> {
    let path = req.path.as_str();
    let mut roots = rustls::RootCertStore::empty();
    for f in ca_files {
        for c in load_certs(f)? {
            roots
                .add(c)
                .with_context(|| format!("adding a root from {}", f.display()))?;
        }
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name =
        ServerName::try_from(sni.to_owned()).with_context(|| format!("server name {sni:?}"))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name)?;

    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.bind(&SocketAddrV4::new(src, 0).into())
        .with_context(|| format!("binding the client socket to {src}"))?;
    sock.connect_timeout(&dst.into(), timeout)
        .with_context(|| format!("connecting to {dst} from {src}"))?;
    let stream: TcpStream = sock.into();
    let local_port = stream.local_addr()?.port();
    stream.set_read_timeout(Some(timeout))?;
    let mut tls = rustls::StreamOwned::new(conn, stream);

    let mut res = FetchResult {
        ok: false,
        local_port,
        error: None,
        status: None,
        tls_version: None,
        alpn: None,
        chain: Vec::new(),
        body_len: 0,
        body_sha256: None,
        body_head: String::new(),
    };
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nHost: {sni}\r\nUser-Agent: tlsinspect-demo\r\nConnection: close\r\n",
        req.method
    );
    for h in &req.headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if let Some(body) = &req.body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut wire = head.into_bytes();
    if let Some(body) = &req.body {
        wire.extend_from_slice(body.as_bytes());
    }
    let mut raw = Vec::new();
    let outcome = tls
        .write_all(&wire)
        .and_then(|()| tls.flush())
        .and_then(|()| read_to_end_tolerant(&mut tls, &mut raw));
    if let Some(certs) = tls.conn.peer_certificates() {
        for c in certs {
            if let Ok((_, x)) = x509_parser::parse_x509_certificate(c.as_ref()) {
                res.chain.push(SeenCert {
                    subject: x.subject().to_string(),
                    issuer: x.issuer().to_string(),
                });
            }
        }
    }
    res.tls_version = tls.conn.protocol_version().map(|v| format!("{v:?}"));
    res.alpn = tls
        .conn
        .alpn_protocol()
        .map(|a| String::from_utf8_lossy(a).into_owned());
    if let Err(e) = outcome {
        res.error = Some(e.to_string());
        return Ok(res);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(&raw) {
        Ok(httparse::Status::Complete(off)) => {
            res.status = r.code;
            let body = &raw[off..];
            res.body_len = body.len();
            res.body_sha256 = Some(sha256_hex(body));
            res.body_head = String::from_utf8_lossy(&body[..body.len().min(80)])
                .trim_end()
                .to_owned();
            res.ok = true;
        }
        Ok(httparse::Status::Partial) => res.error = Some("truncated HTTP response".into()),
        Err(e) => res.error = Some(format!("malformed HTTP response: {e}")),
    }
    Ok(res)
}

/// Whether `raw` holds a whole response with a Content-Length body.
fn response_complete(raw: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(raw) {
        Ok(httparse::Status::Complete(off)) => r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_some_and(|len| raw.len() >= off + len),
        _ => false,
    }
}

/// Reads the response: to EOF, or until a Content-Length response is
/// complete (a server may keep the connection open despite our
/// `Connection: close`, as a block page does). A peer that closes without
/// close_notify after a complete response is tolerated as HTTP/1.1 clients do.
fn read_to_end_tolerant(r: &mut impl Read, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = [0u8; 16384];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if response_complete(out) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
    }
}

/// What [`https_fetch_loop`] observed over all its connections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FetchLoopResult {
    /// Connections whose handshake verified and that got a 200.
    pub ok: u64,
    /// Connections that failed (handshake, transport or status).
    pub failed: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// How many connections saw each leaf issuer.
    pub issuers: std::collections::BTreeMap<String, u64>,
    /// Wall time of the loop.
    pub elapsed_ms: u64,
}

/// Runs `count` fetches like [`https_fetch`] (one full handshake each, no
/// resumption) over `concurrency` threads; for long runs and load.
#[allow(clippy::too_many_arguments)] // one argument per command-line option
pub fn https_fetch_loop(
    src: Ipv4Addr,
    dst: SocketAddr,
    sni: &str,
    ca_files: &[PathBuf],
    path: &str,
    count: u64,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<FetchLoopResult> {
    let started = std::time::Instant::now();
    let next = std::sync::atomic::AtomicU64::new(0);
    let total = std::sync::Mutex::new(FetchLoopResult::default());
    let req = FetchRequest::get(path);
    std::thread::scope(|s| {
        for _ in 0..concurrency.max(1) {
            s.spawn(|| {
                let mut mine = FetchLoopResult::default();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                    match https_fetch(src, dst, sni, ca_files, &req, timeout) {
                        Ok(r) if r.ok && r.status == Some(200) => {
                            mine.ok += 1;
                            let issuer = r.chain.first().map(|c| c.issuer.clone());
                            *mine.issuers.entry(issuer.unwrap_or_default()).or_default() += 1;
                        }
                        Ok(r) => {
                            mine.failed += 1;
                            mine.first_error.get_or_insert_with(|| {
                                format!("status {:?}: {:?}", r.status, r.error)
                            });
                        }
                        Err(e) => {
                            mine.failed += 1;
                            mine.first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
                let mut t = total.lock().unwrap_or_else(|e| e.into_inner());
                t.ok += mine.ok;
                t.failed += mine.failed;
                if t.first_error.is_none() {
                    t.first_error = mine.first_error;
                }
                for (k, v) in mine.issuers {
                    *t.issuers.entry(k).or_default() += v;
                }
            });
        }
    });
    let mut r = total.into_inner().unwrap_or_else(|e| e.into_inner());
    r.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(r)
}
