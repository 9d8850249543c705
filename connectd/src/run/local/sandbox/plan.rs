//! The child's program: every step between fork and exec, from the ordered
//! mounts and the account, each with the words an error names it by.
//! Built before the fork, so the child only runs what is prepared here.

use std::ffi::{CStr, CString};
use std::path::Path;

use super::child::Step;
use super::mounts::{Mount, Ordered};
use super::{cstring, Identity, LaunchError};

/// connectd's own /proc/self/oom_score_adj ("0" if unreadable), which the
/// content process takes back after the monitor and init set theirs lower.
fn own_oom_score_adj() -> CString {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .and_then(|value| CString::new(value.to_string()).ok())
        .unwrap_or_else(|| c"0".to_owned())
}

/// What a read-only remount of a tmpfs always sets.
const READ_ONLY_REMOUNT: libc::c_ulong = libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID;

/// The devices of the sandbox's /dev: (name, major, minor).
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The usual links of /dev.
const DEV_LINKS: [(&str, &CStr); 5] = [
    ("fd", c"/proc/self/fd"),
    ("stdin", c"/proc/self/fd/0"),
    ("stdout", c"/proc/self/fd/1"),
    ("stderr", c"/proc/self/fd/2"),
    ("ptmx", c"pts/ptmx"),
];

/// What confines the process beyond its mounts and account: the
/// system-call filters, and the cgroups it runs in (v1 `cgroup.procs`
/// files to join, or a v2 directory to create init in).
pub(super) struct Confinement<'a> {
    pub(super) filters: &'a [seccompiler::BpfProgram],
    pub(super) cgroups: &'a [std::os::fd::RawFd],
    pub(super) cgroup_dir: Option<std::os::fd::RawFd>,
}

/// The child's steps, with a description of each for error messages.
pub(super) struct Plan {
    pub(super) steps: Vec<Step>,
    pub(super) descriptions: Vec<String>,
    /// How many expose sources the child opens.
    pub(super) sources: usize,
}

impl Plan {
    pub(super) fn new(
        mounts: &[Ordered],
        identity: &Identity,
        umask: u32,
        cwd: CString,
        cwd_path: &Path,
        confinement: Confinement<'_>,
    ) -> Result<Self, LaunchError> {
        let Confinement {
            filters,
            cgroups,
            cgroup_dir,
        } = confinement;
        let mut plan = Plan {
            steps: Vec::new(),
            descriptions: Vec::new(),
            sources: 0,
        };
        plan.push(Step::NewSession, "starting a new session (setsid)".into());
        plan.push(
            Step::CloexecInherited,
            "marking inherited descriptors close-on-exec".into(),
        );
        plan.push(Step::ClearUmask, "clearing the umask".into());
        plan.push(
            Step::DieWithParent {
                // SAFETY: no preconditions.
                parent: unsafe { libc::getpid() },
            },
            "arranging for the sandbox to be killed if connectd dies".into(),
        );
        let limited = !cgroups.is_empty() || cgroup_dir.is_some();
        if limited {
            plan.push(
                Step::OomScoreAdj(c"-1000".to_owned()),
                "protecting the sandbox's monitor and init from the out-of-memory killer".into(),
            );
        }
        for &fd in cgroups {
            plan.push(
                Step::JoinCgroup(fd),
                "joining the content's cgroup (its memory, CPU and task limits)".into(),
            );
        }
        plan.push(
            Step::NewNamespaces,
            "creating mount, PID and IPC namespaces (unshare)".into(),
        );
        plan.push(
            Step::StartInit {
                cgroup: cgroup_dir.unwrap_or(-1),
            },
            "starting the PID namespace's init process".into(),
        );
        plan.push(
            Step::PrivatePropagation,
            "making all mounts private to the namespace".into(),
        );

        // Sources are opened while the host's view is still intact: a
        // directory under a hidden path is unreachable by name afterwards.
        // Slots number the exposes in order; the loop below counts alike.
        for m in mounts
            .iter()
            .filter(|m| matches!(m.mount, Mount::Expose { .. }))
        {
            plan.push(
                Step::OpenSource {
                    path: cstring("expose path", &m.path)?,
                    slot: plan.sources,
                },
                format!(
                    "opening {} to expose it (it must be a directory reached without symlinks)",
                    m.path.display()
                ),
            );
            plan.sources += 1;
        }

        let mut slot = 0;
        for m in mounts {
            let shown = m.path.display();
            let path = cstring("isolation path", &m.path)?;
            match m.mount {
                Mount::Hide | Mount::PrivateTmp => {
                    let hide = m.mount == Mount::Hide;
                    let (flags, options, what) = if hide {
                        (
                            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                            c"mode=0755",
                            format!("mounting an empty tmpfs over hidden {shown}"),
                        )
                    } else {
                        (
                            libc::MS_NOSUID | libc::MS_NODEV,
                            c"mode=1777",
                            format!("mounting a private tmpfs on {shown}"),
                        )
                    };
                    plan.push(
                        Step::MountTmpfs {
                            path: path.clone(),
                            flags,
                            options: options.to_owned(),
                        },
                        what,
                    );
                    for dir in &m.mkdirs {
                        plan.push(
                            Step::MakeDir {
                                path: cstring("isolation path", dir)?,
                            },
                            format!(
                                "creating the mount point {} inside the tmpfs on {shown}",
                                dir.display()
                            ),
                        );
                    }
                    // Read-only as soon as its mount points exist: nothing
                    // is mounted on top yet, so the path still names it.
                    if hide {
                        plan.push(
                            Step::RemountTmpfs {
                                path,
                                flags: READ_ONLY_REMOUNT | libc::MS_NODEV | libc::MS_NOEXEC,
                            },
                            format!("making the tmpfs over hidden {shown} read-only"),
                        );
                    }
                }
                Mount::Expose { writable } => {
                    plan.push(
                        Step::BindSource {
                            slot,
                            path: path.clone(),
                        },
                        format!("bind-mounting {shown} back into the namespace"),
                    );
                    slot += 1;
                    if !writable {
                        plan.push(
                            Step::BindReadOnly { path },
                            format!("making exposed {shown} read-only"),
                        );
                    }
                }
            }
        }
        plan.push(
            Step::CloseSources,
            "closing the exposed directories' descriptors".into(),
        );
        plan.own_proc_and_dev()?;
        plan.push(
            Step::StartApp,
            "starting the content process inside the PID namespace".into(),
        );

        if limited {
            plan.push(
                Step::OomScoreAdj(own_oom_score_adj()),
                "giving the content process connectd's out-of-memory score back".into(),
            );
        }
        plan.push(
            Step::NoNewPrivileges,
            "setting no_new_privs (so setuid programs cannot regain root)".into(),
        );
        plan.push(
            Step::SetGroups(identity.groups.clone()),
            format!("setting supplementary groups {:?}", identity.groups),
        );
        plan.push(
            Step::SetGid(identity.gid),
            format!("setting gid {}", identity.gid),
        );
        plan.push(
            Step::SetUid(identity.uid),
            format!("setting uid {}", identity.uid),
        );
        plan.push(
            Step::VerifyDropped {
                uid: identity.uid,
                gid: identity.gid,
            },
            format!(
                "checking that uid {} gid {} holds no root privilege and cannot regain it \
                 (a process that could is never started)",
                identity.uid, identity.gid
            ),
        );
        plan.push(
            // Init is PID 1 of the namespace.
            Step::DieWithParent { parent: 1 },
            "arranging to be killed if the sandbox's init dies".into(),
        );
        plan.push(Step::Umask(umask), format!("setting umask {umask:03o}"));
        plan.push(
            Step::Chdir(cwd),
            format!(
                "entering the working directory {} as uid {} (it must exist inside the \
                 sandbox and be searchable by that account)",
                cwd_path.display(),
                identity.uid
            ),
        );
        for filter in filters {
            plan.push(
                Step::SystemCallFilter(filter.clone()),
                "installing the system-call filter (seccomp)".into(),
            );
        }
        Ok(plan)
    }

    /// A /proc of the namespace's own processes, its /proc/sys read-only,
    /// and a /dev with only the devices programs expect (null, zero, full,
    /// random, urandom, tty), a private /dev/shm and private ptys.
    fn own_proc_and_dev(&mut self) -> Result<(), LaunchError> {
        self.push(Step::MountProc, "mounting a fresh /proc".into());
        self.push(
            Step::BindSelf {
                path: c"/proc/sys".to_owned(),
            },
            "bind-mounting /proc/sys onto itself".into(),
        );
        self.push(
            Step::BindReadOnly {
                path: c"/proc/sys".to_owned(),
            },
            "making /proc/sys read-only".into(),
        );
        self.push(
            Step::MountTmpfs {
                path: c"/dev".to_owned(),
                flags: libc::MS_NOSUID | libc::MS_NOEXEC,
                options: c"mode=0755,size=64k".to_owned(),
            },
            "mounting the sandbox's own /dev".into(),
        );
        for (name, major, minor) in DEVICES {
            let path = cstring("device", &Path::new("/dev").join(name))?;
            self.push(
                Step::MakeDevice {
                    path,
                    device: libc::makedev(major, minor),
                },
                format!("creating /dev/{name}"),
            );
        }
        for (name, target) in DEV_LINKS {
            self.push(
                Step::Symlink {
                    target: target.to_owned(),
                    path: cstring("device link", &Path::new("/dev").join(name))?,
                },
                format!("linking /dev/{name} to {}", target.to_string_lossy()),
            );
        }
        for dir in ["/dev/shm", "/dev/pts"] {
            self.push(
                Step::MakeDir {
                    path: cstring("device directory", Path::new(dir))?,
                },
                format!("creating {dir}"),
            );
        }
        self.push(
            Step::RemountTmpfs {
                path: c"/dev".to_owned(),
                flags: READ_ONLY_REMOUNT | libc::MS_NOEXEC,
            },
            "making /dev read-only".into(),
        );
        self.push(
            Step::MountTmpfs {
                path: c"/dev/shm".to_owned(),
                // As Docker has it: shared memory, not a place to run from.
                flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                options: c"mode=1777".to_owned(),
            },
            "mounting a private /dev/shm".into(),
        );
        self.push(
            Step::MountDevpts {
                path: c"/dev/pts".to_owned(),
            },
            "mounting a private devpts on /dev/pts".into(),
        );
        Ok(())
    }

    fn push(&mut self, step: Step, description: String) {
        self.steps.push(step);
        self.descriptions.push(description);
    }
}
