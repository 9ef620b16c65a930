//! Starting, reloading, observing and stopping the data plane.
//!
//! [`Pipeline::start`] opens every device queue on the calling thread, in
//! worker order, so a bad interface name or a missing permission is
//! returned as an error before any thread runs, and so the fanout group's
//! member order matches the worker order the steering hash assumes. Each
//! worker then runs on its own pinned thread until [`Pipeline::shutdown`].
//! The scope table lives in an `ArcSwap`: [`Pipeline::set_scopes`] replaces
//! it whole, and workers load it once per SYN, so a reload is atomic and only
//! new flows see it.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use mio::{Poll, Waker};

use crate::api::FlowLog;
use crate::classify::ScopeTable;
use crate::conn::ConnCtx;
use crate::dispatch::{Clock, Dispatcher};
use crate::fault::{FaultPlan, FaultyDevice};
use crate::io::afpacket::{AfPacket, Fanout, RingConfig};
use crate::io::tun::Tun;
use crate::io::Device;
use crate::kernel_fast_path::{Attached, KernelFastPath};
use crate::stats::{Counters, SharedCounters, Stats};
use crate::steer::fanout_program;
use crate::worker::{Handoff, Interrupts, Peer, Worker, HANDOFF_QUEUE, WAKE};

/// How frames enter and leave the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceMode {
    /// L2 bump in the wire between two NICs (put in promiscuous mode).
    AfPacket {
        /// Interface toward the clients.
        lan: String,
        /// Interface toward the gateway.
        wan: String,
    },
    /// L3: two pre-created persistent multi-queue TUN interfaces.
    Tun {
        /// TUN interface the client-side routes point into.
        lan: String,
        /// TUN interface the server-side routes point into.
        wan: String,
    },
    /// Behind a gateway load balancer: GENEVE on UDP 6081 on one interface
    /// (DESIGN.md §13), both directions of every flow.
    Geneve {
        /// The interface the load balancer reaches (an address of the host's).
        iface: String,
    },
}

/// What the data plane needs from the configuration.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Devices.
    pub mode: DeviceMode,
    /// One worker per entry, pinned to that CPU.
    pub cpus: Vec<usize>,
    /// Cap on tracked flows, split evenly over the workers.
    pub max_flows: usize,
    /// A flow without packets for this long ends.
    pub flow_idle_timeout: Duration,
    /// Faults to inject into the devices (labs and benches; none by default).
    pub faults: FaultPlan,
    /// Bytes all intercepted flows together may hold (split evenly over
    /// the workers; see [`ConnCtx::flow_memory`]).
    pub max_intercept_memory: usize,
    /// Intercepted flows with an incomplete handshake, all workers together.
    pub max_half_open: usize,
    /// Whether out-of-scope TCP flows may be forwarded by a tc-BPF program
    /// (AF_PACKET only; see [`crate::kernel_fast_path`]).
    pub kernel_fast_path: KernelFastPathMode,
    /// Release passed flows from their TCP legs to the fast path.
    pub release_passed_flows: bool,
}

/// Whether to try the kernel fast path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KernelFastPathMode {
    /// Try it; if the kernel refuses, keep the user-space fast path and say why.
    #[default]
    Auto,
    /// Do not try.
    Off,
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// `cpus` is empty.
    #[error("appliance.cpus is empty: at least one worker core is needed")]
    NoCpus,
    /// A listed CPU does not exist on this machine.
    #[error(
        "appliance.cpus lists CPU {cpu}, which this machine does not have (CPUs 0..{available})"
    )]
    NoSuchCpu {
        /// The CPU asked for.
        cpu: usize,
        /// How many CPUs the machine has.
        available: usize,
    },
    /// A CPU is listed twice.
    #[error("appliance.cpus lists CPU {0} twice")]
    DuplicateCpu(usize),
    /// Opening a device queue failed.
    #[error("{side} device {iface:?} (worker {worker}): {source}")]
    Device {
        /// `lan` or `wan`.
        side: &'static str,
        /// Interface name.
        iface: String,
        /// Worker index.
        worker: usize,
        /// The OS error.
        source: io::Error,
    },
    /// Setting up the readiness poller or a thread failed.
    #[error("worker {worker}: {what}: {source}")]
    Setup {
        /// Worker index.
        worker: usize,
        /// What was being set up.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

struct Running {
    handle: JoinHandle<io::Result<()>>,
    waker: Arc<Waker>,
    counters: Arc<SharedCounters>,
    latency: Arc<std::sync::Mutex<crate::latency::Latency>>,
}

/// The running data plane.
pub struct Pipeline {
    scopes: Arc<ArcSwap<ScopeTable>>,
    interrupts: Arc<ArcSwap<Interrupts>>,
    interrupt_seq: std::sync::atomic::AtomicU64,
    stop: Arc<AtomicBool>,
    workers: Vec<Running>,
    /// The kernel fast path's programs and map (dropped after the workers
    /// stopped, which detaches the classifiers).
    kernel: Option<Attached>,
    /// GENEVE mode: the socket that keeps the host's stack from answering
    /// the load balancer's packets (see [`crate::io::udp_sink`]).
    sink: Option<std::net::UdpSocket>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("workers", &self.workers.len())
            .finish()
    }
}

fn check_cpus(cpus: &[usize]) -> Result<(), PipelineError> {
    if cpus.is_empty() {
        return Err(PipelineError::NoCpus);
    }
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let known: Vec<usize> = core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_else(|| (0..available).collect());
    for (i, &cpu) in cpus.iter().enumerate() {
        if !known.contains(&cpu) {
            return Err(PipelineError::NoSuchCpu {
                cpu,
                available: known.len(),
            });
        }
        if cpus[..i].contains(&cpu) {
            return Err(PipelineError::DuplicateCpu(cpu));
        }
    }
    Ok(())
}

impl Pipeline {
    /// Opens the devices, starts one pinned worker per CPU and returns.
    pub fn start(
        cfg: PipelineConfig,
        scopes: Arc<ScopeTable>,
        log: Arc<dyn FlowLog>,
    ) -> Result<Pipeline, PipelineError> {
        Self::start_with_ring(cfg, RingConfig::default(), scopes, log)
    }

    /// Like [`Pipeline::start`], with an explicit AF_PACKET ring layout (ignored for TUN).
    pub fn start_with_ring(
        cfg: PipelineConfig,
        ring: RingConfig,
        scopes: Arc<ScopeTable>,
        log: Arc<dyn FlowLog>,
    ) -> Result<Pipeline, PipelineError> {
        Self::start_intercepting(cfg, ring, scopes, log, None)
    }

    /// Starts the pipeline; with `intercept`, in-scope flows are intercepted.
    ///
    /// Each new in-scope flow takes the context `intercept` holds at its SYN
    /// (store a new one on reload); without it in-scope flows are only
    /// tracked and forwarded (see [`crate::dispatch`]).
    pub fn start_intercepting(
        cfg: PipelineConfig,
        ring: RingConfig,
        scopes: Arc<ScopeTable>,
        log: Arc<dyn FlowLog>,
        intercept: Option<Arc<ArcSwap<ConnCtx>>>,
    ) -> Result<Pipeline, PipelineError> {
        check_cpus(&cfg.cpus)?;
        let n = cfg.cpus.len();
        match &cfg.mode {
            DeviceMode::AfPacket { lan, wan } => {
                let program = fanout_program();
                let open_all = |filter: Option<&crate::io::bpf::BpfProgram>| {
                    let mut devs = Vec::with_capacity(n);
                    let (mut lan_group, mut wan_group) = (None, None);
                    for w in 0..n {
                        let open = |iface: &str, group: Option<u16>, side| {
                            let fanout = match (n, group) {
                                (1, _) => Fanout::None,
                                (_, None) => Fanout::Create,
                                (_, Some(id)) => Fanout::Join(id),
                            };
                            AfPacket::open_filtered(iface, ring, fanout, &program, filter)
                                .map(|d| d.coalescing(crate::gso::append))
                                .map_err(|source| PipelineError::Device {
                                    side,
                                    iface: iface.to_owned(),
                                    worker: w,
                                    source,
                                })
                        };
                        let l = open(lan, lan_group, "lan")?;
                        let r = open(wan, wan_group, "wan")?;
                        lan_group = l.fanout_id();
                        wan_group = r.fanout_id();
                        devs.push((l, r));
                    }
                    Ok::<_, PipelineError>(devs)
                };
                let mut kernel = match cfg.kernel_fast_path {
                    KernelFastPathMode::Off => {
                        log::info!("kernel fast path: off (kernel_fast_path = \"off\"); out-of-scope flows take the user-space fast path");
                        None
                    }
                    // The injector works on the frames the workers see.
                    KernelFastPathMode::Auto if !cfg.faults.is_none() => {
                        log::info!("kernel fast path: off ([faults] injects into the user-space path); out-of-scope flows take the user-space fast path");
                        None
                    }
                    KernelFastPathMode::Auto => match Attached::attach(lan, wan, cfg.max_flows) {
                        Ok(k) => Some(k),
                        Err(e) => {
                            log::warn!("kernel fast path: off, the user-space fast path forwards out-of-scope flows: {e}");
                            None
                        }
                    },
                };
                let devs = match open_all(kernel.as_ref().map(Attached::filter)) {
                    Ok(d) => d,
                    Err(e) if kernel.is_some() => {
                        log::warn!("kernel fast path: off, the user-space fast path forwards out-of-scope flows: packet-socket filter: {e}");
                        kernel = None;
                        open_all(None)?
                    }
                    Err(e) => return Err(e),
                };
                if let Some(k) = &kernel {
                    log::info!(
                        "kernel fast path: on (tc-BPF at ingress of {lan} and {wan} via {}, map of {} entries); the user-space fast path carries the rest",
                        k.attachment(),
                        k.entries()
                    );
                }
                Self::spawn_with_faults(cfg, devs, scopes, log, intercept, kernel)
            }
            DeviceMode::Tun { lan, wan } => {
                let mut devs = Vec::with_capacity(n);
                for w in 0..n {
                    let open = |iface: &str, side| {
                        Tun::attach(iface)
                            .map(|d| d.coalescing(crate::gso::append))
                            .map_err(|source| PipelineError::Device {
                                side,
                                iface: iface.to_owned(),
                                worker: w,
                                source,
                            })
                    };
                    devs.push((open(lan, "lan")?, open(wan, "wan")?));
                }
                log::info!("kernel fast path: off (tun mode); out-of-scope flows take the user-space fast path");
                Self::spawn_with_faults(cfg, devs, scopes, log, intercept, None)
            }
            DeviceMode::Geneve { iface } => {
                let device = |w: usize, source| PipelineError::Device {
                    side: "lan",
                    iface: iface.clone(),
                    worker: w,
                    source,
                };
                let sink = crate::io::udp_sink(crate::geneve::PORT).map_err(|e| device(0, e))?;
                let program = fanout_program();
                let mut devs = Vec::with_capacity(n);
                let mut group = None;
                for w in 0..n {
                    let fanout = match (n, group) {
                        (1, _) => Fanout::None,
                        (_, None) => Fanout::Create,
                        (_, Some(id)) => Fanout::Join(id),
                    };
                    let rx =
                        AfPacket::open_geneve(iface, ring, fanout, &program, crate::geneve::PORT)
                            .map(|d| d.coalescing(crate::gso::append))
                            .map_err(|e| device(w, e))?;
                    group = rx.fanout_id();
                    let tx = AfPacket::open_sender(iface)
                        .map(|d| d.coalescing(crate::gso::append))
                        .map_err(|e| device(w, e))?;
                    devs.push((rx, tx));
                }
                log::info!(
                    "geneve mode on {iface}: the load balancer's GENEVE on UDP {}, answered in kind; kernel fast path: off (geneve mode)",
                    crate::geneve::PORT
                );
                let mut p = Self::spawn_with_faults(cfg, devs, scopes, log, intercept, None)?;
                p.sink = Some(sink);
                Ok(p)
            }
        }
    }

    /// Spawns the workers, on devices wrapped in the fault injector when
    /// `cfg.faults` asks for any.
    fn spawn_with_faults<D: Device + 'static>(
        cfg: PipelineConfig,
        devs: Vec<(D, D)>,
        scopes: Arc<ScopeTable>,
        log: Arc<dyn FlowLog>,
        intercept: Option<Arc<ArcSwap<ConnCtx>>>,
        kernel: Option<Attached>,
    ) -> Result<Pipeline, PipelineError> {
        let plan = cfg.faults;
        if plan.is_none() {
            return Self::spawn(cfg, devs, scopes, log, intercept, kernel);
        }
        log::warn!("injecting faults into the devices (a lab setting): {plan:?}");
        let devs = devs
            .into_iter()
            .enumerate()
            .map(|(w, (lan, wan))| {
                let seed = plan.seed.wrapping_add(2 * w as u64);
                (
                    FaultyDevice::new(lan, plan.lan_in, plan.lan_out, seed),
                    FaultyDevice::new(wan, plan.wan_in, plan.wan_out, seed.wrapping_add(1)),
                )
            })
            .collect();
        Self::spawn(cfg, devs, scopes, log, intercept, kernel)
    }

    fn spawn<D: Device + 'static>(
        cfg: PipelineConfig,
        devs: Vec<(D, D)>,
        scopes: Arc<ScopeTable>,
        log: Arc<dyn FlowLog>,
        intercept: Option<Arc<ArcSwap<ConnCtx>>>,
        kernel: Option<Attached>,
    ) -> Result<Pipeline, PipelineError> {
        let n = devs.len();
        let table = Arc::new(ArcSwap::new(scopes));
        let stop = Arc::new(AtomicBool::new(false));
        let per_worker = cfg.max_flows.div_ceil(n);
        let clock = Clock::new(Instant::now(), SystemTime::now());
        let mut polls = Vec::with_capacity(n);
        let mut peers = Vec::with_capacity(n);
        let mut rxs = Vec::with_capacity(n);
        for w in 0..n {
            let setup = |what, source| PipelineError::Setup {
                worker: w,
                what,
                source,
            };
            let poll = Poll::new().map_err(|e| setup("create poller", e))?;
            let waker =
                Arc::new(Waker::new(poll.registry(), WAKE).map_err(|e| setup("create waker", e))?);
            let (tx, rx) = crossbeam_channel::bounded::<Handoff>(HANDOFF_QUEUE);
            polls.push(poll);
            peers.push(Peer { tx, waker });
            rxs.push(rx);
        }
        let interrupts = Arc::new(ArcSwap::from_pointee(Interrupts::default()));
        let mut pipeline = Pipeline {
            scopes: table.clone(),
            interrupts: interrupts.clone(),
            interrupt_seq: std::sync::atomic::AtomicU64::new(0),
            stop: stop.clone(),
            workers: Vec::with_capacity(n),
            kernel: None,
            sink: None,
        };
        for (w, (((lan, wan), poll), handoff_rx)) in
            devs.into_iter().zip(polls).zip(rxs).enumerate()
        {
            let counters = Arc::new(SharedCounters::default());
            let mut dispatcher = Dispatcher::new(
                w,
                per_worker,
                cfg.flow_idle_timeout,
                table.clone(),
                log.clone(),
                clock,
            );
            if let Some(ctx) = &intercept {
                dispatcher = dispatcher
                    .with_intercept(ctx.clone())
                    .with_limits(cfg.max_intercept_memory / n, cfg.max_half_open.div_ceil(n))
                    .with_release(cfg.release_passed_flows);
            }
            if let Some(k) = &kernel {
                dispatcher = dispatcher.with_kernel_fast_path(KernelFastPath::new(
                    k.map(),
                    per_worker,
                    cfg.flow_idle_timeout,
                ));
            }
            let latency = dispatcher.latency();
            let worker = Worker {
                index: w,
                lan,
                wan,
                poll,
                dispatcher,
                shared: counters.clone(),
                stop: stop.clone(),
                handoff_rx,
                peers: peers.clone(),
                interrupts: interrupts.clone(),
                geneve: matches!(cfg.mode, DeviceMode::Geneve { .. }),
            };
            let cpu = cfg.cpus[w];
            let handle = std::thread::Builder::new()
                .name(format!("tlsinspect-w{w}"))
                .spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                        log::warn!("worker {w}: could not pin to CPU {cpu}; running unpinned");
                    }
                    worker.run()
                })
                .map_err(|source| PipelineError::Setup {
                    worker: w,
                    what: "spawn thread",
                    source,
                })?;
            pipeline.workers.push(Running {
                handle,
                waker: peers[w].waker.clone(),
                counters,
                latency,
            });
        }
        pipeline.kernel = kernel;
        Ok(pipeline)
    }

    /// Whether every worker is still running (none stopped on a device error).
    pub fn workers_running(&self) -> bool {
        self.workers.iter().all(|w| !w.handle.is_finished())
    }

    /// Replaces the scope table; flows already tracked keep their match.
    pub fn set_scopes(&self, scopes: Arc<ScopeTable>) {
        self.scopes.store(scopes);
    }

    /// Resets, at both ends, every intercepted flow of `policies` started
    /// before now (`on_disable = "interrupt"`); workers act at their next
    /// housekeeping (within a quarter second). Flows started later, e.g.
    /// after a re-enable, are left alone.
    pub fn interrupt_policies(&self, policies: &[Arc<str>]) {
        if policies.is_empty() {
            return;
        }
        let now = Instant::now();
        self.interrupts.rcu(|cur| {
            let mut entries = cur.entries.clone();
            for p in policies {
                let seq = self.interrupt_seq.fetch_add(1, Ordering::Relaxed) + 1;
                entries.push((seq, p.clone(), now));
            }
            let excess = entries.len().saturating_sub(Interrupts::KEEP);
            entries.drain(..excess);
            Interrupts { entries }
        });
        for w in &self.workers {
            let _ = w.waker.wake();
        }
    }

    /// The scope table new flows are classified against.
    pub fn scopes(&self) -> Arc<ScopeTable> {
        self.scopes.load_full()
    }

    /// Counters per worker and summed, as last published by the workers (at most one batch old).
    pub fn stats(&self) -> Stats {
        Stats::from_workers(self.workers.iter().map(|w| w.counters.read()).collect())
    }

    /// The latency histograms of every worker, merged.
    pub fn latency(&self) -> crate::latency::Latency {
        let mut all = crate::latency::Latency::default();
        for w in &self.workers {
            if let Ok(l) = w.latency.lock() {
                all.merge(&l);
            }
        }
        all
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Stops the workers, which flush queued frames and log every open flow; returns the final counters.
    pub fn shutdown(mut self) -> Stats {
        Stats::from_workers(self.stop_and_join())
    }

    fn stop_and_join(&mut self) -> Vec<Counters> {
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.workers {
            let _ = w.waker.wake();
        }
        let mut counters = Vec::with_capacity(self.workers.len());
        for (i, w) in self.workers.drain(..).enumerate() {
            match w.handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::error!("worker {i} stopped with an error: {e}"),
                Err(_) => log::error!("worker {i} panicked"),
            }
            counters.push(w.counters.read());
        }
        counters
    }
}

impl Drop for Pipeline {
    /// A pipeline dropped without `shutdown` still stops its workers and logs open flows.
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.stop_and_join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::MemLog;

    fn cfg(mode: DeviceMode, cpus: Vec<usize>) -> PipelineConfig {
        PipelineConfig {
            mode,
            cpus,
            max_flows: 10,
            flow_idle_timeout: Duration::from_secs(5),
            faults: Default::default(),
            max_intercept_memory: usize::MAX,
            max_half_open: usize::MAX,
            kernel_fast_path: KernelFastPathMode::Auto,
            release_passed_flows: true,
        }
    }

    fn start(c: PipelineConfig) -> Result<Pipeline, PipelineError> {
        Pipeline::start(
            c,
            Arc::new(ScopeTable::empty()),
            Arc::new(MemLog::default()),
        )
    }

    #[test]
    fn start_errors_name_the_problem() {
        let ap = DeviceMode::AfPacket {
            lan: "tpp-nonexist0".into(),
            wan: "lo".into(),
        };
        assert!(matches!(
            start(cfg(ap.clone(), vec![])),
            Err(PipelineError::NoCpus)
        ));
        assert!(matches!(
            start(cfg(ap.clone(), vec![4096])),
            Err(PipelineError::NoSuchCpu { cpu: 4096, .. })
        ));
        assert!(matches!(
            start(cfg(ap.clone(), vec![0, 0])),
            Err(PipelineError::DuplicateCpu(0))
        ));
        let e = start(cfg(ap, vec![0])).unwrap_err();
        assert!(
            matches!(
                &e,
                PipelineError::Device {
                    side: "lan",
                    worker: 0,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("tpp-nonexist0"), "{e}");
        let tun = DeviceMode::Tun {
            lan: "tpp-notun0".into(),
            wan: "tpp-notun1".into(),
        };
        let e = start(cfg(tun, vec![0])).unwrap_err();
        assert!(e.to_string().contains("tpp-notun0"), "{e}");
    }
}
