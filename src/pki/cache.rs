//! A bounded map with CLOCK (second-chance) eviction.
//!
//! Why CLOCK rather than a strict LRU: a hit only sets a flag in the slot
//! (an atomic store under a shared read lock), so concurrent workers that
//! hit the cache never serialise on a write lock; only inserts take it. The
//! eviction quality is close to LRU for this workload (popular sites stay).

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use hashbrown::HashMap;

struct Slot<K, V> {
    key: K,
    value: V,
    referenced: AtomicBool,
}

struct Inner<K, V> {
    index: HashMap<K, usize>,
    slots: Vec<Slot<K, V>>,
    hand: usize,
}

/// A fixed-capacity cache; capacity 0 caches nothing.
pub(crate) struct ClockCache<K, V> {
    cap: usize,
    inner: RwLock<Inner<K, V>>,
}

impl<K: Hash + Eq + Clone, V: Clone> ClockCache<K, V> {
    /// Creates an empty cache holding at most `cap` entries.
    pub(crate) fn new(cap: usize) -> Self {
        ClockCache {
            cap,
            inner: RwLock::new(Inner {
                index: HashMap::new(),
                slots: Vec::new(),
                hand: 0,
            }),
        }
    }

    /// Returns a clone of the value for `key`, marking it recently used.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: Hash + hashbrown::Equivalent<K> + ?Sized,
    {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let &i = inner.index.get(key)?;
        let slot = &inner.slots[i];
        slot.referenced.store(true, Ordering::Relaxed);
        Some(slot.value.clone())
    }

    /// Inserts or replaces `key`; returns true when another entry was evicted.
    pub(crate) fn insert(&self, key: K, value: V) -> bool {
        if self.cap == 0 {
            return false;
        }
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *inner;
        if let Some(&i) = inner.index.get(&key) {
            inner.slots[i].value = value;
            return false;
        }
        if inner.slots.len() < self.cap {
            inner.index.insert(key.clone(), inner.slots.len());
            inner.slots.push(Slot {
                key,
                value,
                referenced: AtomicBool::new(false),
            });
            return false;
        }
        // Second chance: skip (and clear) referenced slots; terminates within
        // two sweeps because every skipped slot is cleared.
        loop {
            let i = inner.hand;
            inner.hand = (inner.hand + 1) % inner.slots.len();
            if inner.slots[i].referenced.swap(false, Ordering::Relaxed) {
                continue;
            }
            let old = std::mem::replace(
                &mut inner.slots[i],
                Slot {
                    key: key.clone(),
                    value,
                    referenced: AtomicBool::new(false),
                },
            );
            inner.index.remove(&old.key);
            inner.index.insert(key, i);
            return true;
        }
    }

    /// Number of entries held.
    pub(crate) fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .slots
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keeps_recently_used() {
        let c = ClockCache::new(3);
        assert!(!c.insert(1, "a"));
        assert!(!c.insert(2, "b"));
        assert!(!c.insert(3, "c"));
        assert_eq!(c.get(&1), Some("a"));
        assert!(c.insert(4, "d"));
        assert_eq!(c.len(), 3);
        // 1 was referenced, so 2 went first.
        assert_eq!(c.get(&1), Some("a"));
        assert_eq!(c.get(&2), None);
        for k in 5..100 {
            c.insert(k, "x");
            assert!(c.len() <= 3);
        }
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let c = ClockCache::new(0);
        assert!(!c.insert(1, 1));
        assert_eq!(c.get(&1), None);
    }
}
