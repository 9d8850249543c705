//! The child between fork and exec: the [`Step`]s it can take and the raw
//! system calls that take them. Async-signal-safe code only (no
//! allocation, no locks, no formatting, no tracing, no panics): the parent
//! may have other threads holding the allocator's lock.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;

use libc::{c_char, c_int, c_ulong};

/// One action of the child between fork and exec. Everything is owned and
/// prepared: running it allocates nothing.
#[derive(Debug)]
pub(super) enum Step {
    NewSession,
    /// Marks every inherited descriptor above stderr close-on-exec, so a
    /// descriptor connectd leaked without `O_CLOEXEC` never reaches content.
    CloexecInherited,
    /// `umask(0)`: directories created for mount points get exactly 0755.
    ClearUmask,
    /// Writes this (a decimal number, NUL-terminated) to
    /// /proc/self/oom_score_adj: -1000 for the monitor and init, so that
    /// the kernel, out of memory in the content's cgroup, kills the content
    /// and not them; the content process sets it back.
    OomScoreAdj(CString),
    /// Moves this process into the cgroup whose `cgroup.procs` is open as
    /// this descriptor; its children follow.
    JoinCgroup(RawFd),
    /// Mount, PID and IPC namespaces: the mounts below reach nothing
    /// outside, the content sees no process but its own, and System V
    /// IPC objects and POSIX message queues are its own.
    NewNamespaces,
    /// Forks init into the new PID namespace (and into the cgroup v2
    /// directory open as `cgroup`, unless -1); the forking process becomes
    /// the monitor and never gets past this step (see `init`).
    StartInit {
        cgroup: RawFd,
    },
    PrivatePropagation,
    OpenSource {
        path: CString,
        slot: usize,
    },
    MountTmpfs {
        path: CString,
        flags: c_ulong,
        options: CString,
    },
    MakeDir {
        path: CString,
    },
    /// A remount of the tmpfs on `path` with `flags` (`MS_REMOUNT`,
    /// `MS_RDONLY`...).
    RemountTmpfs {
        path: CString,
        flags: c_ulong,
    },
    /// A fresh procfs on /proc, showing the new PID namespace only.
    MountProc,
    /// `path` bind-mounted onto itself, so that it can be made read-only
    /// without touching what is around it.
    BindSelf {
        path: CString,
    },
    /// A character device node (on the sandbox's own /dev).
    MakeDevice {
        path: CString,
        device: libc::dev_t,
    },
    Symlink {
        target: CString,
        path: CString,
    },
    /// A private devpts instance, so ptys content opens are its own.
    MountDevpts {
        path: CString,
    },
    /// Forks the content process; init stays behind (see `init`).
    StartApp,
    BindSource {
        slot: usize,
        path: CString,
    },
    BindReadOnly {
        path: CString,
    },
    CloseSources,
    NoNewPrivileges,
    SetGroups(Vec<libc::gid_t>),
    SetGid(libc::gid_t),
    SetUid(libc::uid_t),
    VerifyDropped {
        uid: libc::uid_t,
        gid: libc::gid_t,
    },
    /// SIGKILL when the forking thread (connectd's spawner) dies, set after
    /// the credentials change (which clears it); `parent` is connectd's pid.
    DieWithParent {
        parent: libc::pid_t,
    },
    Umask(libc::mode_t),
    Chdir(CString),
    /// The system-call filter, the last step before exec.
    SystemCallFilter(seccompiler::BpfProgram),
}

pub(super) fn run_child(steps: &[Step], fds: &mut [RawFd], report: RawFd) -> io::Result<()> {
    for (index, step) in steps.iter().enumerate() {
        if let Err(e) = step.run(fds) {
            let index = u32::try_from(index).unwrap_or(u32::MAX).to_ne_bytes();
            // SAFETY: writes 4 bytes from a stack buffer; a failure only
            // loses the step's name from the error message.
            unsafe { libc::write(report, index.as_ptr().cast(), index.len()) };
            return Err(e);
        }
    }
    Ok(())
}

fn cvt(rc: c_int) -> io::Result<c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn cvt_long(rc: libc::c_long) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// `struct open_how` (linux/openat2.h); kept here as libc marks its own
/// non-exhaustive.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `struct __user_cap_header_struct` / `__user_cap_data_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Opens a directory as an `O_PATH` descriptor without following any
/// symlink on the way: the paths were resolved before the fork, so a
/// symlink now means something changed under us.
pub(super) fn open_dir_nofollow(path: &CStr) -> io::Result<RawFd> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: path is NUL-terminated and `how` is a valid open_how of the
    // size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if rc >= 0 {
        return RawFd::try_from(rc).map_err(|_| einval());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // Before Linux 5.6: at least refuse a symlink as the last component.
    // SAFETY: path is NUL-terminated.
    cvt(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    })
}

/// "/proc/self/fd/N", NUL-terminated, in a stack buffer: names the object
/// behind descriptor N to mount(2).
pub(super) struct ProcFdPath([u8; 32]);

impl ProcFdPath {
    pub(super) fn new(fd: RawFd) -> io::Result<Self> {
        const PREFIX: &[u8] = b"/proc/self/fd/";
        let mut buf = [0u8; 32];
        let mut n = u32::try_from(fd).map_err(|_| einval())?;
        let mut digits = [0u8; 10];
        let mut len = 0;
        for d in digits.iter_mut() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
            len += 1;
            if n == 0 {
                break;
            }
        }
        let text = PREFIX
            .iter()
            .chain(digits.iter().take(len).rev())
            .chain(std::iter::once(&0u8));
        for (slot, byte) in buf.iter_mut().zip(text) {
            *slot = *byte;
        }
        Ok(ProcFdPath(buf))
    }

    pub(super) fn as_ptr(&self) -> *const c_char {
        self.0.as_ptr().cast()
    }
}

/// Closes `fd` after `f`, keeping `f`'s errno.
fn with_fd<T>(fd: RawFd, f: impl FnOnce(RawFd) -> io::Result<T>) -> io::Result<T> {
    let result = f(fd);
    // SAFETY: fd was opened by the caller and is not used afterwards.
    unsafe { libc::close(fd) };
    result
}

fn mount(
    source: *const c_char,
    target: &ProcFdPath,
    fstype: *const c_char,
    flags: c_ulong,
    data: *const c_char,
) -> io::Result<()> {
    // SAFETY: every pointer is null or a NUL-terminated string that
    // outlives the call.
    cvt(unsafe { libc::mount(source, target.as_ptr(), fstype, flags, data.cast()) }).map(drop)
}

/// Read-only, nosuid and nodev for the bind mount `fd` is the root of, and
/// for every mount below it; noexec and atime flags stay as they were.
fn make_read_only(fd: RawFd) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: "" is NUL-terminated and attr is a valid mount_attr of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // Before Linux 5.12: a bind remount, which only covers the top mount
    // and resets noexec unless we pass it again.
    // SAFETY: statvfs is plain data, valid zeroed.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid statvfs buffer. (glibc takes the flags from
    // fstatfs's f_flags, a plain system call, on any kernel since 2.6.36.)
    cvt(unsafe { libc::fstatvfs(fd, &mut st) })?;
    let mut flags =
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    if st.f_flag & libc::ST_NOEXEC != 0 {
        flags |= libc::MS_NOEXEC;
    }
    mount(
        std::ptr::null(),
        &ProcFdPath::new(fd)?,
        std::ptr::null(),
        flags,
        std::ptr::null(),
    )
}

/// Whether uid/gid hold no trace of root: real, effective and saved ids,
/// no capability, and `setuid(0)`/`setgid(0)` refused.
fn verify_dropped(uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    let denied = || io::Error::from_raw_os_error(libc::EPERM);
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
    // SAFETY: the out-pointers are valid locals.
    cvt(unsafe { libc::getresuid(&mut ruid, &mut euid, &mut suid) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::getresgid(&mut rgid, &mut egid, &mut sgid) })?;
    if [ruid, euid, suid] != [uid; 3] || [rgid, egid, sgid] != [gid; 3] {
        return Err(denied());
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and a two-element data array, as version 3 requires.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    })?;
    if data.iter().any(|d| d.effective != 0 || d.permitted != 0) {
        return Err(denied());
    }
    // SAFETY: no preconditions; success means root came back, and the
    // caller then fails the launch, so the child exits without exec.
    if unsafe { libc::setuid(0) } == 0 || unsafe { libc::setgid(0) } == 0 {
        return Err(denied());
    }
    Ok(())
}

impl Step {
    fn run(&self, fds: &mut [RawFd]) -> io::Result<()> {
        match self {
            // SAFETY: no preconditions.
            Step::NewSession => cvt(unsafe { libc::setsid() }).map(drop),
            Step::CloexecInherited => {
                // SAFETY: no memory is involved.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_close_range,
                        3 as libc::c_uint,
                        libc::c_uint::MAX,
                        libc::CLOSE_RANGE_CLOEXEC,
                    )
                };
                match cvt_long(rc) {
                    // Kernels before 5.11 lack the flag: descriptors
                    // connectd opens are close-on-exec anyway.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) => {
                        Ok(())
                    }
                    other => other,
                }
            }
            Step::ClearUmask => {
                // SAFETY: no preconditions.
                unsafe { libc::umask(0) };
                Ok(())
            }
            Step::OomScoreAdj(value) => {
                // SAFETY: the path is NUL-terminated.
                let written = cvt(unsafe {
                    libc::open(
                        c"/proc/self/oom_score_adj".as_ptr(),
                        libc::O_WRONLY | libc::O_CLOEXEC,
                    )
                })
                .and_then(|fd| {
                    with_fd(fd, |fd| {
                        let bytes = value.as_bytes();
                        // SAFETY: writes the prepared bytes.
                        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
                        cvt_long(n as libc::c_long)
                    })
                });
                match written {
                    // A host that withholds CAP_SYS_RESOURCE (some
                    // containers): the protection is best-effort, and
                    // the content's cgroup still reports its OOM kill.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                        Ok(())
                    }
                    other => other,
                }
            }
            Step::JoinCgroup(fd) => {
                // "0": the writer itself.
                // SAFETY: writes one byte from a static buffer.
                let n = unsafe { libc::write(*fd, c"0".as_ptr().cast(), 1) };
                cvt_long(n as libc::c_long)
            }
            Step::NewNamespaces => {
                let namespaces = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC;
                // SAFETY: no preconditions.
                cvt(unsafe { libc::unshare(namespaces) }).map(drop)
            }
            Step::StartInit { cgroup } => super::init::start_init(*cgroup),
            Step::StartApp => super::init::start_app(),
            Step::PrivatePropagation => {
                // SAFETY: "/" is NUL-terminated; the other pointers are null.
                cvt(unsafe {
                    libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    )
                })
                .map(drop)
            }
            Step::OpenSource { path, slot } => {
                let fd = open_dir_nofollow(path)?;
                match fds.get_mut(*slot) {
                    Some(s) => {
                        *s = fd;
                        Ok(())
                    }
                    None => with_fd(fd, |_| Err(einval())),
                }
            }
            Step::MountTmpfs {
                path,
                flags,
                options,
            } => with_fd(open_dir_nofollow(path)?, |fd| {
                mount(
                    c"tmpfs".as_ptr(),
                    &ProcFdPath::new(fd)?,
                    c"tmpfs".as_ptr(),
                    *flags,
                    options.as_ptr(),
                )
            }),
            Step::MakeDir { path } => {
                // SAFETY: path is NUL-terminated.
                match cvt(unsafe { libc::mkdir(path.as_ptr(), 0o755) }) {
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
                    other => other.map(drop),
                }
            }
            Step::RemountTmpfs { path, flags } => with_fd(open_dir_nofollow(path)?, |fd| {
                mount(
                    std::ptr::null(),
                    &ProcFdPath::new(fd)?,
                    std::ptr::null(),
                    *flags,
                    std::ptr::null(),
                )
            }),
            Step::MountProc => with_fd(open_dir_nofollow(c"/proc")?, |fd| {
                mount(
                    c"proc".as_ptr(),
                    &ProcFdPath::new(fd)?,
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                )
            }),
            Step::BindSelf { path } => with_fd(open_dir_nofollow(path)?, |fd| {
                let target = ProcFdPath::new(fd)?;
                mount(
                    target.as_ptr(),
                    &target,
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
            }),
            Step::MakeDevice { path, device } => {
                // SAFETY: path is NUL-terminated. The umask is 0 here.
                cvt(unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, *device) }).map(drop)
            }
            Step::Symlink { target, path } => {
                // SAFETY: both are NUL-terminated.
                cvt(unsafe { libc::symlink(target.as_ptr(), path.as_ptr()) }).map(drop)
            }
            Step::MountDevpts { path } => with_fd(open_dir_nofollow(path)?, |fd| {
                mount(
                    c"devpts".as_ptr(),
                    &ProcFdPath::new(fd)?,
                    c"devpts".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NOEXEC,
                    c"newinstance,ptmxmode=0666,mode=0620".as_ptr(),
                )
            }),
            Step::BindSource { slot, path } => {
                let source = ProcFdPath::new(*fds.get(*slot).ok_or_else(einval)?)?;
                with_fd(open_dir_nofollow(path)?, |fd| {
                    mount(
                        source.as_ptr(),
                        &ProcFdPath::new(fd)?,
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    )
                })
            }
            // Opened after the bind: the descriptor is the bind's root.
            Step::BindReadOnly { path } => with_fd(open_dir_nofollow(path)?, make_read_only),
            Step::CloseSources => {
                for fd in fds.iter_mut() {
                    if *fd >= 0 {
                        // SAFETY: opened by OpenSource, closed once.
                        unsafe { libc::close(*fd) };
                        *fd = -1;
                    }
                }
                Ok(())
            }
            Step::NoNewPrivileges => {
                // SAFETY: no memory is involved.
                cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
            }
            Step::SetGroups(groups) => {
                let list = if groups.is_empty() {
                    std::ptr::null()
                } else {
                    groups.as_ptr()
                };
                // SAFETY: list points to groups.len() gids (or is null for none).
                cvt(unsafe { libc::setgroups(groups.len(), list) }).map(drop)
            }
            // SAFETY: no preconditions.
            Step::SetGid(gid) => cvt(unsafe { libc::setgid(*gid) }).map(drop),
            // SAFETY: no preconditions.
            Step::SetUid(uid) => cvt(unsafe { libc::setuid(*uid) }).map(drop),
            Step::VerifyDropped { uid, gid } => verify_dropped(*uid, *gid),
            Step::DieWithParent { parent } => {
                // SAFETY: no memory is involved.
                cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })?;
                // The parent may have died before the request took effect.
                // SAFETY: no preconditions.
                if unsafe { libc::getppid() } != *parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            }
            Step::Umask(mask) => {
                // SAFETY: no preconditions.
                unsafe { libc::umask(*mask) };
                Ok(())
            }
            // SAFETY: the path is NUL-terminated.
            Step::Chdir(path) => cvt(unsafe { libc::chdir(path.as_ptr()) }).map(drop),
            // Builds a sock_fprog on the stack and makes one system call.
            Step::SystemCallFilter(program) => {
                seccompiler::apply_filter(program).map_err(|e| match e {
                    seccompiler::Error::Seccomp(e) => e,
                    _ => einval(),
                })
            }
        }
    }
}
