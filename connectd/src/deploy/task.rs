//! Deployment tasks: the output and outcome the tasks API streams. A task
//! this node runs lives in memory, where readers wait on it, and a writer
//! keeps a copy in the store as it goes, so that after a restart, or on
//! another node, the same task can still be reported from the store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::model::{StoredTask, TaskState};
use crate::store::{Store, StoreError};

/// How long finished tasks stay readable.
pub(super) const TASK_RETENTION: Duration = Duration::from_secs(3600);

/// How often a reader of a task that another node (or an earlier run) owns
/// looks at the store again.
const STORED_POLL: Duration = Duration::from_millis(250);

/// What a task that was running when connectd stopped ends with.
pub const INTERRUPTED: &str =
    "connectd stopped before this deployment finished; deploy the bundle again";

/// A deployment this node is running or ran.
pub struct Task {
    pub id: String,
    /// Its output is for those who may change this content.
    pub content_guid: String,
    state: Mutex<TaskState>,
    changed: Notify,
    pub(super) created: Instant,
}

impl Task {
    pub(super) fn new(content_guid: &str, started: i64) -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            content_guid: content_guid.to_owned(),
            state: Mutex::new(TaskState {
                started: Some(started),
                ..TaskState::default()
            }),
            changed: Notify::new(),
            created: Instant::now(),
        }
    }

    pub fn snapshot(&self) -> TaskState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn line(&self, line: impl Into<String>) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .output
            .push(line.into());
        self.changed.notify_waiters();
    }

    pub(super) fn finish(&self, error: Option<(i32, String)>) {
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.finished = true;
            if let Some((code, message)) = error {
                state.code = code;
                state.error = message;
            }
        }
        self.changed.notify_waiters();
    }

    /// Waits until the task has more than `seen` lines or finished, at most
    /// `wait`.
    pub async fn wait_for(&self, seen: usize, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            {
                let state = self.snapshot();
                if state.finished || state.output.len() > seen {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

/// A task as the tasks API reads it: live on this node, or from the store.
pub enum TaskView {
    Live(Arc<Task>),
    Stored {
        task: StoredTask,
        store: Arc<dyn Store>,
    },
}

impl TaskView {
    pub fn id(&self) -> &str {
        match self {
            TaskView::Live(task) => &task.id,
            TaskView::Stored { task, .. } => &task.id,
        }
    }

    pub fn content_guid(&self) -> &str {
        match self {
            TaskView::Live(task) => &task.content_guid,
            TaskView::Stored { task, .. } => &task.content_guid,
        }
    }

    /// Waits until the task has more than `seen` lines or finished, at most
    /// `wait`. A stored task is read again until then; if the store fails,
    /// the last reading stands.
    pub async fn wait_for(&mut self, seen: usize, wait: Duration) {
        match self {
            TaskView::Live(task) => task.wait_for(seen, wait).await,
            TaskView::Stored { task, store } => {
                let deadline = Instant::now() + wait;
                while !task.state.finished
                    && task.state.output.len() <= seen
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(STORED_POLL.min(deadline - Instant::now())).await;
                    let (id, store) = (task.id.clone(), store.clone());
                    match tokio::task::spawn_blocking(move || store.task(&id)).await {
                        Ok(Ok(Some(fresh))) => *task = fresh,
                        // Deleted meanwhile, or the store is down: report
                        // what was read last.
                        _ => return,
                    }
                }
            }
        }
    }

    pub fn snapshot(&self) -> TaskState {
        match self {
            TaskView::Live(task) => task.snapshot(),
            TaskView::Stored { task, .. } => task.state.clone(),
        }
    }
}

/// Keeps a copy of a live task in the store until it has finished and all
/// of it is written. Output is written in whatever batch has gathered
/// while the previous write ran; a failed write is retried with the next
/// one, and logged once.
pub(super) async fn persist(task: Arc<Task>, content_id: i64, store: Arc<dyn Store>) {
    let mut created = false;
    let mut written = 0usize;
    let mut warned = false;
    loop {
        let notified = task.changed.notified();
        let state = task.snapshot();
        let (id, store2) = (task.id.clone(), store.clone());
        let started = state.started.unwrap_or_else(crate::store::now);
        let pending: Vec<String> = state.output.get(written..).unwrap_or_default().to_vec();
        let finished = state.finished;
        let (code, error) = (state.code, state.error.clone());
        let wrote = tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
            if !created {
                store2.create_task(&id, content_id, started)?;
            }
            if !pending.is_empty() {
                store2.append_task_output(&id, written, &pending)?;
            }
            if finished {
                store2.finish_task(&id, code, &error)?;
            }
            Ok(finished)
        })
        .await;
        match wrote {
            Ok(Ok(done)) => {
                created = true;
                written = state.output.len();
                if done {
                    return;
                }
            }
            Ok(Err(e)) if task.created.elapsed() > TASK_RETENTION => {
                tracing::warn!(
                    task = %task.id,
                    "gave up recording deployment output in the database: {e}"
                );
                return;
            }
            Ok(Err(e)) => {
                if !warned {
                    tracing::warn!(
                        task = %task.id,
                        "could not record deployment output in the database (retrying): {e}"
                    );
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => return,
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewContent;
    use crate::roles::Role;
    use crate::store::fake::FailingStore;
    use crate::store::{ContentStore, TaskStore, UserStore};

    fn store_with_content() -> (Arc<FailingStore>, crate::model::Content) {
        let store = FailingStore::new();
        let owner = store
            .create_password_user("owner", "", "", "", "h", Role::Publisher)
            .expect("owner");
        let content = store
            .create_content(&NewContent::open_to_all("app", owner.id))
            .expect("create")
            .expect("new name");
        (Arc::new(store), content)
    }

    async fn persisted(handle: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(20), handle)
            .await
            .expect("the writer finishes once the task has")
            .expect("the writer does not panic");
    }

    #[tokio::test]
    async fn a_task_is_in_the_store_as_it_ran() {
        let (store, content) = store_with_content();
        let task = Arc::new(Task::new(&content.guid, 100));
        let writer = tokio::spawn(persist(task.clone(), content.id, store.clone()));
        task.line("one");
        task.line("two");
        task.finish(Some((3, "the build failed".into())));
        persisted(writer).await;

        let stored = store.task(&task.id).expect("read").expect("stored");
        assert_eq!(stored.content_guid, content.guid);
        assert_eq!(stored.state.output, ["one", "two"]);
        assert!(stored.state.finished);
        assert_eq!(
            (stored.state.code, stored.state.error.as_str()),
            (3, "the build failed")
        );
    }

    #[tokio::test]
    async fn output_written_while_the_database_is_down_arrives_once_it_is_back() {
        let (store, content) = store_with_content();
        store.fail("append_task_output");
        let task = Arc::new(Task::new(&content.guid, 100));
        let writer = tokio::spawn(persist(task.clone(), content.id, store.clone()));
        task.line("one");
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.attempts("append_task_output") < 2 {
            assert!(Instant::now() < deadline, "the writer retries");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.line("two");
        store.recover();
        task.line("three");
        task.finish(None);
        persisted(writer).await;

        let stored = store.task(&task.id).expect("read").expect("stored");
        assert_eq!(stored.state.output, ["one", "two", "three"]);
        assert!(stored.state.finished);
    }

    #[tokio::test]
    async fn a_reader_of_a_stored_task_sees_another_nodes_output_as_it_comes() {
        let (store, content) = store_with_content();
        store.create_task("t", content.id, 100).expect("create");
        let stored = store.task("t").expect("read").expect("stored");
        let mut view = TaskView::Stored {
            task: stored,
            store: store.clone(),
        };
        let other_node = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            other_node
                .append_task_output("t", 0, &["built".into()])
                .expect("append");
        });
        view.wait_for(0, Duration::from_secs(10)).await;
        assert_eq!(view.snapshot().output, ["built"]);
        assert!(!view.snapshot().finished);

        // Nothing more comes: the wait ends at its limit with what there is.
        let started = Instant::now();
        view.wait_for(1, Duration::from_millis(600)).await;
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(view.snapshot().output, ["built"]);

        // The store goes away: the last reading stands.
        store.fail_everything();
        view.wait_for(1, Duration::from_secs(10)).await;
        assert_eq!(view.snapshot().output, ["built"]);
    }
}
