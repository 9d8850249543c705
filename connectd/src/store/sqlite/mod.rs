//! The SQLite store: users, provider groups, memberships, sessions, API
//! keys, content and jobs, in SQLite under `Server.DataDir` (WAL, synchronous FULL,
//! migrations by `user_version`).
//!
//! A login is one transaction: the role computation sees the user's current
//! role and whether anyone exists yet, and nothing is written unless the
//! whole login is, so a failed login leaves no user behind.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{now, LoginRecord, StoreError, UserStore};
use crate::model::{ApiKey, Group, User};
use crate::roles::Role;

mod content;
mod tasks;

/// Migrations in order; `user_version` counts how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    guid TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL,
    unique_id TEXT NOT NULL,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    first_name TEXT NOT NULL DEFAULT '',
    last_name TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL CHECK (role IN ('viewer', 'publisher', 'administrator')),
    locked INTEGER NOT NULL DEFAULT 0,
    password_hash TEXT,
    needs_provisioning INTEGER NOT NULL DEFAULT 0,
    created_time INTEGER NOT NULL,
    updated_time INTEGER NOT NULL,
    active_time INTEGER,
    UNIQUE (provider, unique_id)
);
CREATE TABLE groups (
    id INTEGER PRIMARY KEY,
    guid TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL,
    unique_id TEXT NOT NULL,
    name TEXT NOT NULL,
    UNIQUE (provider, unique_id)
);
CREATE TABLE group_members (
    group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_by_user ON group_members(user_id);
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_time INTEGER NOT NULL,
    expires_time INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions(user_id);
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY,
    guid TEXT NOT NULL UNIQUE,
    key_id TEXT NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_time INTEGER NOT NULL,
    last_used_time INTEGER
);
"#,
    r#"
ALTER TABLE users ADD COLUMN unix_account TEXT;
CREATE TABLE content (
    id INTEGER PRIMARY KEY,
    guid TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    title TEXT,
    description TEXT NOT NULL DEFAULT '',
    owner_id INTEGER NOT NULL REFERENCES users(id),
    access_type TEXT NOT NULL CHECK (access_type IN ('all', 'logged_in', 'acl')),
    app_mode TEXT,
    run_as TEXT,
    run_as_current_user INTEGER NOT NULL DEFAULT 0,
    min_processes INTEGER,
    max_processes INTEGER,
    max_conns_per_process INTEGER,
    load_factor REAL,
    init_timeout INTEGER,
    idle_timeout INTEGER,
    connection_timeout INTEGER,
    read_timeout INTEGER,
    bundle_id INTEGER,
    deployment TEXT,
    created_time INTEGER NOT NULL,
    last_deployed_time INTEGER,
    UNIQUE (owner_id, name)
);
CREATE TABLE content_permissions (
    id INTEGER PRIMARY KEY,
    guid TEXT NOT NULL UNIQUE,
    content_id INTEGER NOT NULL REFERENCES content(id) ON DELETE CASCADE,
    principal_type TEXT NOT NULL CHECK (principal_type IN ('user', 'group')),
    principal_id INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'owner')),
    UNIQUE (content_id, principal_type, principal_id)
);
CREATE TABLE bundles (
    id INTEGER PRIMARY KEY,
    content_id INTEGER NOT NULL REFERENCES content(id) ON DELETE CASCADE,
    created_time INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    content_id INTEGER NOT NULL REFERENCES content(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('build', 'run')),
    bundle_id INTEGER,
    pid INTEGER,
    unix_account TEXT NOT NULL,
    uid INTEGER NOT NULL,
    viewer_id INTEGER,
    started_time INTEGER NOT NULL,
    ended_time INTEGER,
    exit_code INTEGER,
    log_path TEXT NOT NULL
);
CREATE INDEX jobs_by_content ON jobs(content_id, started_time);
"#,
    // Several nodes may share one database: each node's start-up clean-up
    // must touch only its own jobs. Rows from before are this node's.
    r#"
ALTER TABLE jobs ADD COLUMN node TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_unfinished ON jobs(node) WHERE ended_time IS NULL;
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    content_id INTEGER NOT NULL REFERENCES content(id) ON DELETE CASCADE,
    node TEXT NOT NULL,
    started_time INTEGER NOT NULL,
    finished_time INTEGER,
    code INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX tasks_unfinished ON tasks(node) WHERE finished_time IS NULL;
CREATE TABLE task_output (
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;
"#,
    // Per-content resource limits ([Scheduler] MemoryLimit, CPULimit).
    r#"
ALTER TABLE content ADD COLUMN memory_limit INTEGER;
ALTER TABLE content ADD COLUMN cpu_limit REAL;
"#,
];

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Bumped by SQLite's update hook on every row written (all tables
    /// the request path reads have rowids), so caches can tell at no cost
    /// that something changed.
    generation: Arc<AtomicU64>,
    /// The last `PRAGMA data_version` seen by [`UserStore::generation`],
    /// and when (ms since `opened`).
    data_version: AtomicU64,
    data_version_checked_ms: AtomicU64,
    opened: std::time::Instant,
    /// The node whose jobs and tasks this connectd records and cleans up.
    node: String,
}

/// How often [`UserStore::generation`] looks for other nodes' commits: the
/// longest a cached answer can miss a change made on another node.
const OTHER_WRITERS_CHECK_MS: u64 = 50;

const USER_COLUMNS: &str = "id, guid, provider, unique_id, username, first_name, last_name, \
                            email, role, locked, needs_provisioning, created_time, \
                            updated_time, active_time";

/// The same columns, qualified for joins on `users u`.
const USER_COLUMNS_U: &str = "u.id, u.guid, u.provider, u.unique_id, u.username, u.first_name, \
                              u.last_name, u.email, u.role, u.locked, u.needs_provisioning, \
                              u.created_time, u.updated_time, u.active_time";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    let role: String = row.get(8)?;
    Ok(User {
        id: row.get(0)?,
        guid: row.get(1)?,
        provider: row.get(2)?,
        unique_id: row.get(3)?,
        username: row.get(4)?,
        first_name: row.get(5)?,
        last_name: row.get(6)?,
        email: row.get(7)?,
        // The CHECK constraint keeps anything else out of the column.
        role: role.parse().unwrap_or(Role::Viewer),
        locked: row.get(9)?,
        needs_provisioning: row.get(10)?,
        created_time: row.get(11)?,
        updated_time: row.get(12)?,
        active_time: row.get(13)?,
    })
}

fn group_from_row(row: &Row<'_>) -> rusqlite::Result<Group> {
    Ok(Group {
        id: row.get(0)?,
        guid: row.get(1)?,
        provider: row.get(2)?,
        unique_id: row.get(3)?,
        name: row.get(4)?,
    })
}

fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path` for `node`,
    /// the name this connectd's jobs and tasks are recorded under.
    pub fn open(path: &Path, node: &str) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::with_connection(conn, node)
    }

    /// A private database for unit tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::with_connection(Connection::open_in_memory()?, "this-node")
    }

    fn with_connection(mut conn: Connection, node: &str) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Statements on the request path are prepared once and cached. The
        // bundled SQLite (STAT4) would otherwise re-plan a join on every new
        // binding, which measured slower than not caching at all.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        conn.set_prepared_statement_cache_capacity(64);
        let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tx = conn.transaction()?;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "user_version", (i + 1) as u32)?;
        }
        tx.commit()?;
        let generation = Arc::new(AtomicU64::new(1));
        let bump = generation.clone();
        // Fires inside the writing statement, before its commit; a reader
        // reads the generation first and the rows after the writer let go
        // of the connection, so it never caches old rows under a new number.
        conn.update_hook(Some(
            move |_: rusqlite::hooks::Action, _: &str, _: &str, _: i64| {
                bump.fetch_add(1, Ordering::AcqRel);
            },
        ))?;
        Ok(Self {
            conn: Mutex::new(conn),
            generation,
            data_version: AtomicU64::new(0),
            data_version_checked_ms: AtomicU64::new(0),
            opened: std::time::Instant::now(),
            node: node.to_owned(),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back on drop), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl UserStore for SqliteStore {
    /// Our own writes bump the counter through the update hook, at once.
    /// Commits by other connections to the same file (another node) are
    /// seen through `PRAGMA data_version`, which changes exactly then; it
    /// needs the connection, whose lock is what the request path contends
    /// on, so it is asked at most every [`OTHER_WRITERS_CHECK_MS`].
    fn generation(&self) -> Option<u64> {
        let now = self.opened.elapsed().as_millis() as u64;
        let checked = self.data_version_checked_ms.load(Ordering::Acquire);
        if now.saturating_sub(checked) >= OTHER_WRITERS_CHECK_MS
            && self
                .data_version_checked_ms
                .compare_exchange(checked, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let version: i64 = self
                .conn()
                .query_row("PRAGMA data_version", [], |r| r.get(0))
                .ok()?;
            let version = version as u64;
            if self.data_version.swap(version, Ordering::AcqRel) != version {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        Some(self.generation.load(Ordering::Acquire))
    }

    /// Records a successful sign-in. `decide_role(current, first_user_ever)`
    /// gives the role; a locked user is refused before anything is written.
    /// Returns the user and whether it was created.
    fn record_login(
        &self,
        login: &LoginRecord<'_>,
        decide_role: &mut dyn FnMut(Option<Role>, bool) -> Role,
    ) -> Result<(User, bool), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing = tx
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE provider = ?1 AND unique_id = ?2"),
                params![login.provider, login.unique_id],
                user_from_row,
            )
            .optional()?;
        if existing.as_ref().is_some_and(|u| u.locked) {
            return Err(StoreError::Locked);
        }
        let taken_by: Option<i64> = tx
            .query_row(
                "SELECT id FROM users WHERE username = ?1",
                params![login.username],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = taken_by {
            if existing.as_ref().map(|u| u.id) != Some(other) {
                return Err(StoreError::UsernameTaken(login.username.to_owned()));
            }
        }
        let now = now();
        let (user_id, created) = match &existing {
            Some(user) => {
                let role = decide_role(Some(user.role), false);
                tx.execute(
                    "UPDATE users SET username = ?2, first_name = ?3, last_name = ?4, \
                     email = ?5, role = ?6, updated_time = ?7, active_time = ?7 WHERE id = ?1",
                    params![
                        user.id,
                        login.username,
                        login.first_name,
                        login.last_name,
                        login.email,
                        role.as_str(),
                        now
                    ],
                )?;
                (user.id, false)
            }
            None => {
                let anyone: bool =
                    tx.query_row("SELECT EXISTS (SELECT 1 FROM users)", [], |r| r.get(0))?;
                let role = decide_role(None, !anyone);
                tx.execute(
                    "INSERT INTO users (guid, provider, unique_id, username, first_name, \
                     last_name, email, role, created_time, updated_time, active_time) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?9)",
                    params![
                        new_guid(),
                        login.provider,
                        login.unique_id,
                        login.username,
                        login.first_name,
                        login.last_name,
                        login.email,
                        role.as_str(),
                        now
                    ],
                )?;
                (tx.last_insert_rowid(), true)
            }
        };
        if let Some(groups) = login.groups {
            tx.execute(
                "DELETE FROM group_members WHERE user_id = ?1",
                params![user_id],
            )?;
            for group in groups {
                tx.execute(
                    "INSERT INTO groups (guid, provider, unique_id, name) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (provider, unique_id) DO UPDATE SET name = excluded.name",
                    params![new_guid(), login.provider, group.unique_id, group.name],
                )?;
                tx.execute(
                    "INSERT OR IGNORE INTO group_members (group_id, user_id) \
                     SELECT id, ?3 FROM groups WHERE provider = ?1 AND unique_id = ?2",
                    params![login.provider, group.unique_id, user_id],
                )?;
            }
        }
        let user = tx.query_row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
            params![user_id],
            user_from_row,
        )?;
        tx.commit()?;
        Ok((user, created))
    }

    /// Creates a user of the built-in password provider. The first user ever
    /// is an administrator, whatever `role` says.
    fn create_password_user(
        &self,
        username: &str,
        first_name: &str,
        last_name: &str,
        email: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<User, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1)",
            params![username],
            |r| r.get(0),
        )?;
        if taken {
            return Err(StoreError::UsernameTaken(username.to_owned()));
        }
        let anyone: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM users)", [], |r| r.get(0))?;
        let role = if anyone { role } else { Role::Administrator };
        let guid = new_guid();
        let now = now();
        tx.execute(
            "INSERT INTO users (guid, provider, unique_id, username, first_name, last_name, \
             email, role, password_hash, created_time, updated_time) \
             VALUES (?1, 'password', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            params![
                guid,
                username,
                first_name,
                last_name,
                email,
                role.as_str(),
                password_hash,
                now
            ],
        )?;
        let user = tx.query_row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE guid = ?1"),
            params![guid],
            user_from_row,
        )?;
        tx.commit()?;
        Ok(user)
    }

    /// The password hash of a password-provider user, by username.
    fn password_hash(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        let conn = self.conn();
        let found = conn
            .query_row(
                &format!(
                    "SELECT {USER_COLUMNS}, password_hash FROM users \
                     WHERE username = ?1 AND provider = 'password' AND password_hash IS NOT NULL"
                ),
                params![username],
                |row| Ok((user_from_row(row)?, row.get::<_, String>(14)?)),
            )
            .optional()?;
        Ok(found)
    }

    fn mark_password_login(&self, user_id: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE users SET active_time = ?2 WHERE id = ?1",
            params![user_id, now()],
        )?;
        Ok(())
    }

    fn user_by_guid(&self, guid: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE guid = ?1"),
                params![guid],
                user_from_row,
            )
            .optional()?)
    }

    fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
                params![username],
                user_from_row,
            )
            .optional()?)
    }

    /// Users in username order, optionally those whose username, first or
    /// last name starts with `prefix`; with the total that matched.
    fn list_users(
        &self,
        prefix: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<User>, u64), StoreError> {
        let conn = self.conn();
        let pattern = format!(
            "{}%",
            prefix
                .unwrap_or("")
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let filter = "username LIKE ?1 ESCAPE '\\' OR first_name LIKE ?1 ESCAPE '\\' \
                      OR last_name LIKE ?1 ESCAPE '\\'";
        let total: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM users WHERE {filter}"),
            params![pattern],
            |r| r.get(0),
        )?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE {filter} \
             ORDER BY username COLLATE NOCASE LIMIT ?2 OFFSET ?3"
        ))?;
        let users = stmt
            .query_map(params![pattern, limit, offset], user_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((users, total.max(0) as u64))
    }

    fn count_administrators(&self) -> Result<u64, StoreError> {
        let count: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM users WHERE role = 'administrator' AND locked = 0",
            [],
            |r| r.get(0),
        )?;
        Ok(count.max(0) as u64)
    }

    fn set_role(&self, user_id: i64, role: Role) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE users SET role = ?2, updated_time = ?3 WHERE id = ?1",
            params![user_id, role.as_str(), now()],
        )?;
        Ok(())
    }

    /// Locks or unlocks; locking also ends the user's sessions.
    fn set_locked(&self, user_id: i64, locked: bool) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE users SET locked = ?2, updated_time = ?3 WHERE id = ?1",
            params![user_id, locked, now()],
        )?;
        if locked {
            tx.execute("DELETE FROM sessions WHERE user_id = ?1", params![user_id])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn set_needs_provisioning(&self, user_id: i64, needed: bool) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE users SET needs_provisioning = ?2 WHERE id = ?1",
            params![user_id, needed],
        )?;
        Ok(())
    }

    fn groups_of(&self, user_id: i64) -> Result<Vec<Group>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT g.id, g.guid, g.provider, g.unique_id, g.name FROM groups g \
             JOIN group_members m ON m.group_id = g.id WHERE m.user_id = ?1 ORDER BY g.name",
        )?;
        let groups = stmt
            .query_map(params![user_id], group_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(groups)
    }

    fn list_groups(&self, prefix: Option<&str>) -> Result<Vec<Group>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, guid, provider, unique_id, name FROM groups \
             WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
        )?;
        let groups = stmt
            .query_map(params![prefix.unwrap_or("")], group_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(groups)
    }

    fn group_by_guid(&self, guid: &str) -> Result<Option<Group>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, guid, provider, unique_id, name FROM groups WHERE guid = ?1",
                params![guid],
                group_from_row,
            )
            .optional()?)
    }

    fn group_members(&self, group_id: i64) -> Result<Vec<User>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {USER_COLUMNS_U} FROM users u JOIN group_members m ON m.user_id = u.id \
             WHERE m.group_id = ?1 ORDER BY u.username"
        ))?;
        let users = stmt
            .query_map(params![group_id], user_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(users)
    }

    fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        lifetime_secs: i64,
    ) -> Result<(), StoreError> {
        let now = now();
        self.conn().execute(
            "INSERT INTO sessions (token_hash, user_id, created_time, expires_time) \
             VALUES (?1, ?2, ?3, ?4)",
            params![token_hash, user_id, now, now + lifetime_secs],
        )?;
        Ok(())
    }

    /// The user behind an unexpired session of an unlocked user.
    fn session_user(&self, token_hash: &str) -> Result<Option<User>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {USER_COLUMNS_U} FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = ?1 AND s.expires_time > ?2 AND u.locked = 0"
        ))?;
        Ok(stmt
            .query_row(params![token_hash, now()], user_from_row)
            .optional()?)
    }

    fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM sessions WHERE token_hash = ?1",
            params![token_hash],
        )?;
        Ok(())
    }

    fn delete_expired_sessions(&self) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM sessions WHERE expires_time <= ?1",
            params![now()],
        )?)
    }

    fn create_api_key(
        &self,
        user_id: i64,
        name: &str,
        key_id: &str,
        hash: &str,
    ) -> Result<ApiKey, StoreError> {
        let guid = new_guid();
        let now = now();
        self.conn().execute(
            "INSERT INTO api_keys (guid, key_id, user_id, name, hash, created_time) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![guid, key_id, user_id, name, hash, now],
        )?;
        Ok(ApiKey {
            guid,
            name: name.to_owned(),
            created_time: now,
            last_used_time: None,
        })
    }

    /// The stored hash and owner of an API key, by its public id part.
    fn api_key(&self, key_id: &str) -> Result<Option<(String, User)>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {USER_COLUMNS_U}, k.hash FROM api_keys k JOIN users u ON u.id = k.user_id \
                     WHERE k.key_id = ?1"
                ),
                params![key_id],
                |row| Ok((row.get::<_, String>(14)?, user_from_row(row)?)),
            )
            .optional()?)
    }

    fn touch_api_key(&self, key_id: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE api_keys SET last_used_time = ?2 WHERE key_id = ?1",
            params![key_id, now()],
        )?;
        Ok(())
    }

    fn list_api_keys(&self, user_id: i64) -> Result<Vec<ApiKey>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT guid, name, created_time, last_used_time FROM api_keys \
             WHERE user_id = ?1 ORDER BY created_time, id",
        )?;
        let keys = stmt
            .query_map(params![user_id], |r| {
                Ok(ApiKey {
                    guid: r.get(0)?,
                    name: r.get(1)?,
                    created_time: r.get(2)?,
                    last_used_time: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(keys)
    }

    /// Deletes one of the user's keys; false if they have no such key.
    fn delete_api_key(&self, user_id: i64, guid: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM api_keys WHERE user_id = ?1 AND guid = ?2",
            params![user_id, guid],
        )? == 1)
    }
}

#[cfg(test)]
mod tests;
