//! The traffic-log outputs against the real servers from Debian: rsyslogd
//! receives RFC 5424 records on a local socket, over UDP and over TCP;
//! redis-server holds them in its list and publishes them on a channel.
//! Killing a server never blocks the writer (a worker, in the appliance);
//! after a restart the output reconnects by itself and delivers.
//!
//! Servers listen on 127.0.0.1 and on sockets in the test's own directory,
//! and are stopped by their PID.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tlsinspect::log::output::{OutputKind, OutputSpec, RedisMode, SyslogTarget};
use tlsinspect::log::EveLog;

/// A server process, killed by its PID when dropped.
struct Server {
    child: Child,
}

impl Server {
    fn spawn(cmd: &mut Command) -> Server {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?} (tests/run.sh installs it): {e}"));
        Server { child }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn records(n: usize, from: usize) -> Vec<Value> {
    (from..from + n)
        .map(|i| json!({ "timestamp": "2026-12-02T12:00:00.000000+0000", "event_type": "flow", "n": i }))
        .collect()
}

struct Rsyslog {
    conf: PathBuf,
    dir: PathBuf,
    out: PathBuf,
    socket: PathBuf,
    udp: u16,
    tcp: u16,
}

impl Rsyslog {
    fn new(dir: &Path) -> Rsyslog {
        let r = Rsyslog {
            conf: dir.join("rsyslog.conf"),
            dir: dir.to_path_buf(),
            out: dir.join("received.log"),
            socket: dir.join("log.sock"),
            udp: free_udp_port(),
            tcp: free_tcp_port(),
        };
        std::fs::write(
            &r.conf,
            format!(
                r#"global(workDirectory="{dir}")
module(load="imuxsock" SysSock.Use="off")
module(load="imudp")
module(load="imtcp")
input(type="imuxsock" Socket="{sock}" UseSpecialParser="off")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
template(name="eve" type="string" string="%inputname% %protocol-version% %syslogfacility-text% %syslogseverity-text% %app-name% %msg%\n")
action(type="omfile" file="{out}" template="eve")
"#,
                dir = r.dir.display(),
                sock = r.socket.display(),
                udp = r.udp,
                tcp = r.tcp,
                out = r.out.display(),
            ),
        )
        .unwrap();
        r
    }

    fn start(&self) -> Server {
        let s = Server::spawn(
            Command::new("rsyslogd")
                .arg("-n")
                .arg("-f")
                .arg(&self.conf)
                .arg("-i")
                .arg(self.dir.join("rsyslogd.pid")),
        );
        let tcp = self.tcp;
        wait_until("rsyslogd to listen", Duration::from_secs(10), || {
            self.socket.exists() && std::net::TcpStream::connect(("127.0.0.1", tcp)).is_ok()
        });
        s
    }

    /// Received lines by input module: (severity, app-name, JSON record).
    fn received(&self, input: &str) -> Vec<(String, String, Value)> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut parts = l.splitn(6, ' ');
                let (inp, ver, fac, sev, app, msg) = (
                    parts.next()?,
                    parts.next()?,
                    parts.next()?,
                    parts.next()?,
                    parts.next()?,
                    parts.next()?,
                );
                (inp == input).then(|| {
                    assert_eq!(ver, "1", "an RFC 5424 message: {l}");
                    assert_eq!(fac, "local5", "{l}");
                    let v = serde_json::from_str(msg.trim()).unwrap_or_else(|e| panic!("{e}: {l}"));
                    (sev.to_string(), app.to_string(), v)
                })
            })
            .collect()
    }
}

#[test]
fn rsyslog_receives_records_on_the_local_socket_over_udp_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let rs = Rsyslog::new(dir.path());
    let server = rs.start();
    let syslog = |target: SyslogTarget| OutputSpec {
        kind: OutputKind::Syslog {
            target,
            facility: 21,
        },
        queue: 1_000,
    };
    let specs = [
        syslog(SyslogTarget::Local(rs.socket.clone())),
        syslog(SyslogTarget::Udp(format!("127.0.0.1:{}", rs.udp))),
        syslog(SyslogTarget::Tcp(format!("127.0.0.1:{}", rs.tcp))),
    ];
    let log = EveLog::open(&specs).unwrap();
    for r in records(50, 0) {
        log.write_value(&r);
    }
    log.write_value(&json!({ "event_type": "alert", "n": 50 }));
    for input in ["imuxsock", "imudp", "imtcp"] {
        wait_until(
            &format!("51 records through {input}"),
            Duration::from_secs(10),
            || rs.received(input).len() == 51,
        );
        let got = rs.received(input);
        for (i, (sev, app, v)) in got.iter().enumerate() {
            assert_eq!(app, "tlsinspect");
            assert_eq!(v["n"], i, "{input}: in order");
            assert_eq!(sev, if i == 50 { "warning" } else { "info" });
        }
    }

    // The receiver dies: the writer goes on at once, the outputs retry.
    server.kill();
    let started = Instant::now();
    for r in records(20, 100) {
        log.write_value(&r);
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    std::thread::sleep(Duration::from_millis(300));
    let _server = rs.start();
    let counts = log.close();
    for c in &counts {
        assert_eq!(
            c.written + c.dropped,
            71,
            "every record accounted for: {c:?}"
        );
    }
    let after = |input: &str| {
        rs.received(input)
            .iter()
            .filter(|(_, _, v)| v["n"].as_u64().is_some_and(|n| n >= 100))
            .count()
    };
    wait_until(
        "the local socket's records after the restart",
        Duration::from_secs(10),
        || after("imuxsock") == 20,
    );
    // TCP without application acks (RFC 6587) can lose what the kernel
    // accepted for the dead connection; the rest is delivered on reconnect.
    wait_until(
        "TCP records after the restart",
        Duration::from_secs(10),
        || after("imtcp") >= 18,
    );
    assert!(counts[0].errors > 0, "the outage was noticed: {counts:?}");
}

struct Redis {
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(&self) -> Server {
        let s = Server::spawn(
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--port")
                .arg(self.port.to_string())
                .arg("--dir")
                .arg(&self.dir),
        );
        wait_until("redis-server", Duration::from_secs(10), || {
            self.cli(&["PING"]).trim() == "PONG"
        });
        s
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

#[test]
fn redis_holds_the_records_in_its_list_and_publishes_them() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis {
        port: free_tcp_port(),
        dir: dir.path().to_path_buf(),
    };
    let server = redis.start();
    let address = format!("127.0.0.1:{}", redis.port);
    let mut sub = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string()])
        .args(["SUBSCRIBE", "eve-channel"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the subscriber", Duration::from_secs(10), || {
        redis
            .cli(&["PUBSUB", "NUMSUB", "eve-channel"])
            .lines()
            .nth(1)
            .is_some_and(|n| n.trim() == "1")
    });
    let log = EveLog::open(&[
        OutputSpec {
            kind: OutputKind::Redis {
                address: address.clone(),
                mode: RedisMode::List,
                key: "eve-list".into(),
            },
            queue: 1_000,
        },
        OutputSpec {
            kind: OutputKind::Redis {
                address,
                mode: RedisMode::Channel,
                key: "eve-channel".into(),
            },
            queue: 1_000,
        },
    ])
    .unwrap();
    for r in records(100, 0) {
        log.write_value(&r);
    }
    wait_until("100 records in the list", Duration::from_secs(10), || {
        redis.cli(&["LLEN", "eve-list"]).trim() == "100"
    });
    let first: Value =
        serde_json::from_str(redis.cli(&["LINDEX", "eve-list", "0"]).trim()).unwrap();
    assert_eq!(first["n"], 0);
    let last: Value =
        serde_json::from_str(redis.cli(&["LINDEX", "eve-list", "-1"]).trim()).unwrap();
    assert_eq!(last["n"], 99);
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    let mut published = Vec::new();
    while published.len() < 100 {
        let line = lines.next().expect("subscriber output").unwrap();
        // Not a terminal: redis-cli prints "message", the channel and the
        // payload on lines of their own.
        if line.starts_with('{') {
            published.push(serde_json::from_str::<Value>(&line).unwrap());
        }
    }
    assert_eq!(published[42]["n"], 42);
    let _ = sub.kill();
    let _ = sub.wait();

    // Redis dies: writing never waits; after the restart (empty, nothing
    // persisted) the list output reconnects and delivers every record.
    server.kill();
    let started = Instant::now();
    for r in records(50, 1000) {
        log.write_value(&r);
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    std::thread::sleep(Duration::from_millis(500));
    let _server = redis.start();
    wait_until(
        "the records after the restart",
        Duration::from_secs(15),
        || redis.cli(&["LLEN", "eve-list"]).trim() == "50",
    );
    let counts = log.close();
    assert_eq!(counts[0].written, 150, "{counts:?}");
    assert_eq!(counts[0].dropped, 0, "{counts:?}");
    assert!(counts[0].errors > 0, "{counts:?}");
    let first: Value =
        serde_json::from_str(redis.cli(&["LINDEX", "eve-list", "0"]).trim()).unwrap();
    assert_eq!(first["n"], 1000);
}
