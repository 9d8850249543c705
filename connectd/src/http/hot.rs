//! Read-through caches for what every proxied request reads: the session's
//! user, the content and the viewer's groups. Without them each request took
//! the store's one connection three or four times.
//!
//! Only answers that are read in one go are cached, under the generation
//! read just before: a value computed from inputs read earlier (a relation
//! from a content item and a group list) could be stored under a generation
//! newer than its inputs, so relations are always asked of the store.
//!
//! An answer is served from here only while the store's generation (bumped
//! by every row written, see `UserStore::generation`) is the one it was read
//! under, and never for longer than [`MAX_AGE`], so a sign-out, a lock, a
//! role or access change made on this node is seen by the very next
//! request, and one made by another node sharing the database within the
//! store's check interval (50 ms for SQLite). A store that
//! cannot say when it changed (`None`) is never cached. Absent sessions and
//! content are not cached: a client sending random tokens must not fill the
//! cache. Each shelf is bounded and emptied when full.
//!
//! May import `model` and `store`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::model::{Content, Group, User};
use crate::store::{Store, StoreError};

/// The longest any answer is reused, whatever the generation says: a
/// backstop should a write ever escape the store's update hook.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// Entries per shelf before it is emptied.
const CAPACITY: usize = 16_384;

struct Entry<V> {
    value: V,
    generation: u64,
    at: Instant,
}

struct Shelf<K, V> {
    entries: Mutex<HashMap<K, Entry<V>>>,
}

impl<K: Eq + Hash, V: Clone> Shelf<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Entry<V>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value of `key` if it is still good, else `load()`'s,
    /// remembered when `keep` says it may be.
    fn get_or_load(
        &self,
        key: K,
        generation: Option<u64>,
        load: impl FnOnce() -> Result<V, StoreError>,
        keep: impl FnOnce(&V) -> bool,
    ) -> Result<V, StoreError> {
        let Some(generation) = generation else {
            return load();
        };
        if let Some(entry) = self.lock().get(&key) {
            if entry.generation == generation && entry.at.elapsed() < MAX_AGE {
                return Ok(entry.value.clone());
            }
        }
        let value = load()?;
        if keep(&value) {
            let mut entries = self.lock();
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            entries.insert(
                key,
                Entry {
                    value: value.clone(),
                    generation,
                    at: Instant::now(),
                },
            );
        }
        Ok(value)
    }
}

pub struct HotCache {
    sessions: Shelf<String, Option<User>>,
    content: Shelf<String, Option<Arc<Content>>>,
    groups: Shelf<i64, Arc<Vec<Group>>>,
}

impl Default for HotCache {
    fn default() -> Self {
        Self {
            sessions: Shelf::new(),
            content: Shelf::new(),
            groups: Shelf::new(),
        }
    }
}

impl HotCache {
    pub fn session_user(
        &self,
        store: &dyn Store,
        token_hash: &str,
    ) -> Result<Option<User>, StoreError> {
        self.sessions.get_or_load(
            token_hash.to_owned(),
            store.generation(),
            || store.session_user(token_hash),
            Option::is_some,
        )
    }

    pub fn content(
        &self,
        store: &dyn Store,
        guid: &str,
    ) -> Result<Option<Arc<Content>>, StoreError> {
        self.content.get_or_load(
            guid.to_owned(),
            store.generation(),
            || Ok(store.content_by_guid(guid)?.map(Arc::new)),
            Option::is_some,
        )
    }

    pub fn groups_of(
        &self,
        store: &dyn Store,
        user_id: i64,
    ) -> Result<Arc<Vec<Group>>, StoreError> {
        self.groups.get_or_load(
            user_id,
            store.generation(),
            || Ok(Arc::new(store.groups_of(user_id)?)),
            |_| true,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::Role;
    use crate::store::sqlite::SqliteStore;
    use crate::store::UserStore;

    fn signed_in() -> (SqliteStore, User) {
        let store = SqliteStore::in_memory().unwrap();
        let user = store
            .create_password_user("ada", "Ada", "L", "", "x", Role::Viewer)
            .unwrap();
        store.create_session("token-1", user.id, 3600).unwrap();
        (store, user)
    }

    #[test]
    fn a_session_is_cached_until_the_store_changes() {
        let (store, user) = signed_in();
        let hot = HotCache::default();
        let found = hot.session_user(&store, "token-1").unwrap().unwrap();
        assert_eq!(found.id, user.id);
        // Served from the cache: the store is not asked while nothing changed.
        let before = store.generation();
        assert!(hot.session_user(&store, "token-1").unwrap().is_some());
        assert_eq!(store.generation(), before);
        // A sign-out is seen by the very next request.
        store.delete_session("token-1").unwrap();
        assert_ne!(store.generation(), before, "the update hook saw the delete");
        assert!(hot.session_user(&store, "token-1").unwrap().is_none());
    }

    #[test]
    fn a_lock_ends_a_cached_session_at_once() {
        let (store, user) = signed_in();
        let hot = HotCache::default();
        assert!(hot.session_user(&store, "token-1").unwrap().is_some());
        store.set_locked(user.id, true).unwrap();
        assert!(hot.session_user(&store, "token-1").unwrap().is_none());
    }

    #[test]
    fn another_nodes_write_to_the_same_database_is_seen_within_the_check_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connect.db");
        let node_a = SqliteStore::open(&path, "a").unwrap();
        let node_b = SqliteStore::open(&path, "b").unwrap();
        let user = node_a
            .create_password_user("ada", "Ada", "L", "", "x", Role::Viewer)
            .unwrap();
        node_a.create_session("token-1", user.id, 3600).unwrap();
        let hot = HotCache::default();
        assert!(hot.session_user(&node_a, "token-1").unwrap().is_some());
        // Node B signs the user out: node A's cache must stop answering
        // within the check interval (50 ms).
        node_b.delete_session("token-1").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert!(hot.session_user(&node_a, "token-1").unwrap().is_none());
    }

    #[test]
    fn absent_sessions_are_not_remembered() {
        let (store, _) = signed_in();
        let hot = HotCache::default();
        for i in 0..100 {
            assert!(hot
                .session_user(&store, &format!("guess-{i}"))
                .unwrap()
                .is_none());
        }
        assert!(hot.sessions.lock().is_empty());
    }
}
