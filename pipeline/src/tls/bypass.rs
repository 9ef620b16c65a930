//! The learned bypass cache: (SNI, destination) pairs that must not be inspected.
//!
//! Some servers cannot be intercepted (they demand a client certificate, or
//! speak only versions we cannot terminate) and some clients refuse any
//! certificate but the real one (pinning). Rather than fail such connections
//! again and again, the appliance remembers the pair and passes later
//! connections (DESIGN.md §4, reason `bypass_cache`).
//!
//! The cache is shared by all workers but consulted only once per new
//! connection, so sharded mutexes are cheap enough and keep it simple. It is
//! sans-IO: every call takes `now`. Entries expire after a TTL so a server
//! that drops mTLS, or a client that drops pinning, is inspected again; the
//! entry count is capped, and a full shard evicts the entry closest to
//! expiry, counting it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashbrown::HashMap;

const SHARDS: usize = 16;

/// Settings of the bypass cache.
#[derive(Debug, Clone, Copy)]
pub struct BypassConfig {
    /// Most entries held, pending pinning counts included.
    pub capacity: usize,
    /// How long an entry (or a pending pinning count) lives.
    pub ttl: Duration,
    /// Distinct client addresses that must reject our certificate for the
    /// same (SNI, destination) before it is bypassed; 0 or 1 means the first.
    pub pinning_clients: u32,
}

impl Default for BypassConfig {
    fn default() -> Self {
        BypassConfig {
            capacity: 10_000,
            ttl: Duration::from_secs(3600),
            pinning_clients: 3,
        }
    }
}

/// Why a pair was put in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BypassReason {
    /// The server asked for a client certificate.
    ClientAuth,
    /// The server speaks no version we can terminate.
    UnsupportedServer,
    /// Enough distinct clients rejected our certificate.
    Pinning,
}

/// Counters of the bypass cache, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BypassStats {
    /// Entries held now (bypassed and pending).
    pub entries: u64,
    /// Lookups that found a live bypass entry.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Pairs that became bypassed.
    pub inserted: u64,
    /// Client rejections reported.
    pub rejections: u64,
    /// Entries dropped because their TTL ran out.
    pub expired: u64,
    /// Live entries dropped to make room.
    pub evicted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    sni: Option<Box<str>>,
    dest: SocketAddr,
}

#[derive(Debug)]
enum State {
    Bypassed(BypassReason),
    /// Distinct clients that rejected us so far (fewer than the threshold).
    Pending(Vec<IpAddr>),
}

#[derive(Debug)]
struct Entry {
    state: State,
    expires: Instant,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserted: AtomicU64,
    rejections: AtomicU64,
    expired: AtomicU64,
    evicted: AtomicU64,
}

/// A bounded, sharded, TTL map of (SNI, destination) pairs to bypass.
pub struct BypassCache {
    cfg: BypassConfig,
    per_shard: usize,
    shards: Vec<Mutex<HashMap<Key, Entry>>>,
    counters: Counters,
}

impl std::fmt::Debug for BypassCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BypassCache")
            .field("cfg", &self.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

impl BypassCache {
    /// Creates an empty cache.
    pub fn new(cfg: BypassConfig) -> Self {
        let capacity = cfg.capacity.max(1);
        // Small caches use fewer shards so the cap stays exact.
        let shards = SHARDS.min(capacity);
        BypassCache {
            cfg,
            per_shard: capacity.div_ceil(shards),
            shards: (0..shards).map(|_| Mutex::new(HashMap::new())).collect(),
            counters: Counters::default(),
        }
    }

    fn key(sni: Option<&str>, dest: SocketAddr) -> Key {
        Key {
            sni: sni.map(|s| s.to_ascii_lowercase().into_boxed_str()),
            dest,
        }
    }

    fn shard(&self, key: &Key) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        use std::hash::{Hash, Hasher};
        // Shard choice needs no secret: the maps inside are hashbrown's
        // randomly keyed tables, which is what resists flooding.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let i = (h.finish() as usize) % self.shards.len();
        // A poisoned shard only means another worker panicked mid-update of
        // a plain map; its data is still consistent enough to use.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether connections to `dest` for `sni` are to be passed now.
    pub fn contains(&self, sni: Option<&str>, dest: SocketAddr, now: Instant) -> bool {
        self.get(sni, dest, now).is_some()
    }

    /// Why connections to `dest` for `sni` are to be passed now, if they are.
    pub fn get(&self, sni: Option<&str>, dest: SocketAddr, now: Instant) -> Option<BypassReason> {
        let key = Self::key(sni, dest);
        let mut shard = self.shard(&key);
        let hit = match shard.get(&key) {
            Some(e) if e.expires <= now => {
                shard.remove(&key);
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                None
            }
            Some(Entry {
                state: State::Bypassed(r),
                ..
            }) => Some(*r),
            _ => None,
        };
        let c = if hit.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        c.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Bypasses the pair at once (client auth demanded, unsupported server).
    pub fn insert(&self, sni: Option<&str>, dest: SocketAddr, reason: BypassReason, now: Instant) {
        let key = Self::key(sni, dest);
        let mut shard = self.shard(&key);
        self.put(&mut shard, key, State::Bypassed(reason), now);
    }

    /// Counts a client that rejected our certificate for the pair.
    ///
    /// Returns true when this report made the pair bypassed (the threshold
    /// of distinct clients was reached). Reports from a client already
    /// counted do not count again.
    pub fn report_rejection(
        &self,
        sni: Option<&str>,
        dest: SocketAddr,
        client: IpAddr,
        now: Instant,
    ) -> bool {
        self.counters.rejections.fetch_add(1, Ordering::Relaxed);
        let threshold = self.cfg.pinning_clients.max(1) as usize;
        let key = Self::key(sni, dest);
        let mut shard = self.shard(&key);
        let live = shard.get(&key).is_some_and(|e| e.expires > now);
        if !live && shard.remove(&key).is_some() {
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
        }
        let mut clients = match shard.get_mut(&key) {
            Some(Entry {
                state: State::Bypassed(_),
                ..
            }) => return false,
            Some(Entry {
                state: State::Pending(clients),
                ..
            }) => {
                if clients.contains(&client) {
                    return false;
                }
                clients.push(client);
                if clients.len() < threshold {
                    return false;
                }
                std::mem::take(clients)
            }
            None => vec![client],
        };
        if clients.len() >= threshold {
            self.put(&mut shard, key, State::Bypassed(BypassReason::Pinning), now);
            true
        } else {
            clients.shrink_to_fit();
            self.put(&mut shard, key, State::Pending(clients), now);
            false
        }
    }

    /// Inserts or replaces an entry, making room in a full shard first.
    fn put(&self, shard: &mut HashMap<Key, Entry>, key: Key, state: State, now: Instant) {
        let becomes_bypassed = matches!(state, State::Bypassed(_));
        if !shard.contains_key(&key) && shard.len() >= self.per_shard {
            let before = shard.len();
            shard.retain(|_, e| e.expires > now);
            let dropped = (before - shard.len()) as u64;
            self.counters.expired.fetch_add(dropped, Ordering::Relaxed);
            if shard.len() >= self.per_shard {
                // Pending counts go first, then the entry closest to expiry.
                let victim = shard
                    .iter()
                    .min_by_key(|(_, e)| (matches!(e.state, State::Bypassed(_)), e.expires))
                    .map(|(k, _)| k.clone());
                if let Some(v) = victim {
                    shard.remove(&v);
                    self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let was_bypassed = shard
            .get(&key)
            .is_some_and(|e| matches!(e.state, State::Bypassed(_)));
        if becomes_bypassed && !was_bypassed {
            self.counters.inserted.fetch_add(1, Ordering::Relaxed);
        }
        shard.insert(
            key,
            Entry {
                state,
                expires: now + self.cfg.ttl,
            },
        );
    }

    /// Entries held now, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BypassStats {
        let c = &self.counters;
        BypassStats {
            entries: self.len() as u64,
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            inserted: c.inserted.load(Ordering::Relaxed),
            rejections: c.rejections.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(last: u8) -> SocketAddr {
        SocketAddr::from(([203, 0, 113, last], 443))
    }

    fn client(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn cache(capacity: usize, ttl: u64, pinning: u32) -> BypassCache {
        BypassCache::new(BypassConfig {
            capacity,
            ttl: Duration::from_secs(ttl),
            pinning_clients: pinning,
        })
    }

    #[test]
    fn mtls_entries_go_in_at_once_and_expire() {
        let c = cache(100, 60, 3);
        let t0 = Instant::now();
        assert!(!c.contains(Some("a.test"), dest(1), t0));
        c.insert(Some("A.test"), dest(1), BypassReason::ClientAuth, t0);
        assert_eq!(
            c.get(Some("a.test"), dest(1), t0),
            Some(BypassReason::ClientAuth)
        );
        assert!(c.contains(Some("a.test"), dest(1), t0 + Duration::from_secs(59)));
        // Keyed by the pair: other name, other address, other port, no SNI.
        assert!(!c.contains(Some("b.test"), dest(1), t0));
        assert!(!c.contains(Some("a.test"), dest(2), t0));
        assert!(!c.contains(
            Some("a.test"),
            SocketAddr::from(([203, 0, 113, 1], 8443)),
            t0
        ));
        assert!(!c.contains(None, dest(1), t0));
        assert!(!c.contains(Some("a.test"), dest(1), t0 + Duration::from_secs(60)));
        let s = c.stats();
        assert_eq!(
            (s.hits, s.misses, s.inserted, s.expired, s.entries),
            (2, 6, 1, 1, 0)
        );
    }

    #[test]
    fn pinning_counts_distinct_clients() {
        let c = cache(100, 60, 3);
        let t0 = Instant::now();
        assert!(!c.report_rejection(Some("pin.test"), dest(1), client(10), t0));
        assert!(!c.report_rejection(Some("pin.test"), dest(1), client(10), t0));
        assert!(!c.report_rejection(Some("pin.test"), dest(1), client(10), t0));
        assert!(
            !c.contains(Some("pin.test"), dest(1), t0),
            "one client, three times"
        );
        assert!(!c.report_rejection(Some("pin.test"), dest(1), client(11), t0));
        assert!(!c.contains(Some("pin.test"), dest(1), t0));
        assert!(c.report_rejection(Some("pin.test"), dest(1), client(12), t0));
        assert!(c.contains(Some("pin.test"), dest(1), t0));
        // Further reports change nothing.
        assert!(!c.report_rejection(Some("pin.test"), dest(1), client(13), t0));
        assert_eq!(c.stats().inserted, 1);
        assert_eq!(c.stats().rejections, 6);
    }

    #[test]
    fn pinning_counts_expire_with_the_ttl() {
        let c = cache(100, 60, 2);
        let t0 = Instant::now();
        assert!(!c.report_rejection(None, dest(1), client(10), t0));
        // The second client comes after the first count expired.
        assert!(!c.report_rejection(None, dest(1), client(11), t0 + Duration::from_secs(61)));
        assert!(!c.contains(None, dest(1), t0 + Duration::from_secs(61)));
        assert!(c.report_rejection(None, dest(1), client(12), t0 + Duration::from_secs(62)));
        assert!(c.contains(None, dest(1), t0 + Duration::from_secs(62)));
    }

    #[test]
    fn threshold_of_one_bypasses_on_the_first_rejection() {
        for t in [0, 1] {
            let c = cache(10, 60, t);
            assert!(c.report_rejection(Some("x.test"), dest(1), client(1), Instant::now()));
        }
    }

    #[test]
    fn capacity_is_a_hard_cap_with_counted_eviction() {
        let c = cache(32, 60, 3);
        let t0 = Instant::now();
        for i in 0..200u16 {
            let d = SocketAddr::from(([203, 0, 113, (i % 250) as u8], 1000 + i));
            c.insert(
                Some("x.test"),
                d,
                BypassReason::UnsupportedServer,
                t0 + Duration::from_millis(i.into()),
            );
            assert!(c.len() <= 32);
        }
        let s = c.stats();
        assert_eq!(s.inserted, 200);
        assert_eq!(s.evicted as usize + c.len(), 200);
        // The newest entry survives eviction.
        let newest = SocketAddr::from(([203, 0, 113, 199], 1199));
        assert!(c.contains(Some("x.test"), newest, t0 + Duration::from_millis(200)));
        // Expired entries are swept before anything live is evicted.
        let later = t0 + Duration::from_secs(120);
        let evicted = c.stats().evicted;
        c.insert(Some("y.test"), dest(1), BypassReason::ClientAuth, later);
        assert_eq!(c.stats().evicted, evicted);
        assert!(c.stats().expired > 0);
    }

    #[test]
    fn shared_between_threads() {
        let c = std::sync::Arc::new(cache(1000, 60, 4));
        let t0 = Instant::now();
        let hs: Vec<_> = (0..4u8)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    c.report_rejection(Some("pin.test"), dest(9), client(i), t0)
                })
            })
            .collect();
        let became: usize = hs.into_iter().map(|h| usize::from(h.join().unwrap())).sum();
        assert_eq!(became, 1, "exactly the fourth distinct client flips it");
        assert!(c.contains(Some("pin.test"), dest(9), t0));
    }
}
