//! The machine's own accounts, read straight from the files.
//!
//! The daemon must never resolve users or groups through NSS: libnss_connect
//! would ask this very daemon, and a lookup could wait on itself. So
//! /etc/passwd, /etc/group, /etc/subuid and /etc/subgid are parsed here, and
//! re-read whenever their modification time or size changes.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// One line of /etc/passwd (only what the nameservice needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// One line of /etc/group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalGroup {
    pub name: String,
    pub gid: u32,
}

/// A consistent view of the local account files at one moment.
#[derive(Debug, Default, Clone)]
pub struct LocalAccounts {
    pub users: HashMap<String, LocalUser>,
    pub uids: HashSet<u32>,
    pub groups: HashMap<String, LocalGroup>,
    pub gids: HashSet<u32>,
    /// Ranges delegated to users for user namespaces (/etc/subuid).
    pub subuid: Vec<RangeInclusive<u32>>,
    /// Same for /etc/subgid.
    pub subgid: Vec<RangeInclusive<u32>>,
}

impl LocalAccounts {
    pub fn user(&self, name: &str) -> Option<&LocalUser> {
        self.users.get(name)
    }

    pub fn user_by_uid(&self, uid: u32) -> Option<&LocalUser> {
        self.users.values().find(|u| u.uid == uid)
    }

    pub fn group(&self, name: &str) -> Option<&LocalGroup> {
        self.groups.get(name)
    }

    pub fn group_by_gid(&self, gid: u32) -> Option<&LocalGroup> {
        self.groups.values().find(|g| g.gid == gid)
    }

    fn from_texts(passwd: &str, group: &str, subuid: &str, subgid: &str) -> Self {
        let mut accounts = LocalAccounts::default();
        for user in parse_passwd(passwd) {
            accounts.uids.insert(user.uid);
            accounts.users.insert(user.name.clone(), user);
        }
        for group in parse_group(group) {
            accounts.gids.insert(group.gid);
            accounts.groups.insert(group.name.clone(), group);
        }
        accounts.subuid = parse_subid(subuid);
        accounts.subgid = parse_subid(subgid);
        accounts
    }
}

/// Parses passwd(5) lines, skipping comments, NIS `+`/`-` entries and
/// malformed lines (they name no account the nameservice could collide with).
pub fn parse_passwd(text: &str) -> Vec<LocalUser> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(['+', '-']))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() {
                return None;
            }
            Some(LocalUser {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                gecos: f[4].to_owned(),
                home: f[5].to_owned(),
                shell: f[6].to_owned(),
            })
        })
        .collect()
}

/// Parses group(5) lines the same way.
pub fn parse_group(text: &str) -> Vec<LocalGroup> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(['+', '-']))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(LocalGroup {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
            })
        })
        .collect()
}

/// Parses subuid(5)/subgid(5): `owner:start:count`.
pub fn parse_subid(text: &str) -> Vec<RangeInclusive<u32>> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            let start: u64 = f[1].trim().parse().ok()?;
            let count: u64 = f[2].trim().parse().ok()?;
            if count == 0 {
                return None;
            }
            let end = (start + count - 1).min(u64::from(u32::MAX));
            Some(u32::try_from(start).ok()?..=u32::try_from(end).ok()?)
        })
        .collect()
}

/// Where the files live; tests run in a private mount namespace with other
/// files bind-mounted over these paths rather than changing them.
#[derive(Debug, Clone)]
pub struct LocalFiles {
    pub passwd: PathBuf,
    pub group: PathBuf,
    pub subuid: PathBuf,
    pub subgid: PathBuf,
}

impl Default for LocalFiles {
    fn default() -> Self {
        Self {
            passwd: "/etc/passwd".into(),
            group: "/etc/group".into(),
            subuid: "/etc/subuid".into(),
            subgid: "/etc/subgid".into(),
        }
    }
}

type Stamp = Vec<Option<(SystemTime, u64)>>;

/// Keeps a [`LocalAccounts`] snapshot and re-reads the files when they change,
/// so allocation always checks collisions against the current files without
/// parsing them on every request.
pub struct LocalWatcher {
    files: LocalFiles,
    state: Mutex<(Stamp, std::sync::Arc<LocalAccounts>)>,
}

impl LocalWatcher {
    pub fn new(files: LocalFiles) -> std::io::Result<Self> {
        let (stamp, accounts) = Self::read(&files)?;
        Ok(Self {
            files,
            state: Mutex::new((stamp, std::sync::Arc::new(accounts))),
        })
    }

    fn paths(files: &LocalFiles) -> [&Path; 4] {
        [&files.passwd, &files.group, &files.subuid, &files.subgid]
    }

    fn stamp(files: &LocalFiles) -> Stamp {
        Self::paths(files)
            .iter()
            .map(|p| {
                fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    fn read(files: &LocalFiles) -> std::io::Result<(Stamp, LocalAccounts)> {
        let stamp = Self::stamp(files);
        // passwd and group are required: without them collisions cannot be
        // ruled out. subuid/subgid are optional (absent on many systems).
        let passwd = fs::read_to_string(&files.passwd).map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: {e}", files.passwd.display()))
        })?;
        let group = fs::read_to_string(&files.group).map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: {e}", files.group.display()))
        })?;
        let subuid = fs::read_to_string(&files.subuid).unwrap_or_default();
        let subgid = fs::read_to_string(&files.subgid).unwrap_or_default();
        Ok((
            stamp,
            LocalAccounts::from_texts(&passwd, &group, &subuid, &subgid),
        ))
    }

    /// The current snapshot, re-read first if a file changed. If a re-read
    /// fails the previous snapshot is kept (and the error logged): a
    /// half-written /etc/passwd must not make every name look free.
    pub fn current(&self) -> std::sync::Arc<LocalAccounts> {
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let stamp = Self::stamp(&self.files);
        if stamp != state.0 {
            match Self::read(&self.files) {
                Ok((stamp, accounts)) => {
                    *state = (stamp, std::sync::Arc::new(accounts));
                }
                Err(e) => tracing::warn!(
                    "could not re-read local account files, keeping the previous view: {e}"
                ),
            }
        }
        state.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_skips_junk() {
        let users = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\n# comment\n+nis\nbroken:x:notanumber:0::/:\nshort:x:1\nbob:x:1001:1001:Bob,,,:/home/bob:/bin/sh\n",
        );
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].name, "bob");
        assert_eq!(users[1].uid, 1001);
        assert_eq!(users[1].gecos, "Bob,,,");
    }

    #[test]
    fn parses_groups_and_subids() {
        let groups = parse_group("root:x:0:\nconnect:x:999:alice,bob\n");
        assert_eq!(
            groups[1],
            LocalGroup {
                name: "connect".into(),
                gid: 999
            }
        );
        let ranges = parse_subid("alice:100000:65536\nbad\nzero:5:0\n");
        assert_eq!(ranges, vec![100000..=165535]);
    }

    #[test]
    fn watcher_notices_changes() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles {
            passwd: dir.path().join("passwd"),
            group: dir.path().join("group"),
            subuid: dir.path().join("subuid"),
            subgid: dir.path().join("subgid"),
        };
        fs::write(&files.passwd, "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(&files.group, "root:x:0:\n").unwrap();
        let watcher = LocalWatcher::new(files.clone()).unwrap();
        assert!(watcher.current().user("carol").is_none());
        fs::write(
            &files.passwd,
            "root:x:0:0::/root:/bin/sh\ncarol:x:1002:1002::/home/carol:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(watcher.current().user("carol").map(|u| u.uid), Some(1002));
        assert!(watcher.current().uids.contains(&1002));
    }

    #[test]
    fn missing_passwd_is_an_error_naming_the_file() {
        let files = LocalFiles {
            passwd: "/nonexistent/passwd".into(),
            ..LocalFiles::default()
        };
        let err = LocalWatcher::new(files).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/passwd"), "{err}");
    }
}
