//! Decrypted traffic for the tools people use (DESIGN.md §11): the
//! plaintext of inspected connections as synthetic TCP sessions with the
//! real addresses and ports (handshake, data, FIN) in rotating pcap files,
//! and optionally as a live PCAP-over-IP stream.
//!
//! Workers never write: the capturing inspector copies each plaintext chunk
//! into a bounded queue (`try_send`; a full queue drops and counts) and one
//! capture thread turns the events into packets, writes the files and feeds
//! the PCAP-over-IP clients, each through a non-blocking socket with a
//! bounded backlog (a slow reader is dropped, never waited for).
//!
//! The packets are Ethernet/IPv4 or IPv6/TCP with valid checksums
//! (etherparse), sequence numbers continuous per direction, at most
//! [`SEGMENT`] bytes of payload each; the pcap format is `pcap-file`'s.
//! Port 443 carries plaintext HTTP here: Suricata and Zeek detect it by
//! content, tshark needs `-d tcp.port==443,http`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use tlsinspect_pipeline::api::{
    Alert, Direction, Emit, FlowInspector, FlowMeta, InspectReport, Inspector, TlsHandshake,
};

use crate::config;

/// Payload bytes per synthetic segment.
pub const SEGMENT: usize = 1448;
/// Events the queue holds before workers drop (and count) them.
const QUEUE: usize = 65_536;
/// Bytes a PCAP-over-IP client may lag behind before it is dropped.
const CLIENT_BACKLOG: usize = 8 << 20;
/// MACs of the synthetic sessions: client and server.
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// What the capturing inspectors tell the capture thread.
enum Event {
    Open {
        id: u64,
        client: SocketAddr,
        server: SocketAddr,
        at: SystemTime,
    },
    /// `bytes` start `offset` bytes into the direction's stream: a chunk
    /// dropped before it shows as a gap in the sequence numbers, as a
    /// capture that lost packets does, instead of shifting what follows.
    Data {
        id: u64,
        dir: Direction,
        offset: u64,
        bytes: Vec<u8>,
        at: SystemTime,
    },
    Fin {
        id: u64,
        dir: Direction,
        offset: u64,
        at: SystemTime,
    },
    Close {
        id: u64,
        at: SystemTime,
    },
    /// [`Capture::shutdown`]: write what is queued, then end.
    Stop,
}

/// Counters of the capture, for the metrics and the shutdown report.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Packets written (to the files).
    pub packets: AtomicU64,
    /// Events dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Write errors of the files (a full disk); the packet is lost.
    pub write_errors: AtomicU64,
    /// PCAP-over-IP clients dropped for lagging or closing.
    pub clients_dropped: AtomicU64,
}

/// The running capture: the queue into its thread.
pub struct Capture {
    tx: Sender<Event>,
    /// Set by [`Capture::shutdown`]; later events are dropped and counted.
    stopped: AtomicBool,
    policies: Option<HashSet<Arc<str>>>,
    stats: Arc<CaptureStats>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    listen: Option<SocketAddr>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Creates the directory, binds PCAP-over-IP if asked, starts the thread.
    pub fn start(cfg: &config::Capture) -> anyhow::Result<Arc<Capture>> {
        std::fs::create_dir_all(&cfg.dir)
            .with_context(|| format!("creating the capture directory {}", cfg.dir.display()))?;
        log::warn!(
            "[capture] is on: the decrypted plaintext of inspected connections is written to {}{}",
            cfg.dir.display(),
            cfg.pcap_over_ip
                .map(|a| format!(" and served as PCAP-over-IP on {a}"))
                .unwrap_or_default()
        );
        let listener = match cfg.pcap_over_ip {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .with_context(|| format!("binding PCAP-over-IP on {addr}"))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        let listen = listener.as_ref().and_then(|l| l.local_addr().ok());
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let stats = Arc::new(CaptureStats::default());
        let (dir, max_bytes, max_files) = (cfg.dir.clone(), cfg.max_file_bytes, cfg.max_files);
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let mut writer = Writer {
                    files: Rotation::new(&dir, max_bytes, max_files),
                    listener,
                    clients: Vec::new(),
                    sessions: HashMap::new(),
                    stats: thread_stats,
                    scratch: Vec::with_capacity(2048),
                };
                writer.run(&rx);
            })
            .context("starting the capture thread")?;
        Ok(Arc::new(Capture {
            tx,
            stopped: AtomicBool::new(false),
            policies: cfg.policies.as_ref().map(|p| p.iter().cloned().collect()),
            stats,
            thread: Mutex::new(Some(thread)),
            listen,
        }))
    }

    /// Where PCAP-over-IP listens, if on.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen
    }

    /// The counters.
    pub fn stats(&self) -> &CaptureStats {
        &self.stats
    }

    /// Whether inspected flows of `policy` are captured.
    fn selects(&self, policy: &str) -> bool {
        self.policies.as_ref().is_none_or(|p| p.contains(policy))
    }

    fn send(&self, ev: Event) {
        if self.stopped.load(Ordering::Relaxed) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes what is queued, closes the files and stops the thread.
    pub fn shutdown(&self) {
        if !self.stopped.swap(true, Ordering::AcqRel) {
            // Blocks while the queue is full: the writer drains it.
            let _ = self.tx.send(Event::Stop);
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }

    /// A line for the shutdown report.
    pub fn report(&self) -> String {
        let s = &self.stats;
        format!(
            "capture: {} packets written, {} events dropped, {} write errors, {} PCAP-over-IP clients dropped",
            s.packets.load(Ordering::Relaxed),
            s.dropped.load(Ordering::Relaxed),
            s.write_errors.load(Ordering::Relaxed),
            s.clients_dropped.load(Ordering::Relaxed)
        )
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An [`Inspector`] that captures the plaintext of the flows it inspects
/// and hands everything to the engines' inspector unchanged.
pub struct CapturingInspector {
    inner: Arc<dyn Inspector>,
    capture: Arc<Capture>,
}

impl CapturingInspector {
    /// Wraps the engines' `inner` inspector.
    pub fn new(inner: Arc<dyn Inspector>, capture: Arc<Capture>) -> CapturingInspector {
        CapturingInspector { inner, capture }
    }
}

impl Inspector for CapturingInspector {
    fn new_flow(&self, meta: &FlowMeta) -> Box<dyn FlowInspector> {
        let inner = self.inner.new_flow(meta);
        if !self.capture.selects(&meta.policy_id) {
            return inner;
        }
        self.capture.send(Event::Open {
            id: meta.flow_id,
            client: meta.src,
            server: meta.dest,
            at: SystemTime::now(),
        });
        Box::new(CapturingFlow {
            inner,
            capture: self.capture.clone(),
            id: meta.flow_id,
            offset: [0; 2],
            closed: false,
        })
    }

    fn on_tls(&self, meta: &FlowMeta, tls: &TlsHandshake<'_>) -> Vec<Alert> {
        self.inner.on_tls(meta, tls)
    }
}

struct CapturingFlow {
    inner: Box<dyn FlowInspector>,
    capture: Arc<Capture>,
    id: u64,
    /// Bytes seen so far per direction ([`index`]).
    offset: [u64; 2],
    closed: bool,
}

impl FlowInspector for CapturingFlow {
    fn on_data(&mut self, dir: Direction, data: &[u8], out: &mut Emit) {
        if !data.is_empty() {
            let offset = self.offset[index(dir)];
            self.offset[index(dir)] += data.len() as u64;
            self.capture.send(Event::Data {
                id: self.id,
                dir,
                offset,
                bytes: data.to_vec(),
                at: SystemTime::now(),
            });
        }
        self.inner.on_data(dir, data, out);
    }

    fn on_eof(&mut self, dir: Direction, out: &mut Emit) {
        self.capture.send(Event::Fin {
            id: self.id,
            dir,
            offset: self.offset[index(dir)],
            at: SystemTime::now(),
        });
        self.inner.on_eof(dir, out);
    }

    fn take_alerts(&mut self) -> Vec<Alert> {
        self.inner.take_alerts()
    }

    fn finish(&mut self) -> InspectReport {
        self.close();
        self.inner.finish()
    }
}

impl CapturingFlow {
    fn close(&mut self) {
        if !std::mem::replace(&mut self.closed, true) {
            self.capture.send(Event::Close {
                id: self.id,
                at: SystemTime::now(),
            });
        }
    }
}

impl Drop for CapturingFlow {
    fn drop(&mut self) {
        self.close();
    }
}

/// One synthetic session: next sequence numbers and FINs per direction.
struct Session {
    client: SocketAddr,
    server: SocketAddr,
    /// Sequence number of each stream's first byte.
    base: [u32; 2],
    /// Next sequence number of the client's and the server's stream.
    seq: [u32; 2],
    fin: [bool; 2],
}

fn index(dir: Direction) -> usize {
    match dir {
        Direction::ToServer => 0,
        Direction::ToClient => 1,
    }
}

/// TCP flags of a synthetic segment.
#[derive(Clone, Copy, Default)]
struct Flags {
    syn: bool,
    ack: bool,
    psh: bool,
    fin: bool,
}

/// Builds one Ethernet/IP/TCP packet into `out`; `false` for mixed families.
#[allow(clippy::too_many_arguments)] // the fields of one TCP header
fn packet(
    out: &mut Vec<u8>,
    src: SocketAddr,
    dst: SocketAddr,
    to_server: bool,
    seq: u32,
    ack: u32,
    flags: Flags,
    payload: &[u8],
) -> bool {
    out.clear();
    let (smac, dmac) = if to_server {
        (CLIENT_MAC, SERVER_MAC)
    } else {
        (SERVER_MAC, CLIENT_MAC)
    };
    let eth = PacketBuilder::ethernet2(smac, dmac);
    let ip = match (src.ip(), dst.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => eth.ipv4(a.octets(), b.octets(), 64),
        (IpAddr::V6(a), IpAddr::V6(b)) => eth.ipv6(a.octets(), b.octets(), 64),
        _ => return false,
    };
    let mut tcp = ip.tcp(src.port(), dst.port(), seq, 65_535);
    if flags.syn {
        tcp = tcp.syn();
    }
    if flags.ack {
        tcp = tcp.ack(ack);
    }
    if flags.psh {
        tcp = tcp.psh();
    }
    if flags.fin {
        tcp = tcp.fin();
    }
    tcp.write(out, payload).is_ok()
}

/// The capture thread's state.
struct Writer {
    files: Rotation,
    listener: Option<TcpListener>,
    clients: Vec<Client>,
    sessions: HashMap<u64, Session>,
    stats: Arc<CaptureStats>,
    scratch: Vec<u8>,
}

impl Writer {
    fn run(&mut self, rx: &Receiver<Event>) {
        loop {
            self.accept();
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(ev) => self.on_event(ev),
                Err(RecvTimeoutError::Timeout) => {
                    self.files.flush(&self.stats);
                    self.flush_clients();
                }
            }
        }
        // What workers queued while the stop was on its way.
        while let Ok(ev) = rx.try_recv() {
            self.on_event(ev);
        }
        // Sessions still open get their FINs, so the files end cleanly.
        let open: Vec<u64> = self.sessions.keys().copied().collect();
        for id in open {
            self.on_event(Event::Close {
                id,
                at: SystemTime::now(),
            });
        }
        self.files.flush(&self.stats);
        self.flush_clients();
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else { return };
        while let Ok((stream, _)) = l.accept() {
            if let Ok(c) = Client::new(stream) {
                self.clients.push(c);
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Stop => {}
            Event::Open {
                id,
                client,
                server,
                at,
            } => {
                // Start the sequence numbers from the flow id: stable, distinct.
                let isn = (id as u32).wrapping_mul(0x9e37_79b9);
                let s = Session {
                    client,
                    server,
                    base: [isn.wrapping_add(1), (!isn).wrapping_add(1)],
                    seq: [isn, !isn],
                    fin: [false; 2],
                };
                let syn = Flags {
                    syn: true,
                    ..Flags::default()
                };
                let syn_ack = Flags {
                    syn: true,
                    ack: true,
                    ..Flags::default()
                };
                let ack = Flags {
                    ack: true,
                    ..Flags::default()
                };
                self.emit(&s, Direction::ToServer, s.seq[0], 0, syn, &[], at);
                self.emit(
                    &s,
                    Direction::ToClient,
                    s.seq[1],
                    s.seq[0].wrapping_add(1),
                    syn_ack,
                    &[],
                    at,
                );
                let mut s = s;
                s.seq[0] = s.seq[0].wrapping_add(1);
                s.seq[1] = s.seq[1].wrapping_add(1);
                self.emit(&s, Direction::ToServer, s.seq[0], s.seq[1], ack, &[], at);
                self.sessions.insert(id, s);
            }
            Event::Data {
                id,
                dir,
                offset,
                bytes,
                at,
            } => {
                let Some(mut s) = self.sessions.remove(&id) else {
                    return;
                };
                let i = index(dir);
                if !s.fin[i] {
                    s.seq[i] = s.base[i].wrapping_add(offset as u32);
                    let flags = Flags {
                        ack: true,
                        psh: true,
                        ..Flags::default()
                    };
                    for chunk in bytes.chunks(SEGMENT) {
                        self.emit(&s, dir, s.seq[i], s.seq[1 - i], flags, chunk, at);
                        s.seq[i] = s.seq[i].wrapping_add(chunk.len() as u32);
                    }
                }
                self.sessions.insert(id, s);
            }
            Event::Fin {
                id,
                dir,
                offset,
                at,
            } => {
                if let Some(mut s) = self.sessions.remove(&id) {
                    let i = index(dir);
                    if !s.fin[i] {
                        s.seq[i] = s.base[i].wrapping_add(offset as u32);
                    }
                    self.fin(&mut s, dir, at);
                    self.sessions.insert(id, s);
                }
            }
            Event::Close { id, at } => {
                if let Some(mut s) = self.sessions.remove(&id) {
                    self.fin(&mut s, Direction::ToServer, at);
                    self.fin(&mut s, Direction::ToClient, at);
                }
            }
        }
    }

    fn fin(&mut self, s: &mut Session, dir: Direction, at: SystemTime) {
        let i = index(dir);
        if s.fin[i] {
            return;
        }
        let flags = Flags {
            ack: true,
            fin: true,
            ..Flags::default()
        };
        self.emit(s, dir, s.seq[i], s.seq[1 - i], flags, &[], at);
        s.seq[i] = s.seq[i].wrapping_add(1);
        s.fin[i] = true;
    }

    #[allow(clippy::too_many_arguments)] // the fields of one TCP header
    fn emit(
        &mut self,
        s: &Session,
        dir: Direction,
        seq: u32,
        ack: u32,
        flags: Flags,
        payload: &[u8],
        at: SystemTime,
    ) {
        let to_server = dir == Direction::ToServer;
        let (src, dst) = if to_server {
            (s.client, s.server)
        } else {
            (s.server, s.client)
        };
        let mut buf = std::mem::take(&mut self.scratch);
        if packet(&mut buf, src, dst, to_server, seq, ack, flags, payload) {
            let ts = at.duration_since(UNIX_EPOCH).unwrap_or_default();
            let pkt = PcapPacket::new(ts, buf.len() as u32, &buf);
            self.files.write(&pkt, &self.stats);
            self.clients.retain_mut(|c| {
                let ok = c.write(&pkt);
                if !ok {
                    self.stats.clients_dropped.fetch_add(1, Ordering::Relaxed);
                }
                ok
            });
        }
        self.scratch = buf;
    }

    fn flush_clients(&mut self) {
        self.clients.retain_mut(|c| {
            let ok = c.flush_pending();
            if !ok {
                self.stats.clients_dropped.fetch_add(1, Ordering::Relaxed);
            }
            ok
        });
    }
}

/// A non-blocking socket with a bounded backlog of unsent bytes.
struct Sink {
    stream: TcpStream,
    pending: Vec<u8>,
    dead: bool,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.dead {
            return Err(std::io::Error::other("PCAP-over-IP client dropped"));
        }
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        while !self.pending.is_empty() {
            match self.stream.write(&self.pending) {
                Ok(0) => {
                    self.dead = true;
                    break;
                }
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.dead = true;
                    break;
                }
            }
        }
        if self.pending.len() > CLIENT_BACKLOG {
            self.dead = true;
        }
        if self.dead {
            return Err(std::io::Error::other("PCAP-over-IP client dropped"));
        }
        Ok(())
    }
}

/// A writer shared by a [`PcapWriter`] and its owner, which flushes it
/// (`PcapWriter` gives no access to its writer). The capture thread only.
struct Shared<T>(Rc<RefCell<T>>);

impl<T> Shared<T> {
    fn new(t: T) -> (Shared<T>, Shared<T>) {
        let rc = Rc::new(RefCell::new(t));
        (Shared(rc.clone()), Shared(rc))
    }
}

impl<T: Write> Write for Shared<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// One PCAP-over-IP client: a pcap stream (global header first).
struct Client {
    pcap: PcapWriter<Shared<Sink>>,
    sink: Shared<Sink>,
}

impl Client {
    fn new(stream: TcpStream) -> anyhow::Result<Client> {
        stream.set_nonblocking(true)?;
        let _ = stream.set_nodelay(true);
        let (a, sink) = Shared::new(Sink {
            stream,
            pending: Vec::new(),
            dead: false,
        });
        Ok(Client {
            pcap: PcapWriter::new(a)?,
            sink,
        })
    }

    /// Queues `pkt` and sends what the socket takes; `false` once dropped.
    fn write(&mut self, pkt: &PcapPacket<'_>) -> bool {
        self.pcap.write_packet(pkt).is_ok() && self.flush_pending()
    }

    fn flush_pending(&mut self) -> bool {
        self.sink.flush().is_ok()
    }
}

/// The pcap files: the current one, rotated by size, the oldest removed.
struct Rotation {
    dir: PathBuf,
    max_bytes: u64,
    max_files: usize,
    current: Option<(PcapWriter<Shared<PcapFile>>, Shared<PcapFile>)>,
    bytes: u64,
    next: u64,
}

/// A pcap file being written.
type PcapFile = BufWriter<File>;

/// File names: `tlsinspect-<start unix secs>-<sequence>.pcap`, so that
/// names sort by age.
const PREFIX: &str = "tlsinspect-";

impl Rotation {
    fn new(dir: &Path, max_bytes: u64, max_files: usize) -> Rotation {
        Rotation {
            dir: dir.to_owned(),
            max_bytes,
            max_files,
            current: None,
            bytes: 0,
            next: 0,
        }
    }

    fn write(&mut self, pkt: &PcapPacket<'_>, stats: &CaptureStats) {
        let size = 16 + pkt.data.len() as u64;
        if self.current.is_some() && self.bytes + size > self.max_bytes {
            self.rotate(stats);
        }
        if self.current.is_none() && !self.open(stats) {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some((w, _)) = self.current.as_mut() else {
            return;
        };
        match w.write_packet(pkt) {
            Ok(_) => {
                self.bytes += size;
                stats.packets.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn open(&mut self, stats: &CaptureStats) -> bool {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let name = format!("{PREFIX}{secs}-{:06}.pcap", self.next);
        self.next += 1;
        let path = self.dir.join(name);
        // Decrypted traffic: readable by the appliance's user only, as the key log.
        let file = match std::os::unix::fs::OpenOptionsExt::mode(
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
            0o600,
        )
        .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                log::warn!("capture: cannot create {}: {e}", path.display());
                return false;
            }
        };
        let (a, b) = Shared::new(BufWriter::new(file));
        match PcapWriter::new(a) {
            Ok(w) => {
                self.current = Some((w, b));
                self.bytes = 24;
                self.prune();
                true
            }
            Err(_) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn rotate(&mut self, stats: &CaptureStats) {
        self.flush(stats);
        self.current = None;
    }

    /// Deletes the oldest files beyond `max_files` (the current one counts).
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut ours: Vec<(u64, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let rest = name.strip_prefix(PREFIX)?.strip_suffix(".pcap")?;
                let (secs, seq) = rest.split_once('-')?;
                Some((secs.parse().ok()?, seq.parse().ok()?, e.path()))
            })
            .collect();
        ours.sort();
        let extra = ours.len().saturating_sub(self.max_files);
        for (_, _, p) in ours.into_iter().take(extra) {
            let _ = std::fs::remove_file(p);
        }
    }

    fn flush(&mut self, stats: &CaptureStats) {
        if let Some((_, file)) = self.current.as_mut() {
            if file.flush().is_err() {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
