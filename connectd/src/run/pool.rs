//! Pool policy: which processes a request may use, when a pool grows, and
//! which idle processes stop. No I/O: the scheduler applies the answers.
//!
//! Processes live in pools keyed by content and principal: each viewer's
//! own for current-user content, one per RunAs account otherwise. A new
//! process starts when the pool's connections would exceed `LoadFactor` x
//! its capacity and `MaxProcesses` allows; a pool that is full answers
//! "busy", and so does the whole server once it runs `[Scheduler]
//! MaxTotalProcesses` processes. Processes idle for `IdleTimeout` stop
//! (pools of shared content keep `MinProcesses`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::config::{SchedulerSettings, Settings};
use crate::model::Content;
use crate::model::User;
use crate::proxy::Upstream;

/// Whose processes a pool holds: one viewer's (current-user content), or
/// one account's shared by every viewer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Principal {
    Viewer(i64),
    Account(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PoolKey {
    pub(super) content_id: i64,
    pub(super) principal: Principal,
}

pub(super) enum Choice {
    Use(Arc<Process>),
    Start,
    ServerFull,
    ContentFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ProcessState {
    Starting,
    Ready,
    Exited(String),
}

/// One running content process.
pub struct Process {
    pub job: String,
    /// 0 until the process has been forked.
    pub pid: AtomicU32,
    pub uid: u32,
    pub account: String,
    pub bundle_id: i64,
    /// The deployment (environment) it runs.
    pub deployment: String,
    pub upstream: Upstream,
    pub(super) pool: PoolKey,
    pub(super) settings: SchedulerSettings,
    pub(super) keep_minimum: bool,
    pub(super) connections: AtomicUsize,
    pub(super) idle_since: Mutex<Instant>,
    pub(super) state: watch::Sender<ProcessState>,
    /// A newer bundle is live: take no new connections, stop when idle.
    pub(super) draining: AtomicBool,
    pub(super) stop: Notify,
    /// Set when it ended killed for exceeding a limit (see
    /// [`Exit::over_limit`](crate::run::launcher::Exit::over_limit)).
    pub(super) over_limit: Mutex<Option<String>>,
    /// It runs under a memory limit, so a dropped connection may be the
    /// kernel killing it for memory.
    pub(super) memory_limited: bool,
}

impl Process {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Waits up to `wait` for the process to end (a connection it dropped
    /// is usually the first sign), and says which limit it was killed for
    /// exceeding, if that is how it ended.
    /// Without a memory limit there is nothing to wait for: `None` at once.
    pub async fn killed_over_limit(&self, wait: Duration) -> Option<String> {
        if !self.memory_limited {
            return None;
        }
        let mut state = self.state.subscribe();
        let ended = state.wait_for(|s| matches!(s, ProcessState::Exited(_)));
        tokio::time::timeout(wait, ended).await.ok()?.ok()?;
        self.over_limit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes it out of rotation (no new connection lands on it) and asks
    /// its supervisor to stop it.
    pub(super) fn stop_now(&self) {
        self.draining.store(true, Ordering::Release);
        self.stop.notify_one();
    }
}

/// A connection's hold on a process; the process counts as busy until it
/// is dropped (the proxy drops it when the response or WebSocket ends).
pub struct Lease {
    process: Arc<Process>,
}

impl Lease {
    /// Counts one more connection on `process`.
    pub(super) fn take(process: Arc<Process>) -> Self {
        process.connections.fetch_add(1, Ordering::AcqRel);
        Lease { process }
    }

    pub fn process(&self) -> &Arc<Process> {
        &self.process
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.process.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self
                .process
                .idle_since
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

#[derive(Default)]
pub(super) struct Pools {
    pub(super) by_key: HashMap<PoolKey, Vec<Arc<Process>>>,
    pub(super) total: usize,
}

/// The pool a request belongs to, without any lookup: each viewer's own
/// for current-user content, else the content's RunAs account's.
pub(super) fn pool_key(settings: &Settings, content: &Content, viewer: Option<&User>) -> PoolKey {
    let current_user = content.run_as_current_user && settings.run_as_current_user;
    let principal = match viewer.filter(|_| current_user) {
        Some(user) => Principal::Viewer(user.id),
        None => Principal::Account(
            content
                .run_as
                .clone()
                .unwrap_or_else(|| settings.run_as.clone()),
        ),
    };
    PoolKey {
        content_id: content.id,
        principal,
    }
}

impl Pools {
    /// The scheduling rule, with the pools locked.
    pub(super) fn choose(
        &self,
        key: &PoolKey,
        deployment: &str,
        limits: &SchedulerSettings,
        max_total_processes: u32,
    ) -> Choice {
        let total = self.total;
        let max_total = max_total_processes as usize;
        let per_process = limits.max_conns_per_process as usize;
        let empty = Vec::new();
        let pool = self.by_key.get(key).unwrap_or(&empty);
        let live: Vec<&Arc<Process>> = pool
            .iter()
            .filter(|p| {
                !p.draining.load(Ordering::Acquire)
                    && p.deployment == deployment
                    && !matches!(*p.state.borrow(), ProcessState::Exited(_))
            })
            .collect();
        let connections: usize = live.iter().map(|p| p.connections()).sum();
        let capacity = live.len() * per_process;
        let least = live
            .iter()
            .min_by_key(|p| p.connections())
            .filter(|p| p.connections() < per_process);
        let wants_new =
            live.is_empty() || (connections + 1) as f64 > limits.load_factor * capacity as f64;
        let may_start = live.len() < limits.max_processes as usize && total < max_total;
        match (wants_new && may_start, least) {
            (true, _) => Choice::Start,
            (false, Some(process)) => Choice::Use((*process).clone()),
            (false, None) if total >= max_total => Choice::ServerFull,
            (false, None) => Choice::ContentFull,
        }
    }

    pub(super) fn add(&mut self, process: Arc<Process>) {
        self.by_key
            .entry(process.pool.clone())
            .or_default()
            .push(process);
        self.total += 1;
    }

    /// Takes an ended process out of its pool.
    pub(super) fn forget(&mut self, process: &Arc<Process>) {
        if let Some(pool) = self.by_key.get_mut(&process.pool) {
            let before = pool.len();
            pool.retain(|p| !Arc::ptr_eq(p, process));
            let removed = before - pool.len();
            self.total = self.total.saturating_sub(removed);
            if self.by_key.get(&process.pool).is_some_and(Vec::is_empty) {
                self.by_key.remove(&process.pool);
            }
        }
    }

    /// Stops processes that have been idle for their IdleTimeout, and
    /// draining ones as soon as they are idle.
    pub(super) fn reap(&self) {
        for processes in self.by_key.values() {
            let mut alive = processes
                .iter()
                .filter(|p| !p.draining.load(Ordering::Acquire))
                .count();
            for process in processes {
                if process.connections() > 0 || *process.state.borrow() != ProcessState::Ready {
                    continue;
                }
                let draining = process.draining.load(Ordering::Acquire);
                let idle = process
                    .idle_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .elapsed();
                let keep = process.keep_minimum && alive <= process.settings.min_processes as usize;
                if draining || (idle >= process.settings.idle_timeout && !keep) {
                    tracing::info!(
                        job = %process.job,
                        pid = process.pid.load(Ordering::Acquire),
                        idle_seconds = idle.as_secs(),
                        draining,
                        "stopping an idle content process"
                    );
                    if !draining {
                        alive -= 1;
                    }
                    process.stop_now();
                }
            }
        }
    }

    /// Every process of one content item.
    pub(super) fn of_content(&self, content_id: i64) -> impl Iterator<Item = &Arc<Process>> {
        self.by_key
            .iter()
            .filter(move |(k, _)| k.content_id == content_id)
            .flat_map(|(_, v)| v.iter())
    }
}
