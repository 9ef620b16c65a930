//! The appliance's Prometheus samples, gathered at scrape time.
//!
//! Handshake and added-latency histograms (DESIGN.md §7) are not exported
//! yet: they need timings from the interception driver.

use std::time::SystemTime;

use tlsinspect_pipeline::Stats;

use super::Appliance;
use crate::control::metrics::{Buckets, MetricsSource, Sample};

/// Whole days from `now` until `not_after_unix` (negative once expired).
pub(crate) fn days_left(not_after_unix: i64, now: SystemTime) -> i64 {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    (not_after_unix - now).div_euclid(86_400)
}

fn unix_now(now: SystemTime) -> i64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The data plane's counters: packets and bytes per path, flows, errors.
pub fn pipeline_samples(stats: &Stats) -> Vec<Sample> {
    let t = &stats.total;
    let mut out = vec![
        Sample::counter("frames", "Frames by data-plane path.", t.fast_frames)
            .label("path", "fast"),
        Sample::counter("frames", "Frames by data-plane path.", t.inscope_frames)
            .label("path", "in_scope"),
        Sample::counter("bytes", "Bytes by data-plane path.", t.fast_bytes).label("path", "fast"),
        Sample::counter("bytes", "Bytes by data-plane path.", t.inscope_bytes)
            .label("path", "in_scope"),
        Sample::counter("frames", "Frames by data-plane path.", t.released_frames)
            .label("path", "released"),
        Sample::counter("bytes", "Bytes by data-plane path.", t.released_bytes)
            .label("path", "released"),
        Sample::counter("rx_frames", "Frames received on lan and wan.", t.rx_frames),
        Sample::counter(
            "tx_frames",
            "Frames handed to a device for transmission.",
            t.tx_frames,
        ),
        Sample::counter(
            "tx_dropped",
            "Frames the kernel refused or dropped on transmit.",
            t.tx_dropped,
        ),
        Sample::counter(
            "tx_errors",
            "Transmit calls that failed unexpectedly.",
            t.tx_errors,
        ),
        Sample::counter(
            "gso_frames",
            "Super-frames (one frame standing for several TCP segments) by direction.",
            t.rx_gso_frames,
        )
        .label("direction", "rx"),
        Sample::counter(
            "gso_frames",
            "Super-frames (one frame standing for several TCP segments) by direction.",
            t.tx_gso_frames,
        )
        .label("direction", "tx"),
        Sample::counter(
            "coalesced_segments",
            "TCP segments merged into the previous frame of their flow, by path.",
            t.fast_coalesced,
        )
        .label("path", "fast"),
        Sample::counter(
            "coalesced_segments",
            "TCP segments merged into the previous frame of their flow, by path.",
            t.intercept_tx_coalesced,
        )
        .label("path", "intercepted"),
        Sample::counter(
            "checksum_trusted_segments",
            "Intercepted segments whose TCP checksum the kernel verified or left to the transmitter.",
            t.rx_csum_trusted,
        ),
        Sample::counter(
            "bad_checksum_segments",
            "Intercepted segments dropped for a wrong TCP checksum.",
            t.rx_bad_checksum,
        ),
        Sample::counter("flows_started", "In-scope flows started.", t.flows_started),
        Sample::counter(
            "flows_ended",
            "In-scope flows ended and logged.",
            t.flows_ended,
        ),
        Sample::counter(
            "flow_overflow",
            "In-scope SYNs not tracked because the flow table was full.",
            t.flow_overflow,
        ),
        Sample::gauge(
            "flows_active",
            "Flows in the flow tables.",
            t.flows_active as f64,
        ),
        Sample::counter(
            "intercepted_flows_started",
            "In-scope flows terminated on both legs by the interception driver.",
            t.intercepted_started,
        ),
        Sample::counter(
            "intercepted_flows_ended",
            "Intercepted flows ended and logged.",
            t.intercepted_ended,
        ),
        Sample::counter(
            "intercept_start_errors",
            "In-scope SYNs the interception driver refused (forwarded untracked).",
            t.intercept_start_errors,
        ),
        Sample::counter(
            "intercept_panics",
            "Intercepted flows reset because the code handling them panicked (logged with reason internal_error); the other flows went on.",
            t.intercept_panics,
        ),
        Sample::counter(
            "intercept_overload",
            "In-scope connections beyond max_intercept_memory or max_half_open (passed or refused by on_overload).",
            t.intercept_overload,
        ),
        Sample::counter(
            "intercept_superseded",
            "Half-open or closed intercepted flows replaced by a new SYN of their client.",
            t.intercept_superseded,
        ),
        Sample::counter(
            "intercept_tx_acks",
            "Pure ACKs the intercepted flows' TCP legs sent.",
            t.intercept_tx_acks,
        ),
        Sample::counter(
            "worker_wakeups",
            "Times a worker slept in poll(2) and woke up.",
            t.wakeups,
        ),
        Sample::counter(
            "intercept_released",
            "Passed flows released from their TCP legs to the fast path (sequence numbers rewritten per packet).",
            t.intercept_released,
        ),
        Sample::gauge(
            "intercept_half_open",
            "Intercepted flows whose TCP handshake has not completed.",
            t.intercept_half_open as f64,
        ),
        Sample::counter(
            "kernel_flows_listed",
            "Out-of-scope TCP flows handed to the kernel fast path (tc-BPF).",
            t.kernel_flows_listed,
        ),
        Sample::counter(
            "kernel_flows_ended",
            "Flows taken off the kernel fast path (FIN, RST, idle, new SYN, shutdown).",
            t.kernel_flows_ended,
        ),
        Sample::counter(
            "kernel_fast_path_refused",
            "Flows left on the user-space fast path, by reason.",
            t.kernel_map_full,
        )
        .label("reason", "map_full"),
        Sample::counter(
            "kernel_fast_path_refused",
            "Flows left on the user-space fast path, by reason.",
            t.kernel_over_cap,
        )
        .label("reason", "over_cap"),
        Sample::counter(
            "kernel_fast_path_refused",
            "Flows left on the user-space fast path, by reason.",
            t.kernel_map_errors,
        )
        .label("reason", "error"),
        Sample::counter(
            "frames",
            "Frames by data-plane path.",
            t.kernel_packets,
        )
        .label("path", "kernel"),
        Sample::counter("bytes", "Bytes by data-plane path.", t.kernel_bytes)
            .label("path", "kernel"),
        Sample::counter(
            "intercept_interrupted",
            "Intercepted flows reset because their policy was disabled (on_disable = interrupt).",
            t.intercept_interrupted,
        ),
    ];
    for (fault, v) in [
        ("lost", t.fault_lost),
        ("duplicated", t.fault_duplicated),
        ("reordered", t.fault_reordered),
        ("corrupted", t.fault_corrupted),
    ] {
        out.push(
            Sample::counter(
                "injected_faults",
                "Faults the [faults] lab setting injected into the ports, by kind.",
                v,
            )
            .label("fault", fault),
        );
    }
    for (kind, v) in [
        ("truncated", t.malformed_truncated),
        ("bad_field", t.malformed_bad_field),
        ("too_deep", t.malformed_too_deep),
    ] {
        out.push(
            Sample::counter(
                "malformed_frames",
                "Frames that failed to parse (forwarded unchanged), by kind.",
                v,
            )
            .label("kind", kind),
        );
    }
    for (kind, v) in [
        ("arp", t.fast_arp),
        ("udp", t.fast_udp),
        ("icmp", t.fast_icmp),
        ("tcp", t.fast_tcp),
        ("vlan", t.fast_vlan),
        ("other", t.fast_other),
    ] {
        out.push(
            Sample::counter("fast_frames", "Fast-path frames by kind.", v).label("kind", kind),
        );
    }
    out.push(Sample::counter(
        "geneve_frames",
        "GENEVE mode: frames received from the load balancer and decapsulated.",
        t.geneve_frames,
    ));
    out.push(Sample::counter(
        "geneve_not_ours",
        "GENEVE mode: frames on the interface that were not GENEVE (left to the host's stack).",
        t.geneve_not_ours,
    ));
    for (reason, v) in t.geneve_dropped() {
        out.push(
            Sample::counter(
                "geneve_dropped",
                "GENEVE mode: malformed or unsupported GENEVE frames dropped, by reason.",
                v,
            )
            .label("reason", reason),
        );
    }
    for (i, w) in stats.workers.iter().enumerate() {
        out.push(
            Sample::counter(
                "worker_rx_frames",
                "Frames received per worker.",
                w.rx_frames,
            )
            .label("worker", i.to_string()),
        );
    }
    out
}

/// Upper bounds of the latency buckets, in seconds (50 µs to 10 s).
const LATENCY_BOUNDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    10.0,
];

/// Prometheus buckets of a histogram of microseconds.
fn buckets(h: &hdrhistogram::Histogram<u64>) -> Buckets {
    let bounds = LATENCY_BOUNDS
        .iter()
        .map(|&le| {
            let us = (le * 1e6) as u64;
            let n = if h.is_empty() {
                0
            } else {
                h.count_between(0, us)
            };
            (le, n)
        })
        .collect();
    Buckets {
        bounds,
        sum: h.mean() * h.len() as f64 / 1e6,
        count: h.len(),
    }
}

/// The data plane's handshake and added-latency histograms.
pub fn latency_samples(l: &tlsinspect_pipeline::latency::Latency) -> Vec<Sample> {
    const HS: &str =
        "TCP handshake time of each leg of intercepted flows (server: SYN to SYN-ACK; client: SYN-ACK to ACK).";
    const ADDED: &str =
        "Latency added by the appliance: first byte in to first byte out, per direction.";
    vec![
        Sample::histogram("handshake_seconds", HS, buckets(&l.server_handshake))
            .label("leg", "server"),
        Sample::histogram("handshake_seconds", HS, buckets(&l.client_handshake))
            .label("leg", "client"),
        Sample::histogram("added_latency_seconds", ADDED, buckets(&l.to_server))
            .label("direction", "to_server"),
        Sample::histogram("added_latency_seconds", ADDED, buckets(&l.to_client))
            .label("direction", "to_client"),
    ]
}

impl MetricsSource for Appliance {
    fn samples(&self) -> Vec<Sample> {
        let mut out = self
            .stats()
            .map(|s| pipeline_samples(&s))
            .unwrap_or_default();
        if let Some(l) = self.latency() {
            out.extend(latency_samples(&l));
        }
        out.push(Sample::gauge(
            "draining",
            "1 while the appliance drains (SIGTERM in GENEVE mode: health checks fail, flows go on).",
            f64::from(u8::from(self.draining())),
        ));
        let (up, down) = self.health_answers();
        for (status, n) in [("200", up), ("503", down)] {
            out.push(
                Sample::counter("health_checks", "Health checks answered, by status.", n)
                    .label("status", status),
            );
        }
        for ((policy, scope, action, reason), n) in self.log.flows() {
            out.push(
                Sample::counter(
                    "flows",
                    "Flows logged, by policy, scope, action and decision reason.",
                    n,
                )
                .label("policy", &*policy)
                .label("scope", &*scope)
                .label("action", action)
                .label("reason", reason),
            );
        }
        for ((policy, scope, engine, action), n) in self.log.alerts() {
            out.push(
                Sample::counter(
                    "alerts",
                    "Inspection verdicts logged, by policy, scope, engine and action.",
                    n,
                )
                .label("policy", &*policy)
                .label("scope", &*scope)
                .label("engine", engine)
                .label("action", action),
            );
        }
        for c in self.log.outputs().counts() {
            for (name, help, value) in [
                (
                    "log_records",
                    "Traffic-log records delivered, by output.",
                    c.written,
                ),
                (
                    "log_dropped_records",
                    "Traffic-log records lost (queue full, refused, or left at shutdown), by output.",
                    c.dropped,
                ),
                (
                    "log_write_errors",
                    "Failed traffic-log write attempts (each retried after a reconnect), by output.",
                    c.errors,
                ),
            ] {
                out.push(
                    Sample::counter(name, help, value)
                        .label("output", c.kind)
                        .label("target", &c.name),
                );
            }
        }
        if let Some(c) = self.capture() {
            let s = c.stats();
            let load =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            for (name, help, value) in [
                (
                    "capture_packets",
                    "Synthetic packets written to the pcap files ([capture]).",
                    load(&s.packets),
                ),
                (
                    "capture_dropped_events",
                    "Plaintext chunks not captured because the capture queue was full.",
                    load(&s.dropped),
                ),
                (
                    "capture_write_errors",
                    "Packets lost to pcap write errors (a full disk).",
                    load(&s.write_errors),
                ),
                (
                    "capture_clients_dropped",
                    "PCAP-over-IP clients disconnected for lagging or closing.",
                    load(&s.clients_dropped),
                ),
            ] {
                out.push(Sample::counter(name, help, value));
            }
        }
        for (sid, n) in self.ips_alert_counts() {
            out.push(
                Sample::counter(
                    "ips_alerts",
                    "IPS alerts raised per rule since its rule set was loaded (thresholded and noalert matches are not counted).",
                    n,
                )
                .label("sid", sid.to_string()),
            );
        }
        out.push(Sample::counter(
            "log_uncounted",
            "Records not counted by label because the label sets were full.",
            self.log.overflow(),
        ));

        let m = self.mint_stats();
        out.push(Sample::counter(
            "cert_cache_hits",
            "Forged certificates served from the cache.",
            m.hits,
        ));
        out.push(Sample::counter(
            "cert_cache_misses",
            "Forged certificates minted anew.",
            m.misses,
        ));
        out.push(Sample::counter(
            "cert_cache_evictions",
            "Forged certificates pushed out of the full cache.",
            m.evictions,
        ));
        out.push(Sample::counter(
            "cert_mint_errors",
            "Certificate requests that failed.",
            m.errors,
        ));
        out.push(Sample::gauge(
            "cert_cache_entries",
            "Forged certificates cached now.",
            m.entries as f64,
        ));

        let b = self.bypass.stats();
        out.push(Sample::gauge(
            "bypass_cache_entries",
            "(SNI, destination) pairs in the bypass cache, pending pinning counts included.",
            b.entries as f64,
        ));
        out.push(Sample::counter(
            "bypass_cache_hits",
            "Connections passed because of a bypass-cache entry.",
            b.hits,
        ));
        out.push(Sample::counter(
            "bypass_cache_inserted",
            "Pairs that entered the bypass cache.",
            b.inserted,
        ));
        out.push(Sample::counter(
            "bypass_cache_evicted",
            "Live bypass entries dropped to make room.",
            b.evicted,
        ));

        let now = SystemTime::now();
        let cur = self.lock();
        for c in &cur.cas {
            out.push(
                Sample::gauge(
                    "ca_validity_remaining_seconds",
                    "Seconds of validity left of each policy's CA (negative once expired).",
                    (c.not_after_unix - unix_now(now)) as f64,
                )
                .label("policy", &*c.policy),
            );
        }
        for p in cur.config.policies.iter() {
            out.push(
                Sample::gauge(
                    "policy_enabled",
                    "1 when the policy selects new connections.",
                    if p.enabled { 1.0 } else { 0.0 },
                )
                .label("policy", &*p.id),
            );
        }
        out.push(Sample::gauge(
            "ips_rules_loaded",
            "IPS rules in force.",
            cur.ips_loaded as f64,
        ));
        out.push(Sample::gauge(
            "ips_rules_skipped",
            "IPS rules skipped at the last (re)load.",
            cur.ips_skipped as f64,
        ));
        drop(cur);
        for (result, n) in [
            (
                "ok",
                self.reloads_ok.load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "failed",
                self.reloads_failed
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        ] {
            out.push(
                Sample::counter("reloads", "Configuration reloads by result.", n)
                    .label("result", result),
            );
        }
        out.push(Sample::gauge(
            "uptime_seconds",
            "Seconds since start.",
            self.started.elapsed().as_secs_f64(),
        ));
        out
    }
}
