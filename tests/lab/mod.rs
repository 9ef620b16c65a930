//! Lab support for the integration tests (`mod lab;` from `tests/lab_*.rs`).
//!
//! The topology itself is `tlsinspect::demo::lab` (one implementation for
//! tests, demo and benchmark); this module adds what only tests use: nginx as
//! the origin, curl and openssl in the client namespace, the appliance binary
//! built by cargo, and the built-in peers (ping, UDP echo) run as
//! `tlsinspect lab-helper ...` inside the namespaces.
#![allow(dead_code)] // each test binary uses a different part

#[path = "../eve/mod.rs"]
mod eve;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;

pub use tlsinspect::demo::geneve::MalformedResult;
pub use tlsinspect::demo::lab::Fleet;
pub use tlsinspect::demo::lab::{Lab, LabMode, LabSpec};
pub use tlsinspect::demo::lb::LbStats;
/// A running load balancer (the one the benchmark starts too).
pub use tlsinspect::demo::lb_process::LbProcess as Lb;
pub use tlsinspect::demo::pki::{self, LabPki};
pub use tlsinspect::demo::probe::{self, PingResult, UdpResult};

/// The server name nginx answers to (on every lab server address).
pub const SERVER_NAME: &str = "www.example.com";

/// The tlsinspect binary cargo built for this test run.
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tlsinspect"))
}

/// Skips (returns true, with a message) unless the test can build labs.
pub fn skip_without_root() -> bool {
    if !tlsinspect::demo::lab::is_root() {
        eprintln!("skipped: the lab tests need root (network namespaces)");
        return true;
    }
    false
}

pub use tlsinspect::demo::lab::Offloads;

thread_local! {
    static OFFLOADS: std::cell::Cell<Offloads> = const { std::cell::Cell::new(Offloads::Off) };
}

/// The offload setting labs built on this thread get (each test runs on its own thread).
fn offloads() -> Offloads {
    OFFLOADS.with(std::cell::Cell::get)
}

/// Runs `f` with every lab it builds in the offload setting `o` (DESIGN.md
/// §8: every lab test runs in both), so one test body serves both settings.
pub fn with_offloads<T>(o: Offloads, f: impl FnOnce() -> T) -> T {
    let before = OFFLOADS.with(|c| c.replace(o));
    let r = f();
    OFFLOADS.with(|c| c.set(before));
    r
}

/// A lab with its PKI, working directory and origin.
pub struct TestLab {
    pub lab: Lab,
    pub dir: tempfile::TempDir,
    pub pki: LabPki,
}

impl TestLab {
    /// Builds a lab in `mode` for the test `tag` with the given clients and servers.
    pub fn build(
        tag: &str,
        mode: LabMode,
        clients: &[Ipv4Addr],
        servers: &[Ipv4Addr],
    ) -> anyhow::Result<TestLab> {
        Self::build_with_names(tag, mode, clients, servers, &[])
    }

    /// Like [`TestLab::build`], with more DNS names in the origin certificate
    /// (nginx answers every name: its one server block is the default).
    pub fn build_with_names(
        tag: &str,
        mode: LabMode,
        clients: &[Ipv4Addr],
        servers: &[Ipv4Addr],
        extra_names: &[&str],
    ) -> anyhow::Result<TestLab> {
        let dir = tempfile::Builder::new()
            .prefix("tlsinspect-lab-")
            .tempdir()?;
        let mut names = vec![SERVER_NAME.to_owned()];
        names.extend(extra_names.iter().map(|n| n.to_string()));
        names.extend(servers.iter().map(|s| s.to_string()));
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let pki = pki::create(&dir.path().join("pki"), &names)?;
        let lab = Lab::build(LabSpec {
            offloads: offloads(),
            prefix: tlsinspect::demo::lab::unique_prefix(tag),
            mode,
            clients: clients.to_vec(),
            servers: servers.to_vec(),
        })?;
        Ok(TestLab { lab, dir, pki })
    }

    /// Path inside the test's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The document root of the nginx that [`TestLab::start_nginx`] starts.
    pub fn nginx_html(&self) -> PathBuf {
        self.path("nginx").join("html")
    }

    /// Runs a built-in peer inside `ns` and parses its JSON answer.
    pub fn helper<T: serde::de::DeserializeOwned>(
        &self,
        ns: &str,
        args: &[&str],
    ) -> anyhow::Result<T> {
        let mut full = vec!["lab-helper"];
        full.extend_from_slice(args);
        let out = self.lab.exec(ns, &exe().display().to_string(), &full)?;
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.lines().last().unwrap_or_default())
            .with_context(|| format!("lab-helper {args:?} printed {text:?}"))
    }

    /// Pings `to` from the client address `from`.
    pub fn ping(&self, from: Ipv4Addr, to: Ipv4Addr, count: u32) -> anyhow::Result<PingResult> {
        self.helper(
            self.lab.client_ns(),
            &[
                "ping",
                "--source",
                &from.to_string(),
                "--to",
                &to.to_string(),
                "--count",
                &count.to_string(),
            ],
        )
    }

    /// Starts the built-in UDP echo on `addr:port` in the server ns.
    pub fn start_udp_echo(&self, addr: Ipv4Addr, port: u16) -> anyhow::Result<u32> {
        let mut cmd = self.lab.command(
            self.lab.server_ns(),
            exe(),
            &[
                "lab-helper",
                "udp-echo",
                "--listen",
                &format!("{addr}:{port}"),
            ],
        );
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let pid = self.lab.spawn("udp echo", cmd)?;
        // Binding is immediate; a short pause keeps the first datagram from racing it.
        std::thread::sleep(Duration::from_millis(100));
        Ok(pid)
    }

    /// Sends one UDP datagram from `from:sport` to `to:port` and waits for the echo.
    pub fn udp(
        &self,
        from: Ipv4Addr,
        sport: u16,
        to: Ipv4Addr,
        port: u16,
        payload: &str,
    ) -> anyhow::Result<UdpResult> {
        self.helper(
            self.lab.client_ns(),
            &[
                "udp-send",
                "--source",
                &format!("{from}:{sport}"),
                "--to",
                &format!("{to}:{port}"),
                "--payload",
                payload,
            ],
        )
    }

    /// Writes the appliance config for this lab (the demo template) and
    /// returns its path and the traffic-log path.
    pub fn write_config(&self, in_scope: Ipv4Addr) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (lan, wan) = self.lab.appliance_ports();
        let mode = match self.lab.mode() {
            LabMode::Tun => "tun",
            LabMode::AfPacket | LabMode::Bridge => "af_packet",
            LabMode::Geneve => "geneve",
        };
        let log = self.path("traffic.jsonl");
        let text = tlsinspect::demo::render_config(
            tlsinspect::demo::DEMO_CONFIG_TEMPLATE,
            &tlsinspect::demo::ConfigVars {
                mode,
                lan,
                wan,
                log: &log,
                control: &self.path("control.sock"),
                roots: &self.pki.origin_root,
                ca_cert: &self.pki.policy_ca_cert,
                ca_key: &self.pki.policy_ca_key,
                in_scope,
            },
        );
        let path = self.path("tlsinspect.toml");
        std::fs::write(&path, text)?;
        Ok((path, log))
    }

    /// Starts `tlsinspect run --config` in the appliance ns and waits until
    /// a ping from `probe_from` to `probe_to` crosses it.
    pub fn start_appliance(
        &self,
        config: &Path,
        probe_from: Ipv4Addr,
        probe_to: Ipv4Addr,
    ) -> anyhow::Result<Appliance> {
        let out = self.path("appliance.out");
        let err = self.path("appliance.err");
        let mut cmd = self.lab.command(
            self.lab.appliance_ns(),
            exe(),
            &["run", "--config", &config.display().to_string()],
        );
        cmd.stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .env("RUST_LOG", "info");
        let pid = self.lab.spawn("appliance", cmd)?;
        let app = Appliance { pid, out, err };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if !self.lab.is_running(pid) {
                bail!("the appliance exited during start-up: {}", app.stderr());
            }
            let p: PingResult = self.helper(
                self.lab.client_ns(),
                &[
                    "ping",
                    "--source",
                    &probe_from.to_string(),
                    "--to",
                    &probe_to.to_string(),
                    "--count",
                    "1",
                    "--timeout-ms",
                    "300",
                ],
            )?;
            if p.received == 1 {
                return Ok(app);
            }
            if Instant::now() > deadline {
                bail!(
                    "no ping crossed the appliance within 20 s; stderr: {}",
                    app.stderr()
                );
            }
        }
    }

    /// Stops the appliance with SIGTERM and returns its stdout (final counters).
    pub fn stop_appliance(&self, app: &Appliance) -> anyhow::Result<String> {
        let status = self.lab.stop(app.pid, "TERM", Duration::from_secs(20))?;
        if !status.success() {
            bail!("the appliance exited with {status}: {}", app.stderr());
        }
        Ok(std::fs::read_to_string(&app.out).unwrap_or_default())
    }

    /// Starts nginx in the server ns: HTTPS on 443 (HTTP/2 enabled) on every
    /// server address, the origin certificate, an access log, and a 50 MB
    /// random file at `/big.bin`. Returns the file's SHA-256. Locations that
    /// answer 200 to any method (nginx refuses POST to static files):
    /// `/upload/`, `/api/`, `/octo/` and `*/git-receive-pack` (a fake git push);
    /// `PUT /put/<name>` stores the body as `<root>/html/put/<name>` (see
    /// [`TestLab::nginx_html`]).
    pub fn start_nginx(&self) -> anyhow::Result<Nginx> {
        let root = self.path("nginx");
        let html = root.join("html");
        std::fs::create_dir_all(&html)?;
        for d in ["tmp", "logs"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        let mut big = vec![0u8; 50 << 20];
        rand::Rng::fill(&mut rand::thread_rng(), &mut big[..]);
        std::fs::write(html.join("big.bin"), &big)?;
        let big_sha256 = probe::sha256_hex(&big);
        drop(big);
        std::fs::write(html.join("index.html"), "hello from nginx\n")?;
        let listens: String = self
            .lab
            .servers()
            .iter()
            .map(|s| format!("    listen {s}:443 ssl http2;\n"))
            .collect();
        let r = root.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nuser root;\npid {r}/nginx.pid;\nerror_log {r}/logs/error.log warn;\n\
             worker_rlimit_nofile 20000;\nevents {{ worker_connections 16384; }}\n\
             http {{\n  access_log {r}/logs/access.log;\n  client_body_temp_path {r}/tmp/body;\n  proxy_temp_path {r}/tmp/proxy;\n\
               fastcgi_temp_path {r}/tmp/fastcgi;\n  uwsgi_temp_path {r}/tmp/uwsgi;\n  scgi_temp_path {r}/tmp/scgi;\n\
               types {{ text/html html; application/octet-stream bin; }}\n  sendfile on;\n\
               server {{\n{listens}    server_name {SERVER_NAME};\n    ssl_certificate {};\n    ssl_certificate_key {};\n\
                 root {};\n\
                 location /upload/ {{ return 200 \"upload ok\\n\"; }}\n\
                 location /put/ {{ dav_methods PUT; create_full_put_path on; client_max_body_size 100m; }}\n\
                 location /api/ {{ return 200 \"api ok\\n\"; }}\n\
                 location ~ /git-receive-pack$ {{ return 200 \"pushed\\n\"; }}\n\
                 location /octo/ {{ return 200 \"repo page\\n\"; }}\n  }}\n}}\n",
            self.pki.origin_cert.display(),
            self.pki.origin_key.display(),
            html.display()
        );
        let conf_path = root.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = self.lab.command(
            self.lab.server_ns(),
            "nginx",
            &[
                "-p",
                &r.to_string(),
                "-c",
                &conf_path.display().to_string(),
                "-e",
                &format!("{r}/logs/error.log"),
            ],
        );
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let pid = self.lab.spawn("nginx", cmd)?;
        // Wait until it listens (checked from inside the server ns, no appliance involved).
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = self.lab.servers()[0];
        loop {
            let ok = self
                .lab
                .exec(
                    self.lab.server_ns(),
                    "curl",
                    &[
                        "-sS",
                        "-o",
                        "/dev/null",
                        "--cacert",
                        &self.pki.origin_root.display().to_string(),
                        "--resolve",
                        &format!("{SERVER_NAME}:443:{first}"),
                        &format!("https://{SERVER_NAME}/"),
                    ],
                )
                .is_ok();
            if ok {
                break;
            }
            if !self.lab.is_running(pid) || Instant::now() > deadline {
                let log = std::fs::read_to_string(root.join("logs/error.log")).unwrap_or_default();
                bail!("nginx did not come up: {log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Nginx {
            pid,
            big_sha256,
            access_log: root.join("logs/access.log"),
        })
    }

    /// Runs curl in the client ns from `from` against `https://www.example.com<path>`
    /// at `server`, trusting `trust`; the body goes to `out`.
    pub fn curl(
        &self,
        from: Ipv4Addr,
        server: Ipv4Addr,
        path: &str,
        trust: &Path,
        out: &Path,
        http2: bool,
    ) -> anyhow::Result<Curl> {
        let resolve = format!("{SERVER_NAME}:443:{server}");
        let url = format!("https://{SERVER_NAME}{path}");
        let args: Vec<String> = [
            "-sS",
            "-v",
            "--max-time",
            "120",
            "--interface",
            &from.to_string(),
            "--cacert",
            &trust.display().to_string(),
            "--resolve",
            &resolve,
            "-o",
            &out.display().to_string(),
            "-w",
            "%{http_code} %{http_version} %{ssl_verify_result} %{local_port}",
            if http2 { "--http2" } else { "--http1.1" },
            &url,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = self.lab.exec(self.lab.client_ns(), "curl", &args)?;
        let w = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        let verbose = String::from_utf8_lossy(&o.stderr).into_owned();
        let parts: Vec<&str> = w.split_whitespace().collect();
        if parts.len() != 4 {
            bail!("unexpected curl -w output {w:?}");
        }
        let issuer = verbose
            .lines()
            .find_map(|l| l.trim_start_matches('*').trim().strip_prefix("issuer:"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Ok(Curl {
            http_code: parts[0].parse()?,
            http_version: parts[1].to_owned(),
            ssl_verify_result: parts[2].parse()?,
            local_port: parts[3].parse()?,
            issuer,
        })
    }
}

impl TestLab {
    /// Runs `openssl s_client` in the client ns from `from` to `server:443`
    /// with SNI www.example.com, verifying against `trust`; returns what it
    /// printed (stdout and stderr), with `-showcerts` so the chain is there.
    pub fn s_client(
        &self,
        from: Ipv4Addr,
        server: Ipv4Addr,
        trust: &Path,
        extra: &[&str],
    ) -> anyhow::Result<SClient> {
        let mut cmd = self.lab.command(
            self.lab.client_ns(),
            "openssl",
            &[
                "s_client",
                "-connect",
                &format!("{server}:443"),
                "-bind",
                &format!("{from}:0"),
                "-servername",
                SERVER_NAME,
                "-CAfile",
                &trust.display().to_string(),
                "-verify_return_error",
                "-showcerts",
            ],
        );
        cmd.args(extra).stdin(Stdio::null());
        let o = cmd.output().context("running openssl s_client")?;
        Ok(SClient {
            success: o.status.success(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        })
    }
}

/// The fleet lab (`LabMode::Geneve`, DESIGN.md §13): the load balancer,
/// the stand-in appliances and the malformed-GENEVE probe.
impl TestLab {
    /// The fleet of this lab; fails unless it was built in `LabMode::Geneve`.
    pub fn fleet(&self) -> anyhow::Result<&Fleet> {
        self.lab
            .fleet()
            .context("not a fleet lab (build it with LabMode::Geneve)")
    }

    /// Starts the load balancer (`lab-helper lb`) in the lb ns, sending to
    /// every appliance of the fleet, with `extra` arguments (e.g.
    /// `["--vni", "7"]`), and waits for its first stats file. Appliances
    /// start unhealthy: see [`TestLab::wait_lb`] to wait for their checks.
    pub fn start_lb(&self, extra: &[&str]) -> anyhow::Result<Lb> {
        let addrs: Vec<Ipv4Addr> = self.fleet()?.appliances.iter().map(|m| m.addr).collect();
        Lb::start(&self.lab, &exe(), self.dir.path(), &addrs, extra)
    }

    /// Waits up to `timeout` for the load balancer's stats to satisfy `pred`
    /// and returns them; fails with the last stats seen.
    pub fn wait_lb(
        &self,
        lb: &Lb,
        timeout: Duration,
        pred: impl Fn(&LbStats) -> bool,
    ) -> anyhow::Result<LbStats> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = lb.stats()?;
            if pred(&s) {
                return Ok(s);
            }
            if !self.lab.is_running(lb.pid) {
                bail!("the load balancer exited: {}", lb.stderr());
            }
            if Instant::now() > deadline {
                bail!("load balancer stats not as expected within {timeout:?}: {s:#?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits up to 10 s for a download under way: a flow to `server`:443
    /// whose client port is none of `known` and that has sent the client
    /// more than 1,000 packets. Returns it.
    pub fn wait_download(
        &self,
        lb: &Lb,
        server: Ipv4Addr,
        known: &[u16],
    ) -> anyhow::Result<tlsinspect::demo::lb::FlowStats> {
        let srv = format!("{server}:443");
        let is_new = |f: &&tlsinspect::demo::lb::FlowStats| {
            f.server == srv && !known.contains(&lb_client_port(f)) && f.to_client > 1000
        };
        let s = self.wait_lb(lb, Duration::from_secs(10), |s| {
            s.flows.iter().any(|f| is_new(&f))
        })?;
        Ok(s.flows
            .iter()
            .find(is_new)
            .cloned()
            .expect("waited for above"))
    }

    /// Waits until the appliances' health states are `healthy` (in order).
    pub fn wait_health(&self, lb: &Lb, healthy: &[bool]) -> anyhow::Result<LbStats> {
        self.wait_lb(lb, Duration::from_secs(10), |s| {
            s.appliances
                .iter()
                .map(|a| a.healthy)
                .eq(healthy.iter().copied())
        })
    }

    /// Stops the load balancer with SIGTERM and returns its final stats.
    pub fn stop_lb(&self, lb: &Lb) -> anyhow::Result<LbStats> {
        lb.stop(&self.lab)
    }

    /// Starts the stand-in appliance (`lab-helper geneve-reflect`) in
    /// appliance namespace `i`: GENEVE on `:6081`, health on `:8081`.
    pub fn start_reflector(&self, i: usize) -> anyhow::Result<Reflector> {
        let m = self
            .fleet()?
            .appliances
            .get(i)
            .with_context(|| format!("no appliance {i} in the fleet"))?
            .clone();
        let drain_file = self.path(&format!("reflector{i}.drain"));
        let mut cmd = self.lab.command(
            &m.ns,
            exe(),
            &[
                "lab-helper",
                "geneve-reflect",
                "--listen",
                &format!("{}:6081", m.addr),
                "--health",
                &format!("{}:8081", m.addr),
                "--drain-file",
                &drain_file.display().to_string(),
            ],
        );
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let pid = self.lab.spawn(&format!("reflector {i}"), cmd)?;
        Ok(Reflector { pid, drain_file })
    }

    /// Starts `tlsinspect run --config` in the namespace `ns` (an appliance
    /// of the fleet) without waiting for it: in a fleet the load balancer's
    /// health checks say when it is up ([`TestLab::wait_health`]). Its
    /// stdout and stderr go to `appliance-<ns>.out`/`.err`.
    pub fn start_appliance_in(&self, ns: &str, config: &Path) -> anyhow::Result<Appliance> {
        let out = self.path(&format!("appliance-{ns}.out"));
        let err = self.path(&format!("appliance-{ns}.err"));
        let mut cmd = self.lab.command(
            ns,
            exe(),
            &["run", "--config", &config.display().to_string()],
        );
        cmd.stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .env("RUST_LOG", "info");
        let pid = self.lab.spawn(&format!("appliance in {ns}"), cmd)?;
        Ok(Appliance { pid, out, err })
    }

    /// Sends the malformed GENEVE packets (`lab-helper geneve-malformed`)
    /// from `source` in `ns` to `to` and counts replies within `wait`.
    pub fn geneve_malformed(
        &self,
        ns: &str,
        source: std::net::SocketAddr,
        to: std::net::SocketAddr,
        wait: Duration,
    ) -> anyhow::Result<MalformedResult> {
        self.helper(
            ns,
            &[
                "geneve-malformed",
                "--source",
                &source.to_string(),
                "--to",
                &to.to_string(),
                "--wait-ms",
                &wait.as_millis().to_string(),
            ],
        )
    }
}

/// Fleet-lab helpers both fleet tests use.
impl TestLab {
    /// Fetches `/` from `from` to `server` with `n` curls at once, trusting
    /// `trust`; each must get nginx's index page. Returns their local ports.
    pub fn concurrent_fetches(
        &self,
        from: Ipv4Addr,
        server: Ipv4Addr,
        trust: &Path,
        n: usize,
        tag: &str,
    ) -> anyhow::Result<Vec<u16>> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    scope.spawn(move || -> anyhow::Result<u16> {
                        let out = self.path(&format!("{tag}-{i}.html"));
                        let c = self.curl(from, server, "/", trust, &out, false)?;
                        anyhow::ensure!(c.http_code == 200, "{tag} fetch {i}: {c:?}");
                        anyhow::ensure!(
                            std::fs::read_to_string(&out)? == "hello from nginx\n",
                            "{tag} fetch {i}: body"
                        );
                        Ok(c.local_port)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a fetch thread panicked"))
                .collect()
        })
    }

    /// Starts `/big.bin` from `from` to `server` at `rate` (curl's
    /// `--limit-rate`, e.g. `5M`) in the background, into `out`; curl's
    /// `-w` (`%{http_code} %{local_port}`) goes to `out` + `.w`. Returns
    /// the PID ([`Lab::wait`] for its end).
    pub fn slow_download(
        &self,
        from: Ipv4Addr,
        server: Ipv4Addr,
        trust: &Path,
        rate: &str,
        out: &Path,
    ) -> anyhow::Result<u32> {
        let resolve = format!("{SERVER_NAME}:443:{server}");
        let url = format!("https://{SERVER_NAME}/big.bin");
        let mut cmd = self.lab.command(
            self.lab.client_ns(),
            "curl",
            &[
                "-sS",
                "--max-time",
                "120",
                "--limit-rate",
                rate,
                "--interface",
                &from.to_string(),
                "--cacert",
                &trust.display().to_string(),
                "--resolve",
                &resolve,
                "-o",
                &out.display().to_string(),
                "-w",
                "%{http_code} %{local_port}",
                "--http1.1",
                &url,
            ],
        );
        cmd.stdout(std::fs::File::create(out.with_extension("w"))?)
            .stderr(Stdio::null());
        self.lab.spawn("slow curl", cmd)
    }
}

/// The load balancer's flow from `client` port `port` to `server`:443.
pub fn lb_flow(
    s: &LbStats,
    client: Ipv4Addr,
    port: u16,
    server: Ipv4Addr,
) -> Option<&tlsinspect::demo::lb::FlowStats> {
    let (c, srv) = (format!("{client}:{port}"), format!("{server}:443"));
    s.flows.iter().find(|f| f.client == c && f.server == srv)
}

/// The client port of a flow in the load balancer's stats.
pub fn lb_client_port(f: &tlsinspect::demo::lb::FlowStats) -> u16 {
    f.client
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// A running stand-in appliance.
pub struct Reflector {
    pub pid: u32,
    /// While this file exists its health check answers 503.
    pub drain_file: PathBuf,
}

/// What `openssl s_client` printed.
#[derive(Debug)]
pub struct SClient {
    /// Whether it exited 0 (the handshake and verification succeeded).
    pub success: bool,
    /// stdout and stderr.
    pub output: String,
}

impl SClient {
    /// The `i:` (issuer) lines of the chain it was shown, leaf first.
    pub fn issuers(&self) -> Vec<String> {
        self.output
            .lines()
            .filter_map(|l| l.trim().strip_prefix("i:").map(|r| r.trim().to_owned()))
            .collect()
    }
}

/// A running nginx.
pub struct Nginx {
    pub pid: u32,
    /// SHA-256 of `/big.bin`.
    pub big_sha256: String,
    pub access_log: PathBuf,
}

/// What curl reported.
#[derive(Debug)]
pub struct Curl {
    pub http_code: u16,
    pub http_version: String,
    pub ssl_verify_result: i64,
    pub local_port: u16,
    /// The leaf's issuer as printed by `curl -v`.
    pub issuer: String,
}

/// A running appliance.
pub struct Appliance {
    pub pid: u32,
    out: PathBuf,
    err: PathBuf,
}

impl Appliance {
    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// What it wrote to stdout so far (the final counters once it stopped).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

/// SHA-256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(probe::sha256_hex(&data))
}

/// The traffic-log records (JSON lines), each checked against Suricata's
/// EVE schema and for its policy and scope ids (`tests/eve/`).
pub fn read_log(path: &Path) -> anyhow::Result<Vec<Value>> {
    let records = tlsinspect::demo::read_log(path)?;
    eve::assert_valid(&records);
    Ok(records)
}

/// Resident memory of process `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}

/// Open descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The value of `name` in the totals the appliance prints at exit
/// (`total: name value, name value, ...`; counters at zero are left out).
pub fn total(report: &str, name: &str) -> u64 {
    report
        .lines()
        .filter_map(|l| l.trim().strip_prefix("total:"))
        .flat_map(|l| l.split(','))
        .find_map(|kv| {
            let mut it = kv.split_whitespace();
            (it.next() == Some(name)).then(|| it.next()?.parse().ok())?
        })
        .unwrap_or(0)
}

/// The `flow` record of the connection from client port `port`.
pub fn flow_record(records: &[Value], port: u16) -> Option<&Value> {
    records
        .iter()
        .find(|r| r["event_type"] == "flow" && r["src_port"].as_u64() == Some(port.into()))
}

/// Asserts that the connection from client port `port` was logged as an
/// inspected flow of the demo policy and scope; returns its record.
pub fn assert_inspected_flow(records: &[Value], port: u16) -> &Value {
    let rec =
        flow_record(records, port).unwrap_or_else(|| panic!("no flow record for port {port}"));
    assert_eq!(rec["tlsinspect"]["action"], "inspected", "{rec}");
    assert_eq!(rec["tlsinspect"]["policy_id"], "pol-demo", "{rec}");
    assert_eq!(rec["tlsinspect"]["scope_id"], "sc-https", "{rec}");
    rec
}

/// When the flow of `record` began (`flow.start` of a flow record).
pub fn flow_start(record: &Value) -> Option<std::time::SystemTime> {
    tlsinspect::log::record::parse_timestamp(record["flow"]["start"].as_str()?)
}

/// The `flow` record of the connection `client` -> `server` that began at
/// or after `since`, the earliest such.
///
/// Unlike [`flow_record`] it cannot match an earlier connection that had
/// the same client port (the kernel reuses ports), and it matches the
/// server's address and port too. Take `since` just before starting the
/// connection.
pub fn connection_record(
    records: &[Value],
    client: (Ipv4Addr, u16),
    server: (Ipv4Addr, u16),
    since: std::time::SystemTime,
) -> Option<&Value> {
    records
        .iter()
        .filter(|r| {
            r["event_type"] == "flow"
                && r["src_ip"] == client.0.to_string()
                && r["src_port"] == client.1
                && r["dest_ip"] == server.0.to_string()
                && r["dest_port"] == server.1
        })
        .filter_map(|r| Some((flow_start(r)?, r)))
        .filter(|(start, _)| *start >= since)
        .min_by_key(|(start, _)| *start)
        .map(|(_, r)| r)
}

/// The `event` record (tls, http, ...) of the same flow as `flow`, by flow id.
pub fn event_of<'r>(records: &'r [Value], event: &str, flow: &Value) -> Option<&'r Value> {
    records
        .iter()
        .find(|r| r["event_type"] == event && r["flow_id"] == flow["flow_id"])
}
