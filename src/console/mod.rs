//! The operator console (DESIGN.md §10): server-rendered pages and a JSON
//! API over HTTPS, for the seed product's policy workflow, log audit and a
//! dashboard.
//!
//! Why it is built this way:
//! - It runs on its own thread with its own single-threaded tokio runtime
//!   ([`Console::start`]), started by `tlsinspect run` after the data plane.
//!   Nothing on the packet path waits for it; if it cannot bind, cannot make
//!   its certificate or a handler panics, forwarding goes on (a panic ends
//!   one connection's task, not the runtime).
//! - The configuration file stays the one source of truth: every page reads
//!   the file, and every change goes the way of `tlsinspect policy`
//!   ([`change`]): the file edited in place with `toml_edit` (comments kept),
//!   the whole result validated exactly as `validate` does (its error
//!   wording is what the browser shows), written atomically, then reloaded
//!   by the same handler the control socket runs. A change made with the CLI
//!   therefore shows on the next page load, and a restart never undoes a
//!   change made in the browser.
//! - The browser can only name what the console offers: policy keys from a
//!   fixed list, CA files inside `[console] ca_dirs`, and writes go to the
//!   config file, the audit log and the state dir only.
//! - The coupling to the traffic-log record shape is in one file
//!   ([`records`]), so a change of the record touches one place.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cert;
pub mod change;
pub mod dashboard;
pub mod pages;
pub mod records;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::Context as _;

use crate::appliance::Appliance;
use crate::config::Config;

/// What every request handler shares.
pub struct State {
    /// The running appliance: reload, status, counters.
    pub app: Arc<Appliance>,
    /// The configuration file (the one source of truth).
    pub config_path: PathBuf,
    /// Sessions and failed-login counters.
    pub auth: auth::Auth,
    /// The audit log of changes.
    pub audit: audit::AuditLog,
    /// Samples of the data-plane counters for the charts.
    pub samples: dashboard::Samples,
    /// Serializes edits made through the console.
    pub edit_lock: Mutex<()>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("config_path", &self.config_path)
            .finish()
    }
}

impl State {
    /// The configuration file as it is now, or every error it has.
    pub fn config(&self) -> Result<Config, crate::config::ConfigErrors> {
        crate::config::load(&self.config_path)
    }

    /// The `[console]` section of the file as it is now, falling back to
    /// the running one when the file no longer validates.
    pub fn console_config(&self) -> Option<crate::config::Console> {
        match self.config() {
            Ok(c) => c.console,
            Err(_) => self.app.config().console,
        }
    }
}

/// A running console; stops when dropped.
pub struct Console {
    addr: SocketAddr,
    fingerprint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("addr", &self.addr).finish()
    }
}

impl Console {
    /// Makes or loads the console's certificate and first password, binds
    /// `[console] listen` and serves on a thread of its own.
    ///
    /// `cfg` is the configuration `app` runs; it must have a `[console]`.
    pub fn start(app: Arc<Appliance>, cfg: &Config) -> anyhow::Result<Console> {
        let console = cfg
            .console
            .clone()
            .context("the configuration has no [console] section")?;
        let identity = cert::Identity::load_or_create(&console, &cfg.appliance.state_dir)?;
        let first = auth::first_password(&console, &cfg.appliance.state_dir)?;
        if let Some(first) = &first {
            log::info!(
                "console: first admin password is in {} (set your own with: tlsinspect console passwd --config {})",
                first.display(),
                cfg.path.display()
            );
        }
        let audit = audit::AuditLog::open(&console.audit_log)?;
        let state = Arc::new(State {
            app,
            config_path: cfg.path.clone(),
            auth: auth::Auth::new(cfg.appliance.state_dir.clone()),
            audit,
            samples: dashboard::Samples::default(),
            edit_lock: Mutex::new(()),
        });
        let std_listener = std::net::TcpListener::bind(console.listen)
            .with_context(|| format!("console: binding {}", console.listen))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let fingerprint = identity.fingerprint.clone();
        let tls = identity.server_config()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("console: cannot start its runtime: {e}; no console");
                        return;
                    }
                };
                rt.block_on(server::serve(std_listener, tls, state, stop_rx));
            })?;
        Ok(Console {
            addr,
            fingerprint,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SHA-256 fingerprint of its certificate (`AB:CD:...`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
