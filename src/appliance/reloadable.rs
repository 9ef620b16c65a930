//! Trait objects whose implementation a reload replaces for new flows.
//!
//! The data plane holds one `Arc<dyn CertMinter>` and one
//! `Arc<dyn Inspector>` for its whole life; these wrappers let a reload
//! swap the CAs and the engines underneath without the data plane knowing.
//! A flow already running keeps the `FlowInspector` it was created with, so
//! its decision and rules do not change mid-flow.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use tlsinspect_pipeline::api::{
    CertMinter, FlowInspector, FlowMeta, Inspector, MintError, MintRequest,
};

use crate::inspect::Engines;
use crate::pki::{MintStats, Minter};

/// A [`CertMinter`] over the current [`Minter`], replaced on reload.
pub struct ReloadableMinter {
    current: ArcSwap<Minter>,
    /// Counters of minters replaced so far, so metrics stay monotonic.
    retired: Mutex<MintStats>,
}

impl std::fmt::Debug for ReloadableMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableMinter")
            .field("stats", &self.stats())
            .finish()
    }
}

impl ReloadableMinter {
    /// Starts with `minter`.
    pub fn new(minter: Arc<Minter>) -> ReloadableMinter {
        ReloadableMinter {
            current: ArcSwap::new(minter),
            retired: Mutex::new(MintStats::default()),
        }
    }

    /// Replaces the minter for new requests (its leaf cache starts empty,
    /// since a reload may change a policy's CA).
    pub fn replace(&self, minter: Arc<Minter>) {
        let old = self.current.swap(minter);
        let s = old.stats();
        let mut r = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        r.hits += s.hits;
        r.misses += s.misses;
        r.evictions += s.evictions;
        r.errors += s.errors;
    }

    /// The current minter.
    pub fn current(&self) -> Arc<Minter> {
        self.current.load_full()
    }

    /// Counters since start-up (entries: of the current cache).
    pub fn stats(&self) -> MintStats {
        let cur = self.current.load().stats();
        let r = *self.retired.lock().unwrap_or_else(|e| e.into_inner());
        MintStats {
            hits: r.hits + cur.hits,
            misses: r.misses + cur.misses,
            evictions: r.evictions + cur.evictions,
            errors: r.errors + cur.errors,
            entries: cur.entries,
        }
    }
}

impl CertMinter for ReloadableMinter {
    fn mint(&self, req: &MintRequest<'_>) -> Result<Arc<CertifiedKey>, MintError> {
        self.current.load().mint(req)
    }
}

/// An [`Inspector`] over the current [`Engines`], replaced on reload.
pub struct ReloadableInspector {
    current: ArcSwap<Engines>,
}

impl std::fmt::Debug for ReloadableInspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadableInspector")
    }
}

impl ReloadableInspector {
    /// Starts with `engines`.
    pub fn new(engines: Arc<Engines>) -> ReloadableInspector {
        ReloadableInspector {
            current: ArcSwap::new(engines),
        }
    }

    /// Replaces the engines for flows created from now on.
    pub fn replace(&self, engines: Arc<Engines>) {
        self.current.store(engines);
    }

    /// IPS alerts per sid raised by the current rule set (since its load).
    pub fn ips_alert_counts(&self) -> Vec<(u64, u64)> {
        self.current.load().ips_alert_counts()
    }
}

impl Inspector for ReloadableInspector {
    fn new_flow(&self, meta: &FlowMeta) -> Box<dyn FlowInspector> {
        self.current.load().new_flow(meta)
    }

    fn on_tls(
        &self,
        meta: &FlowMeta,
        tls: &tlsinspect_pipeline::api::TlsHandshake<'_>,
    ) -> Vec<tlsinspect_pipeline::api::Alert> {
        self.current.load().on_tls(meta, tls)
    }
}
