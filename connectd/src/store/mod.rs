//! Storage: every query connectd makes, behind traits with a
//! backend-neutral error, so that the sign-in, the scheduler, deployments
//! and HTTP never name the database.
//!
//! - [`UserStore`]: users, provider groups and memberships, sessions, API
//!   keys; a sign-in is one transaction, so a failed one leaves nothing;
//! - [`ContentStore`]: content items, access lists, bundles, jobs (each
//!   node's own, so a node's start-up clean-up touches only its rows);
//! - [`TaskStore`]: deployment tasks and their output;
//! - [`Store`]: all three, what the rest of connectd holds (`Arc<dyn Store>`);
//! - [`sqlite`]: the implementation, in one SQLite file under
//!   `Server.DataDir` (PostgreSQL, for several nodes, goes beside it);
//! - `fake` (tests only): SQLite in memory that fails on demand.
//!
//! May import `model` and `roles`; nothing above them.

#[cfg(test)]
pub mod fake;
pub mod sqlite;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bundle::AppMode;
use crate::model::{
    ApiKey, Content, Group, GroupRef, Job, NewContent, Permission, Relation, StoredTask, User,
};
use crate::roles::Role;

pub use sqlite::SqliteStore;

/// What went wrong, in terms every backend shares: callers never see the
/// database library's own error type.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (unreachable, full, damaged); the text is the
    /// backend's, for the log.
    #[error("database error: {0}")]
    Backend(String),
    #[error(
        "the username {0:?} already belongs to another identity; rename one of them in the \
         identity provider, or remove the old user"
    )]
    UsernameTaken(String),
    #[error("this user is locked")]
    Locked,
}

/// What a successful sign-in writes.
#[derive(Debug, Clone)]
pub struct LoginRecord<'a> {
    pub provider: &'a str,
    pub unique_id: &'a str,
    pub username: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    /// `None`: the provider does not know groups (PAM, password); leave
    /// memberships alone. `Some`: replace them with exactly these.
    pub groups: Option<&'a [GroupRef]>,
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Users, provider groups and memberships, sessions and API keys.
pub trait UserStore: Send + Sync {
    /// A number that changes whenever anything stored changes (read it
    /// before a read whose answer is cached), for the request path's
    /// caches; `None` when the store cannot tell, and then nothing of it
    /// may be cached.
    fn generation(&self) -> Option<u64> {
        None
    }

    /// Records a successful sign-in. `decide_role(current, first_user_ever)`
    /// gives the role; a locked user is refused before anything is written.
    /// Returns the user and whether it was created.
    fn record_login(
        &self,
        login: &LoginRecord<'_>,
        decide_role: &mut dyn FnMut(Option<Role>, bool) -> Role,
    ) -> Result<(User, bool), StoreError>;

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
    ) -> Result<User, StoreError>;

    /// The password hash of a password-provider user, by username.
    fn password_hash(&self, username: &str) -> Result<Option<(User, String)>, StoreError>;

    fn mark_password_login(&self, user_id: i64) -> Result<(), StoreError>;

    fn user_by_guid(&self, guid: &str) -> Result<Option<User>, StoreError>;

    fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError>;

    /// Users in username order, optionally those whose username, first or
    /// last name starts with `prefix`; with the total that matched.
    fn list_users(
        &self,
        prefix: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<User>, u64), StoreError>;

    fn count_administrators(&self) -> Result<u64, StoreError>;

    fn set_role(&self, user_id: i64, role: Role) -> Result<(), StoreError>;

    /// Locks or unlocks; locking also ends the user's sessions.
    fn set_locked(&self, user_id: i64, locked: bool) -> Result<(), StoreError>;

    fn set_needs_provisioning(&self, user_id: i64, needed: bool) -> Result<(), StoreError>;

    fn groups_of(&self, user_id: i64) -> Result<Vec<Group>, StoreError>;

    fn list_groups(&self, prefix: Option<&str>) -> Result<Vec<Group>, StoreError>;

    fn group_by_guid(&self, guid: &str) -> Result<Option<Group>, StoreError>;

    fn group_members(&self, group_id: i64) -> Result<Vec<User>, StoreError>;

    fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        lifetime_secs: i64,
    ) -> Result<(), StoreError>;

    /// The user behind an unexpired session of an unlocked user.
    fn session_user(&self, token_hash: &str) -> Result<Option<User>, StoreError>;

    fn delete_session(&self, token_hash: &str) -> Result<(), StoreError>;

    fn delete_expired_sessions(&self) -> Result<usize, StoreError>;

    fn create_api_key(
        &self,
        user_id: i64,
        name: &str,
        key_id: &str,
        hash: &str,
    ) -> Result<ApiKey, StoreError>;

    /// The stored hash and owner of an API key, by its public id part.
    fn api_key(&self, key_id: &str) -> Result<Option<(String, User)>, StoreError>;

    fn touch_api_key(&self, key_id: &str) -> Result<(), StoreError>;

    fn list_api_keys(&self, user_id: i64) -> Result<Vec<ApiKey>, StoreError>;

    /// Deletes one of the user's keys; false if they have no such key.
    fn delete_api_key(&self, user_id: i64, guid: &str) -> Result<bool, StoreError>;
}

/// Content items, their access lists, bundles and jobs.
pub trait ContentStore: Send + Sync {
    fn create_content(&self, new: &NewContent) -> Result<Option<Content>, StoreError>;

    fn content_by_guid(&self, guid: &str) -> Result<Option<Content>, StoreError>;

    fn list_content(&self) -> Result<Vec<Content>, StoreError>;

    /// Writes every changeable field of `content`.
    fn update_content(&self, content: &Content) -> Result<(), StoreError>;

    fn delete_content(&self, content_id: i64) -> Result<(), StoreError>;

    /// What `user_id` (a member of `group_ids`) is to the content.
    fn relation(
        &self,
        content: &Content,
        user_id: i64,
        group_ids: &[i64],
    ) -> Result<Relation, StoreError>;

    fn permissions(&self, content_id: i64) -> Result<Vec<Permission>, StoreError>;

    /// Adds or replaces the entry for one principal.
    fn set_permission(
        &self,
        content_id: i64,
        principal_type: &str,
        principal_id: i64,
        role: &str,
    ) -> Result<String, StoreError>;

    fn delete_permission(&self, content_id: i64, guid: &str) -> Result<bool, StoreError>;

    fn group_id_by_guid(&self, guid: &str) -> Result<Option<i64>, StoreError>;

    fn create_bundle(&self, content_id: i64, size: u64) -> Result<i64, StoreError>;

    fn latest_bundle(&self, content_id: i64) -> Result<Option<i64>, StoreError>;

    fn delete_bundle(&self, content_id: i64, bundle_id: i64) -> Result<(), StoreError>;

    /// The content's bundles, oldest first.
    fn bundle_ids(&self, content_id: i64) -> Result<Vec<i64>, StoreError>;

    fn bundle_exists(&self, content_id: i64, bundle_id: i64) -> Result<bool, StoreError>;

    /// The bundle is built (in the environment named `deployment`) and
    /// live: new processes run it.
    fn mark_deployed(
        &self,
        content_id: i64,
        bundle_id: i64,
        app_mode: AppMode,
        deployment: &str,
    ) -> Result<(), StoreError>;

    fn set_unix_account(&self, user_id: i64, account: &str) -> Result<(), StoreError>;

    /// The account the nameservice provisioned for the user, if any.
    fn unix_account(&self, user_id: i64) -> Result<Option<String>, StoreError>;

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
    ) -> Result<(), StoreError>;

    fn end_job(&self, key: &str, exit_code: Option<i32>) -> Result<(), StoreError>;

    /// This node's jobs that never ended: connectd stopped without reaping
    /// them. Other nodes' jobs sharing the database are left alone.
    fn end_unfinished_jobs(&self) -> Result<usize, StoreError>;

    fn jobs(&self, content_id: i64) -> Result<Vec<Job>, StoreError>;
}

/// Deployment tasks and their output, so that a restarted connectd, or
/// another node, can report a deployment it did not run.
pub trait TaskStore: Send + Sync {
    /// Records a new task deploying `content_id` on this node; recording
    /// it again changes nothing.
    fn create_task(&self, id: &str, content_id: i64, started: i64) -> Result<(), StoreError>;

    /// Writes output lines `first..first + lines.len()`; lines already
    /// written are left as they are, so a retried write repeats nothing.
    fn append_task_output(
        &self,
        id: &str,
        first: usize,
        lines: &[String],
    ) -> Result<(), StoreError>;

    /// Marks the task finished; `code` 0 and an empty `error` for success.
    fn finish_task(&self, id: &str, code: i32, error: &str) -> Result<(), StoreError>;

    fn task(&self, id: &str) -> Result<Option<StoredTask>, StoreError>;

    /// Finishes this node's tasks that never finished (connectd stopped
    /// during them) with `code` and `error`.
    fn end_unfinished_tasks(&self, code: i32, error: &str) -> Result<usize, StoreError>;

    /// Forgets tasks that finished before `before` (seconds since 1970).
    fn delete_finished_tasks(&self, before: i64) -> Result<usize, StoreError>;
}

/// Everything connectd stores.
pub trait Store: UserStore + ContentStore + TaskStore {}

impl<T: UserStore + ContentStore + TaskStore> Store for T {}
