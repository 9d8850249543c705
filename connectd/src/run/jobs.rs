//! What content processes and builds share: job keys, their base
//! environment, their logs and the interpreters they run with. Deploy
//! borrows these for builds.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::bundle::Runtimes;
use crate::config::Settings;
use crate::layout::Layout;

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

/// The interpreters from `[Runtimes]`, with Connect's defaults.
pub fn runtimes(settings: &Settings, layout: &Layout) -> Runtimes {
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
