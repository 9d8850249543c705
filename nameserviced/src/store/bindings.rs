//! Rows for accounts the nameservice did not provision: identities bound to
//! host or directory accounts (`mappings`), and the cache of directory
//! entries (`directory_users`, `directory_groups`, `directory_members`).

use rusqlite::{params, Connection, OptionalExtension};

use super::DbError;

/// Where a bound identity's account lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingKind {
    /// An account the host resolves itself (/etc/passwd, SSSD, extrausers…),
    /// looked up through NSS with this module bypassed.
    Host,
    /// An entry of a `[Nameservice "name"]` directory, answered from the cache.
    Directory,
}

impl BindingKind {
    fn as_str(self) -> &'static str {
        match self {
            BindingKind::Host => "host",
            BindingKind::Directory => "directory",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "directory" => BindingKind::Directory,
            _ => BindingKind::Host,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub provider: String,
    pub unique_id: String,
    pub kind: BindingKind,
    /// The account's name when it was bound.
    pub account: String,
    /// The account's uid when it was bound; `None` for mappings made before
    /// uids were recorded.
    pub uid: Option<u32>,
    /// `admin` for `nameservicectl map`/`set-uid`, else the directory's name.
    pub source: String,
    pub created: i64,
    pub refreshed: i64,
}

const BINDING_COLUMNS: &str =
    "provider, unique_id, kind, local_user, uid, source, created, refreshed";

fn binding_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Binding> {
    Ok(Binding {
        provider: r.get(0)?,
        unique_id: r.get(1)?,
        kind: BindingKind::parse(&r.get::<_, String>(2)?),
        account: r.get(3)?,
        uid: r.get(4)?,
        source: r.get(5)?,
        created: r.get(6)?,
        refreshed: r.get(7)?,
    })
}

pub fn binding(
    c: &Connection,
    provider: &str,
    unique_id: &str,
) -> Result<Option<Binding>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {BINDING_COLUMNS} FROM mappings WHERE provider = ?1 AND unique_id = ?2"
    ))?
    .query_row([provider, unique_id], binding_row)
    .optional()
}

/// The identity bound to an account, by its uid or (for old rows without
/// one) its name.
pub fn binding_of_account(
    c: &Connection,
    uid: u32,
    name: &str,
) -> Result<Option<Binding>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {BINDING_COLUMNS} FROM mappings WHERE uid = ?1 OR (uid IS NULL AND local_user = ?2)
         LIMIT 1"
    ))?
    .query_row(params![uid, name], binding_row)
    .optional()
}

pub fn put_binding(c: &Connection, b: &Binding) -> Result<(), DbError> {
    c.prepare_cached(
        "INSERT INTO mappings (provider, unique_id, kind, local_user, uid, source, created, refreshed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        b.provider,
        b.unique_id,
        b.kind.as_str(),
        b.account,
        b.uid,
        b.source,
        b.created,
        b.refreshed
    ])?;
    Ok(())
}

/// Records that the bound account was seen again (and possibly renamed).
pub fn touch_binding(
    c: &Connection,
    provider: &str,
    unique_id: &str,
    account: &str,
    now: i64,
) -> Result<(), DbError> {
    c.prepare_cached(
        "UPDATE mappings SET local_user = ?3, refreshed = ?4 WHERE provider = ?1 AND unique_id = ?2",
    )?
    .execute(params![provider, unique_id, account, now])?;
    Ok(())
}

pub fn delete_binding(c: &Connection, provider: &str, unique_id: &str) -> Result<bool, DbError> {
    Ok(
        c.prepare_cached("DELETE FROM mappings WHERE provider = ?1 AND unique_id = ?2")?
            .execute([provider, unique_id])?
            > 0,
    )
}

/// The current names of every bound account: a directory account by its
/// cached entry (it may have been renamed), a host account as last seen.
const BOUND_NAMES: &str = "SELECT COALESCE(d.name, m.local_user) AS name FROM mappings m
     LEFT JOIN directory_users d ON m.kind = 'directory' AND d.uid = m.uid";

pub fn bound_names(c: &Connection) -> Result<Vec<String>, DbError> {
    c.prepare_cached(&format!("{BOUND_NAMES} ORDER BY name"))?
        .query_map([], |r| r.get(0))?
        .collect()
}

pub fn is_bound_name(c: &Connection, name: &str) -> Result<bool, DbError> {
    Ok(c.prepare_cached(&format!(
        "SELECT 1 FROM ({BOUND_NAMES}) WHERE name = ?1 LIMIT 1"
    ))?
    .query_row([name], |_| Ok(()))
    .optional()?
    .is_some())
}

// ---------------------------------------------------------------------------
// The directory cache
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirUserRow {
    pub uid: u32,
    pub name: String,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
    /// The `[Nameservice "name"]` directory it came from.
    pub source: String,
    pub dn: String,
    /// The value of the directory's `IdentityAttribute`, when it has one.
    pub link: Option<String>,
    pub fetched: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGroupRow {
    pub gid: u32,
    pub name: String,
    pub source: String,
    pub dn: String,
    pub fetched: i64,
}

const DIR_USER_COLUMNS: &str = "uid, name, gid, gecos, home, shell, source, dn, link, fetched";
const DIR_GROUP_COLUMNS: &str = "gid, name, source, dn, fetched";

fn dir_user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DirUserRow> {
    Ok(DirUserRow {
        uid: r.get(0)?,
        name: r.get(1)?,
        gid: r.get(2)?,
        gecos: r.get(3)?,
        home: r.get(4)?,
        shell: r.get(5)?,
        source: r.get(6)?,
        dn: r.get(7)?,
        link: r.get(8)?,
        fetched: r.get(9)?,
    })
}

fn dir_group_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DirGroupRow> {
    Ok(DirGroupRow {
        gid: r.get(0)?,
        name: r.get(1)?,
        source: r.get(2)?,
        dn: r.get(3)?,
        fetched: r.get(4)?,
    })
}

pub fn dir_user_by_name(c: &Connection, name: &str) -> Result<Option<DirUserRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {DIR_USER_COLUMNS} FROM directory_users WHERE name = ?1"
    ))?
    .query_row([name], dir_user_row)
    .optional()
}

pub fn dir_user_by_uid(c: &Connection, uid: u32) -> Result<Option<DirUserRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {DIR_USER_COLUMNS} FROM directory_users WHERE uid = ?1"
    ))?
    .query_row([uid], dir_user_row)
    .optional()
}

pub fn dir_user_by_link(
    c: &Connection,
    source: &str,
    link: &str,
) -> Result<Option<DirUserRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {DIR_USER_COLUMNS} FROM directory_users WHERE source = ?1 AND link = ?2"
    ))?
    .query_row([source, link], dir_user_row)
    .optional()
}

/// Stores a fetched entry under its uid. Another cached entry holding the
/// same name (renamed in the directory since) gives it up.
pub fn put_dir_user(c: &Connection, row: &DirUserRow) -> Result<(), DbError> {
    c.prepare_cached("DELETE FROM directory_users WHERE name = ?1 AND uid != ?2")?
        .execute(params![row.name, row.uid])?;
    c.prepare_cached(&format!(
        "INSERT INTO directory_users ({DIR_USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (uid) DO UPDATE SET name = excluded.name, gid = excluded.gid,
           gecos = excluded.gecos, home = excluded.home, shell = excluded.shell,
           source = excluded.source, dn = excluded.dn, link = excluded.link,
           fetched = excluded.fetched"
    ))?
    .execute(params![
        row.uid,
        row.name,
        row.gid,
        row.gecos,
        row.home,
        row.shell,
        row.source,
        row.dn,
        row.link,
        row.fetched
    ])?;
    Ok(())
}

pub fn delete_dir_user(c: &Connection, uid: u32) -> Result<bool, DbError> {
    let Some(row) = dir_user_by_uid(c, uid)? else {
        return Ok(false);
    };
    c.prepare_cached("DELETE FROM directory_members WHERE member = ?1")?
        .execute([&row.name])?;
    c.prepare_cached("DELETE FROM directory_users WHERE uid = ?1")?
        .execute([uid])?;
    Ok(true)
}

pub fn dir_users_page(
    c: &Connection,
    after_uid: u32,
    limit: u32,
) -> Result<Vec<DirUserRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {DIR_USER_COLUMNS} FROM directory_users WHERE uid > ?1 ORDER BY uid LIMIT ?2"
    ))?
    .query_map([after_uid, limit], dir_user_row)?
    .collect()
}

pub fn dir_groups_page(
    c: &Connection,
    after_gid: u32,
    limit: u32,
) -> Result<Vec<DirGroupRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {DIR_GROUP_COLUMNS} FROM directory_groups WHERE gid > ?1 ORDER BY gid LIMIT ?2"
    ))?
    .query_map([after_gid, limit], dir_group_row)?
    .collect()
}

pub fn all_dir_users(c: &Connection) -> Result<Vec<DirUserRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {DIR_USER_COLUMNS} FROM directory_users ORDER BY uid"
    ))?
    .query_map([], dir_user_row)?
    .collect()
}

/// One directory's entries fetched at or before `before`, oldest first.
pub fn stale_dir_users(
    c: &Connection,
    source: &str,
    before: i64,
    limit: u32,
) -> Result<Vec<DirUserRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {DIR_USER_COLUMNS} FROM directory_users WHERE source = ?1 AND fetched <= ?2
         ORDER BY fetched LIMIT ?3"
    ))?
    .query_map(params![source, before, limit], dir_user_row)?
    .collect()
}

pub fn stale_dir_groups(
    c: &Connection,
    source: &str,
    before: i64,
    limit: u32,
) -> Result<Vec<DirGroupRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {DIR_GROUP_COLUMNS} FROM directory_groups WHERE source = ?1 AND fetched <= ?2
         ORDER BY fetched LIMIT ?3"
    ))?
    .query_map(params![source, before, limit], dir_group_row)?
    .collect()
}

/// Makes every cached entry due for a refresh, without dropping any: a
/// flushed cache still answers while the directory is unreachable.
pub fn expire_directory(c: &Connection) -> Result<u64, DbError> {
    let users = c.execute("UPDATE directory_users SET fetched = 0", [])?;
    let groups = c.execute("UPDATE directory_groups SET fetched = 0", [])?;
    Ok((users + groups) as u64)
}

pub fn dir_group_by_name(c: &Connection, name: &str) -> Result<Option<DirGroupRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {DIR_GROUP_COLUMNS} FROM directory_groups WHERE name = ?1"
    ))?
    .query_row([name], dir_group_row)
    .optional()
}

pub fn dir_group_by_gid(c: &Connection, gid: u32) -> Result<Option<DirGroupRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {DIR_GROUP_COLUMNS} FROM directory_groups WHERE gid = ?1"
    ))?
    .query_row([gid], dir_group_row)
    .optional()
}

pub fn all_dir_groups(c: &Connection) -> Result<Vec<DirGroupRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {DIR_GROUP_COLUMNS} FROM directory_groups ORDER BY gid"
    ))?
    .query_map([], dir_group_row)?
    .collect()
}

/// Stores a group; `members` replaces its member list when given (a
/// group read in full), else the list is left as it is (a group seen
/// through one member's memberships).
pub fn put_dir_group(
    c: &Connection,
    row: &DirGroupRow,
    members: Option<&[String]>,
) -> Result<(), DbError> {
    let other = c
        .prepare_cached("SELECT gid FROM directory_groups WHERE name = ?1 AND gid != ?2")?
        .query_row(params![row.name, row.gid], |r| r.get::<_, u32>(0))
        .optional()?;
    if let Some(gid) = other {
        delete_dir_group(c, gid)?;
    }
    c.prepare_cached(&format!(
        "INSERT INTO directory_groups ({DIR_GROUP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (gid) DO UPDATE SET name = excluded.name, source = excluded.source,
           dn = excluded.dn, fetched = excluded.fetched"
    ))?
    .execute(params![row.gid, row.name, row.source, row.dn, row.fetched])?;
    if let Some(members) = members {
        c.prepare_cached("DELETE FROM directory_members WHERE gid = ?1")?
            .execute([row.gid])?;
        let mut insert = c.prepare_cached(
            "INSERT OR IGNORE INTO directory_members (gid, member) VALUES (?1, ?2)",
        )?;
        for m in members {
            insert.execute(params![row.gid, m])?;
        }
    }
    Ok(())
}

pub fn delete_dir_group(c: &Connection, gid: u32) -> Result<bool, DbError> {
    c.prepare_cached("DELETE FROM directory_members WHERE gid = ?1")?
        .execute([gid])?;
    Ok(
        c.prepare_cached("DELETE FROM directory_groups WHERE gid = ?1")?
            .execute([gid])?
            > 0,
    )
}

/// Makes `member` belong to exactly `gids` among the directory's groups.
pub fn set_dir_memberships(c: &Connection, member: &str, gids: &[u32]) -> Result<(), DbError> {
    c.prepare_cached("DELETE FROM directory_members WHERE member = ?1")?
        .execute([member])?;
    let mut insert =
        c.prepare_cached("INSERT OR IGNORE INTO directory_members (gid, member) VALUES (?1, ?2)")?;
    for gid in gids {
        insert.execute(params![gid, member])?;
    }
    Ok(())
}

pub fn dir_members(c: &Connection, gid: u32) -> Result<Vec<String>, DbError> {
    c.prepare_cached("SELECT member FROM directory_members WHERE gid = ?1 ORDER BY member")?
        .query_map([gid], |r| r.get(0))?
        .collect()
}

/// The gids of `member`'s groups in its own directory (a same-named
/// member of another directory's group is someone else).
pub fn dir_gids_of(c: &Connection, member: &str) -> Result<Vec<u32>, DbError> {
    c.prepare_cached(
        "SELECT m.gid FROM directory_members m
         JOIN directory_groups g ON g.gid = m.gid
         JOIN directory_users u ON u.name = m.member AND u.source = g.source
         WHERE m.member = ?1 ORDER BY m.gid",
    )?
    .query_map([member], |r| r.get(0))?
    .collect()
}

/// Whether any binding holds `uid` (allocation must not hand it out).
pub fn uid_bound(c: &Connection, uid: u32) -> Result<bool, DbError> {
    Ok(c.prepare_cached("SELECT 1 FROM mappings WHERE uid = ?1")?
        .query_row([uid], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Every (gid, member) pair, for the cache file.
pub fn all_dir_members(c: &Connection) -> Result<Vec<(u32, String)>, DbError> {
    c.prepare_cached("SELECT gid, member FROM directory_members ORDER BY gid, member")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let c = super::super::open_writer(&dir.path().join("db")).unwrap();
        (dir, c)
    }

    fn user(uid: u32, name: &str) -> DirUserRow {
        DirUserRow {
            uid,
            name: name.into(),
            gid: 5000,
            gecos: String::new(),
            home: format!("/home/{name}"),
            shell: "/bin/bash".into(),
            source: "corp".into(),
            dn: format!("uid={name},ou=people"),
            link: Some(format!("uuid-{name}")),
            fetched: 10,
        }
    }

    #[test]
    fn a_renamed_entry_takes_its_name_from_the_stale_one() {
        let (_d, c) = db();
        put_dir_user(&c, &user(5001, "alice")).unwrap();
        put_dir_user(&c, &user(5002, "alice")).unwrap();
        assert!(dir_user_by_uid(&c, 5001).unwrap().is_none());
        assert_eq!(dir_user_by_name(&c, "alice").unwrap().unwrap().uid, 5002);
        assert_eq!(
            dir_user_by_link(&c, "corp", "uuid-alice")
                .unwrap()
                .unwrap()
                .uid,
            5002
        );
    }

    #[test]
    fn memberships_are_replaced_per_member_and_per_group() {
        let (_d, c) = db();
        for (gid, name) in [(6001, "eng"), (6002, "ops")] {
            let row = DirGroupRow {
                gid,
                name: name.into(),
                source: "corp".into(),
                dn: format!("cn={name}"),
                fetched: 1,
            };
            put_dir_group(&c, &row, Some(&["bob".to_owned()])).unwrap();
        }
        set_dir_memberships(&c, "alice", &[6001, 6002]).unwrap();
        assert!(
            dir_gids_of(&c, "alice").unwrap().is_empty(),
            "alice is not cached"
        );
        put_dir_user(&c, &user(5001, "alice")).unwrap();
        assert_eq!(dir_gids_of(&c, "alice").unwrap(), vec![6001, 6002]);
        set_dir_memberships(&c, "alice", &[6002]).unwrap();
        assert_eq!(dir_gids_of(&c, "alice").unwrap(), vec![6002]);
        // A same-named user of another directory is not a member.
        let partner = DirUserRow {
            source: "partner".into(),
            ..user(5001, "alice")
        };
        put_dir_user(&c, &partner).unwrap();
        assert!(dir_gids_of(&c, "alice").unwrap().is_empty());
        assert_eq!(dir_members(&c, 6001).unwrap(), vec!["bob".to_owned()]);
        assert_eq!(expire_directory(&c).unwrap(), 3, "one user, two groups");
        assert_eq!(stale_dir_groups(&c, "corp", 0, 10).unwrap().len(), 2);
    }

    #[test]
    fn one_account_is_bound_to_one_identity() {
        let (_d, c) = db();
        let b = Binding {
            provider: "ldap/corp".into(),
            unique_id: "u1".into(),
            kind: BindingKind::Directory,
            account: "alice".into(),
            uid: Some(5001),
            source: "corp".into(),
            created: 1,
            refreshed: 1,
        };
        put_binding(&c, &b).unwrap();
        let other = Binding {
            unique_id: "u2".into(),
            ..b.clone()
        };
        assert!(put_binding(&c, &other).is_err());
        assert_eq!(binding(&c, "ldap/corp", "u1").unwrap(), Some(b.clone()));
        assert_eq!(
            binding_of_account(&c, 5001, "x")
                .unwrap()
                .unwrap()
                .unique_id,
            "u1"
        );
        assert!(delete_binding(&c, "ldap/corp", "u1").unwrap());
        assert!(binding(&c, "ldap/corp", "u1").unwrap().is_none());
    }
}
