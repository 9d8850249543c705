//! Bundles and deployments: an uploaded tar.gz is unpacked at once (so a
//! bad archive is refused while the publisher waits), and a deployment
//! builds the bundle's environment as `Applications.RunAs`, never as a
//! viewer, in the same sandbox content runs in, then makes it live.
//!
//! Deployments run as tasks whose output the API streams, in Connect's
//! shape (`/__api__/v1/tasks/{id}`).

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::accounts::runas;
use crate::bundle::{self, AppMode, Limits, Runtimes};
use crate::config::{ResourceLimits, Settings};
use crate::content::Refusal;
use crate::layout;
use crate::model::Content;
use crate::run::jobs;
use crate::run::launcher::{LaunchKind, LaunchSpec, Launcher, Mount};
use crate::run::scheduler::Scheduler;
use crate::store::{Store, StoreError};

mod task;

use task::TASK_RETENTION;
pub use task::{Task, TaskView, INTERRUPTED};

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(
        "the bundle is larger than Applications.MaxBundleSize ({0} bytes); make it smaller or \
         raise the limit"
    )]
    TooLarge(u64),
    #[error("{0}")]
    Bundle(#[from] bundle::BundleError),
    #[error("the upload was interrupted: {0}")]
    Body(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub struct Deployer {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    scheduler: Arc<Scheduler>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl Deployer {
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        scheduler: Arc<Scheduler>,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            store,
            scheduler,
            tasks: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// The task `id`: this node's own while it keeps it in memory, else
    /// as stored (another node's, or one from before a restart).
    pub async fn task(&self, id: &str) -> Result<Option<TaskView>, StoreError> {
        if let Some(task) = self.live_task(id) {
            return Ok(Some(TaskView::Live(task)));
        }
        let (store, id) = (self.store.clone(), id.to_owned());
        let stored = tokio::task::spawn_blocking(move || store.task(&id))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))??;
        Ok(stored.map(|task| TaskView::Stored {
            task,
            store: self.store.clone(),
        }))
    }

    fn live_task(&self, id: &str) -> Option<Arc<Task>> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|_, t| !t.snapshot().finished || t.created.elapsed() < TASK_RETENTION);
        tasks.get(id).cloned()
    }

    /// Ends the tasks this node was running when it last stopped, so that
    /// readers see them fail instead of waiting for ever.
    pub fn end_interrupted_tasks(&self) -> Result<usize, StoreError> {
        self.store.end_unfinished_tasks(1, INTERRUPTED)
    }

    /// Streams the upload to disk (bounded by MaxBundleSize), then unpacks
    /// it; returns the new bundle's id.
    pub async fn upload(&self, content: &Content, body: Body) -> Result<i64, UploadError> {
        let layout = self.scheduler.layout();
        let uploads = layout.content_dir(&content.guid).join("uploads");
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&uploads)
            .map_err(|e| UploadError::Internal(format!("{}: {e}", uploads.display())))?;
        let archive = uploads.join(format!("{}.tar.gz", uuid::Uuid::new_v4().simple()));
        let written = self.receive(body, &archive).await;
        let size = match written {
            Ok(size) => size,
            Err(e) => {
                let _ = fs::remove_file(&archive);
                return Err(e);
            }
        };
        // Unpacked beside the uploads first: the bundle gets its id (and
        // becomes deployable) only once it is whole and its manifest valid.
        let staging = archive.with_extension("d");
        let limits = Limits {
            max_bytes: self.settings.max_bundle_unpacked_size,
            max_file_bytes: self.settings.max_bundle_file_size,
            ..Limits::default()
        };
        let unpacked = {
            let (archive, staging) = (archive.clone(), staging.clone());
            tokio::task::spawn_blocking(move || -> Result<(), UploadError> {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&staging)
                    .map_err(|e| UploadError::Internal(format!("{}: {e}", staging.display())))?;
                let file =
                    fs::File::open(&archive).map_err(|e| UploadError::Internal(e.to_string()))?;
                bundle::unpack(file, &staging, &limits)?;
                bundle::read_manifest(&staging)?;
                Ok(())
            })
            .await
            .map_err(|e| UploadError::Internal(e.to_string()))
            .and_then(|r| r)
        };
        let _ = fs::remove_file(&archive);
        let placed = unpacked.and_then(|()| {
            let bundle_id = self
                .store
                .create_bundle(content.id, size)
                .map_err(|e| UploadError::Internal(e.to_string()))?;
            let dest = layout.bundle_dir(&content.guid, bundle_id);
            let moved = dest
                .parent()
                .map_or(Ok(()), |p| fs::DirBuilder::new().recursive(true).create(p))
                .and_then(|()| fs::rename(&staging, &dest));
            if let Err(e) = moved {
                let _ = self.store.delete_bundle(content.id, bundle_id);
                return Err(UploadError::Internal(format!("{}: {e}", dest.display())));
            }
            Ok(bundle_id)
        });
        if placed.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        placed
    }

    async fn receive(&self, body: Body, path: &Path) -> Result<u64, UploadError> {
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| UploadError::Internal(format!("{}: {e}", path.display())))?;
        let mut size = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
            size += chunk.len() as u64;
            if size > self.settings.max_bundle_size {
                return Err(UploadError::TooLarge(self.settings.max_bundle_size));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| UploadError::Internal(e.to_string()))?;
        }
        file.flush()
            .await
            .map_err(|e| UploadError::Internal(e.to_string()))?;
        Ok(size)
    }

    /// Starts deploying `bundle_id`; the task id is returned at once.
    pub fn deploy(self: &Arc<Self>, content: Content, bundle_id: i64) -> Arc<Task> {
        let task = Arc::new(Task::new(&content.guid, crate::store::now()));
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task.id.clone(), task.clone());
        tokio::spawn(task::persist(task.clone(), content.id, self.store.clone()));
        let store = self.store.clone();
        let expired = crate::store::now() - TASK_RETENTION.as_secs() as i64;
        tokio::task::spawn_blocking(move || store.delete_finished_tasks(expired));
        let (this, t) = (self.clone(), task.clone());
        tokio::spawn(async move {
            let lock = this.deploy_lock(content.id);
            let _one_at_a_time = match lock.try_lock() {
                Ok(guard) => guard,
                Err(_) => {
                    t.line("Waiting for the deployment already running for this content.");
                    lock.lock().await
                }
            };
            let outcome = this.run_deploy(&content, bundle_id, &t).await;
            match outcome {
                Ok(mode) => {
                    t.line(format!("Deployed bundle {bundle_id} ({}).", mode.as_str()));
                    tracing::info!(content = %content.guid, bundle_id, "deployed");
                    t.finish(None);
                }
                Err((code, message)) => {
                    tracing::warn!(content = %content.guid, bundle_id, "deployment failed: {message}");
                    t.line(format!("Deployment failed: {message}"));
                    t.finish(Some((code.max(1) as i32, message)));
                }
            }
        });
        task
    }

    async fn run_deploy(
        &self,
        content: &Content,
        bundle_id: i64,
        task: &Arc<Task>,
    ) -> Result<AppMode, (u32, String)> {
        let internal = |e: String| (0u32, e);
        let layout = self.scheduler.layout().clone();
        let bundle_dir = layout.bundle_dir(&content.guid, bundle_id);
        let manifest = bundle::read_manifest(&bundle_dir).map_err(|e| internal(e.to_string()))?;
        let mode = manifest.app_mode;
        task.line(format!(
            "Bundle {bundle_id}: {} with entry point {:?}.",
            mode.as_str(),
            manifest.entrypoint
        ));
        if mode == AppMode::Static && (content.run_as.is_some() || content.run_as_current_user) {
            let refusal = Refusal::static_run_as();
            return Err((refusal.code, refusal.message));
        }
        let settings = self.settings.clone();
        let run_as = tokio::task::spawn_blocking(move || {
            runas::check_account(&settings, &settings.run_as.clone())
        })
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(format!("Applications.RunAs cannot build content: {e}")))?;

        // The working directory every process of this content shares:
        // setgid so what any viewer writes belongs to the shared group.
        let work_dir = layout.work_dir(&content.guid);
        let account = &run_as.account;
        layout::prepare_dir(&work_dir, account.uid, run_as.shared_gid, 0o2770)
            .map_err(|e| internal(format!("{}: {e}", work_dir.display())))?;

        // A new environment for every deployment: processes of the live
        // one keep running on theirs until they drain, and a failed build
        // leaves the live content as it was.
        let deployment = format!(
            "{bundle_id}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let env_dir = layout.env_dir(&content.guid, &deployment);
        if mode.is_interactive() {
            let envs = layout.envs_dir(&content.guid);
            fs::DirBuilder::new()
                .mode(0o755)
                .recursive(true)
                .create(&envs)
                .map_err(|e| internal(format!("{}: {e}", envs.display())))?;
            layout::prepare_dir(&env_dir, account.uid, account.gid, 0o755)
                .map_err(|e| internal(format!("{}: {e}", env_dir.display())))?;
            let cache = layout.cache_dir(&content.guid);
            layout::prepare_dir(&cache, account.uid, account.gid, 0o700)
                .map_err(|e| internal(format!("{}: {e}", cache.display())))?;
            let runtimes = Runtimes {
                cache_dir: cache.clone(),
                ..self.scheduler.runtimes().clone()
            };
            let steps = match bundle::build_steps(&manifest, &bundle_dir, &env_dir, &runtimes) {
                Ok(steps) => steps,
                Err(e) => {
                    let _ = fs::remove_dir_all(&env_dir);
                    return Err(internal(e.to_string()));
                }
            };
            let job = jobs::new_job_key();
            let log_path = layout.log_file(&content.guid, &job);
            let _ = self.store.start_job(
                &job,
                content.id,
                LaunchKind::Build.as_str(),
                Some(bundle_id),
                None,
                &account.name,
                account.uid,
                None,
                &log_path.display().to_string(),
            );
            let mut result = Ok(());
            for step in steps {
                task.line(format!("$ {}", step.description));
                let mut env = jobs::base_environment(account);
                // Builds write caches, not the account's home.
                env.retain(|(k, _)| k != "HOME");
                env.push(("HOME".into(), cache.clone().into()));
                env.extend(step.env.iter().cloned());
                let spec = LaunchSpec {
                    job: job.clone(),
                    kind: LaunchKind::Build,
                    account: account.name.clone(),
                    uid: account.uid,
                    gid: account.gid,
                    groups: run_as.groups.clone(),
                    program: step.program.clone(),
                    args: step.args.clone(),
                    env,
                    cwd: step.cwd.clone(),
                    mounts: vec![
                        Mount {
                            path: bundle_dir.clone(),
                            writable: false,
                        },
                        Mount {
                            path: env_dir.clone(),
                            writable: true,
                        },
                        Mount {
                            path: cache.clone(),
                            writable: true,
                        },
                    ],
                    listen: None,
                    log: jobs::open_log(&log_path)
                        .map_err(|e| internal(format!("{}: {e}", log_path.display())))?,
                    session: None,
                    // Builds are bounded by their steps, not by the app's
                    // limits (compilers and pip may need more).
                    limits: ResourceLimits::default(),
                };
                let launcher = self.scheduler.launcher().as_ref();
                if let Err(e) = run_step(launcher, spec, &log_path, task).await {
                    result = Err(internal(format!("{}: {e}", step.description)));
                    break;
                }
            }
            let _ = self
                .store
                .end_job(&job, Some(if result.is_ok() { 0 } else { 1 }));
            if result.is_err() {
                let _ = fs::remove_dir_all(&env_dir);
            }
            result?;
        }
        self.store
            .mark_deployed(content.id, bundle_id, mode, &deployment)
            .map_err(|e| internal(e.to_string()))?;
        self.scheduler.drain_content(content.id, Some(&deployment));
        self.remove_old_environments(content, deployment);
        self.remove_old_bundles(content, bundle_id);
        Ok(mode)
    }
}

impl Deployer {
    /// Removes the environments of earlier deployments once no process
    /// runs on them any more (they drain at their own pace).
    fn remove_old_environments(&self, content: &Content, live: String) {
        let scheduler = self.scheduler.clone();
        let (content_id, envs) = (content.id, scheduler.layout().envs_dir(&content.guid));
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(24 * 3600);
            loop {
                let in_use: Vec<String> = scheduler
                    .running(content_id)
                    .iter()
                    .map(|p| p.deployment.clone())
                    .filter(|d| *d != live)
                    .collect();
                let Ok(entries) = fs::read_dir(&envs) else {
                    return;
                };
                let mut waiting = false;
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name == live {
                        continue;
                    }
                    if in_use.contains(&name) {
                        waiting = true;
                    } else if let Err(e) = tokio::fs::remove_dir_all(entry.path()).await {
                        tracing::warn!("could not remove {}: {e}", entry.path().display());
                    }
                }
                if !waiting || Instant::now() > deadline {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }

    /// `[Applications] BundleRetentionLimit`: keeps the live bundle and the
    /// newest earlier ones up to the limit, and removes the rest (rows and
    /// files), except any a process still runs (it goes at a later
    /// deployment). Bundles newer than the live one (uploaded, not yet
    /// deployed) are never touched.
    fn remove_old_bundles(&self, content: &Content, live: i64) {
        let limit = self.settings.bundle_retention_limit as usize;
        if limit == 0 {
            return;
        }
        let ids = match self.store.bundle_ids(content.id) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(content = %content.guid, "cannot list bundles to remove old ones: {e}");
                return;
            }
        };
        let in_use: Vec<i64> = self
            .scheduler
            .running(content.id)
            .iter()
            .map(|p| p.bundle_id)
            .collect();
        let layout = self.scheduler.layout();
        let older = ids.iter().rev().filter(|&&id| id < live);
        for &id in older.skip(limit - 1) {
            if in_use.contains(&id) {
                continue;
            }
            let dir = layout.bundle_dir(&content.guid, id);
            if let Err(e) = fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("could not remove the old bundle {}: {e}", dir.display());
                    continue;
                }
            }
            match self.store.delete_bundle(content.id, id) {
                Ok(()) => {
                    tracing::info!(content = %content.guid, bundle_id = id, "removed an old bundle")
                }
                Err(e) => {
                    tracing::warn!(content = %content.guid, bundle_id = id, "could not forget the old bundle: {e}")
                }
            }
        }
    }

    /// One deployment of a content item at a time: a slow build that
    /// finished last must not replace a newer one, and two builds must not
    /// share a directory.
    fn deploy_lock(&self, content_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(content_id)
            .or_default()
            .clone()
    }
}

/// Runs one build step, copying its output into the task as it comes.
async fn run_step(
    launcher: &dyn Launcher,
    spec: LaunchSpec,
    log_path: &Path,
    task: &Arc<Task>,
) -> Result<(), String> {
    let (reader, writer) = std::io::pipe().map_err(|e| e.to_string())?;
    let mut log = spec.log.try_clone().map_err(|e| e.to_string())?;
    let spec = LaunchSpec {
        log: fs::File::from(std::os::fd::OwnedFd::from(writer)),
        ..spec
    };
    let mut running = launcher.start(spec).await.map_err(|e| e.to_string())?;
    let copier = {
        let task = task.clone();
        tokio::task::spawn_blocking(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                task.line(line);
            }
        })
    };
    let exit = running.wait().await;
    let _ = copier.await;
    match exit.status {
        _ if exit.success => Ok(()),
        Some(status) => Err(format!(
            "exited with {status}; the build log is {}",
            log_path.display()
        )),
        None => Err(format!(
            "could not be waited for; the build log is {}",
            log_path.display()
        )),
    }
}
