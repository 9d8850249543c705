//! Content processes on this machine: [`LocalLauncher`], built from the
//! sandbox (fork on a spawner thread, a private mount namespace, the
//! account switch) and the PAM sessions a viewer's processes run in.
//! `sandbox` and `pam_session` import nothing else of connectd; the
//! launcher imports `config`, `layout` and the seam it implements,
//! `run::launcher`.

pub mod launcher;
pub mod pam_session;
pub mod sandbox;

pub use launcher::LocalLauncher;
