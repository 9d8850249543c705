//! Content processes on this machine: [`LocalLauncher`], built from the
//! sandbox (fork on a spawner thread, mount, PID and IPC namespaces, the
//! account switch, a system-call filter), the cgroups that limit each
//! process, and the PAM sessions a viewer's processes run in. `sandbox`
//! and `pam_session` import nothing else of connectd, `cgroup` only the
//! limits' settings; the launcher imports `config`, `layout` and the seam
//! it implements, `run::launcher`.

pub mod cgroup;
pub mod launcher;
pub mod pam_session;
pub mod sandbox;

pub use launcher::LocalLauncher;
