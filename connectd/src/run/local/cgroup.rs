//! Resource limits for content processes through cgroups: memory (no swap
//! beyond it), CPU time and the number of tasks, each content process in a
//! cgroup of its own, and whether the kernel killed it for memory.
//!
//! Where the cgroups go, in order:
//! - `[Scheduler] CgroupRoot`, a cgroup v2 directory delegated to connectd;
//! - connectd's own cgroup v2, when the unified hierarchy is mounted on
//!   /sys/fs/cgroup and connectd's cgroup is writable (systemd's
//!   `Delegate=yes`): connectd moves itself into a `connectd` leaf there (a
//!   cgroup with controllers for its children may hold no process itself)
//!   and makes each job's cgroup beside it;
//! - cgroup v1 hierarchies for `memory`, `cpu` and `pids` under
//!   /sys/fs/cgroup, below connectd's own cgroup in each (hybrid hosts);
//! - none: limits are not enforced, and [`Cgroups::describe`] says so for
//!   the start-up log.
//!
//! On cgroup v2 the sandbox creates its init inside the job's cgroup
//! (`clone3` with `CLONE_INTO_CGROUP`, on a directory opened here), which
//! moves nothing; on cgroup v1 the monitor moves itself in before it
//! forks (writing to `cgroup.procs` files opened here), which waits for
//! the kernel's cgroup lock, an RCU grace period. Either way everything
//! the content starts is inside. Stopping is the PID namespace's job; the
//! cgroup only counts and limits. Imports nothing of connectd but the
//! limits' settings.

use std::fs;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::ResourceLimits;

const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
/// The CPU period quotas are counted in, microseconds (the kernel default).
const CPU_PERIOD: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Cpu, Controller::Pids];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }
}

#[derive(Debug)]
enum Kind {
    /// Jobs' cgroups are made in `parent`, with these controllers enabled.
    V2 {
        parent: PathBuf,
        controllers: Vec<Controller>,
    },
    /// Jobs' cgroups are made in each controller's directory.
    V1 {
        parents: Vec<(Controller, PathBuf)>,
    },
    Unavailable {
        why: String,
    },
}

/// Where this connectd makes its content processes' cgroups.
#[derive(Debug)]
pub struct Cgroups {
    kind: Kind,
    limits: ResourceLimits,
}

impl Cgroups {
    /// Finds (and, for cgroup v2, prepares) where the jobs' cgroups go.
    pub fn detect(limits: &ResourceLimits) -> Self {
        let kind = match &limits.cgroup_root {
            Some(root) => v2_at(root, false).unwrap_or_else(|why| Kind::Unavailable {
                why: format!("[Scheduler] CgroupRoot = {}: {why}", root.display()),
            }),
            None => detect_own(),
        };
        Cgroups {
            kind,
            limits: limits.clone(),
        }
    }

    /// One line for the start-up log: what is enforced, and where.
    pub fn describe(&self) -> String {
        let wanted = describe_limits(&self.limits);
        match &self.kind {
            Kind::V2 {
                parent,
                controllers,
            } => format!(
                "content limits ({wanted}) in cgroup v2 {} ({})",
                parent.display(),
                names(controllers.iter().copied())
            ),
            Kind::V1 { parents } => format!(
                "content limits ({wanted}) in cgroup v1 {}",
                parents
                    .iter()
                    .map(|(c, p)| format!("{}: {}", c.name(), p.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Kind::Unavailable { why } => format!(
                "content limits ({wanted}) are NOT enforced: no writable cgroup ({why}); give \
                 connectd a delegated cgroup (systemd Delegate=yes) or name one in \
                 [Scheduler] CgroupRoot"
            ),
        }
    }

    pub fn enforced(&self) -> bool {
        !matches!(self.kind, Kind::Unavailable { .. })
    }

    /// Makes `job`'s cgroups with `limits` (the content's, which default
    /// to the server's). `None` when no cgroup is available (said once at
    /// start-up) or no limit is set.
    pub fn create(&self, job: &str, limits: &ResourceLimits) -> io::Result<Option<JobCgroup>> {
        // Only the controllers with a limit to enforce: moving a process
        // into a cgroup waits for the kernel (an RCU grace period per
        // hierarchy on cgroup v1), and a start pays that for each.
        let wanted = |c: &Controller| match c {
            Controller::Memory => limits.memory_bytes.is_some(),
            Controller::Cpu => limits.cpus.is_some(),
            Controller::Pids => limits.tasks.is_some(),
        };
        let dirs: Vec<(Controller, PathBuf)> = match &self.kind {
            Kind::Unavailable { .. } => return Ok(None),
            Kind::V2 {
                parent,
                controllers,
            } => controllers
                .iter()
                .filter(|c| wanted(c))
                .map(|&c| (c, parent.join(format!("job-{job}"))))
                .collect(),
            Kind::V1 { parents } => parents
                .iter()
                .filter(|(c, _)| wanted(c))
                .map(|(c, p)| (*c, p.join(format!("job-{job}"))))
                .collect(),
        };
        if dirs.is_empty() {
            return Ok(None);
        }
        let v2 = matches!(self.kind, Kind::V2 { .. });
        let mut cgroup = JobCgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            memory: None,
            v2,
        };
        for (controller, dir) in dirs {
            if !cgroup.dirs.contains(&dir) {
                match fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        cgroup.remove();
                        return Err(io::Error::new(
                            e.kind(),
                            format!("cannot create the cgroup {}: {e}", dir.display()),
                        ));
                    }
                }
                cgroup.dirs.push(dir.clone());
            }
            if let Err(e) = apply(limits, controller, &dir, v2) {
                cgroup.remove();
                return Err(e);
            }
            if controller == Controller::Memory {
                cgroup.memory = Some(dir.clone());
            }
        }
        // cgroup v2: the sandbox creates init inside the directory; v1: the
        // monitor moves itself in through cgroup.procs.
        for dir in cgroup.dirs.clone() {
            let path = if v2 {
                dir.clone()
            } else {
                dir.join("cgroup.procs")
            };
            let mut open = fs::OpenOptions::new();
            if v2 {
                open.read(true)
                    .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC);
            } else {
                open.write(true);
            }
            match open.open(&path) {
                Ok(file) => cgroup.procs.push(file),
                Err(e) => {
                    cgroup.remove();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot open {}: {e}", path.display()),
                    ));
                }
            }
        }
        Ok(Some(cgroup))
    }
}

/// Writes `limits` for `controller` into the cgroup `dir`.
fn apply(limits: &ResourceLimits, controller: Controller, dir: &Path, v2: bool) -> io::Result<()> {
    match (controller, v2) {
        (Controller::Memory, true) => {
            if let Some(bytes) = limits.memory_bytes {
                write(dir, "memory.max", &bytes.to_string())?;
                // Without swap: over the limit is out of memory, not slow.
                write_if_present(dir, "memory.swap.max", "0")?;
            }
        }
        (Controller::Memory, false) => {
            if let Some(bytes) = limits.memory_bytes {
                write(dir, "memory.limit_in_bytes", &bytes.to_string())?;
                write_if_present(dir, "memory.memsw.limit_in_bytes", &bytes.to_string())?;
            }
        }
        (Controller::Cpu, true) => {
            if let Some(cpus) = limits.cpus {
                let quota = cpu_quota(cpus);
                write(dir, "cpu.max", &format!("{quota} {CPU_PERIOD}"))?;
            }
        }
        (Controller::Cpu, false) => {
            if let Some(cpus) = limits.cpus {
                write(dir, "cpu.cfs_period_us", &CPU_PERIOD.to_string())?;
                write(dir, "cpu.cfs_quota_us", &cpu_quota(cpus).to_string())?;
            }
        }
        (Controller::Pids, _) => {
            if let Some(tasks) = limits.tasks {
                write(dir, "pids.max", &tasks.to_string())?;
            }
        }
    }
    Ok(())
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // v1 parents are this connectd's own; a v2 parent is not.
        if let Kind::V1 { parents } = &self.kind {
            for (_, dir) in parents {
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// One content process's cgroups (one per v1 controller, or one v2).
#[derive(Debug)]
pub struct JobCgroup {
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each (v1), or the directory (v2), open for the
    /// sandbox.
    procs: Vec<fs::File>,
    memory: Option<PathBuf>,
    v2: bool,
}

impl JobCgroup {
    /// cgroup v1: the descriptors the sandbox writes "0" to, to join.
    pub fn procs_fds(&self) -> Vec<RawFd> {
        if self.v2 {
            return Vec::new();
        }
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// cgroup v2: the open directory the sandbox creates init in.
    pub fn dir_fd(&self) -> Option<RawFd> {
        if !self.v2 {
            return None;
        }
        self.procs.first().map(AsRawFd::as_raw_fd)
    }

    /// Whether the kernel killed a process of it for exceeding its memory
    /// limit.
    pub fn out_of_memory(&self) -> bool {
        let Some(dir) = &self.memory else {
            return false;
        };
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| counter(&text, key))
            .is_some_and(|kills| kills > 0)
    }

    /// Removes the cgroups. Their processes have ended (the PID namespace
    /// went with the monitor), but the kernel may take a moment to let go.
    pub fn remove(&mut self) {
        self.procs.clear();
        for dir in self.dirs.drain(..) {
            let mut tries = 0;
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if tries >= 20 => {
                        tracing::warn!("could not remove the cgroup {}: {e}", dir.display());
                        break;
                    }
                    Err(_) => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
            }
        }
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

fn cpu_quota(cpus: f64) -> u64 {
    // At least 1 ms per period: the kernel's minimum quota.
    ((cpus * CPU_PERIOD as f64).round() as u64).max(1000)
}

fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let path = dir.join(file);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write {value} to {}: {e}", path.display()),
            )
        })
}

fn write_if_present(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    if dir.join(file).exists() {
        write(dir, file, value)
    } else {
        Ok(())
    }
}

fn names(controllers: impl Iterator<Item = Controller>) -> String {
    controllers
        .map(Controller::name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_limits(limits: &ResourceLimits) -> String {
    let mut parts = Vec::new();
    if let Some(bytes) = limits.memory_bytes {
        parts.push(format!("MemoryLimit {} MiB", bytes >> 20));
    }
    if let Some(cpus) = limits.cpus {
        parts.push(format!("CPULimit {cpus}"));
    }
    if let Some(tasks) = limits.tasks {
        parts.push(format!("TasksMax {tasks}"));
    }
    if parts.is_empty() {
        "none configured".to_owned()
    } else {
        parts.join(", ")
    }
}

/// connectd's own cgroup, v2 if it is writable, else the v1 hierarchies.
fn detect_own() -> Kind {
    let membership = match fs::read_to_string("/proc/self/cgroup") {
        Ok(text) => text,
        Err(e) => {
            return Kind::Unavailable {
                why: format!("cannot read /proc/self/cgroup: {e}"),
            }
        }
    };
    let unified = Path::new(CGROUP_MOUNT).join("cgroup.controllers");
    if unified.exists() {
        let own = membership
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/");
        if own == "/" {
            return Kind::Unavailable {
                why: "connectd runs in the root cgroup, which it will not take over".to_owned(),
            };
        }
        let dir = Path::new(CGROUP_MOUNT).join(own.trim_start_matches('/'));
        return v2_at(&dir, true).unwrap_or_else(|why| Kind::Unavailable { why });
    }
    v1(&membership)
}

/// Prepares `dir` (cgroup v2) for jobs' cgroups. When `own` (connectd
/// lives in it), connectd first moves into a `connectd` leaf of it.
fn v2_at(dir: &Path, own: bool) -> Result<Kind, String> {
    let available = fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(|e| format!("{} is not a cgroup v2 directory: {e}", dir.display()))?;
    let controllers: Vec<Controller> = Controller::ALL
        .into_iter()
        .filter(|c| available.split_whitespace().any(|a| a == c.name()))
        .collect();
    if controllers.is_empty() {
        return Err(format!(
            "{} offers none of the memory, cpu and pids controllers",
            dir.display()
        ));
    }
    let denied = |e: io::Error| format!("{} is not writable: {e}", dir.display());
    let parent = if own {
        let leaf = dir.join("connectd");
        match fs::create_dir(&leaf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(denied(e)),
        }
        write(&leaf, "cgroup.procs", &std::process::id().to_string())
            .map_err(|e| format!("cannot move connectd into {}: {e}", leaf.display()))?;
        // Jobs of an earlier connectd in this cgroup, killed before it
        // could remove them (their processes died with it).
        remove_stale(dir, |name| name.starts_with("job-"));
        dir.to_path_buf()
    } else {
        dir.to_path_buf()
    };
    let enable = names(controllers.iter().copied())
        .split(", ")
        .map(|n| format!("+{n}"))
        .collect::<Vec<_>>()
        .join(" ");
    write(&parent, "cgroup.subtree_control", &enable).map_err(|e| e.to_string())?;
    Ok(Kind::V2 {
        parent,
        controllers,
    })
}

/// Removes the cgroups in `dir` whose names `stale` picks, and the job
/// cgroups inside them. A cgroup that still holds a process stays.
fn remove_stale(dir: &Path, stale: impl Fn(&str) -> bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !stale(name) || !entry.path().is_dir() {
            continue;
        }
        if let Ok(jobs) = fs::read_dir(entry.path()) {
            for job in jobs.flatten() {
                if job.path().is_dir() {
                    let _ = fs::remove_dir(job.path());
                }
            }
        }
        if fs::remove_dir(entry.path()).is_ok() {
            tracing::info!("removed the stale cgroup {}", entry.path().display());
        }
    }
}

/// The v1 hierarchies of memory, cpu and pids that connectd may write in.
fn v1(membership: &str) -> Kind {
    let mut parents = Vec::new();
    let mut missing = Vec::new();
    for controller in Controller::ALL {
        // "4:memory:/path", "2:cpu,cpuacct:/path".
        let own = membership.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, names, path) = (fields.next()?, fields.next()?, fields.next()?);
            names
                .split(',')
                .any(|n| n == controller.name())
                .then(|| (names.to_owned(), path.to_owned()))
        });
        let Some((mount_name, own)) = own else {
            missing.push(controller.name());
            continue;
        };
        let mount = [controller.name(), mount_name.as_str()]
            .iter()
            .map(|n| Path::new(CGROUP_MOUNT).join(n))
            .find(|p| p.join("cgroup.procs").exists());
        let Some(mount) = mount else {
            missing.push(controller.name());
            continue;
        };
        // One per connectd (tests run several), removed when it stops;
        // those of a connectd that was killed are removed here.
        let base = mount.join(own.trim_start_matches('/'));
        remove_stale(&base, |name| {
            name.strip_prefix("connectd-")
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        });
        let parent = base.join(format!("connectd-{}", std::process::id()));
        match fs::create_dir(&parent) {
            Ok(()) => parents.push((controller, parent)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                parents.push((controller, parent))
            }
            Err(_) => missing.push(controller.name()),
        }
    }
    if parents.is_empty() {
        return Kind::Unavailable {
            why: format!("no writable cgroup v1 hierarchy for {}", missing.join(", ")),
        };
    }
    if !missing.is_empty() {
        tracing::warn!(
            "no writable cgroup for {}: those limits are not enforced",
            missing.join(", ")
        );
    }
    Kind::V1 { parents }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_name() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(counter(events, "oom_kill"), Some(2));
        assert_eq!(counter(events, "oom"), Some(3));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
        assert_eq!(counter(v1, "oom_kill"), Some(1));
        assert_eq!(counter(v1, "missing"), None);
    }

    #[test]
    fn a_cgroup_root_that_cannot_limit_anything_is_said_to_be_unusable() {
        let dir = tempfile::tempdir().expect("dir");
        let limits = ResourceLimits {
            memory_bytes: Some(64 << 20),
            cgroup_root: Some(dir.path().to_path_buf()),
            ..ResourceLimits::default()
        };
        let cgroups = Cgroups::detect(&limits);
        assert!(!cgroups.enforced());
        let text = cgroups.describe();
        assert!(text.contains("NOT enforced"), "{text}");
        assert!(text.contains("[Scheduler] CgroupRoot"), "{text}");
        assert!(text.contains("not a cgroup v2 directory"), "{text}");
        assert!(cgroups.create("job", &limits).expect("no cgroup").is_none());
    }

    #[test]
    fn cpu_quotas_are_in_microseconds_per_period() {
        assert_eq!(cpu_quota(1.0), 100_000);
        assert_eq!(cpu_quota(0.5), 50_000);
        assert_eq!(cpu_quota(2.25), 225_000);
        assert_eq!(cpu_quota(0.001), 1000);
    }
}
