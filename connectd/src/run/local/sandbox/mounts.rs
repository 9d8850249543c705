//! Which paths the sandbox hides, exposes or gives a private tmpfs: the
//! [`Isolation`] resolved against root's view of the host, checked for
//! conflicts, and put in mount order with the mount points to create.
//! Runs before the fork, so it may allocate and log.

use std::io;
use std::path::{Path, PathBuf};

use super::{cstring, Isolation, LaunchError};

/// One mount of the isolation, at a resolved path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Mount {
    /// Empty read-only tmpfs.
    Hide,
    /// The host's directory bound back.
    Expose { writable: bool },
    /// Writable tmpfs, mode 1777.
    PrivateTmp,
}

impl Mount {
    /// Orders mounts at equal paths. None are left by the time mounts are
    /// sorted (duplicates merged, conflicts refused, a hide equal to an
    /// expose dropped); the rank only keeps the order total.
    fn rank(&self) -> u8 {
        match self {
            Mount::Hide => 0,
            Mount::Expose { .. } => 1,
            Mount::PrivateTmp => 2,
        }
    }

    fn is_tmpfs(&self) -> bool {
        matches!(self, Mount::Hide | Mount::PrivateTmp)
    }
}

/// A mount to make, in order, with the directories to create inside it
/// (for tmpfs mounts) so that later mounts under it have a mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ordered {
    pub(super) path: PathBuf,
    pub(super) mount: Mount,
    pub(super) mkdirs: Vec<PathBuf>,
}

/// Host paths the sandbox relies on or replaces: `/proc/self/fd` names
/// every mount source and target, and every sandbox gets its own /proc and
/// /dev on top of whatever was mounted there.
fn needed_by_sandbox(path: &Path) -> bool {
    path == Path::new("/") || path.starts_with("/proc") || path.starts_with("/dev")
}

/// Resolves and checks the isolation's paths, then orders the mounts:
/// parents before children, redundant hides dropped, and for every mount
/// under a tmpfs the directories to create in that tmpfs.
pub(super) fn resolve(isolation: &Isolation) -> Result<Vec<Ordered>, LaunchError> {
    let mut mounts: Vec<(PathBuf, Mount)> = Vec::new();

    for path in &isolation.hide {
        cstring("hide path", path)?;
        let resolved = match std::fs::canonicalize(path) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "hide path does not exist: nothing to hide");
                continue;
            }
            Err(source) => {
                return Err(LaunchError::Unusable {
                    what: "hide path",
                    path: path.clone(),
                    source,
                })
            }
        };
        if needed_by_sandbox(&resolved) {
            return Err(LaunchError::Conflict(format!(
                "hide path {} would hide {} (/ must stay visible, and /proc and /dev are \
                 the sandbox's own)",
                path.display(),
                resolved.display()
            )));
        }
        if !resolved.is_dir() {
            return Err(LaunchError::BadPath {
                what: "hide path",
                path: path.clone(),
                problem: "is not a directory (only directories can be hidden)",
            });
        }
        mounts.push((resolved, Mount::Hide));
    }

    for bind in &isolation.expose {
        cstring("expose path", &bind.path)?;
        let resolved =
            std::fs::canonicalize(&bind.path).map_err(|source| LaunchError::Unusable {
                what: "expose path",
                path: bind.path.clone(),
                source,
            })?;
        if needed_by_sandbox(&resolved) {
            return Err(LaunchError::Conflict(format!(
                "expose path {} cannot be exposed: / cannot be hidden, and /proc and /dev \
                 are the sandbox's own",
                resolved.display()
            )));
        }
        if !resolved.is_dir() {
            return Err(LaunchError::BadPath {
                what: "expose path",
                path: bind.path.clone(),
                problem: "is not a directory (only directories can be exposed)",
            });
        }
        let mount = Mount::Expose {
            writable: bind.writable,
        };
        let twin = mounts
            .iter()
            .find(|(p, m)| *p == resolved && matches!(m, Mount::Expose { .. }));
        match twin {
            Some((_, existing)) if *existing == mount => continue,
            Some(_) => {
                return Err(LaunchError::Conflict(format!(
                    "{} is exposed twice, once read-only and once writable",
                    resolved.display()
                )))
            }
            None => mounts.push((resolved, mount)),
        }
    }

    if isolation.private_tmp {
        for tmp in ["/tmp", "/var/tmp"] {
            let resolved = match std::fs::canonicalize(tmp) {
                Ok(p) => p,
                // Created inside a hidden parent if there is one (below).
                Err(e) if e.kind() == io::ErrorKind::NotFound => PathBuf::from(tmp),
                Err(source) => {
                    return Err(LaunchError::Unusable {
                        what: "temporary directory",
                        path: PathBuf::from(tmp),
                        source,
                    })
                }
            };
            if let Some((_, m)) = mounts.iter().find(|(p, _)| *p == resolved) {
                if *m == Mount::PrivateTmp {
                    continue; // /var/tmp -> /tmp
                }
                return Err(LaunchError::Conflict(format!(
                    "{} is both {} and given a private tmpfs; drop one",
                    resolved.display(),
                    if *m == Mount::Hide {
                        "hidden"
                    } else {
                        "exposed"
                    }
                )));
            }
            mounts.push((resolved, Mount::PrivateTmp));
        }
    }

    // Hiding a path that is exposed as a whole changes nothing, and would
    // break the exposure: the recursive bind would copy the tmpfs already
    // mounted on its own source.
    let exposed: Vec<PathBuf> = mounts
        .iter()
        .filter(|(_, m)| matches!(m, Mount::Expose { .. }))
        .map(|(p, _)| p.clone())
        .collect();
    mounts.retain(|(p, m)| *m != Mount::Hide || !exposed.contains(p));

    // Path's order compares components: a parent sorts before its
    // children, so a mount is never made before the one it lies in (a
    // mount under an exposed directory made before the bind would be
    // copied into it by MS_REC).
    mounts.sort_by(|(a, m), (b, n)| a.cmp(b).then(m.rank().cmp(&n.rank())));

    let mut ordered: Vec<Ordered> = Vec::new();
    for (path, mount) in mounts {
        // The mount this one lies in (or replaces, at an equal path).
        let container = ordered.iter().rposition(|o| path.starts_with(&o.path));
        let in_tmpfs = container
            .and_then(|i| ordered.get(i))
            .is_some_and(|o| o.mount.is_tmpfs());
        match mount {
            // Already under an empty tmpfs: nothing of the host shows there.
            Mount::Hide if in_tmpfs => continue,
            Mount::PrivateTmp if !in_tmpfs && !path.exists() => {
                tracing::debug!(path = %path.display(), "no such directory: no private tmpfs for it");
                continue;
            }
            _ => {}
        }
        if in_tmpfs {
            if let Some(parent) = container.and_then(|i| ordered.get_mut(i)) {
                // Every directory from just below the tmpfs down to the
                // mount point, parents first.
                let mut dirs: Vec<PathBuf> = path
                    .ancestors()
                    .take_while(|a| a.starts_with(&parent.path) && *a != parent.path)
                    .map(Path::to_path_buf)
                    .collect();
                dirs.reverse();
                for dir in dirs {
                    if !parent.mkdirs.contains(&dir) {
                        parent.mkdirs.push(dir);
                    }
                }
            }
        }
        ordered.push(Ordered {
            path,
            mount,
            mkdirs: Vec::new(),
        });
    }
    Ok(ordered)
}
