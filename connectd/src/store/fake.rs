//! A store for unit tests that fails on demand: the real SQLite store in
//! memory underneath, and any operation, by name, made to fail as a dead
//! or full database would, so that callers' error paths are tested
//! without a broken disk.

use std::collections::HashSet;
use std::sync::Mutex;

use super::{ContentStore, LoginRecord, SqliteStore, StoreError, TaskStore, UserStore};
use crate::bundle::AppMode;
use crate::model::{
    ApiKey, Content, Group, Job, NewContent, Permission, Relation, StoredTask, User,
};
use crate::roles::Role;

pub struct FailingStore {
    inner: SqliteStore,
    failing: Mutex<Failing>,
}

#[derive(Default)]
struct Failing {
    all: bool,
    operations: HashSet<&'static str>,
    /// Every operation attempted, failed or not, in order.
    attempts: Vec<&'static str>,
}

impl Default for FailingStore {
    fn default() -> Self {
        Self::new()
    }
}

impl FailingStore {
    pub fn new() -> Self {
        Self {
            inner: SqliteStore::in_memory().expect("in-memory store"),
            failing: Mutex::new(Failing::default()),
        }
    }

    /// The store underneath, to set up or inspect what a test needs
    /// whatever is failing.
    pub fn inner(&self) -> &SqliteStore {
        &self.inner
    }

    /// Makes the operation named (the trait method's name) fail.
    pub fn fail(&self, operation: &'static str) {
        self.lock().operations.insert(operation);
    }

    /// Makes every operation fail, as a database that went away.
    pub fn fail_everything(&self) {
        self.lock().all = true;
    }

    pub fn recover(&self) {
        let mut failing = self.lock();
        failing.all = false;
        failing.operations.clear();
    }

    /// How many times `operation` was attempted.
    pub fn attempts(&self, operation: &str) -> usize {
        self.lock()
            .attempts
            .iter()
            .filter(|a| **a == operation)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failing> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, operation: &'static str) -> Result<(), StoreError> {
        let mut failing = self.lock();
        failing.attempts.push(operation);
        if failing.all || failing.operations.contains(operation) {
            return Err(StoreError::Backend(format!(
                "{operation}: the test made the database fail"
            )));
        }
        Ok(())
    }
}

impl UserStore for FailingStore {
    /// The store underneath's, so the request path's caches run in tests;
    /// none while a failure is armed, so that every injected failure is
    /// met by a real store call.
    fn generation(&self) -> Option<u64> {
        let failing = self.lock();
        if failing.all || !failing.operations.is_empty() {
            return None;
        }
        drop(failing);
        self.inner.generation()
    }

    fn record_login(
        &self,
        login: &LoginRecord<'_>,
        decide_role: &mut dyn FnMut(Option<Role>, bool) -> Role,
    ) -> Result<(User, bool), StoreError> {
        self.check("record_login")?;
        self.inner.record_login(login, decide_role)
    }

    fn create_password_user(
        &self,
        username: &str,
        first_name: &str,
        last_name: &str,
        email: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<User, StoreError> {
        self.check("create_password_user")?;
        self.inner
            .create_password_user(username, first_name, last_name, email, password_hash, role)
    }

    fn password_hash(&self, username: &str) -> Result<Option<(User, String)>, StoreError> {
        self.check("password_hash")?;
        self.inner.password_hash(username)
    }

    fn mark_password_login(&self, user_id: i64) -> Result<(), StoreError> {
        self.check("mark_password_login")?;
        self.inner.mark_password_login(user_id)
    }

    fn user_by_guid(&self, guid: &str) -> Result<Option<User>, StoreError> {
        self.check("user_by_guid")?;
        self.inner.user_by_guid(guid)
    }

    fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.check("user_by_username")?;
        self.inner.user_by_username(username)
    }

    fn list_users(
        &self,
        prefix: Option<&str>,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<User>, u64), StoreError> {
        self.check("list_users")?;
        self.inner.list_users(prefix, offset, limit)
    }

    fn count_administrators(&self) -> Result<u64, StoreError> {
        self.check("count_administrators")?;
        self.inner.count_administrators()
    }

    fn set_role(&self, user_id: i64, role: Role) -> Result<(), StoreError> {
        self.check("set_role")?;
        self.inner.set_role(user_id, role)
    }

    fn set_locked(&self, user_id: i64, locked: bool) -> Result<(), StoreError> {
        self.check("set_locked")?;
        self.inner.set_locked(user_id, locked)
    }

    fn set_needs_provisioning(&self, user_id: i64, needed: bool) -> Result<(), StoreError> {
        self.check("set_needs_provisioning")?;
        self.inner.set_needs_provisioning(user_id, needed)
    }

    fn groups_of(&self, user_id: i64) -> Result<Vec<Group>, StoreError> {
        self.check("groups_of")?;
        self.inner.groups_of(user_id)
    }

    fn list_groups(&self, prefix: Option<&str>) -> Result<Vec<Group>, StoreError> {
        self.check("list_groups")?;
        self.inner.list_groups(prefix)
    }

    fn group_by_guid(&self, guid: &str) -> Result<Option<Group>, StoreError> {
        self.check("group_by_guid")?;
        self.inner.group_by_guid(guid)
    }

    fn group_members(&self, group_id: i64) -> Result<Vec<User>, StoreError> {
        self.check("group_members")?;
        self.inner.group_members(group_id)
    }

    fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        lifetime_secs: i64,
    ) -> Result<(), StoreError> {
        self.check("create_session")?;
        self.inner
            .create_session(token_hash, user_id, lifetime_secs)
    }

    fn session_user(&self, token_hash: &str) -> Result<Option<User>, StoreError> {
        self.check("session_user")?;
        self.inner.session_user(token_hash)
    }

    fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        self.check("delete_session")?;
        self.inner.delete_session(token_hash)
    }

    fn delete_expired_sessions(&self) -> Result<usize, StoreError> {
        self.check("delete_expired_sessions")?;
        self.inner.delete_expired_sessions()
    }

    fn create_api_key(
        &self,
        user_id: i64,
        name: &str,
        key_id: &str,
        hash: &str,
    ) -> Result<ApiKey, StoreError> {
        self.check("create_api_key")?;
        self.inner.create_api_key(user_id, name, key_id, hash)
    }

    fn api_key(&self, key_id: &str) -> Result<Option<(String, User)>, StoreError> {
        self.check("api_key")?;
        self.inner.api_key(key_id)
    }

    fn touch_api_key(&self, key_id: &str) -> Result<(), StoreError> {
        self.check("touch_api_key")?;
        self.inner.touch_api_key(key_id)
    }

    fn list_api_keys(&self, user_id: i64) -> Result<Vec<ApiKey>, StoreError> {
        self.check("list_api_keys")?;
        self.inner.list_api_keys(user_id)
    }

    fn delete_api_key(&self, user_id: i64, guid: &str) -> Result<bool, StoreError> {
        self.check("delete_api_key")?;
        self.inner.delete_api_key(user_id, guid)
    }
}

impl ContentStore for FailingStore {
    fn create_content(&self, new: &NewContent) -> Result<Option<Content>, StoreError> {
        self.check("create_content")?;
        self.inner.create_content(new)
    }

    fn content_by_guid(&self, guid: &str) -> Result<Option<Content>, StoreError> {
        self.check("content_by_guid")?;
        self.inner.content_by_guid(guid)
    }

    fn list_content(&self) -> Result<Vec<Content>, StoreError> {
        self.check("list_content")?;
        self.inner.list_content()
    }

    fn update_content(&self, content: &Content) -> Result<(), StoreError> {
        self.check("update_content")?;
        self.inner.update_content(content)
    }

    fn delete_content(&self, content_id: i64) -> Result<(), StoreError> {
        self.check("delete_content")?;
        self.inner.delete_content(content_id)
    }

    fn relation(
        &self,
        content: &Content,
        user_id: i64,
        group_ids: &[i64],
    ) -> Result<Relation, StoreError> {
        self.check("relation")?;
        self.inner.relation(content, user_id, group_ids)
    }

    fn permissions(&self, content_id: i64) -> Result<Vec<Permission>, StoreError> {
        self.check("permissions")?;
        self.inner.permissions(content_id)
    }

    fn set_permission(
        &self,
        content_id: i64,
        principal_type: &str,
        principal_id: i64,
        role: &str,
    ) -> Result<String, StoreError> {
        self.check("set_permission")?;
        self.inner
            .set_permission(content_id, principal_type, principal_id, role)
    }

    fn delete_permission(&self, content_id: i64, guid: &str) -> Result<bool, StoreError> {
        self.check("delete_permission")?;
        self.inner.delete_permission(content_id, guid)
    }

    fn group_id_by_guid(&self, guid: &str) -> Result<Option<i64>, StoreError> {
        self.check("group_id_by_guid")?;
        self.inner.group_id_by_guid(guid)
    }

    fn create_bundle(&self, content_id: i64, size: u64) -> Result<i64, StoreError> {
        self.check("create_bundle")?;
        self.inner.create_bundle(content_id, size)
    }

    fn latest_bundle(&self, content_id: i64) -> Result<Option<i64>, StoreError> {
        self.check("latest_bundle")?;
        self.inner.latest_bundle(content_id)
    }

    fn delete_bundle(&self, content_id: i64, bundle_id: i64) -> Result<(), StoreError> {
        self.check("delete_bundle")?;
        self.inner.delete_bundle(content_id, bundle_id)
    }

    fn bundle_ids(&self, content_id: i64) -> Result<Vec<i64>, StoreError> {
        self.check("bundle_ids")?;
        self.inner.bundle_ids(content_id)
    }

    fn bundle_exists(&self, content_id: i64, bundle_id: i64) -> Result<bool, StoreError> {
        self.check("bundle_exists")?;
        self.inner.bundle_exists(content_id, bundle_id)
    }

    fn mark_deployed(
        &self,
        content_id: i64,
        bundle_id: i64,
        app_mode: AppMode,
        deployment: &str,
    ) -> Result<(), StoreError> {
        self.check("mark_deployed")?;
        self.inner
            .mark_deployed(content_id, bundle_id, app_mode, deployment)
    }

    fn set_unix_account(&self, user_id: i64, account: &str) -> Result<(), StoreError> {
        self.check("set_unix_account")?;
        self.inner.set_unix_account(user_id, account)
    }

    fn unix_account(&self, user_id: i64) -> Result<Option<String>, StoreError> {
        self.check("unix_account")?;
        self.inner.unix_account(user_id)
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
        self.check("start_job")?;
        self.inner.start_job(
            key,
            content_id,
            kind,
            bundle_id,
            pid,
            unix_account,
            uid,
            viewer_id,
            log_path,
        )
    }

    fn end_job(&self, key: &str, exit_code: Option<i32>) -> Result<(), StoreError> {
        self.check("end_job")?;
        self.inner.end_job(key, exit_code)
    }

    fn end_unfinished_jobs(&self) -> Result<usize, StoreError> {
        self.check("end_unfinished_jobs")?;
        self.inner.end_unfinished_jobs()
    }

    fn jobs(&self, content_id: i64) -> Result<Vec<Job>, StoreError> {
        self.check("jobs")?;
        self.inner.jobs(content_id)
    }
}

impl TaskStore for FailingStore {
    fn create_task(&self, id: &str, content_id: i64, started: i64) -> Result<(), StoreError> {
        self.check("create_task")?;
        self.inner.create_task(id, content_id, started)
    }

    fn append_task_output(
        &self,
        id: &str,
        first: usize,
        lines: &[String],
    ) -> Result<(), StoreError> {
        self.check("append_task_output")?;
        self.inner.append_task_output(id, first, lines)
    }

    fn finish_task(&self, id: &str, code: i32, error: &str) -> Result<(), StoreError> {
        self.check("finish_task")?;
        self.inner.finish_task(id, code, error)
    }

    fn task(&self, id: &str) -> Result<Option<StoredTask>, StoreError> {
        self.check("task")?;
        self.inner.task(id)
    }

    fn end_unfinished_tasks(&self, code: i32, error: &str) -> Result<usize, StoreError> {
        self.check("end_unfinished_tasks")?;
        self.inner.end_unfinished_tasks(code, error)
    }

    fn delete_finished_tasks(&self, before: i64) -> Result<usize, StoreError> {
        self.check("delete_finished_tasks")?;
        self.inner.delete_finished_tasks(before)
    }
}
