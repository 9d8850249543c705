//! Content items, their access lists, bundles and the processes (jobs)
//! that built or ran them.

use rusqlite::{params, OptionalExtension, Row};

use super::{new_guid, SqliteStore};
use crate::bundle::AppMode;
use crate::model::{AccessType, Content, ProcessSettings, Relation};
use crate::model::{Job, NewContent, Permission};
use crate::store::{now, ContentStore, StoreError};

const CONTENT_COLUMNS: &str = "c.id, c.guid, c.name, c.title, c.description, c.owner_id, \
     u.guid, c.access_type, c.app_mode, c.run_as, c.run_as_current_user, c.min_processes, \
     c.max_processes, c.max_conns_per_process, c.load_factor, c.init_timeout, c.idle_timeout, \
     c.connection_timeout, c.read_timeout, c.bundle_id, c.created_time, c.last_deployed_time, \
     c.deployment, c.memory_limit, c.cpu_limit";

fn content_from_row(row: &Row<'_>) -> rusqlite::Result<Content> {
    let access: String = row.get(7)?;
    let mode: Option<String> = row.get(8)?;
    Ok(Content {
        id: row.get(0)?,
        guid: row.get(1)?,
        name: row.get(2)?,
        title: row.get(3)?,
        description: row.get(4)?,
        owner_id: row.get(5)?,
        owner_guid: row.get(6)?,
        // The CHECK constraint keeps anything else out of the column.
        access_type: AccessType::parse(&access).unwrap_or(AccessType::Acl),
        app_mode: mode.as_deref().and_then(AppMode::parse),
        run_as: row.get(9)?,
        run_as_current_user: row.get(10)?,
        process: ProcessSettings {
            min_processes: row.get(11)?,
            max_processes: row.get(12)?,
            max_conns_per_process: row.get(13)?,
            load_factor: row.get(14)?,
            init_timeout: row.get(15)?,
            idle_timeout: row.get(16)?,
            connection_timeout: row.get(17)?,
            read_timeout: row.get(18)?,
            memory_limit: row
                .get::<_, Option<i64>>(23)?
                .and_then(|b| u64::try_from(b).ok()),
            cpu_limit: row.get(24)?,
        },
        bundle_id: row.get(19)?,
        created_time: row.get(20)?,
        last_deployed_time: row.get(21)?,
        deployment: row.get(22)?,
    })
}

impl ContentStore for SqliteStore {
    fn create_content(&self, new: &NewContent) -> Result<Option<Content>, StoreError> {
        let guid = new_guid();
        let inserted = self.conn().execute(
            "INSERT OR IGNORE INTO content (guid, name, title, description, owner_id, \
             access_type, run_as, run_as_current_user, min_processes, max_processes, \
             max_conns_per_process, load_factor, init_timeout, idle_timeout, \
             connection_timeout, read_timeout, created_time, memory_limit, cpu_limit) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
             ?18, ?19)",
            params![
                guid,
                new.name,
                new.title,
                new.description,
                new.owner_id,
                new.access_type.as_str(),
                new.run_as,
                new.run_as_current_user,
                new.process.min_processes,
                new.process.max_processes,
                new.process.max_conns_per_process,
                new.process.load_factor,
                new.process.init_timeout,
                new.process.idle_timeout,
                new.process.connection_timeout,
                new.process.read_timeout,
                now(),
                new.process.memory_limit.and_then(|b| i64::try_from(b).ok()),
                new.process.cpu_limit,
            ],
        )?;
        if inserted == 0 {
            // UNIQUE (owner, name): the owner already has content by that name.
            return Ok(None);
        }
        self.content_by_guid(&guid)
    }

    fn content_by_guid(&self, guid: &str) -> Result<Option<Content>, StoreError> {
        // On every request to /content/: prepared once.
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {CONTENT_COLUMNS} FROM content c JOIN users u ON u.id = c.owner_id \
             WHERE c.guid = ?1"
        ))?;
        Ok(stmt.query_row([guid], content_from_row).optional()?)
    }

    fn list_content(&self) -> Result<Vec<Content>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {CONTENT_COLUMNS} FROM content c JOIN users u ON u.id = c.owner_id \
             ORDER BY c.created_time, c.id"
        ))?;
        let rows = stmt.query_map([], content_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes every changeable field of `content`.
    fn update_content(&self, content: &Content) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE content SET name = ?2, title = ?3, description = ?4, access_type = ?5, \
             run_as = ?6, run_as_current_user = ?7, min_processes = ?8, max_processes = ?9, \
             max_conns_per_process = ?10, load_factor = ?11, init_timeout = ?12, \
             idle_timeout = ?13, connection_timeout = ?14, read_timeout = ?15, \
             owner_id = ?16, memory_limit = ?17, cpu_limit = ?18 WHERE id = ?1",
            params![
                content.id,
                content.name,
                content.title,
                content.description,
                content.access_type.as_str(),
                content.run_as,
                content.run_as_current_user,
                content.process.min_processes,
                content.process.max_processes,
                content.process.max_conns_per_process,
                content.process.load_factor,
                content.process.init_timeout,
                content.process.idle_timeout,
                content.process.connection_timeout,
                content.process.read_timeout,
                content.owner_id,
                content
                    .process
                    .memory_limit
                    .and_then(|b| i64::try_from(b).ok()),
                content.process.cpu_limit,
            ],
        )?;
        Ok(())
    }

    fn delete_content(&self, content_id: i64) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM content WHERE id = ?1", [content_id])?;
        Ok(())
    }

    /// What `user_id` (a member of `group_ids`) is to the content.
    fn relation(
        &self,
        content: &Content,
        user_id: i64,
        group_ids: &[i64],
    ) -> Result<Relation, StoreError> {
        if content.owner_id == user_id {
            return Ok(Relation::Owner);
        }
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT principal_type, principal_id, role FROM content_permissions \
             WHERE content_id = ?1",
        )?;
        let rows = stmt.query_map([content.id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut best = Relation::None;
        for row in rows {
            let (kind, id, role) = row?;
            let applies = match kind.as_str() {
                "user" => id == user_id,
                _ => group_ids.contains(&id),
            };
            if applies {
                let relation = if role == "owner" {
                    Relation::Collaborator
                } else {
                    Relation::Viewer
                };
                best = best.max(relation);
            }
        }
        Ok(best)
    }

    fn permissions(&self, content_id: i64) -> Result<Vec<Permission>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT p.id, p.guid, p.principal_type, \
             COALESCE(u.guid, g.guid, ''), p.role FROM content_permissions p \
             LEFT JOIN users u ON p.principal_type = 'user' AND u.id = p.principal_id \
             LEFT JOIN groups g ON p.principal_type = 'group' AND g.id = p.principal_id \
             WHERE p.content_id = ?1 ORDER BY p.id",
        )?;
        let rows = stmt.query_map([content_id], |r| {
            Ok(Permission {
                id: r.get(0)?,
                guid: r.get(1)?,
                principal_type: r.get(2)?,
                principal_guid: r.get(3)?,
                role: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds or replaces the entry for one principal.
    fn set_permission(
        &self,
        content_id: i64,
        principal_type: &str,
        principal_id: i64,
        role: &str,
    ) -> Result<String, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO content_permissions (guid, content_id, principal_type, principal_id, \
             role) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (content_id, principal_type, principal_id) DO UPDATE SET role = ?5",
            params![new_guid(), content_id, principal_type, principal_id, role],
        )?;
        Ok(conn.query_row(
            "SELECT guid FROM content_permissions WHERE content_id = ?1 AND \
             principal_type = ?2 AND principal_id = ?3",
            params![content_id, principal_type, principal_id],
            |r| r.get(0),
        )?)
    }

    fn delete_permission(&self, content_id: i64, guid: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM content_permissions WHERE content_id = ?1 AND guid = ?2",
            params![content_id, guid],
        )? > 0)
    }

    fn group_id_by_guid(&self, guid: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT id FROM groups WHERE guid = ?1", [guid], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn create_bundle(&self, content_id: i64, size: u64) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO bundles (content_id, created_time, size) VALUES (?1, ?2, ?3)",
            params![content_id, now(), size as i64],
        )?;
        Ok(conn.last_insert_rowid())
    }

    fn latest_bundle(&self, content_id: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT MAX(id) FROM bundles WHERE content_id = ?1",
                [content_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    fn delete_bundle(&self, content_id: i64, bundle_id: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM bundles WHERE content_id = ?1 AND id = ?2",
            params![content_id, bundle_id],
        )?;
        Ok(())
    }

    fn bundle_ids(&self, content_id: i64) -> Result<Vec<i64>, StoreError> {
        let conn = self.conn();
        let mut query =
            conn.prepare_cached("SELECT id FROM bundles WHERE content_id = ?1 ORDER BY id")?;
        let ids = query
            .query_map([content_id], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(ids)
    }

    fn bundle_exists(&self, content_id: i64, bundle_id: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM bundles WHERE content_id = ?1 AND id = ?2",
                params![content_id, bundle_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The bundle is built (in the environment named `deployment`) and
    /// live: new processes run it.
    fn mark_deployed(
        &self,
        content_id: i64,
        bundle_id: i64,
        app_mode: AppMode,
        deployment: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE content SET bundle_id = ?2, app_mode = ?3, last_deployed_time = ?4, \
             deployment = ?5 WHERE id = ?1",
            params![content_id, bundle_id, app_mode.as_str(), now(), deployment],
        )?;
        Ok(())
    }

    fn set_unix_account(&self, user_id: i64, account: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE users SET unix_account = ?2 WHERE id = ?1",
            params![user_id, account],
        )?;
        Ok(())
    }

    /// The account the nameservice provisioned for the user, if any.
    fn unix_account(&self, user_id: i64) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT unix_account FROM users WHERE id = ?1",
                [user_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    #[allow(clippy::too_many_arguments)]
    fn start_job(
        &self,
        key: &str,
        content_id: i64,
        kind: &str,
        bundle_id: Option<i64>,
        pid: Option<u32>,
        unix_account: &str,
        uid: u32,
        viewer_id: Option<i64>,
        log_path: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO jobs (key, content_id, kind, bundle_id, pid, unix_account, uid, \
             viewer_id, started_time, log_path, node) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                key,
                content_id,
                kind,
                bundle_id,
                pid,
                unix_account,
                uid,
                viewer_id,
                now(),
                log_path,
                self.node
            ],
        )?;
        Ok(())
    }

    fn end_job(&self, key: &str, exit_code: Option<i32>) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE jobs SET ended_time = ?2, exit_code = ?3 WHERE key = ?1",
            params![key, now(), exit_code],
        )?;
        Ok(())
    }

    /// This node's jobs that never ended: it stopped without reaping
    /// them. Rows without a node predate node names and are this node's.
    fn end_unfinished_jobs(&self) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE jobs SET ended_time = ?1 WHERE ended_time IS NULL AND node IN (?2, '')",
            params![now(), self.node],
        )?)
    }

    fn jobs(&self, content_id: i64) -> Result<Vec<Job>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT j.key, j.kind, j.bundle_id, j.pid, j.unix_account, j.uid, u.guid, \
             j.started_time, j.ended_time, j.exit_code, j.log_path FROM jobs j \
             LEFT JOIN users u ON u.id = j.viewer_id WHERE j.content_id = ?1 \
             ORDER BY j.started_time DESC, j.id DESC LIMIT 500",
        )?;
        let rows = stmt.query_map([content_id], |r| {
            Ok(Job {
                key: r.get(0)?,
                kind: r.get(1)?,
                bundle_id: r.get(2)?,
                pid: r.get(3)?,
                unix_account: r.get(4)?,
                uid: r.get(5)?,
                viewer_guid: r.get(6)?,
                started_time: r.get(7)?,
                ended_time: r.get(8)?,
                exit_code: r.get(9)?,
                log_path: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
