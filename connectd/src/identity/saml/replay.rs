//! Assertion IDs already used, each kept until its assertion expires, so
//! that a response captured on the way (or from a browser's history) signs
//! nobody in a second time. Solicited responses are single use through
//! their pending request as well; unsolicited ones have only this.
//!
//! Bounded: when full of unexpired IDs, new sign-ins are refused rather
//! than old IDs forgotten (forgetting one would reopen its replay).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

pub const MAX_REMEMBERED: usize = 100_000;

pub struct ReplayCache {
    seen: Mutex<HashMap<String, DateTime<Utc>>>,
    capacity: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    First,
    Again,
    Full,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::new(MAX_REMEMBERED)
    }
}

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`, valid until `expires`, unless it was seen already.
    pub fn check(&self, id: &str, expires: DateTime<Utc>, now: DateTime<Utc>) -> Seen {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = seen.get(id) {
            if *until >= now {
                return Seen::Again;
            }
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, until| *until >= now);
            if seen.len() >= self.capacity {
                return Seen::Full;
            }
        }
        seen.insert(id.to_owned(), expires);
        Seen::First
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_accepted_once_until_it_expires() {
        let cache = ReplayCache::default();
        let now = Utc::now();
        let later = now + chrono::Duration::minutes(5);
        assert_eq!(cache.check("_a", later, now), Seen::First);
        assert_eq!(cache.check("_a", later, now), Seen::Again);
        assert_eq!(cache.check("_b", later, now), Seen::First);
        // Expired assertions are refused before they get here; the entry
        // itself may then go.
        let much_later = later + chrono::Duration::minutes(1);
        assert_eq!(cache.check("_a", much_later, much_later), Seen::First);
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forgets() {
        let cache = ReplayCache::new(2);
        let now = Utc::now();
        let later = now + chrono::Duration::minutes(5);
        assert_eq!(cache.check("_a", later, now), Seen::First);
        assert_eq!(cache.check("_b", later, now), Seen::First);
        assert_eq!(cache.check("_c", later, now), Seen::Full);
        assert_eq!(cache.check("_a", later, now), Seen::Again, "not forgotten");
        let after = later + chrono::Duration::seconds(1);
        assert_eq!(
            cache.check("_c", after, after),
            Seen::First,
            "expired ones made room"
        );
    }
}
