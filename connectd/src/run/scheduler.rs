//! The process scheduler: which process serves a viewer's request, when a
//! new one starts, and when idle ones stop.
//!
//! Processes live in pools keyed by content and Unix account. Content that
//! runs as a shared account (RunAs) has one pool that serves every viewer,
//! up to `MaxConnsPerProcess` connections per process; content that runs as
//! the current user has one pool per viewer's account, so a process is
//! never shared across viewers (the scheduler limits then apply per viewer).
//! A new process starts when the pool's connections would exceed
//! `LoadFactor` x its capacity and `MaxProcesses` allows; a pool that is
//! full answers "busy", and so does the whole server once it runs
//! `[Scheduler] MaxTotalProcesses` processes, rather than exhausting the
//! machine. Processes idle for `IdleTimeout` are stopped (pools of shared
//! content keep `MinProcesses`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::accounts::runas::{self, AccountRefusal, RunAccount};
use crate::bundle::{self, AppMode, Runtimes};
use crate::config::{ProviderKind, SchedulerSettings, Settings};
use crate::content::Content;
use crate::identity::login::Authenticator;
use crate::layout::Layout;
use crate::proxy::Upstream;
use crate::run::launcher::{
    Endpoint, LaunchKind, LaunchSpec, Launcher, Mount, Running, SessionPlan,
};
use crate::store::{GroupRef, Store, User};

/// How long a process gets to leave after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Whose processes a pool holds: one viewer's (current-user content), or
/// one account's shared by every viewer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Principal {
    Viewer(i64),
    Account(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    content_id: i64,
    principal: Principal,
}

enum Choice {
    Use(Arc<Process>),
    Start,
    ServerFull,
    ContentFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ProcessState {
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
    pool: PoolKey,
    settings: SchedulerSettings,
    keep_minimum: bool,
    connections: AtomicUsize,
    idle_since: Mutex<Instant>,
    state: watch::Sender<ProcessState>,
    /// A newer bundle is live: take no new connections, stop when idle.
    draining: AtomicBool,
    stop: Notify,
}

impl Process {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Takes it out of rotation (no new connection lands on it) and asks
    /// its supervisor to stop it.
    fn stop_now(&self) {
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

/// Why a viewer's request found no process.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error(
        "the server is running as many content processes as it may ([Scheduler] \
         MaxTotalProcesses = {0}); try again in a moment"
    )]
    ServerBusy(u32),
    #[error(
        "this content is serving as many connections as its settings allow (MaxProcesses \
         = {max_processes}, MaxConnsPerProcess = {max_conns}); try again in a moment"
    )]
    ContentBusy { max_processes: u32, max_conns: u32 },
    #[error("{0}")]
    Refused(AccountRefusal),
    #[error("the nameservice could not provide your Unix account: {0}")]
    Provisioning(String),
    #[error("the content has not been deployed yet")]
    NotDeployed,
    #[error("the application failed to start: {0}")]
    StartFailed(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub struct Scheduler {
    settings: Arc<Settings>,
    store: Arc<Store>,
    layout: Layout,
    auth: Option<Arc<Authenticator>>,
    runtimes: Runtimes,
    server_url: String,
    pools: Mutex<Pools>,
    launcher: Arc<dyn Launcher>,
}

#[derive(Default)]
struct Pools {
    by_key: HashMap<PoolKey, Vec<Arc<Process>>>,
    total: usize,
}

/// Who a request runs as, decided before any process is chosen.
struct RunIdentity {
    account: RunAccount,
    viewer_id: Option<i64>,
    keep_minimum: bool,
    /// `[PAM] UseSession`: the session to open for a viewer's process.
    pam_session: Option<SessionPlan>,
}

/// What the launch task records about a process.
struct JobRecord {
    content_id: i64,
    content_guid: String,
    bundle_id: i64,
    viewer_id: Option<i64>,
    log_path: String,
}

impl Scheduler {
    /// Every content process starts through `launcher`.
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<Store>,
        auth: Option<Arc<Authenticator>>,
        launcher: Arc<dyn Launcher>,
    ) -> Arc<Self> {
        let layout = Layout::new(&settings.data_dir);
        let runtimes = runtimes(&settings, &layout);
        let server_url = settings.address.clone().unwrap_or_else(|| {
            let ip = settings.listen.ip();
            let host = if ip.is_unspecified() {
                "localhost".to_owned()
            } else {
                ip.to_string()
            };
            format!("http://{host}:{}", settings.listen.port())
        });
        Arc::new(Self {
            settings,
            store,
            layout,
            auth,
            runtimes,
            server_url,
            pools: Mutex::new(Pools::default()),
            launcher,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// What starts every content process and build.
    pub fn launcher(&self) -> &Arc<dyn Launcher> {
        &self.launcher
    }

    pub fn runtimes(&self) -> &Runtimes {
        &self.runtimes
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Processes running now (starting or ready), for the API and tests.
    pub fn running(&self, content_id: i64) -> Vec<Arc<Process>> {
        self.pools()
            .by_key
            .iter()
            .filter(|(k, _)| k.content_id == content_id)
            .flat_map(|(_, v)| v.iter().cloned())
            .collect()
    }

    pub fn total(&self) -> usize {
        self.pools().total
    }

    /// The account a request for `content` runs as: the viewer's own when
    /// the content asks for it and the server permits it, else the
    /// content's RunAs, else `Applications.RunAs` (also for anonymous
    /// viewers of current-user content).
    async fn identity(
        &self,
        content: &Content,
        viewer: Option<&User>,
    ) -> Result<RunIdentity, AcquireError> {
        let current_user = content.run_as_current_user && self.settings.run_as_current_user;
        let (name, viewer_id) = match viewer.filter(|_| current_user) {
            Some(user) => (self.viewer_account(user).await?, Some(user.id)),
            None => (
                content
                    .run_as
                    .clone()
                    .unwrap_or_else(|| self.settings.run_as.clone()),
                None,
            ),
        };
        let settings = self.settings.clone();
        let account = tokio::task::spawn_blocking(move || runas::check_account(&settings, &name))
            .await
            .map_err(|e| AcquireError::Internal(e.to_string()))?
            .map_err(AcquireError::Refused)?;
        let pam = &self.settings.pam;
        let pam_session = match viewer_id {
            Some(id) if self.settings.provider == ProviderKind::Pam && pam.use_session => {
                let password = if pam.forward_password {
                    self.auth.as_ref().and_then(|a| a.forwarded_password(id))
                } else {
                    None
                };
                Some(SessionPlan {
                    service: if password.is_some() {
                        pam.authenticated_session_service.clone()
                    } else {
                        pam.session_service.clone()
                    },
                    password,
                })
            }
            _ => None,
        };
        Ok(RunIdentity {
            account,
            viewer_id,
            keep_minimum: viewer_id.is_none(),
            pam_session,
        })
    }

    /// The viewer's Unix account name: PAM users are accounts already;
    /// others have the account the nameservice provisioned, which is
    /// provisioned again now if that failed at sign-in.
    async fn viewer_account(&self, user: &User) -> Result<String, AcquireError> {
        if !self.settings.provider.needs_provisioning() {
            return Ok(user.username.clone());
        }
        let known = self
            .store
            .unix_account(user.id)
            .map_err(|e| AcquireError::Internal(e.to_string()))?;
        if let (Some(name), false) = (&known, user.needs_provisioning) {
            return Ok(name.clone());
        }
        let auth = self
            .auth
            .as_ref()
            .ok_or_else(|| AcquireError::Provisioning("no nameservice is configured".to_owned()))?;
        let groups: Vec<GroupRef> = self
            .store
            .groups_of(user.id)
            .map_err(|e| AcquireError::Internal(e.to_string()))?
            .into_iter()
            .map(|g| GroupRef {
                unique_id: g.unique_id,
                name: g.name,
            })
            .collect();
        if !auth.provision(user, &groups).await {
            return Err(AcquireError::Provisioning(
                "provisioning failed; the server log says why".to_owned(),
            ));
        }
        self.store
            .unix_account(user.id)
            .map_err(|e| AcquireError::Internal(e.to_string()))?
            .ok_or_else(|| AcquireError::Provisioning("no account was recorded".to_owned()))
    }

    /// Finds or starts a process for one connection of `viewer` to
    /// `content`, and waits until it listens.
    pub async fn acquire(
        self: &Arc<Self>,
        content: &Content,
        viewer: Option<&User>,
    ) -> Result<Lease, AcquireError> {
        let (Some(bundle_id), Some(deployment)) =
            (content.bundle_id, content.deployment.as_deref())
        else {
            return Err(AcquireError::NotDeployed);
        };
        let limits = content.process.effective(&self.settings.scheduler);
        let key = self.pool_key(content, viewer);
        // Most requests find a process: no account lookups on that path.
        // The account is resolved (and checked) only to start one.
        let mut identity = None;
        loop {
            let step = self.take_or_start(
                content,
                &key,
                (bundle_id, deployment),
                &limits,
                identity.as_ref(),
            )?;
            let lease = match step {
                Some(lease) => lease,
                None => {
                    identity = Some(self.identity(content, viewer).await?);
                    continue;
                }
            };
            self.wait_ready(&lease.process, limits.init_timeout).await?;
            return Ok(lease);
        }
    }

    /// Under the pools' lock: a connection on a process that has room, or
    /// a new process (which needs the resolved `identity`: `Ok(None)` asks
    /// for it), or busy.
    fn take_or_start(
        self: &Arc<Self>,
        content: &Content,
        key: &PoolKey,
        (bundle_id, deployment): (i64, &str),
        limits: &SchedulerSettings,
        identity: Option<&RunIdentity>,
    ) -> Result<Option<Lease>, AcquireError> {
        let mut pools = self.pools();
        let process = match self.choose(&pools, key, deployment, limits) {
            Choice::Use(process) => process,
            Choice::Start => {
                let Some(identity) = identity else {
                    return Ok(None);
                };
                let process = self.start(
                    content,
                    (bundle_id, deployment),
                    identity,
                    *limits,
                    key.clone(),
                )?;
                pools
                    .by_key
                    .entry(key.clone())
                    .or_default()
                    .push(process.clone());
                pools.total += 1;
                process
            }
            Choice::ServerFull => {
                tracing::warn!(
                    content = %content.guid,
                    limit = self.settings.scheduler.max_total_processes,
                    "refused a connection: the server runs as many content processes as \
                     [Scheduler] MaxTotalProcesses allows"
                );
                return Err(AcquireError::ServerBusy(
                    self.settings.scheduler.max_total_processes,
                ));
            }
            Choice::ContentFull => {
                return Err(AcquireError::ContentBusy {
                    max_processes: limits.max_processes,
                    max_conns: limits.max_conns_per_process,
                })
            }
        };
        process.connections.fetch_add(1, Ordering::AcqRel);
        Ok(Some(Lease { process }))
    }

    /// The pool a request belongs to, without any lookup: each viewer's own
    /// for current-user content, else the content's RunAs account's.
    fn pool_key(&self, content: &Content, viewer: Option<&User>) -> PoolKey {
        let current_user = content.run_as_current_user && self.settings.run_as_current_user;
        let principal = match viewer.filter(|_| current_user) {
            Some(user) => Principal::Viewer(user.id),
            None => Principal::Account(
                content
                    .run_as
                    .clone()
                    .unwrap_or_else(|| self.settings.run_as.clone()),
            ),
        };
        PoolKey {
            content_id: content.id,
            principal,
        }
    }

    /// The scheduling rule, with the pools locked.
    fn choose(
        &self,
        pools: &Pools,
        key: &PoolKey,
        deployment: &str,
        limits: &SchedulerSettings,
    ) -> Choice {
        let total = pools.total;
        let max_total = self.settings.scheduler.max_total_processes as usize;
        let per_process = limits.max_conns_per_process as usize;
        let empty = Vec::new();
        let pool = pools.by_key.get(key).unwrap_or(&empty);
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

    async fn wait_ready(
        &self,
        process: &Arc<Process>,
        timeout: Duration,
    ) -> Result<(), AcquireError> {
        let mut state = process.state.subscribe();
        let outcome = tokio::time::timeout(timeout, async {
            loop {
                match &*state.borrow_and_update() {
                    ProcessState::Ready => return Ok(()),
                    ProcessState::Exited(why) => return Err(why.clone()),
                    ProcessState::Starting => {}
                }
                if state.changed().await.is_err() {
                    return Err("the process's watcher ended".to_owned());
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(AcquireError::StartFailed(why)),
            Err(_) => {
                process.stop.notify_one();
                Err(AcquireError::StartFailed(format!(
                    "it did not listen within InitTimeout ({} s); its log says more",
                    timeout.as_secs()
                )))
            }
        }
    }

    /// Starts a process; called with the pools locked, so it only does
    /// quick filesystem work and hands the waiting to tasks.
    fn start(
        self: &Arc<Self>,
        content: &Content,
        (bundle_id, deployment): (i64, &str),
        identity: &RunIdentity,
        settings: SchedulerSettings,
        pool: PoolKey,
    ) -> Result<Arc<Process>, AcquireError> {
        let internal =
            |what: &str, e: std::io::Error| AcquireError::Internal(format!("{what}: {e}"));
        let static_content = || AcquireError::Internal("static content runs no process".to_owned());
        let layout = &self.layout;
        let bundle_dir = layout.bundle_dir(&content.guid, bundle_id);
        let env_dir = layout.env_dir(&content.guid, deployment);
        let work_dir = layout.work_dir(&content.guid);
        let manifest = bundle::read_manifest(&bundle_dir)
            .map_err(|e| AcquireError::StartFailed(e.to_string()))?;
        if manifest.app_mode == AppMode::Static {
            return Err(static_content());
        }
        let job = new_job_key();
        let account = &identity.account;
        let uid = account.account.uid;
        let gid = account.account.gid;
        let endpoint = self
            .launcher
            .endpoint(&job, uid, gid)
            .map_err(|e| AcquireError::Internal(e.to_string()))?;
        let socket = match &endpoint {
            Endpoint::Unix(socket) => socket.clone(),
            Endpoint::Tcp(address) => {
                return Err(AcquireError::Internal(format!(
                    "content processes are reached over Unix sockets only; the launcher \
                     gave {address}"
                )))
            }
        };
        let step = bundle::run_step(
            &manifest,
            &bundle_dir,
            &env_dir,
            &work_dir,
            &socket,
            &self.runtimes,
        )
        .ok_or_else(static_content)?;

        let log_path = layout.log_file(&content.guid, &job);
        let log = open_log(&log_path).map_err(|e| internal("log file", e))?;

        let mut env = base_environment(&account.account);
        env.push(("CONNECT_SERVER".into(), self.server_url.clone().into()));
        env.push(("CONNECT_CONTENT_GUID".into(), content.guid.clone().into()));
        env.extend(step.env.iter().cloned());
        let spec = LaunchSpec {
            job: job.clone(),
            kind: LaunchKind::App,
            account: account.account.name.clone(),
            uid,
            gid,
            groups: account.groups.clone(),
            program: step.program.clone(),
            args: step.args.clone(),
            env,
            cwd: step.cwd.clone(),
            mounts: vec![
                Mount {
                    path: bundle_dir,
                    writable: false,
                },
                Mount {
                    path: env_dir,
                    writable: false,
                },
                Mount {
                    path: work_dir,
                    writable: true,
                },
            ],
            listen: Some(endpoint.clone()),
            log,
            session: identity.pam_session.clone(),
        };
        let (state, _) = watch::channel(ProcessState::Starting);
        let process = Arc::new(Process {
            job: job.clone(),
            pid: AtomicU32::new(0),
            uid,
            account: account.account.name.clone(),
            bundle_id,
            deployment: deployment.to_owned(),
            upstream: Upstream::new(socket),
            pool,
            settings,
            keep_minimum: identity.keep_minimum,
            connections: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            state,
            draining: AtomicBool::new(false),
            stop: Notify::new(),
        });
        let record = JobRecord {
            content_id: content.id,
            content_guid: content.guid.clone(),
            bundle_id,
            viewer_id: identity.viewer_id,
            log_path: log_path.display().to_string(),
        };
        // Forking, and opening a PAM session (which may talk to a KDC),
        // happen outside the pools' lock; connections that arrive meanwhile
        // wait for this process instead of starting their own.
        tokio::spawn(self.clone().launch(process.clone(), spec, endpoint, record));
        Ok(process)
    }

    async fn launch(
        self: Arc<Self>,
        process: Arc<Process>,
        spec: LaunchSpec,
        endpoint: Endpoint,
        record: JobRecord,
    ) {
        let record_start = |pid: Option<u32>| {
            self.store.start_job(
                &process.job,
                record.content_id,
                LaunchKind::App.as_str(),
                Some(record.bundle_id),
                pid,
                &process.account,
                process.uid,
                record.viewer_id,
                &record.log_path,
            )
        };
        let fail = |why: String| {
            tracing::error!(content = %record.content_guid, job = %process.job, "could not start a content process: {why}");
            // The owner reads why in the content's process list and log.
            if let Ok(mut log) = open_log(Path::new(&record.log_path)) {
                let _ = writeln!(log, "connectd: could not start this process: {why}");
            }
            let _ = record_start(None);
            let _ = self.store.end_job(&process.job, None);
            process.state.send_replace(ProcessState::Exited(why));
            self.forget(&process);
        };
        let running = match self.launcher.start(spec).await {
            Ok(running) => running,
            Err(e) => return fail(e.to_string()),
        };
        let pid = running.pid().unwrap_or(0);
        process.pid.store(pid, Ordering::Release);
        tracing::info!(
            content = %record.content_guid,
            job = %process.job,
            pid,
            account = %process.account,
            uid = process.uid,
            "started a content process"
        );
        if let Err(e) = record_start(Some(pid)) {
            tracing::error!(job = %process.job, "could not record the process: {e}");
        }
        let endpoint = running.endpoint().cloned().unwrap_or(endpoint);
        tokio::spawn(watch_readiness(process.clone(), endpoint));
        self.supervise(process, running).await;
    }

    /// Takes an ended process out of its pool.
    fn forget(&self, process: &Arc<Process>) {
        let mut pools = self.pools();
        if let Some(pool) = pools.by_key.get_mut(&process.pool) {
            let before = pool.len();
            pool.retain(|p| !Arc::ptr_eq(p, process));
            let removed = before - pool.len();
            pools.total = pools.total.saturating_sub(removed);
            if pools.by_key.get(&process.pool).is_some_and(Vec::is_empty) {
                pools.by_key.remove(&process.pool);
            }
        }
    }

    /// Owns the process: records its end, or stops it when asked.
    async fn supervise(&self, process: Arc<Process>, mut running: Box<dyn Running>) {
        let exit = tokio::select! {
            exit = running.wait() => exit,
            _ = process.stop.notified() => running.stop(STOP_GRACE).await,
        };
        let why = exit.reason();
        tracing::info!(
            job = %process.job,
            pid = process.pid.load(Ordering::Acquire),
            "content process ended: {why}"
        );
        process.state.send_replace(ProcessState::Exited(why));
        self.forget(&process);
        if let Err(e) = self.store.end_job(&process.job, exit.code) {
            tracing::error!(job = %process.job, "could not record the process's end: {e}");
        }
    }

    /// Stops processes that have been idle for their IdleTimeout, and
    /// draining ones as soon as they are idle. Runs until the server stops.
    pub async fn reap_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reap_once();
        }
    }

    fn reap_once(&self) {
        let pools = self.pools();
        for processes in pools.by_key.values() {
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

    /// The process could not be reached: it is gone or going, whatever its
    /// watcher has seen so far. It gets no more connections.
    pub fn retire(&self, process: &Process) {
        process.stop_now();
    }

    /// A new bundle is live: processes of older ones finish what they
    /// serve and stop.
    pub fn drain_content(&self, content_id: i64, except: Option<&str>) {
        let pools = self.pools();
        for (key, processes) in &pools.by_key {
            if key.content_id != content_id {
                continue;
            }
            for process in processes {
                if Some(process.deployment.as_str()) != except {
                    process.draining.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Stops every process of the content now (it is being deleted).
    pub fn stop_content(&self, content_id: i64) {
        let pools = self.pools();
        for (key, processes) in &pools.by_key {
            if key.content_id == content_id {
                for process in processes {
                    process.stop_now();
                }
            }
        }
    }

    /// Stops everything, for shutdown; returns once all have ended or the
    /// grace period is over.
    pub async fn stop_all(&self) {
        let all: Vec<Arc<Process>> = {
            let pools = self.pools();
            pools.by_key.values().flatten().cloned().collect()
        };
        for process in &all {
            process.stop_now();
        }
        let deadline = Instant::now() + STOP_GRACE + Duration::from_secs(1);
        while self.total() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls the socket until the app accepts a connection, or it exits.
/// A process that never listens within InitTimeout is stopped, whether or
/// not anyone is still waiting for it (else abandoned starts would pile up
/// against MaxTotalProcesses).
async fn watch_readiness(process: Arc<Process>, endpoint: Endpoint) {
    // Every millisecond for the first second (a connect to a socket that
    // is not there yet costs microseconds), then backing off: a viewer's
    // first byte should follow the app's readiness, not a polling step.
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(1);
    let deadline = started + process.settings.init_timeout;
    loop {
        if matches!(*process.state.borrow(), ProcessState::Exited(_)) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                job = %process.job,
                pid = process.pid.load(Ordering::Acquire),
                seconds = process.settings.init_timeout.as_secs(),
                "stopping a content process that did not listen within InitTimeout"
            );
            process.stop_now();
            return;
        }
        if listens(&endpoint).await {
            process.state.send_if_modified(|s| {
                if *s == ProcessState::Starting {
                    *s = ProcessState::Ready;
                    true
                } else {
                    false
                }
            });
            return;
        }
        tokio::time::sleep(delay).await;
        if started.elapsed() > Duration::from_secs(1) {
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }
}

/// Whether something accepts connections at `endpoint`.
async fn listens(endpoint: &Endpoint) -> bool {
    match endpoint {
        Endpoint::Unix(socket) => tokio::net::UnixStream::connect(socket).await.is_ok(),
        Endpoint::Tcp(address) => tokio::net::TcpStream::connect(address).await.is_ok(),
    }
}

/// A process's (or build's) key: its socket directory and log are named by it.
pub fn new_job_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// `HOME`, `USER`, `LOGNAME` from the passwd entry, a plain PATH and a
/// UTF-8 locale; nothing from connectd's own environment.
pub fn base_environment(account: &crate::accounts::unix::Account) -> Vec<(OsString, OsString)> {
    vec![
        ("HOME".into(), account.home.clone().into()),
        ("USER".into(), account.name.clone().into()),
        ("LOGNAME".into(), account.name.clone().into()),
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("LANG".into(), "C.UTF-8".into()),
        // The private /tmp of the process's namespace.
        ("TMPDIR".into(), "/tmp".into()),
    ]
}

fn runtimes(settings: &Settings, layout: &Layout) -> Runtimes {
    let node = settings
        .runtimes
        .node
        .clone()
        .unwrap_or_else(|| PathBuf::from("/usr/bin/node"));
    let npm = node
        .parent()
        .map(|d| d.join("npm"))
        .unwrap_or_else(|| PathBuf::from("/usr/bin/npm"));
    Runtimes {
        python: settings
            .runtimes
            .python
            .clone()
            .unwrap_or_else(|| PathBuf::from("/usr/bin/python3")),
        node,
        npm,
        // Each build gets its content's own cache (see deploy).
        cache_dir: layout.data_dir().join("cache"),
    }
}

/// Opens a process log: root's alone, read back through the API.
pub fn open_log(path: &Path) -> std::io::Result<fs::File> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir)?;
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Whether the provider gives viewers Unix accounts at all.
pub fn provider_has_accounts(provider: ProviderKind) -> bool {
    provider.needs_provisioning() || provider == ProviderKind::Pam
}
