//! [`LruMap`]: a map with a maximum number of entries that evicts the least recently used one.

use std::collections::HashMap;
use std::hash::Hash;

/// A map holding at most `capacity` entries. Reading an entry marks it used; inserting into a full map
/// evicts the entry used longest ago (found by a scan: inserts are rare, they follow a registry call).
#[derive(Debug)]
pub(crate) struct LruMap<K, V> {
    map: HashMap<K, (V, u64)>,
    capacity: usize,
    clock: u64,
}

impl<K: Hash + Eq + Clone, V> LruMap<K, V> {
    /// An empty map of at most `capacity` entries (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        LruMap {
            map: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The value of `key`, marked as just used.
    pub(crate) fn get(&mut self, key: &K) -> Option<&V> {
        let now = self.tick();
        let (value, used) = self.map.get_mut(key)?;
        *used = now;
        Some(value)
    }

    /// Inserts or replaces `key`, evicting the least recently used entry when the map is full.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        let now = self.tick();
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(key, (value, now));
    }

    /// Inserts `key` unless it is present (then it is only marked as used).
    pub(crate) fn insert_if_absent(&mut self, key: K, value: V) {
        if self.get(&key).is_none() {
            self.insert(key, value);
        }
    }

    /// Removes `key`.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key).map(|(value, _)| value)
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The most entries the map holds.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut m = LruMap::new(3);
        for i in 1..=3 {
            m.insert(i, i * 10);
        }
        assert_eq!(m.get(&1), Some(&10));
        m.insert(4, 40);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(&2), None, "2 was used longest ago");
        assert_eq!(m.get(&1), Some(&10));
        m.insert(1, 11);
        assert_eq!((m.len(), m.get(&1)), (3, Some(&11)), "replacing evicts nothing");
        m.insert_if_absent(3, 99);
        assert_eq!(m.get(&3), Some(&30));
        assert_eq!(m.remove(&3), Some(30));
        assert_eq!(m.len(), 2);
        assert_eq!(LruMap::<u32, u32>::new(0).capacity(), 1);
    }
}
