//! Where traffic-log records go: Suricata's outputs (`file`, `syslog`,
//! `unix_stream`, `unix_dgram`, `redis`), several at once.
//!
//! Why a queue and a thread per output: a worker that logs a flow must never
//! wait for a disk, a syslog daemon or a Redis server. [`EveLog`] encodes a
//! record once and offers the line to every output's bounded queue with
//! `try_send`; a full queue drops the line and counts it. Each output's
//! thread is the only writer of its sink, so lines never interleave, and it
//! retries a failed write after reconnecting, with a backoff, until it
//! succeeds or the appliance shuts down; meanwhile its queue absorbs
//! bursts. At shutdown every queue is drained for a bounded time and what
//! could not be written is counted and reported.

mod file;
mod redis;
mod socket;
mod syslog;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde_json::Value;
use tlsinspect_pipeline::api::{Alert, FlowLog, FlowMeta, FlowRecord};

pub use file::{FileSink, Rotation};
pub use redis::{encode_command, parse_reply, RedisMode, RedisSink, Reply};
pub use socket::UnixSink;
pub use syslog::{check_host_port, format_message, SyslogSink, SyslogTarget, FACILITIES};

use super::record;

/// Default capacity of an output's queue, in records.
pub const DEFAULT_QUEUE: usize = 10_000;

/// How long shutdown waits for the queues to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest pause between two attempts of a failing output.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A destination that takes one JSON line at a time (without the newline).
pub trait Sink: Send {
    /// Writes one record; an error means it was not delivered.
    fn write(&mut self, line: &[u8]) -> io::Result<()>;
    /// Pushes buffered lines out; called whenever the queue runs empty.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Opens the file or connection anew (SIGHUP).
    fn reopen(&mut self) -> io::Result<()>;
}

/// What an `[[output]]` table describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// `file`: JSON lines, rotated by size.
    File {
        /// The file.
        path: PathBuf,
        /// Size limit and files kept.
        rotation: Rotation,
    },
    /// `syslog`: RFC 5424.
    Syslog {
        /// Local socket, UDP or TCP receiver.
        target: SyslogTarget,
        /// Numeric facility.
        facility: u8,
    },
    /// `unix_stream`: lines on a stream socket.
    UnixStream(PathBuf),
    /// `unix_dgram`: one datagram per record.
    UnixDgram(PathBuf),
    /// `redis`: list or channel.
    Redis {
        /// `host:port`.
        address: String,
        /// RPUSH or PUBLISH.
        mode: RedisMode,
        /// List or channel name.
        key: String,
    },
}

/// One validated `[[output]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// Where records go.
    pub kind: OutputKind,
    /// Records the queue holds before new ones are dropped.
    pub queue: usize,
}

impl OutputSpec {
    /// The default output: one file.
    pub fn file(path: PathBuf) -> OutputSpec {
        OutputSpec {
            kind: OutputKind::File {
                path,
                rotation: Rotation::default(),
            },
            queue: DEFAULT_QUEUE,
        }
    }

    /// A short name for logs and metrics labels, e.g. `redis 127.0.0.1:6379`.
    pub fn name(&self) -> String {
        match &self.kind {
            OutputKind::File { path, .. } => format!("file {}", path.display()),
            OutputKind::Syslog { target, .. } => format!("syslog {target}"),
            OutputKind::UnixStream(p) => format!("unix_stream {}", p.display()),
            OutputKind::UnixDgram(p) => format!("unix_dgram {}", p.display()),
            OutputKind::Redis { address, key, .. } => format!("redis {address} {key}"),
        }
    }

    /// The type name as in the config.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            OutputKind::File { .. } => "file",
            OutputKind::Syslog { .. } => "syslog",
            OutputKind::UnixStream(_) => "unix_stream",
            OutputKind::UnixDgram(_) => "unix_dgram",
            OutputKind::Redis { .. } => "redis",
        }
    }

    fn sink(&self) -> io::Result<Box<dyn Sink>> {
        Ok(match &self.kind {
            OutputKind::File { path, rotation } => Box::new(FileSink::open(path, *rotation)?),
            OutputKind::Syslog { target, facility } => {
                Box::new(SyslogSink::new(target.clone(), *facility))
            }
            OutputKind::UnixStream(p) => Box::new(UnixSink::new(p.clone(), false)),
            OutputKind::UnixDgram(p) => Box::new(UnixSink::new(p.clone(), true)),
            OutputKind::Redis { address, mode, key } => {
                Box::new(RedisSink::new(address.clone(), *mode, key.clone()))
            }
        })
    }
}

/// Counters of one output.
#[derive(Debug, Default)]
pub struct OutputStats {
    /// Records delivered.
    pub written: AtomicU64,
    /// Records lost: queue full, refused by the receiver, or left at shutdown.
    pub dropped: AtomicU64,
    /// Failed write attempts (each followed by a reconnect and a retry).
    pub errors: AtomicU64,
}

/// A snapshot of one output's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputCounts {
    /// [`OutputSpec::name`].
    pub name: String,
    /// [`OutputSpec::type_name`].
    pub kind: &'static str,
    /// Records delivered.
    pub written: u64,
    /// Records lost.
    pub dropped: u64,
    /// Failed write attempts.
    pub errors: u64,
}

struct Shared {
    stats: OutputStats,
    reopen: AtomicBool,
    closing: AtomicBool,
}

struct Output {
    name: String,
    kind: &'static str,
    tx: Sender<Arc<[u8]>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The traffic log: encodes records as EVE and hands them to the outputs.
pub struct EveLog {
    outputs: Vec<Output>,
}

impl std::fmt::Debug for EveLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.outputs.iter().map(|o| o.name.as_str()).collect();
        f.debug_struct("EveLog").field("outputs", &names).finish()
    }
}

fn run_output(mut sink: Box<dyn Sink>, rx: Receiver<Arc<[u8]>>, shared: Arc<Shared>, name: String) {
    let stats = &shared.stats;
    let mut drain_deadline: Option<Instant> = None;
    let mut failing = false;
    loop {
        if shared.reopen.swap(false, Ordering::Relaxed) {
            if let Err(e) = sink.reopen() {
                log::warn!("traffic log output {name}: reopening: {e}");
            }
        }
        let closing = shared.closing.load(Ordering::Relaxed);
        if closing && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
        }
        let line = match rx.try_recv() {
            Ok(l) => l,
            Err(_) => {
                if let Err(e) = sink.flush() {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!("traffic log output {name}: {e}");
                }
                if closing {
                    return;
                }
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(l) => l,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        };
        let mut backoff = Duration::from_millis(50);
        loop {
            match sink.write(&line) {
                Ok(()) => {
                    stats.written.fetch_add(1, Ordering::Relaxed);
                    if failing {
                        failing = false;
                        log::info!("traffic log output {name}: delivering again");
                    }
                    break;
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        failing = true;
                        log::warn!("traffic log output {name}: {e}; retrying");
                    }
                    let past_deadline = drain_deadline.is_some_and(|d| Instant::now() >= d);
                    if e.kind() == io::ErrorKind::InvalidData || past_deadline {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if shared.closing.load(Ordering::Relaxed) && drain_deadline.is_none() {
                        drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
                    }
                }
            }
        }
        if drain_deadline.is_some_and(|d| Instant::now() >= d) {
            let left = rx.len() as u64;
            stats.dropped.fetch_add(left, Ordering::Relaxed);
            while rx.try_recv().is_ok() {}
            let _ = sink.flush();
            return;
        }
    }
}

impl EveLog {
    /// Opens every output (files are created now, so a bad path fails the
    /// start; connections are made by the output threads and retried).
    pub fn open(specs: &[OutputSpec]) -> io::Result<EveLog> {
        let mut outputs = Vec::with_capacity(specs.len());
        for spec in specs {
            let name = spec.name();
            let sink = spec
                .sink()
                .map_err(|e| io::Error::new(e.kind(), format!("output {name}: {e}")))?;
            let (tx, rx) = bounded::<Arc<[u8]>>(spec.queue.max(1));
            let shared = Arc::new(Shared {
                stats: OutputStats::default(),
                reopen: AtomicBool::new(false),
                closing: AtomicBool::new(false),
            });
            let s2 = shared.clone();
            let n2 = name.clone();
            let thread = std::thread::Builder::new()
                .name(format!("log-{}", spec.type_name()))
                .spawn(move || run_output(sink, rx, s2, n2))?;
            outputs.push(Output {
                name,
                kind: spec.type_name(),
                tx,
                shared,
                thread: Mutex::new(Some(thread)),
            });
        }
        Ok(EveLog { outputs })
    }

    /// Offers one encoded record to every output.
    pub fn write_value(&self, value: &Value) {
        let Ok(line) = serde_json::to_vec(value) else {
            return;
        };
        let line: Arc<[u8]> = line.into();
        for o in &self.outputs {
            match o.tx.try_send(line.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    o.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Asks every output to reopen its file or connection (SIGHUP).
    pub fn reopen(&self) {
        for o in &self.outputs {
            o.shared.reopen.store(true, Ordering::Relaxed);
        }
    }

    /// Each output's counters.
    pub fn counts(&self) -> Vec<OutputCounts> {
        self.outputs
            .iter()
            .map(|o| OutputCounts {
                name: o.name.clone(),
                kind: o.kind,
                written: o.shared.stats.written.load(Ordering::Relaxed),
                dropped: o.shared.stats.dropped.load(Ordering::Relaxed),
                errors: o.shared.stats.errors.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Records dropped by all outputs together.
    pub fn dropped(&self) -> u64 {
        self.counts().iter().map(|c| c.dropped).sum()
    }

    /// Drains the queues (for at most a few seconds while an output is
    /// failing) and stops the output threads; records offered afterwards are
    /// counted as dropped. Returns the final counters.
    pub fn close(&self) -> Vec<OutputCounts> {
        for o in &self.outputs {
            o.shared.closing.store(true, Ordering::Relaxed);
        }
        for o in &self.outputs {
            let handle = o.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
        self.counts()
    }
}

impl Drop for EveLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl FlowLog for EveLog {
    fn record(&self, rec: &FlowRecord) {
        for v in record::flow_events(rec) {
            self.write_value(&v);
        }
    }

    fn alert(&self, meta: &FlowMeta, alert: &Alert, timestamp: SystemTime) {
        self.write_value(&record::alert_json(meta, alert, timestamp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::net::UnixListener;

    #[test]
    fn file_output_gets_every_record_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eve.json");
        let log = Arc::new(EveLog::open(&[OutputSpec::file(path.clone())]).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        log.write_value(&json!({ "t": t, "i": i, "body": "y".repeat(300) }));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let counts = log.close();
        assert_eq!(counts[0].written, 2000, "{counts:?}");
        assert_eq!(counts[0].dropped, 0);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2000);
        let mut last = [-1i64; 4];
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let t = v["t"].as_u64().unwrap() as usize;
            let i = v["i"].as_i64().unwrap();
            assert!(i > last[t], "per-writer order kept");
            last[t] = i;
        }
        log.write_value(&json!({"late": true}));
        assert_eq!(
            log.counts()[0].dropped,
            1,
            "after close: counted, not written"
        );
    }

    #[test]
    fn a_stalled_output_drops_and_never_blocks_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("stalled.sock");
        // Accepts nothing and reads nothing: the kernel buffer fills, then
        // the output's write times out and retries while the queue fills.
        let _listener = UnixListener::bind(&sock).unwrap();
        let file = dir.path().join("eve.json");
        let log = EveLog::open(&[
            OutputSpec {
                kind: OutputKind::UnixStream(sock),
                queue: 16,
            },
            OutputSpec::file(file.clone()),
        ])
        .unwrap();
        let started = Instant::now();
        for i in 0..5_000 {
            log.write_value(&json!({ "i": i, "pad": "z".repeat(1000) }));
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "writers never wait: {:?}",
            started.elapsed()
        );
        let counts = log.close();
        assert!(counts[0].dropped > 4_000, "{counts:?}");
        assert_eq!(counts[1].written, 5_000, "the healthy output is unaffected");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().lines().count(),
            5_000
        );
    }
}
