//! Which directory entries the nameservice may answer for. An entry that
//! could shadow or collide with an account someone already has is refused
//! (and logged by the caller), never repaired: the directory's
//! administrator must fix it there.
//!
//! Collisions with accounts the nameservice provisioned are checked by the
//! service in the transaction that stores the entry.

use crate::config::{Settings, FORBIDDEN_RANGES};
use crate::local::LocalAccounts;
use crate::names::{plausible_lookup_name, sanitise_gecos};

use super::{DirectoryAccount, DirectoryGroup};

fn path_ok(p: &str) -> bool {
    p.starts_with('/') && p.len() <= 4096 && !p.chars().any(|c| c == ':' || c.is_control())
}

fn forbidden(id: u32) -> Option<&'static str> {
    FORBIDDEN_RANGES
        .iter()
        .find(|(range, _)| range.contains(&id))
        .map(|(_, what)| *what)
}

/// Checks a user entry; on success returns it with its gecos made safe.
pub fn user(
    settings: &Settings,
    local: &LocalAccounts,
    u: &DirectoryAccount,
) -> Result<DirectoryAccount, String> {
    if !plausible_lookup_name(&u.name, settings.policy.max_len) {
        return Err(format!(
            "its name {:?} is not a usable Unix name (at most {} characters, no spaces, colons \
             or slashes)",
            u.name, settings.policy.max_len
        ));
    }
    if u.uid == 0 {
        return Err("its uidNumber is 0: a directory entry is never root".into());
    }
    if u.gid == 0 {
        return Err("its gidNumber is 0: a directory entry never has root's group".into());
    }
    if u.uid < settings.minimum_uid {
        return Err(format!(
            "its uidNumber {} is below [Nameservice] MinimumUid = {}",
            u.uid, settings.minimum_uid
        ));
    }
    if let Some(what) = forbidden(u.uid) {
        return Err(format!("its uidNumber {} is kept for {what}", u.uid));
    }
    if settings.uid_range.contains(&u.uid) {
        return Err(format!(
            "its uidNumber {} is inside [Nameservice] UidRange, where the nameservice \
             provisions accounts",
            u.uid
        ));
    }
    if let Some(other) = local.user(&u.name) {
        return Err(format!(
            "its name {:?} is a local account (uid {}); a directory entry never overrides one",
            u.name, other.uid
        ));
    }
    if let Some(other) = local.user_by_uid(u.uid) {
        return Err(format!(
            "its uidNumber {} belongs to the local account {:?}",
            u.uid, other.name
        ));
    }
    // No local exception: a system group as primary group (disk, shadow,
    // docker, sudo) would be root in all but name.
    gid_allowed(settings, local, u.gid, "its gidNumber")?;
    if local.subuid.iter().any(|r| r.contains(&u.uid)) {
        return Err(format!(
            "its uidNumber {} is inside an /etc/subuid range, whose owner could become it in \
             a user namespace",
            u.uid
        ));
    }
    if !path_ok(&u.home) {
        return Err(format!(
            "its home directory {:?} is not an absolute path without colons",
            u.home
        ));
    }
    if let Some(shell) = &u.shell {
        if !path_ok(shell) {
            return Err(format!(
                "its login shell {shell:?} is not an absolute path without colons"
            ));
        }
    }
    Ok(DirectoryAccount {
        gecos: sanitise_gecos(&u.gecos),
        ..u.clone()
    })
}

fn gid_allowed(
    settings: &Settings,
    local: &LocalAccounts,
    gid: u32,
    what: &str,
) -> Result<(), String> {
    if gid == 0 {
        return Err(format!("{what} is 0"));
    }
    if gid < settings.minimum_gid {
        return Err(format!(
            "{what} {gid} is below [Nameservice] MinimumGid = {}",
            settings.minimum_gid
        ));
    }
    if let Some(kind) = forbidden(gid) {
        return Err(format!("{what} {gid} is kept for {kind}"));
    }
    if settings.gid_range.contains(&gid) {
        return Err(format!(
            "{what} {gid} is inside [Nameservice] GidRange, where the nameservice provisions \
             groups"
        ));
    }
    if local.subgid.iter().any(|r| r.contains(&gid)) {
        return Err(format!("{what} {gid} is inside an /etc/subgid range"));
    }
    Ok(())
}

/// Checks a group entry; members whose names are not usable are dropped.
pub fn group(
    settings: &Settings,
    local: &LocalAccounts,
    g: &DirectoryGroup,
) -> Result<DirectoryGroup, String> {
    if !plausible_lookup_name(&g.name, settings.policy.max_len) {
        return Err(format!(
            "its name {:?} is not a usable Unix group name",
            g.name
        ));
    }
    gid_allowed(settings, local, g.gid, "its gidNumber")?;
    if let Some(other) = local.group(&g.name) {
        return Err(format!(
            "its name {:?} is a local group (gid {}); a directory entry never overrides one",
            g.name, other.gid
        ));
    }
    if let Some(other) = local.group_by_gid(g.gid) {
        return Err(format!(
            "its gidNumber {} belongs to the local group {:?}",
            g.gid, other.name
        ));
    }
    // Never local accounts (root included): a directory group must not
    // appear to hold them for software that reads member lists.
    let mut members: Vec<String> = g
        .members
        .iter()
        .filter(|m| plausible_lookup_name(m, settings.policy.max_len) && local.user(m).is_none())
        .cloned()
        .collect();
    members.sort();
    members.dedup();
    Ok(DirectoryGroup {
        members,
        ..g.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{parse_group, parse_passwd};

    fn settings() -> Settings {
        let config = connect_gcfg::Config::parse(
            "[Nameservice]\nUidRange = 2000000-2099999\nGidRange = 3000000-3099999\n",
            "t.gcfg",
        )
        .unwrap();
        Settings::from_config(&config).unwrap()
    }

    fn local() -> LocalAccounts {
        let users =
            parse_passwd("root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n");
        let groups = parse_group("root:x:0:\nusers:x:100:\nstaff:x:1000:\n");
        LocalAccounts {
            uids: users.iter().map(|u| u.uid).collect(),
            users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
            gids: groups.iter().map(|g| g.gid).collect(),
            groups: groups.into_iter().map(|g| (g.name.clone(), g)).collect(),
            subuid: vec![100_000..=165_535],
            subgid: Vec::new(),
        }
    }

    fn entry(name: &str, uid: u32, gid: u32) -> DirectoryAccount {
        DirectoryAccount {
            source: "corp".into(),
            dn: format!("uid={name},ou=people"),
            name: name.into(),
            uid,
            gid,
            gecos: "Ada: Lovelace\n".into(),
            home: format!("/home/{name}"),
            shell: Some("/bin/bash".into()),
            link: None,
        }
    }

    #[test]
    fn accepts_an_ordinary_entry_and_cleans_its_gecos() {
        let u = user(&settings(), &local(), &entry("ada", 5001, 5000)).unwrap();
        assert_eq!(u.gecos, "Ada  Lovelace");
    }

    #[test]
    fn refuses_entries_that_would_shadow_or_collide() {
        let s = settings();
        let l = local();
        for (e, why) in [
            (entry("ada", 0, 5000), "is 0"),
            (entry("ada", 5001, 0), "is 0"),
            (entry("ada", 999, 5000), "MinimumUid"),
            (entry("ada", 65534, 5000), "kept for"),
            (entry("ada", 2000005, 5000), "UidRange"),
            (entry("ada", 5001, 3000001), "GidRange"),
            (entry("alice", 5001, 5000), "local account"),
            (entry("ada", 5001, 100), "MinimumGid"),
            (entry("ada", 5001, 6), "MinimumGid"),
            (entry("ada", 100_001, 5000), "subuid"),
            (entry("ada", 1000, 5000), "local account \"alice\""),
            (entry("ad:a", 5001, 5000), "usable Unix name"),
            (
                DirectoryAccount {
                    home: "/home/x:/bin/sh".into(),
                    ..entry("ada", 5001, 5000)
                },
                "home directory",
            ),
        ] {
            let err = user(&s, &l, &e).unwrap_err();
            assert!(err.contains(why), "{e:?}: {err}");
        }
    }

    #[test]
    fn refuses_groups_that_collide() {
        let s = settings();
        let l = local();
        let g = |name: &str, gid| DirectoryGroup {
            source: "corp".into(),
            dn: String::new(),
            name: name.into(),
            gid,
            members: vec![
                "ada".into(),
                "bad name".into(),
                "ada".into(),
                "root".into(),
                "alice".into(),
            ],
        };
        assert_eq!(
            user_members(&group(&s, &l, &g("eng", 5000)).unwrap()),
            ["ada"]
        );
        assert!(group(&s, &l, &g("staff", 5000))
            .unwrap_err()
            .contains("local group"));
        assert!(group(&s, &l, &g("eng", 1000))
            .unwrap_err()
            .contains("local group"));
        assert!(group(&s, &l, &g("eng", 3000001))
            .unwrap_err()
            .contains("GidRange"));
        assert!(group(&s, &l, &g("eng", 0)).unwrap_err().contains("is 0"));
    }

    fn user_members(g: &DirectoryGroup) -> Vec<&str> {
        g.members.iter().map(String::as_str).collect()
    }
}
