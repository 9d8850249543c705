//! Persistent state: SQLite in WAL mode with `synchronous = FULL`, so an
//! acknowledged provisioning is on disk before the reply leaves, and survives
//! `kill -9` (and power loss).
//!
//! Only row access lives here; the rules (names, id allocation, collisions)
//! are in [`crate::service`]. [`bindings`] holds identities bound to
//! accounts the nameservice did not make (host and directory accounts) and
//! the directory cache. May import nothing else of the crate.

pub mod bindings;

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

pub use rusqlite::Error as DbError;

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many ran. Never edit a released step: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "CREATE TABLE meta (
         key   TEXT PRIMARY KEY,
         value INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE users (
         uid          INTEGER PRIMARY KEY,
         name         TEXT NOT NULL UNIQUE,
         provider     TEXT NOT NULL,
         unique_id    TEXT NOT NULL,
         idp_username TEXT NOT NULL,
         gecos        TEXT NOT NULL DEFAULT '',
         locked       INTEGER NOT NULL DEFAULT 0,
         created      INTEGER NOT NULL,
         updated      INTEGER NOT NULL,
         UNIQUE (provider, unique_id)
     );
     CREATE TABLE groups (
         gid       INTEGER PRIMARY KEY,
         name      TEXT NOT NULL UNIQUE,
         provider  TEXT NOT NULL,
         unique_id TEXT NOT NULL,
         idp_name  TEXT NOT NULL,
         created   INTEGER NOT NULL,
         UNIQUE (provider, unique_id)
     );
     CREATE TABLE memberships (
         uid INTEGER NOT NULL REFERENCES users (uid),
         gid INTEGER NOT NULL REFERENCES groups (gid),
         PRIMARY KEY (uid, gid)
     ) WITHOUT ROWID;
     CREATE INDEX memberships_by_gid ON memberships (gid, uid);
     CREATE TABLE mappings (
         provider   TEXT NOT NULL,
         unique_id  TEXT NOT NULL,
         local_user TEXT NOT NULL,
         created    INTEGER NOT NULL,
         PRIMARY KEY (provider, unique_id)
     ) WITHOUT ROWID;",
    // 2: identities bound to host or directory accounts, and the cache of
    // directory (RFC 2307) entries the nameservice answers for.
    "ALTER TABLE mappings ADD COLUMN kind TEXT NOT NULL DEFAULT 'host';
     ALTER TABLE mappings ADD COLUMN uid INTEGER;
     ALTER TABLE mappings ADD COLUMN source TEXT NOT NULL DEFAULT '';
     ALTER TABLE mappings ADD COLUMN refreshed INTEGER NOT NULL DEFAULT 0;
     CREATE UNIQUE INDEX mappings_by_uid ON mappings (uid) WHERE uid IS NOT NULL;
     CREATE TABLE directory_users (
         uid     INTEGER PRIMARY KEY,
         name    TEXT NOT NULL UNIQUE,
         gid     INTEGER NOT NULL,
         gecos   TEXT NOT NULL,
         home    TEXT NOT NULL,
         shell   TEXT NOT NULL,
         source  TEXT NOT NULL,
         dn      TEXT NOT NULL,
         link    TEXT,
         fetched INTEGER NOT NULL
     );
     CREATE INDEX directory_users_by_link ON directory_users (source, link);
     CREATE TABLE directory_groups (
         gid     INTEGER PRIMARY KEY,
         name    TEXT NOT NULL UNIQUE,
         source  TEXT NOT NULL,
         dn      TEXT NOT NULL,
         fetched INTEGER NOT NULL
     );
     CREATE TABLE directory_members (
         gid    INTEGER NOT NULL REFERENCES directory_groups (gid) ON DELETE CASCADE,
         member TEXT NOT NULL,
         PRIMARY KEY (gid, member)
     ) WITHOUT ROWID;
     CREATE INDEX directory_members_by_member ON directory_members (member, gid);",
];

/// The provider name under which the nameservice records groups it owns
/// itself (the shared group), apart from any identity provider's.
pub const SYSTEM_PROVIDER: &str = "";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub uid: u32,
    pub name: String,
    pub provider: String,
    pub unique_id: String,
    pub idp_username: String,
    pub gecos: String,
    pub locked: bool,
    pub created: i64,
    pub updated: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub gid: u32,
    pub name: String,
    pub provider: String,
    pub unique_id: String,
    pub idp_name: String,
}

/// Which id counter.
#[derive(Debug, Clone, Copy)]
pub enum IdKind {
    Uid,
    Gid,
}

impl IdKind {
    fn key(self) -> &'static str {
        match self {
            IdKind::Uid => "next_uid",
            IdKind::Gid => "next_gid",
        }
    }
}

/// Opens (creating if needed) the database for writing and brings the schema
/// up to date.
pub fn open_writer(path: &Path) -> Result<Connection, DbError> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// A read-only connection; WAL lets it read while the writer writes.
pub fn open_reader(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(DbError::InvalidParameterName(format!(
            "the database has schema version {version}, newer than this nameserviced knows \
             ({}); run the newer nameserviced or restore a backup",
            MIGRATIONS.len()
        )));
    }
    for (index, step) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Seconds since the epoch, as rows and the high-water mark record times.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

const USER_COLUMNS: &str =
    "uid, name, provider, unique_id, idp_username, gecos, locked, created, updated";
const GROUP_COLUMNS: &str = "gid, name, provider, unique_id, idp_name";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        uid: r.get(0)?,
        name: r.get(1)?,
        provider: r.get(2)?,
        unique_id: r.get(3)?,
        idp_username: r.get(4)?,
        gecos: r.get(5)?,
        locked: r.get(6)?,
        created: r.get(7)?,
        updated: r.get(8)?,
    })
}

fn group_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GroupRow> {
    Ok(GroupRow {
        gid: r.get(0)?,
        name: r.get(1)?,
        provider: r.get(2)?,
        unique_id: r.get(3)?,
        idp_name: r.get(4)?,
    })
}

pub fn user_by_name(c: &Connection, name: &str) -> Result<Option<UserRow>, DbError> {
    c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"))?
        .query_row([name], user_row)
        .optional()
}

pub fn user_by_uid(c: &Connection, uid: u32) -> Result<Option<UserRow>, DbError> {
    c.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE uid = ?1"))?
        .query_row([uid], user_row)
        .optional()
}

pub fn user_by_identity(
    c: &Connection,
    provider: &str,
    unique_id: &str,
) -> Result<Option<UserRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE provider = ?1 AND unique_id = ?2"
    ))?
    .query_row([provider, unique_id], user_row)
    .optional()
}

pub fn group_by_name(c: &Connection, name: &str) -> Result<Option<GroupRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {GROUP_COLUMNS} FROM groups WHERE name = ?1"
    ))?
    .query_row([name], group_row)
    .optional()
}

pub fn group_by_gid(c: &Connection, gid: u32) -> Result<Option<GroupRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {GROUP_COLUMNS} FROM groups WHERE gid = ?1"
    ))?
    .query_row([gid], group_row)
    .optional()
}

pub fn group_by_identity(
    c: &Connection,
    provider: &str,
    unique_id: &str,
) -> Result<Option<GroupRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {GROUP_COLUMNS} FROM groups WHERE provider = ?1 AND unique_id = ?2"
    ))?
    .query_row([provider, unique_id], group_row)
    .optional()
}

/// Names of the members of an identity-provider group, in uid order.
pub fn member_names(c: &Connection, gid: u32) -> Result<Vec<String>, DbError> {
    c.prepare_cached(
        "SELECT u.name FROM memberships m JOIN users u ON u.uid = m.uid
         WHERE m.gid = ?1 ORDER BY u.uid",
    )?
    .query_map([gid], |r| r.get(0))?
    .collect()
}

/// Names of every provisioned account, in uid order: the members of a shared
/// group the nameservice answers for.
pub fn all_user_names(c: &Connection) -> Result<Vec<String>, DbError> {
    c.prepare_cached("SELECT name FROM users ORDER BY uid")?
        .query_map([], |r| r.get(0))?
        .collect()
}

pub fn supplementary_gids(c: &Connection, uid: u32) -> Result<Vec<u32>, DbError> {
    c.prepare_cached("SELECT gid FROM memberships WHERE uid = ?1 ORDER BY gid")?
        .query_map([uid], |r| r.get(0))?
        .collect()
}

pub fn user_groups(c: &Connection, uid: u32) -> Result<Vec<GroupRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {} FROM memberships m JOIN groups g ON g.gid = m.gid WHERE m.uid = ?1 ORDER BY g.gid",
        GROUP_COLUMNS
            .split(", ")
            .map(|col| format!("g.{col}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))?
    .query_map([uid], group_row)?
    .collect()
}

/// Every (uid, gid) membership, ordered by uid then gid.
pub fn all_memberships(c: &Connection) -> Result<Vec<(u32, u32)>, DbError> {
    c.prepare_cached("SELECT uid, gid FROM memberships ORDER BY uid, gid")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

pub fn users_page(c: &Connection, after_uid: u32, limit: u32) -> Result<Vec<UserRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE uid > ?1 ORDER BY uid LIMIT ?2"
    ))?
    .query_map([after_uid, limit], user_row)?
    .collect()
}

pub fn groups_page(c: &Connection, after_gid: u32, limit: u32) -> Result<Vec<GroupRow>, DbError> {
    c.prepare_cached(&format!(
        "SELECT {GROUP_COLUMNS} FROM groups WHERE gid > ?1 ORDER BY gid LIMIT ?2"
    ))?
    .query_map([after_gid, limit], group_row)?
    .collect()
}

pub fn count(c: &Connection, table: Table) -> Result<u64, DbError> {
    let sql = match table {
        Table::Users => "SELECT count(*) FROM users",
        Table::Groups => "SELECT count(*) FROM groups",
    };
    let n: i64 = c.prepare_cached(sql)?.query_row([], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

#[derive(Debug, Clone, Copy)]
pub enum Table {
    Users,
    Groups,
}

pub fn insert_user(c: &Connection, row: &UserRow) -> Result<(), DbError> {
    c.prepare_cached(&format!(
        "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        row.uid,
        row.name,
        row.provider,
        row.unique_id,
        row.idp_username,
        row.gecos,
        row.locked,
        row.created,
        row.updated
    ])?;
    Ok(())
}

pub fn update_user(c: &Connection, row: &UserRow) -> Result<(), DbError> {
    c.prepare_cached(
        "UPDATE users SET name = ?2, idp_username = ?3, gecos = ?4, locked = ?5, updated = ?6
         WHERE uid = ?1",
    )?
    .execute(params![
        row.uid,
        row.name,
        row.idp_username,
        row.gecos,
        row.locked,
        row.updated
    ])?;
    Ok(())
}

pub fn insert_group(c: &Connection, row: &GroupRow, now: i64) -> Result<(), DbError> {
    c.prepare_cached(&format!(
        "INSERT INTO groups ({GROUP_COLUMNS}, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    ))?
    .execute(params![
        row.gid,
        row.name,
        row.provider,
        row.unique_id,
        row.idp_name,
        now
    ])?;
    Ok(())
}

pub fn rename_group(c: &Connection, gid: u32, name: &str, idp_name: &str) -> Result<(), DbError> {
    c.prepare_cached("UPDATE groups SET name = ?2, idp_name = ?3 WHERE gid = ?1")?
        .execute(params![gid, name, idp_name])?;
    Ok(())
}

/// Replaces a user's memberships with exactly `gids`.
pub fn set_memberships(c: &Connection, uid: u32, gids: &[u32]) -> Result<(), DbError> {
    c.prepare_cached("DELETE FROM memberships WHERE uid = ?1")?
        .execute([uid])?;
    let mut insert =
        c.prepare_cached("INSERT OR IGNORE INTO memberships (uid, gid) VALUES (?1, ?2)")?;
    for gid in gids {
        insert.execute([uid, *gid])?;
    }
    Ok(())
}

/// The next id the counter would give (never decreases, so ids are never
/// reused, even for accounts that are locked).
pub fn next_id(c: &Connection, kind: IdKind) -> Result<Option<u32>, DbError> {
    c.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([kind.key()], |r| r.get(0))
        .optional()
}

/// The highest uid (or gid) in the table, the nameservice's own shared
/// group left out.
pub fn highest_id(c: &Connection, kind: IdKind) -> Result<Option<u32>, DbError> {
    let sql = match kind {
        IdKind::Uid => "SELECT max(uid) FROM users",
        IdKind::Gid => "SELECT max(gid) FROM groups WHERE provider != ''",
    };
    c.prepare_cached(sql)?.query_row([], |r| r.get(0))
}

/// What is wrong with the database file, if anything: SQLite's
/// `integrity_check`, which besides every page and record also compares
/// each index with its table (a damaged index answers counts and lookups
/// from rows that are not there). It reads the whole file once, which at
/// 100,000 accounts is a fraction of a second at start-up.
pub fn integrity_problems(c: &Connection) -> Result<Vec<String>, DbError> {
    Ok(c.prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|line| line != "ok")
        .collect())
}

pub fn set_next_id(c: &Connection, kind: IdKind, value: u64) -> Result<(), DbError> {
    c.prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")?
        .execute(params![kind.key(), value as i64])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32, name: &str) -> UserRow {
        UserRow {
            uid,
            name: name.into(),
            provider: "ldap".into(),
            unique_id: format!("id-{name}"),
            idp_username: name.into(),
            gecos: String::new(),
            locked: false,
            created: 1,
            updated: 1,
        }
    }

    #[test]
    fn migrates_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let c = open_writer(&path).unwrap();
        let mode: String = c
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        insert_user(&c, &user(70001, "alice")).unwrap();
        insert_group(
            &c,
            &GroupRow {
                gid: 80001,
                name: "sales".into(),
                provider: "ldap".into(),
                unique_id: "cn=sales".into(),
                idp_name: "Sales".into(),
            },
            1,
        )
        .unwrap();
        set_memberships(&c, 70001, &[80001]).unwrap();
        drop(c);
        // Reopening applies no migration twice and keeps the data.
        let c = open_writer(&path).unwrap();
        let r = open_reader(&path).unwrap();
        assert_eq!(user_by_name(&r, "alice").unwrap().unwrap().uid, 70001);
        assert_eq!(
            user_by_identity(&r, "ldap", "id-alice")
                .unwrap()
                .unwrap()
                .name,
            "alice"
        );
        assert_eq!(member_names(&r, 80001).unwrap(), vec!["alice".to_owned()]);
        assert_eq!(supplementary_gids(&r, 70001).unwrap(), vec![80001]);
        assert_eq!(user_groups(&r, 70001).unwrap()[0].name, "sales");
        assert!(user_by_uid(&c, 1).unwrap().is_none());
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let c = open_writer(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = open_writer(&path).unwrap_err().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }

    #[test]
    fn unique_constraints_hold() {
        let dir = tempfile::tempdir().unwrap();
        let c = open_writer(&dir.path().join("db")).unwrap();
        insert_user(&c, &user(70001, "alice")).unwrap();
        assert!(insert_user(&c, &user(70002, "alice")).is_err());
        let mut same_identity = user(70003, "alice2");
        same_identity.unique_id = "id-alice".into();
        assert!(insert_user(&c, &same_identity).is_err());
    }
}
