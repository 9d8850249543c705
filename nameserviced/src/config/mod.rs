//! nameserviced's settings, read from the gcfg file connectd also reads.
//!
//! `[Applications] SharedRunAsUnixGroup` and `RunAs` are Connect's keys;
//! everything else lives in `[Nameservice]`. Validation that needs the local
//! account files (range overlaps, the shared group) is in [`Settings::check`],
//! so that every refusal happens before a socket is opened.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use connect_gcfg::{Config, ConfigError, Key};

pub mod directory;

use crate::local::LocalAccounts;
use crate::names::Policy;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/connect/connect.gcfg";
pub const DEFAULT_RUN_AS: &str = "connect";
pub const DEFAULT_UID_RANGE: RangeInclusive<u32> = 1_000_000_000..=1_099_999_999;
pub const DEFAULT_GID_RANGE: RangeInclusive<u32> = 1_000_000_000..=1_099_999_999;

/// Ids the nameservice never hands out: system accounts (0-999) and the ids
/// systemd and Debian keep for themselves and `nobody` (60000-65535).
pub const FORBIDDEN_RANGES: &[(RangeInclusive<u32>, &str)] = &[
    (0..=999, "system accounts"),
    (
        60000..=65535,
        "systemd dynamic users, containers and nobody",
    ),
    (u32::MAX..=u32::MAX, "the invalid id (uid_t)-1"),
];

/// Every key nameserviced understands in `[Nameservice]`, for unknown-key warnings.
pub const NAMESERVICE_KEYS: &[&str] = &[
    "uidrange",
    "gidrange",
    "sharedgroupgid",
    "homedirectory",
    "shell",
    "lockedshell",
    "lookupsocket",
    "provisionsocket",
    "statedirectory",
    "cachefile",
    "positivecachettl",
    "negativecachettl",
    "cachesize",
    "serviceaccount",
    "stripdomain",
    "reservedname",
    "maxnamelength",
    "loglevel",
    "autoprovision",
    "minimumuid",
    "minimumgid",
    "sharedgroupmembers",
];

#[derive(Debug, Clone)]
pub struct Settings {
    pub origin: String,
    pub uid_range: RangeInclusive<u32>,
    pub gid_range: RangeInclusive<u32>,
    pub shared_group: String,
    /// Set when the file names the shared group's gid; only used when the
    /// group is not in /etc/group.
    pub shared_group_gid: Option<u32>,
    pub home_template: String,
    pub shell: String,
    pub locked_shell: String,
    pub lookup_socket: PathBuf,
    pub provision_socket: PathBuf,
    pub state_dir: PathBuf,
    /// The memory-mapped cache file for libnss_connect's fast path; `None`
    /// (`CacheFile =` empty) turns the fast path off.
    pub cache_file: Option<PathBuf>,
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    pub cache_size: usize,
    /// Who besides root may provision; none by default.
    pub service_account: Option<String>,
    pub run_as: String,
    pub policy: Policy,
    pub log_level: String,
    /// When false, only identities with a mapping or a directory account
    /// get one: nothing is provisioned.
    pub auto_provision: bool,
    /// Directory and mapped accounts below these are refused (system accounts).
    pub minimum_uid: u32,
    pub minimum_gid: u32,
    /// Whether the shared group (when the nameservice answers for it) lists
    /// its members; false answers it without, as SSSD's
    /// `ignore_group_members`: membership is implied by each account's
    /// primary gid, and initgroups does not read member lists.
    pub shared_group_members: bool,
    /// `[Nameservice "name"]` directories, in file order.
    pub directories: Vec<directory::DirectorySettings>,
    /// `[Nameservice]` keys the daemon does not know, with their lines.
    pub unknown_keys: Vec<String>,
}

/// A refusal to start: says what is wrong and what to change.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

fn ns(name: &str) -> Key<'_> {
    Key::new("Nameservice", name)
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Self, SettingsError> {
        let origin = config.origin().to_owned();
        let invalid = |message: String| SettingsError::Invalid {
            origin: origin.clone(),
            message,
        };
        let run_as = config
            .string(Key::new("Applications", "RunAs"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_RUN_AS.to_owned());
        let shared_group = config
            .string(Key::new("Applications", "SharedRunAsUnixGroup"))
            .filter(|s| !s.is_empty())
            .unwrap_or_default();
        let uid_range = config
            .u32_range(ns("UidRange"))?
            .unwrap_or(DEFAULT_UID_RANGE);
        let gid_range = config
            .u32_range(ns("GidRange"))?
            .unwrap_or(DEFAULT_GID_RANGE);
        let max_len = match config.u32(ns("MaxNameLength"))? {
            None => 32,
            Some(n @ 1..=255) => n as usize,
            Some(n) => {
                return Err(invalid(format!(
                    "[Nameservice] MaxNameLength = {n}: must be between 1 and 255 (glibc and \
                     shadow-utils use 32)"
                )))
            }
        };
        let strip_domain = config.bool(ns("StripDomain"))?.unwrap_or(true);
        // Content runs as Applications.RunAs: an account that may provision
        // would let any publisher's app create accounts and give them
        // groups. Only root (connectd) may, unless another account is named.
        let service_account = config
            .string(ns("ServiceAccount"))
            .filter(|s| !s.is_empty());
        if service_account.as_deref() == Some(run_as.as_str()) {
            return Err(invalid(format!(
                "[Nameservice] ServiceAccount = {run_as:?} is Applications.RunAs, the account \
                 content runs as: every app could then provision accounts and groups. Remove \
                 the line (connectd runs as root) or name a dedicated account"
            )));
        }
        let mut reserved = config.strings(ns("ReservedName"));
        reserved.push(run_as.clone());
        reserved.extend(service_account.clone());
        if !shared_group.is_empty() {
            reserved.push(shared_group.clone());
        }
        let home_template = config
            .string(ns("HomeDirectory"))
            .unwrap_or_else(|| "/home/%u".to_owned());
        if !home_template.starts_with('/')
            || !home_template.contains("%u") && !home_template.contains("%U")
        {
            return Err(invalid(format!(
                "[Nameservice] HomeDirectory = {home_template:?}: must be an absolute path \
                 containing %u (the username) or %U (the uid), e.g. /home/%u"
            )));
        }
        let shell = config
            .string(ns("Shell"))
            .unwrap_or_else(|| "/bin/bash".to_owned());
        let locked_shell = config
            .string(ns("LockedShell"))
            .unwrap_or_else(|| "/usr/sbin/nologin".to_owned());
        for (key, value) in [("Shell", &shell), ("LockedShell", &locked_shell)] {
            if !value.starts_with('/') || value.contains(':') {
                return Err(invalid(format!(
                    "[Nameservice] {key} = {value:?}: must be an absolute path without ':'"
                )));
            }
        }
        let cache_size = match config.u32(ns("CacheSize"))? {
            None => 10_000,
            Some(0) => {
                return Err(invalid(
                    "[Nameservice] CacheSize = 0: must be at least 1".to_owned(),
                ))
            }
            Some(n) => n as usize,
        };
        let log_level = config
            .string(ns("LogLevel"))
            .unwrap_or_else(|| "info".to_owned());
        let unknown_keys = config
            .entries()
            .into_iter()
            .filter(|e| e.section.eq_ignore_ascii_case("Nameservice"))
            .filter(|e| !NAMESERVICE_KEYS.contains(&e.name.to_ascii_lowercase().as_str()))
            .filter(|e| e.subsection.is_none())
            .map(|e| format!("{}:{}: [Nameservice] {}", origin, e.line, e.name))
            .chain(directory::unknown_keys(config))
            .collect();
        let directories =
            directory::directories(config).map_err(|message| SettingsError::Invalid {
                origin: origin.clone(),
                message,
            })?;
        let minimum_uid = config.u32(ns("MinimumUid"))?.unwrap_or(1000).max(1);
        let minimum_gid = config.u32(ns("MinimumGid"))?.unwrap_or(1000).max(1);
        Ok(Self {
            uid_range,
            gid_range,
            shared_group,
            shared_group_gid: config.u32(ns("SharedGroupGid"))?,
            home_template,
            shell,
            locked_shell,
            lookup_socket: config
                .string(ns("LookupSocket"))
                .map(PathBuf::from)
                .unwrap_or_else(|| connect_proto::DEFAULT_LOOKUP_SOCKET.into()),
            provision_socket: config
                .string(ns("ProvisionSocket"))
                .map(PathBuf::from)
                .unwrap_or_else(|| connect_proto::DEFAULT_PROVISION_SOCKET.into()),
            state_dir: config
                .string(ns("StateDirectory"))
                .map(PathBuf::from)
                .unwrap_or_else(|| "/var/lib/connect-nameservice".into()),
            cache_file: match config.string(ns("CacheFile")) {
                None => Some(PathBuf::from(connect_proto::DEFAULT_CACHE_FILE)),
                Some(p) if p.is_empty() => None,
                Some(p) if p.starts_with('/') => Some(PathBuf::from(p)),
                Some(p) => {
                    return Err(invalid(format!(
                        "[Nameservice] CacheFile = {p:?}: must be an absolute path (or empty to \
                         turn the fast path off)"
                    )))
                }
            },
            positive_ttl: config
                .duration(ns("PositiveCacheTtl"))?
                .unwrap_or(Duration::from_secs(600)),
            negative_ttl: config
                .duration(ns("NegativeCacheTtl"))?
                .unwrap_or(Duration::from_secs(30)),
            cache_size,
            service_account,
            run_as,
            policy: Policy::new(strip_domain, max_len, &reserved),
            log_level,
            auto_provision: config.bool(ns("AutoProvision"))?.unwrap_or(true),
            minimum_uid,
            minimum_gid,
            shared_group_members: config.bool(ns("SharedGroupMembers"))?.unwrap_or(true),
            directories,
            unknown_keys,
            origin,
        })
    }

    /// Resolves the shared group against the local files and refuses ranges
    /// that could hand out an id someone else already has.
    pub fn check(&mut self, local: &LocalAccounts) -> Result<SharedGroup, SettingsError> {
        let invalid = |message: String| SettingsError::Invalid {
            origin: self.origin.clone(),
            message,
        };
        check_range(
            "UidRange",
            &self.uid_range,
            &local.uids,
            &local.subuid,
            "/etc/subuid",
            "local account",
            |id| local.user_by_uid(id).map(|u| u.name.clone()),
        )
        .map_err(&invalid)?;
        check_range(
            "GidRange",
            &self.gid_range,
            &local.gids,
            &local.subgid,
            "/etc/subgid",
            "local group",
            |id| local.group_by_gid(id).map(|g| g.name.clone()),
        )
        .map_err(&invalid)?;

        if self.shared_group.is_empty() {
            // Connect's rule: unset means the RunAs account's primary group.
            let user = local.user(&self.run_as).ok_or_else(|| {
                invalid(format!(
                    "[Applications] SharedRunAsUnixGroup is not set and the RunAs account {:?} \
                     is not in /etc/passwd, so there is no group to put accounts in: set \
                     SharedRunAsUnixGroup, or create the account (useradd --system {})",
                    self.run_as, self.run_as
                ))
            })?;
            let group = local.group_by_gid(user.gid).ok_or_else(|| {
                invalid(format!(
                    "the RunAs account {:?} has primary gid {} which is not in /etc/group: set \
                     [Applications] SharedRunAsUnixGroup",
                    self.run_as, user.gid
                ))
            })?;
            self.shared_group = group.name.clone();
            self.policy.reserved.insert(group.name.clone());
        }
        if let Some(group) = local.group(&self.shared_group) {
            return Ok(SharedGroup::Local {
                name: group.name.clone(),
                gid: group.gid,
            });
        }
        if !crate::names::plausible_lookup_name(&self.shared_group, self.policy.max_len) {
            return Err(invalid(format!(
                "[Applications] SharedRunAsUnixGroup = {:?} is not in /etc/group, so the \
                 nameservice must answer for it, but it is not a valid group name (a-z, 0-9, \
                 '_', '.', '-', starting with a letter): rename it or create it with groupadd",
                self.shared_group
            )));
        }
        if let Some(gid) = self.shared_group_gid {
            if let Some((_, why)) = FORBIDDEN_RANGES.iter().find(|(r, _)| r.contains(&gid)) {
                return Err(invalid(format!(
                    "[Nameservice] SharedGroupGid = {gid} lies among the ids kept for {why}; \
                     choose another gid"
                )));
            }
            if let Some(g) = local.group_by_gid(gid) {
                return Err(invalid(format!(
                    "[Nameservice] SharedGroupGid = {gid} belongs to the local group {:?}; \
                     choose a free gid, or set SharedRunAsUnixGroup = {}",
                    g.name, g.name
                )));
            }
            if self.gid_range.contains(&gid) {
                return Err(invalid(format!(
                    "[Nameservice] SharedGroupGid = {gid} lies inside GidRange; choose a gid \
                     outside it, or leave SharedGroupGid unset to have one allocated"
                )));
            }
        }
        Ok(SharedGroup::Nameservice {
            name: self.shared_group.clone(),
            gid: self.shared_group_gid,
        })
    }

    /// The home directory of an account, from the template.
    pub fn home_for(&self, name: &str, uid: u32) -> String {
        self.home_template
            .replace("%u", name)
            .replace("%U", &uid.to_string())
    }
}

/// Where the shared group comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedGroup {
    /// In /etc/group: its gid is every account's primary gid; `files` answers for it.
    Local { name: String, gid: u32 },
    /// Not in /etc/group: the nameservice answers for it, with this gid (or
    /// one allocated from GidRange and stored, when `None`).
    Nameservice { name: String, gid: Option<u32> },
}

fn check_range(
    key: &str,
    range: &RangeInclusive<u32>,
    local_ids: &std::collections::HashSet<u32>,
    sub_ranges: &[RangeInclusive<u32>],
    sub_file: &str,
    what: &str,
    name_of: impl Fn(u32) -> Option<String>,
) -> Result<(), String> {
    let shown = format!("[Nameservice] {key} = {}-{}", range.start(), range.end());
    for (forbidden, why) in FORBIDDEN_RANGES {
        if range.start() <= forbidden.end() && forbidden.start() <= range.end() {
            return Err(format!(
                "{shown} overlaps {}-{}, kept for {why}; choose a range above 65535 (the default \
                 is {}-{})",
                forbidden.start(),
                forbidden.end(),
                DEFAULT_UID_RANGE.start(),
                DEFAULT_UID_RANGE.end()
            ));
        }
    }
    if let Some(id) = local_ids
        .iter()
        .copied()
        .filter(|id| range.contains(id))
        .min()
    {
        return Err(format!(
            "{shown} contains id {id}, used by the {what} {:?}; choose a range that no local \
             account or group uses",
            name_of(id).unwrap_or_default()
        ));
    }
    if let Some(sub) = sub_ranges
        .iter()
        .find(|s| range.start() <= s.end() && s.start() <= range.end())
    {
        return Err(format!(
            "{shown} overlaps {}-{} delegated in {sub_file} for user namespaces; choose a range \
             outside every {sub_file} entry",
            sub.start(),
            sub.end()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalAccounts {
        let mut l = LocalAccounts::default();
        for (name, uid) in [("root", 0u32), ("connect", 998), ("bob", 1001)] {
            l.users.insert(
                name.into(),
                crate::local::LocalUser {
                    name: name.into(),
                    uid,
                    gid: uid,
                    gecos: String::new(),
                    home: "/".into(),
                    shell: "/bin/sh".into(),
                },
            );
            l.uids.insert(uid);
            l.groups.insert(
                name.into(),
                crate::local::LocalGroup {
                    name: name.into(),
                    gid: uid,
                },
            );
            l.gids.insert(uid);
        }
        l.subuid = vec![100000..=165535];
        l.subgid = vec![100000..=165535];
        l
    }

    fn settings(text: &str) -> Result<Settings, SettingsError> {
        Settings::from_config(&Config::parse(text, "test.gcfg")?)
    }

    #[test]
    fn defaults_take_the_run_as_primary_group() {
        let mut s = settings("").unwrap();
        assert_eq!(s.uid_range, DEFAULT_UID_RANGE);
        assert_eq!(
            s.check(&local()).unwrap(),
            SharedGroup::Local {
                name: "connect".into(),
                gid: 998
            }
        );
        assert!(s.policy.is_reserved("connect"));
    }

    #[test]
    fn shared_group_not_local_is_answered_by_the_nameservice() {
        let mut s = settings(
            "[Applications]\nSharedRunAsUnixGroup = connect-users\n[Nameservice]\nSharedGroupGid = 70000\n",
        )
        .unwrap();
        assert_eq!(
            s.check(&local()).unwrap(),
            SharedGroup::Nameservice {
                name: "connect-users".into(),
                gid: Some(70000)
            }
        );
    }

    #[test]
    fn refuses_ranges_that_collide() {
        for (text, needle) in [
            ("[Nameservice]\nUidRange = 500-2000\n", "overlaps 0-999"),
            (
                "[Nameservice]\nUidRange = 61000-62000\n",
                "overlaps 60000-65535",
            ),
            (
                "[Nameservice]\nGidRange = 65000-70000\n",
                "overlaps 60000-65535",
            ),
            (
                "[Nameservice]\nUidRange = 1000-5000\n",
                "used by the local account \"bob\"",
            ),
            (
                "[Nameservice]\nGidRange = 1000-5000\n",
                "used by the local group \"bob\"",
            ),
            ("[Nameservice]\nUidRange = 150000-200000\n", "/etc/subuid"),
            ("[Nameservice]\nGidRange = 90000-100000\n", "/etc/subgid"),
        ] {
            let err = settings(text)
                .unwrap()
                .check(&local())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(
                err.contains("choose"),
                "{text}: the message says what to do: {err}"
            );
        }
    }

    #[test]
    fn refuses_bad_shared_group_settings() {
        let err = settings("[Applications]\nRunAs = ghost\n")
            .unwrap()
            .check(&local())
            .unwrap_err()
            .to_string();
        assert!(err.contains("SharedRunAsUnixGroup"), "{err}");
        let err = settings(
            "[Applications]\nSharedRunAsUnixGroup = x\n[Nameservice]\nSharedGroupGid = 1001\n",
        )
        .unwrap()
        .check(&local())
        .unwrap_err()
        .to_string();
        assert!(err.contains("local group \"bob\""), "{err}");
        let err = settings("[Applications]\nSharedRunAsUnixGroup = Data Users\n")
            .unwrap()
            .check(&local())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid group name"), "{err}");
    }

    #[test]
    fn refuses_bad_values_naming_the_key() {
        let err = settings("[Nameservice]\nHomeDirectory = home\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("HomeDirectory"), "{err}");
        let err = settings("[Nameservice]\nStripDomain = perhaps\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("StripDomain") && err.contains("test.gcfg:2"),
            "{err}"
        );
        let err = settings("[Nameservice]\nUidRange = 9-1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("UidRange"), "{err}");
    }

    #[test]
    fn home_template_expands() {
        let s = settings("[Nameservice]\nHomeDirectory = /data/home/%u-%U\n").unwrap();
        assert_eq!(s.home_for("alice", 7), "/data/home/alice-7");
    }

    #[test]
    fn unknown_keys_are_reported_with_lines() {
        let s = settings("[Nameservice]\nUidRange = 70000-80000\nUidRnage = 1\n").unwrap();
        assert_eq!(
            s.unknown_keys,
            vec!["test.gcfg:3: [Nameservice] UidRnage".to_owned()]
        );
    }
}
