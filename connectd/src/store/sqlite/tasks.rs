//! Deployment tasks and their output lines, one row per line so that a
//! long build's output is written in small batches as it comes.

use rusqlite::{params, OptionalExtension};

use super::SqliteStore;
use crate::model::{StoredTask, TaskState};
use crate::store::{now, StoreError, TaskStore};

impl TaskStore for SqliteStore {
    fn create_task(&self, id: &str, content_id: i64, started: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO tasks (id, content_id, node, started_time) \
             VALUES (?1, ?2, ?3, ?4)",
            params![id, content_id, self.node, started],
        )?;
        Ok(())
    }

    fn append_task_output(
        &self,
        id: &str,
        first: usize,
        lines: &[String],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO task_output (task_id, seq, line) VALUES (?1, ?2, ?3)",
            )?;
            for (i, line) in lines.iter().enumerate() {
                insert.execute(params![id, (first + i) as i64, line])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn finish_task(&self, id: &str, code: i32, error: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE tasks SET finished_time = ?2, code = ?3, error = ?4 \
             WHERE id = ?1 AND finished_time IS NULL",
            params![id, now(), code, error],
        )?;
        Ok(())
    }

    fn task(&self, id: &str) -> Result<Option<StoredTask>, StoreError> {
        let conn = self.conn();
        let task = conn
            .query_row(
                "SELECT t.id, c.guid, t.node, t.started_time, t.finished_time, t.code, t.error \
                 FROM tasks t JOIN content c ON c.id = t.content_id WHERE t.id = ?1",
                [id],
                |r| {
                    let finished: Option<i64> = r.get(4)?;
                    Ok(StoredTask {
                        id: r.get(0)?,
                        content_guid: r.get(1)?,
                        node: r.get(2)?,
                        state: TaskState {
                            output: Vec::new(),
                            finished: finished.is_some(),
                            code: r.get(5)?,
                            error: r.get(6)?,
                            started: Some(r.get(3)?),
                        },
                    })
                },
            )
            .optional()?;
        let Some(mut task) = task else {
            return Ok(None);
        };
        let mut lines =
            conn.prepare_cached("SELECT line FROM task_output WHERE task_id = ?1 ORDER BY seq")?;
        task.state.output = lines
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(Some(task))
    }

    fn end_unfinished_tasks(&self, code: i32, error: &str) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE tasks SET finished_time = ?1, code = ?2, error = ?3 \
             WHERE finished_time IS NULL AND node = ?4",
            params![now(), code, error, self.node],
        )?)
    }

    fn delete_finished_tasks(&self, before: i64) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM tasks WHERE finished_time IS NOT NULL AND finished_time < ?1",
            [before],
        )?)
    }
}
