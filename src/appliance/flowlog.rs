//! The appliance's [`FlowLog`]: counts records for the metrics, then
//! forwards them to the EVE outputs.
//!
//! Counting here rather than in the data plane keeps the workers free of
//! label maps: a record is written once per flow, so one short mutex hold
//! per flow end is cheap next to the write itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tlsinspect_pipeline::api::{Alert, FlowLog, FlowMeta, FlowRecord};

use crate::log::EveLog;

/// Key of a flow count: policy, scope, action, reason.
pub type FlowKey = (Arc<str>, Arc<str>, &'static str, &'static str);

/// Key of an alert count: policy, scope, engine, alert action.
pub type AlertKey = (Arc<str>, Arc<str>, &'static str, String);

/// Most distinct label sets counted; beyond it records are still written but
/// counted under `overflow` (reasons come from a fixed set, so this only
/// guards against a bug, not normal traffic).
const MAX_KEYS: usize = 10_000;

#[derive(Default)]
struct Counts {
    flows: BTreeMap<FlowKey, u64>,
    alerts: BTreeMap<AlertKey, u64>,
    overflow: u64,
}

/// A [`FlowLog`] that counts by (policy, scope, action, reason) and forwards.
pub struct CountingLog {
    inner: Arc<EveLog>,
    counts: Mutex<Counts>,
}

impl std::fmt::Debug for CountingLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingLog")
            .field("inner", &self.inner)
            .finish()
    }
}

impl CountingLog {
    /// Wraps the outputs.
    pub fn new(inner: Arc<EveLog>) -> CountingLog {
        CountingLog {
            inner,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// The outputs behind it.
    pub fn outputs(&self) -> &Arc<EveLog> {
        &self.inner
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flows logged so far, by (policy, scope, action, reason).
    pub fn flows(&self) -> Vec<(FlowKey, u64)> {
        self.lock()
            .flows
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Alerts logged so far, by (policy, scope, engine, action).
    pub fn alerts(&self) -> Vec<(AlertKey, u64)> {
        self.lock()
            .alerts
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Records not counted because the label sets were full.
    pub fn overflow(&self) -> u64 {
        self.lock().overflow
    }
}

fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, key: K, overflow: &mut u64) {
    if let Some(v) = map.get_mut(&key) {
        *v += 1;
    } else if map.len() < MAX_KEYS {
        map.insert(key, 1);
    } else {
        *overflow += 1;
    }
}

impl FlowLog for CountingLog {
    fn record(&self, rec: &FlowRecord) {
        {
            let mut c = self.lock();
            let Counts {
                flows, overflow, ..
            } = &mut *c;
            bump(
                flows,
                (
                    rec.meta.policy_id.clone(),
                    rec.meta.scope_id.clone(),
                    rec.action.as_str(),
                    rec.reason.as_str(),
                ),
                overflow,
            );
        }
        self.inner.record(rec);
    }

    fn alert(&self, meta: &FlowMeta, alert: &Alert, timestamp: SystemTime) {
        {
            let mut c = self.lock();
            let Counts {
                alerts, overflow, ..
            } = &mut *c;
            bump(
                alerts,
                (
                    meta.policy_id.clone(),
                    meta.scope_id.clone(),
                    alert.engine,
                    alert.action.clone(),
                ),
                overflow,
            );
        }
        self.inner.alert(meta, alert, timestamp);
    }
}

/// The periodic EVE `stats` event of the appliance: data-plane counters
/// (when the pipeline runs), flows logged by action, alerts, log drops.
pub fn stats_event(
    stats: Option<&tlsinspect_pipeline::Stats>,
    log: &CountingLog,
    uptime: std::time::Duration,
    now: SystemTime,
) -> serde_json::Value {
    let mut by_action: BTreeMap<&'static str, u64> = BTreeMap::new();
    for ((_, _, action, _), n) in log.flows() {
        *by_action.entry(action).or_default() += n;
    }
    let alerts = log.alerts().iter().map(|(_, n)| n).sum();
    let t = stats.map(|s| s.total).unwrap_or_default();
    let snapshot = crate::log::record::StatsSnapshot {
        uptime_secs: uptime.as_secs(),
        pkts: t.rx_frames,
        bytes: t.fast_bytes + t.inscope_bytes,
        flows_total: t.flows_started,
        flows_active: t.flows_active,
        flows_by_action: by_action.into_iter().collect(),
        alerts,
        log_dropped: log.outputs().dropped(),
    };
    crate::log::record::stats_json(&snapshot, now)
}
