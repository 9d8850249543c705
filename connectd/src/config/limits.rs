//! `[Scheduler]`'s resource limits for content processes (`MemoryLimit`,
//! `CPULimit`, `TasksMax`) and where to make their cgroups
//! (`CgroupRoot`). The reader is config's (mod.rs); this file adds to it and
//! imports nothing else of connectd.

use std::path::PathBuf;

use connect_gcfg::Key;

use super::{Reader, SettingsError};

/// What one content process may use. `None`: no limit of that kind.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceLimits {
    /// `MemoryLimit`, bytes of memory (swap not allowed beyond it).
    pub memory_bytes: Option<u64>,
    /// `CPULimit`, in CPUs (1.5 = one and a half cores' time).
    pub cpus: Option<f64>,
    /// `TasksMax`: processes and threads together.
    pub tasks: Option<u64>,
    /// `CgroupRoot`: a cgroup v2 directory connectd may make cgroups in
    /// (one delegated to it); unset, connectd looks for one itself.
    pub cgroup_root: Option<PathBuf>,
}

/// The default `TasksMax`: enough for any app's threads and workers, and
/// a stop to a fork bomb.
pub const DEFAULT_TASKS_MAX: u64 = 4096;

/// The smallest memory limit accepted: below it nothing starts.
const MIN_MEMORY: u64 = 16 << 20;

impl Reader<'_> {
    pub(super) fn limits(&self) -> Result<ResourceLimits, SettingsError> {
        let key = |k: &'static str| Key::new("Scheduler", k);
        let refuse = |k: &'static str, why: String| {
            Err(self.refuse(Some(key(k)), format!("[Scheduler] {k}: {why}")))
        };
        let memory_bytes = match self.config.u64(key("MemoryLimit"))? {
            None | Some(0) => None,
            Some(bytes) if bytes < MIN_MEMORY => {
                return refuse(
                    "MemoryLimit",
                    format!("{bytes} bytes is too little to start anything; at least {MIN_MEMORY} (16 MiB), or 0 for no limit"),
                )
            }
            Some(bytes) => Some(bytes),
        };
        let cpus = match self.config.f64(key("CPULimit"))? {
            None => None,
            Some(0.0) => None,
            Some(c) if !(0.01..=4096.0).contains(&c) => {
                return refuse(
                    "CPULimit",
                    format!("{c} is not a number of CPUs between 0.01 and 4096 (0 for no limit)"),
                )
            }
            Some(c) => Some(c),
        };
        let tasks = match self.config.u64(key("TasksMax"))? {
            None => Some(DEFAULT_TASKS_MAX),
            Some(0) => None,
            Some(n) if n < 8 => {
                return refuse(
                    "TasksMax",
                    format!(
                        "{n} is too few for an interpreter to start; at least 8, or 0 for no limit"
                    ),
                )
            }
            Some(n) => Some(n),
        };
        let cgroup_root = self.string(key("CgroupRoot")).map(PathBuf::from);
        if let Some(root) = &cgroup_root {
            if !root.is_absolute() {
                return refuse(
                    "CgroupRoot",
                    format!("{} is not an absolute path", root.display()),
                );
            }
        }
        Ok(ResourceLimits {
            memory_bytes,
            cpus,
            tasks,
            cgroup_root,
        })
    }
}
