//! Where content lives under `Server.DataDir`.
//!
//! ```text
//! DataDir/                  0700 root: nothing below is reachable from outside
//!   connect.db              the database
//!   apps/<guid>/bundles/<id>/   unpacked bundles (read-only to processes)
//!   apps/<guid>/envs/<deployment>/  environments, built as Applications.RunAs
//!   apps/<guid>/work/           the working directory every process of the content
//!                               shares: RunAs:shared group, 2770
//!   run/<job>/                  one process's socket directory, 0700 its own uid
//!   logs/<guid>/<job>.log       per-process logs, 0600 root (read through the API)
//!   apps/<guid>/cache/          pip and npm caches of its builds, RunAs only
//! ```
//!
//! Content processes see none of it except, inside their private mount
//! namespace, their own bundle, environment, working and socket directories.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    data_dir: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn content_dir(&self, guid: &str) -> PathBuf {
        self.data_dir.join("apps").join(guid)
    }

    pub fn bundle_dir(&self, guid: &str, bundle_id: i64) -> PathBuf {
        self.content_dir(guid)
            .join("bundles")
            .join(bundle_id.to_string())
    }

    pub fn envs_dir(&self, guid: &str) -> PathBuf {
        self.content_dir(guid).join("envs")
    }

    /// One deployment's environment; never rebuilt in place.
    pub fn env_dir(&self, guid: &str, deployment: &str) -> PathBuf {
        self.envs_dir(guid).join(deployment)
    }

    pub fn work_dir(&self, guid: &str) -> PathBuf {
        self.content_dir(guid).join("work")
    }

    pub fn socket_dir(&self, job: &str) -> PathBuf {
        self.data_dir.join("run").join(job)
    }

    pub fn logs_dir(&self, guid: &str) -> PathBuf {
        self.data_dir.join("logs").join(guid)
    }

    pub fn log_file(&self, guid: &str, job: &str) -> PathBuf {
        self.logs_dir(guid).join(format!("{job}.log"))
    }

    /// pip and npm caches of one content's builds: shared with no other
    /// publisher's builds, which could otherwise poison them.
    pub fn cache_dir(&self, guid: &str) -> PathBuf {
        self.content_dir(guid).join("cache")
    }
}

/// Creates (or fixes) a directory owned by `uid:gid` with `mode`. It is
/// made 0700 first, so it is never open to others before it is theirs.
pub fn prepare_dir(path: &Path, uid: u32, gid: u32, mode: u32) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(path)?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Directories that must never be hidden from content processes by
/// covering them with an empty tmpfs: the configuration file's directory
/// is hidden only when it is connectd's own.
pub fn dedicated_config_dir(config_path: &Path) -> Option<PathBuf> {
    const SHARED: &[&str] = &[
        "/",
        "/etc",
        "/usr",
        "/usr/local",
        "/usr/local/etc",
        "/var",
        "/var/lib",
        "/opt",
        "/home",
        "/root",
        "/tmp",
        "/run",
        "/srv",
    ];
    let dir = config_path.parent()?;
    if !dir.is_absolute() || SHARED.iter().any(|s| Path::new(s) == dir) {
        return None;
    }
    Some(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_dirs_shared_with_the_system_are_never_hidden() {
        assert_eq!(
            dedicated_config_dir(Path::new("/etc/connect/connect.gcfg")),
            Some(PathBuf::from("/etc/connect"))
        );
        assert_eq!(dedicated_config_dir(Path::new("/etc/connect.gcfg")), None);
        assert_eq!(dedicated_config_dir(Path::new("connect.gcfg")), None);
    }
}
