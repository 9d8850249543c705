//! Publishes the memory-mapped cache file libnss_connect answers hits from.
//!
//! Freshness rule: a change is visible to every new lookup the moment it is
//! acknowledged. [`Publisher::changed`] runs after each commit and before
//! the reply: it retires the current file (one 8-byte write), so readers ask
//! the daemon, which already knows the change. A new snapshot is published
//! shortly after by [`Publisher::run`]. A snapshot is only put in place if
//! no change committed while it was being built; otherwise it is thrown
//! away and built again.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connect_memcache::{Group, User};

/// How long to wait after a change before building a snapshot, so a burst
/// of provisioning builds one file instead of hundreds.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// The longest a snapshot waits for a quiet moment before being tried anyway.
pub const MAX_QUIET_WAIT: Duration = Duration::from_secs(2);

pub struct Publisher {
    path: Option<PathBuf>,
    /// Bumped (under `current`'s lock) by every committed change.
    changes: AtomicU64,
    /// The published file, kept open to retire it.
    current: Mutex<Option<File>>,
    notify: tokio::sync::Notify,
    generation: AtomicU64,
}

fn random_seed() -> (u64, u64) {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most bytes.len() bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // getrandom cannot fail for 16 bytes once the pool is initialised;
        // if it ever does, mix what the process has rather than use zeros.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mix = t ^ (u128::from(std::process::id()) << 64) ^ (&bytes as *const _ as u128);
        bytes = mix.to_le_bytes();
    }
    let (a, b) = bytes.split_at(8);
    (
        u64::from_le_bytes(a.try_into().unwrap_or([0; 8])),
        u64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
    )
}

impl Publisher {
    /// `path` `None` disables the fast path (readers always ask the daemon).
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            changes: AtomicU64::new(0),
            current: Mutex::new(None),
            notify: tokio::sync::Notify::new(),
            generation: AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<File>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After a commit, before its reply: stop readers trusting the file.
    pub fn changed(&self) {
        if self.path.is_none() {
            return;
        }
        let current = self.lock();
        self.changes.fetch_add(1, Ordering::AcqRel);
        if let Some(file) = current.as_ref() {
            if let Err(e) = connect_memcache::retire(file) {
                tracing::error!("cannot retire the cache file: {e}; lookups may see the old answer until the next snapshot");
            }
        }
        drop(current);
        self.notify.notify_one();
    }

    /// The change counter to pass to [`Publisher::publish`].
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Publishes a snapshot read after `changes_before` was taken, unless a
    /// change committed since. Returns whether it was put in place.
    pub fn publish(
        &self,
        changes_before: u64,
        users: &[User],
        groups: &[Group],
    ) -> std::io::Result<bool> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let bytes = connect_memcache::build(users, groups, random_seed(), generation, created)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let mut current = self.lock();
        if self.changes.load(Ordering::Acquire) != changes_before {
            return Ok(false);
        }
        let file = connect_memcache::publish(path, &bytes)?;
        if let Some(old) = current.replace(file) {
            // Readers holding the old mapping move to the new file.
            let _ = connect_memcache::retire(&old);
        }
        tracing::debug!(
            users = users.len(),
            groups = groups.len(),
            bytes = bytes.len(),
            "published the cache file"
        );
        Ok(true)
    }

    /// Retires and removes the file (clean shutdown): with the daemon gone,
    /// nothing should be answered from a file nobody keeps current.
    pub fn withdraw(&self) {
        let Some(path) = &self.path else { return };
        let mut current = self.lock();
        if let Some(file) = current.take() {
            let _ = connect_memcache::retire(&file);
        }
        let _ = std::fs::remove_file(path);
    }

    /// Retires a file an earlier daemon left (it may have been killed), so
    /// long-lived readers stop using it before this daemon's first snapshot.
    pub fn retire_leftover(&self) {
        if let Some(path) = &self.path {
            if let Err(e) = connect_memcache::retire_path(path) {
                tracing::warn!("cannot retire the old cache file {}: {e}", path.display());
            }
        }
    }

    /// Rebuilds the file after changes, until the process ends.
    pub async fn run(self: Arc<Self>, build: Arc<dyn Fn() -> Result<bool, String> + Send + Sync>) {
        if self.path.is_none() {
            return;
        }
        loop {
            self.notify.notified().await;
            // Wait for a quiet moment: a snapshot built while changes keep
            // landing would be thrown away (and during a provisioning burst
            // readers are asking the daemon anyway).
            let waiting = tokio::time::Instant::now();
            loop {
                let before = self.changes();
                tokio::time::sleep(DEBOUNCE).await;
                // ...but never postpone forever under a steady trickle.
                if self.changes() == before || waiting.elapsed() >= MAX_QUIET_WAIT {
                    break;
                }
            }
            let build = build.clone();
            match tokio::task::spawn_blocking(move || build()).await {
                Ok(Ok(true)) => release_freed_memory(),
                // A change landed meanwhile; its notification brings us back.
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::error!(
                        "cannot publish the cache file: {e}; lookups go to the daemon meanwhile"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.notify.notify_one();
                }
                Err(e) => tracing::error!("cache publishing task failed: {e}"),
            }
        }
    }
}

/// A snapshot of many accounts is built in memory and dropped; give the
/// freed pages back to the system instead of keeping them in malloc's pools.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only walks glibc's own allocator state.
    unsafe { libc::malloc_trim(0) };
}
