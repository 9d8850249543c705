//! The SQLite store's own behaviour: sign-in transactions, groups, keys,
//! migrations, and each node's jobs and tasks.

use super::*;
use crate::model::GroupRef;

fn login<'a>(
    unique_id: &'a str,
    username: &'a str,
    groups: Option<&'a [GroupRef]>,
) -> LoginRecord<'a> {
    LoginRecord {
        provider: "ldap/corp",
        unique_id,
        username,
        first_name: "F",
        last_name: "L",
        email: "e@x",
        groups,
    }
}

#[test]
fn first_login_creates_then_updates_the_same_user() {
    let store = SqliteStore::in_memory().expect("store");
    let (u, created) = store
        .record_login(&login("u1", "alice", None), &mut |current, first| {
            assert_eq!(current, None);
            assert!(first);
            Role::Administrator
        })
        .expect("login");
    assert!(created);
    assert_eq!(u.role, Role::Administrator);
    let (again, created) = store
        .record_login(&login("u1", "alice2", None), &mut |current, first| {
            assert_eq!(current, Some(Role::Administrator));
            assert!(!first);
            Role::Publisher
        })
        .expect("login");
    assert!(!created);
    assert_eq!(again.id, u.id);
    assert_eq!(again.username, "alice2", "renames follow the provider");
    assert_eq!(again.role, Role::Publisher);
    let (bob, _) = store
        .record_login(&login("u2", "bob", None), &mut |_, first| {
            assert!(!first, "only the very first user is first");
            Role::Viewer
        })
        .expect("bob");
    assert_eq!(bob.role, Role::Viewer);
}

#[test]
fn a_username_belongs_to_one_identity() {
    let store = SqliteStore::in_memory().expect("store");
    store
        .record_login(&login("u1", "alice", None), &mut |_, _| Role::Viewer)
        .expect("alice");
    let err = store
        .record_login(&login("u9", "ALICE", None), &mut |_, _| Role::Viewer)
        .expect_err("same name, other identity");
    assert!(matches!(err, StoreError::UsernameTaken(_)), "{err}");
    assert_eq!(store.list_users(None, 0, 100).expect("list").1, 1);
}

#[test]
fn locked_users_are_refused_before_any_write() {
    let store = SqliteStore::in_memory().expect("store");
    let (u, _) = store
        .record_login(&login("u1", "alice", None), &mut |_, _| Role::Viewer)
        .expect("alice");
    store.create_session("t", u.id, 60).expect("session");
    store.set_locked(u.id, true).expect("lock");
    assert!(
        store.session_user("t").expect("query").is_none(),
        "sessions end"
    );
    let err = store
        .record_login(&login("u1", "alice", None), &mut |_, _| Role::Administrator)
        .expect_err("locked");
    assert!(matches!(err, StoreError::Locked));
    let u = store.user_by_guid(&u.guid).expect("q").expect("user");
    assert_eq!(u.role, Role::Viewer);
}

#[test]
fn groups_are_replaced_at_each_login() {
    let store = SqliteStore::in_memory().expect("store");
    let g = |id: &str, name: &str| GroupRef {
        unique_id: id.into(),
        name: name.into(),
    };
    let first = [g("g1", "Sales"), g("g2", "IT")];
    let (u, _) = store
        .record_login(&login("u1", "alice", Some(&first)), &mut |_, _| {
            Role::Viewer
        })
        .expect("login");
    let names: Vec<_> = store
        .groups_of(u.id)
        .expect("groups")
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["IT", "Sales"]);
    let renamed = [g("g2", "IT-Administrators")];
    store
        .record_login(&login("u1", "alice", Some(&renamed)), &mut |_, _| {
            Role::Viewer
        })
        .expect("login");
    let names: Vec<_> = store
        .groups_of(u.id)
        .expect("groups")
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["IT-Administrators"]);
    assert_eq!(store.list_groups(None).expect("all").len(), 2);
}

#[test]
fn api_keys_resolve_to_their_owner() {
    let store = SqliteStore::in_memory().expect("store");
    let (u, _) = store
        .record_login(&login("u1", "alice", None), &mut |_, _| Role::Viewer)
        .expect("login");
    let key = store
        .create_api_key(u.id, "ci", "kid", "hash")
        .expect("key");
    let (hash, owner) = store.api_key("kid").expect("q").expect("found");
    assert_eq!(hash, "hash");
    assert_eq!(owner, u);
    assert_eq!(store.list_api_keys(u.id).expect("list").len(), 1);
    assert!(store.delete_api_key(u.id, &key.guid).expect("delete"));
    assert!(store.api_key("kid").expect("q").is_none());
}

#[test]
fn migrations_survive_reopening() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("connect.db");
    {
        let store = SqliteStore::open(&path, "node-a").expect("open");
        store
            .create_password_user("admin", "", "", "", "h", Role::Viewer)
            .expect("create");
    }
    let store = SqliteStore::open(&path, "node-a").expect("reopen");
    let (u, _) = store.password_hash("admin").expect("q").expect("user");
    assert_eq!(u.role, Role::Administrator, "the first user ever");
}

/// Two nodes on one database file, each with one content item's job and
/// deployment task still running.
fn two_nodes(dir: &std::path::Path) -> (SqliteStore, SqliteStore, i64) {
    use crate::model::NewContent;
    use crate::store::ContentStore;
    let path = dir.join("connect.db");
    let a = SqliteStore::open(&path, "node-a").expect("node a");
    let b = SqliteStore::open(&path, "node-b").expect("node b");
    let owner = a
        .create_password_user("owner", "", "", "", "h", Role::Publisher)
        .expect("owner");
    let content = a
        .create_content(&NewContent::open_to_all("app", owner.id))
        .expect("create")
        .expect("new name");
    (a, b, content.id)
}

#[test]
fn a_nodes_start_up_clean_up_ends_only_its_own_jobs() {
    use crate::store::ContentStore;
    let dir = tempfile::tempdir().expect("dir");
    let (a, b, content) = two_nodes(dir.path());
    for (store, key) in [(&a, "job-a"), (&b, "job-b")] {
        store
            .start_job(
                key,
                content,
                "run",
                None,
                Some(1),
                "nobody",
                65534,
                None,
                "/l",
            )
            .expect("start");
    }
    // A restart of node b must not end node a's running process.
    assert_eq!(b.end_unfinished_jobs().expect("clean up b"), 1);
    let jobs = a.jobs(content).expect("jobs");
    let ended = |key: &str| {
        jobs.iter()
            .find(|j| j.key == key)
            .expect("job")
            .ended_time
            .is_some()
    };
    assert!(ended("job-b"));
    assert!(!ended("job-a"), "node b ended node a's job");
    assert_eq!(a.end_unfinished_jobs().expect("clean up a"), 1);
}

#[test]
fn tasks_are_readable_from_another_node_and_after_a_restart() {
    use crate::store::TaskStore;
    let dir = tempfile::tempdir().expect("dir");
    let (a, b, content) = two_nodes(dir.path());
    a.create_task("t1", content, 100).expect("create");
    a.append_task_output("t1", 0, &["one".into(), "two".into()])
        .expect("first lines");
    // A retried batch repeats nothing, and the next batch follows on.
    a.append_task_output("t1", 1, &["two".into(), "three".into()])
        .expect("retried lines");
    let seen = b.task("t1").expect("read").expect("b sees a's task");
    assert_eq!(seen.node, "node-a");
    assert_eq!(seen.state.output, ["one", "two", "three"]);
    assert!(!seen.state.finished);
    assert_eq!(seen.state.started, Some(100));

    b.create_task("t2", content, 100).expect("create on b");
    // Node a restarts: its unfinished task ends with the reason; b's is
    // still running.
    assert_eq!(a.end_unfinished_tasks(1, "stopped").expect("clean up"), 1);
    let ended = b.task("t1").expect("read").expect("t1");
    assert!(ended.state.finished);
    assert_eq!(
        (ended.state.code, ended.state.error.as_str()),
        (1, "stopped")
    );
    assert!(!b.task("t2").expect("read").expect("t2").state.finished);

    // Finishing twice keeps the first outcome.
    b.finish_task("t2", 0, "").expect("finish");
    b.finish_task("t2", 3, "late").expect("finish again");
    let done = a.task("t2").expect("read").expect("t2");
    assert_eq!((done.state.code, done.state.error.as_str()), (0, ""));

    assert_eq!(a.delete_finished_tasks(now() + 10).expect("delete"), 2);
    assert!(a.task("t1").expect("read").is_none());
    assert!(a.task("nonexistent").expect("read").is_none());
}
