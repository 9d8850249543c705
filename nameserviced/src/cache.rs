//! The lookup cache in front of SQLite: an LRU with separate lifetimes for
//! answers ("alice is uid 1000000001") and non-answers ("no such user"),
//! emptied at once by any provisioning change.
//!
//! A lookup that read the database before a change committed must not put its
//! stale answer back after the change emptied the cache, so every insert
//! carries the generation it started under and is dropped if a change
//! happened since.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connect_proto::v1::{PosixGroup, PosixUser};
use lru::LruCache;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKey {
    UserByName(String),
    UserByUid(u32),
    GroupByName(String),
    GroupByGid(u32),
    Supplementary(String),
}

/// A cached answer; `None` inside means "authoritatively not found".
#[derive(Debug, Clone)]
pub enum CacheValue {
    User(Option<Arc<PosixUser>>),
    Group(Option<Arc<PosixGroup>>),
    /// `None`: the user is unknown.
    Supplementary(Option<Arc<Vec<u32>>>),
}

impl CacheValue {
    fn is_negative(&self) -> bool {
        match self {
            CacheValue::User(v) => v.is_none(),
            CacheValue::Group(v) => v.is_none(),
            CacheValue::Supplementary(v) => v.is_none(),
        }
    }
}

struct Entry {
    value: CacheValue,
    expires: Instant,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub negative_hits: u64,
    pub misses: u64,
    pub expired: u64,
    pub invalidations: u64,
    pub entries: u64,
    pub capacity: u64,
}

pub struct LookupCache {
    entries: Mutex<LruCache<CacheKey, Entry>>,
    generation: AtomicU64,
    positive_ttl: Duration,
    negative_ttl: Duration,
    hits: AtomicU64,
    negative_hits: AtomicU64,
    misses: AtomicU64,
    expired: AtomicU64,
    invalidations: AtomicU64,
}

impl LookupCache {
    pub fn new(capacity: NonZeroUsize, positive_ttl: Duration, negative_ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
            generation: AtomicU64::new(0),
            positive_ttl,
            negative_ttl,
            hits: AtomicU64::new(0),
            negative_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<CacheKey, Entry>> {
        // A panic while holding the lock leaves a consistent LRU (its methods
        // are not interrupted halfway), so the data stays usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generation to pass to [`LookupCache::insert`] after reading the database.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, key: &CacheKey) -> Option<CacheValue> {
        let mut entries = self.lock();
        let now = Instant::now();
        match entries.get(key) {
            Some(entry) if entry.expires > now => {
                let counter = if entry.value.is_negative() {
                    &self.negative_hits
                } else {
                    &self.hits
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Some(entry.value.clone())
            }
            Some(_) => {
                entries.pop(key);
                self.expired.fetch_add(1, Ordering::Relaxed);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn insert(&self, key: CacheKey, value: CacheValue, generation: u64) {
        let ttl = if value.is_negative() {
            self.negative_ttl
        } else {
            self.positive_ttl
        };
        if ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        // Checked under the lock, and `invalidate` bumps the generation
        // under the same lock, so a stale insert can never slip in after a clear.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        entries.put(
            key,
            Entry {
                value,
                expires: Instant::now() + ttl,
            },
        );
    }

    /// Empties the cache after a change; in-flight lookups will not refill it
    /// with what they read before.
    pub fn invalidate(&self) {
        let mut entries = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
        self.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> CacheStats {
        let entries = self.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            negative_hits: self.negative_hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            entries: entries.len() as u64,
            capacity: entries.cap().get() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> CacheValue {
        CacheValue::User(Some(Arc::new(PosixUser {
            name: name.into(),
            ..Default::default()
        })))
    }

    fn cache(pos: u64, neg: u64) -> LookupCache {
        LookupCache::new(
            NonZeroUsize::new(2).unwrap(),
            Duration::from_millis(pos),
            Duration::from_millis(neg),
        )
    }

    #[test]
    fn hits_misses_and_lru_eviction() {
        let c = cache(60_000, 60_000);
        let g = c.generation();
        for name in ["a", "b", "c"] {
            c.insert(CacheKey::UserByName(name.into()), user(name), g);
        }
        assert!(
            c.get(&CacheKey::UserByName("a".into())).is_none(),
            "evicted"
        );
        assert!(c.get(&CacheKey::UserByName("c".into())).is_some());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.entries, s.capacity), (1, 1, 2, 2));
    }

    #[test]
    fn negative_answers_expire_on_their_own_ttl() {
        let c = cache(60_000, 20);
        let g = c.generation();
        c.insert(
            CacheKey::UserByName("ghost".into()),
            CacheValue::User(None),
            g,
        );
        c.insert(CacheKey::UserByName("alice".into()), user("alice"), g);
        assert!(c.get(&CacheKey::UserByName("ghost".into())).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get(&CacheKey::UserByName("ghost".into())).is_none());
        assert!(c.get(&CacheKey::UserByName("alice".into())).is_some());
        assert_eq!(c.stats().expired, 1);
        assert_eq!(c.stats().negative_hits, 1);
    }

    #[test]
    fn invalidation_clears_and_blocks_stale_inserts() {
        let c = cache(60_000, 60_000);
        let before = c.generation();
        c.insert(CacheKey::UserByUid(1), user("a"), before);
        c.invalidate();
        assert!(c.get(&CacheKey::UserByUid(1)).is_none());
        // A lookup that started before the change must not repopulate.
        c.insert(CacheKey::UserByUid(1), user("stale"), before);
        assert!(c.get(&CacheKey::UserByUid(1)).is_none());
        c.insert(CacheKey::UserByUid(1), user("fresh"), c.generation());
        assert!(c.get(&CacheKey::UserByUid(1)).is_some());
    }

    #[test]
    fn zero_ttl_disables_caching() {
        let c = cache(0, 0);
        c.insert(CacheKey::UserByUid(1), user("a"), c.generation());
        assert!(c.get(&CacheKey::UserByUid(1)).is_none());
    }
}
