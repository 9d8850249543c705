//! The scheduler's policy through a fake launcher: nothing is forked, but
//! readiness, supervision, job rows and the pools are the real ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use connect_gcfg::Config;

use super::{AcquireError, Lease, Scheduler, STOP_GRACE};
use crate::accounts::provision::Provisioner;
use crate::config::Settings;
use crate::identity::fake::FakeProvider;
use crate::identity::login::Authenticator;
use crate::identity::{AccountSource, SignInMethod};
use crate::layout::Layout;
use crate::model::Content;
use crate::model::{NewContent, User};
use crate::roles::Role;
use crate::run::fake::{Behaviour, FakeLauncher};
use crate::run::pool::ProcessState;
use crate::store::{SqliteStore, Store};

/// An account that passes the run-as checks on any Linux machine: it is
/// the configured RunAs, so MinimumUid does not apply, and the shared group
/// defaults to its primary group.
const RUN_AS: &str = "nobody";

struct World {
    _data: tempfile::TempDir,
    store: Arc<dyn Store>,
    fake: Arc<FakeLauncher>,
    scheduler: Arc<Scheduler>,
    content: Content,
}

fn world(configure: impl FnOnce(&mut Settings), run_as_current_user: bool) -> World {
    world_with(configure, run_as_current_user, AccountSource::None)
}

/// A world whose sign-in provider gives viewers accounts from `accounts`.
fn world_with(
    configure: impl FnOnce(&mut Settings),
    run_as_current_user: bool,
    accounts: AccountSource,
) -> World {
    let data = tempfile::tempdir().expect("data dir");
    let config = Config::parse("", "test.gcfg").expect("empty config");
    let mut settings = Settings::from_config(&config).expect("defaults");
    settings.data_dir = data.path().to_path_buf();
    settings.run_as = RUN_AS.to_owned();
    settings.shared_group = None;
    configure(&mut settings);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().expect("store"));
    let owner = store
        .create_password_user("owner", "", "", "", "x", Role::Publisher)
        .expect("owner");
    let content = store
        .create_content(&NewContent {
            run_as_current_user,
            ..NewContent::open_to_all("app", owner.id)
        })
        .expect("create content")
        .expect("a new name");
    let bundle_id = store.create_bundle(content.id, 1).expect("bundle");
    let bundle_dir = Layout::new(data.path()).bundle_dir(&content.guid, bundle_id);
    std::fs::create_dir_all(&bundle_dir).expect("bundle dir");
    std::fs::write(
        bundle_dir.join("manifest.json"),
        r#"{"version": 1, "metadata": {"appmode": "python-api", "entrypoint": "app:app"}, "files": {}}"#,
    )
    .expect("manifest");
    store
        .mark_deployed(
            content.id,
            bundle_id,
            crate::bundle::AppMode::PythonApi,
            "1-test",
        )
        .expect("deployed");
    let content = store
        .content_by_guid(&content.guid)
        .expect("read back")
        .expect("exists");
    let settings = Arc::new(settings);
    let mut provider = FakeProvider::new(SignInMethod::Password);
    provider.accounts = accounts;
    let auth = Arc::new(Authenticator::new(
        settings.clone(),
        store.clone(),
        Arc::new(provider),
        // Viewers' accounts are in the store already: a socket that does
        // not exist would say so if something tried to provision.
        Provisioner::new("/nonexistent/provision.sock".into(), Duration::from_secs(1)),
    ));
    let fake = FakeLauncher::new();
    let scheduler = Scheduler::new(settings, store.clone(), auth, fake.clone());
    World {
        _data: data,
        store,
        fake,
        scheduler,
        content,
    }
}

/// Connections spread by LoadFactor: 1 process, 4 connections each.
fn limits(settings: &mut Settings, max_processes: u32, max_conns: u32, load_factor: f64) {
    settings.scheduler.max_processes = max_processes;
    settings.scheduler.max_conns_per_process = max_conns;
    settings.scheduler.load_factor = load_factor;
    settings.scheduler.init_timeout = Duration::from_secs(5);
}

impl World {
    async fn acquire(&self, viewer: Option<&User>) -> Result<Lease, AcquireError> {
        self.scheduler.acquire(&self.content, viewer).await
    }

    async fn lease(&self, viewer: Option<&User>) -> Lease {
        match self.acquire(viewer).await {
            Ok(lease) => lease,
            Err(e) => panic!("no process: {e}"),
        }
    }

    fn viewer(&self, name: &str) -> User {
        let user = self
            .store
            .create_password_user(name, "", "", "", "x", Role::Viewer)
            .expect("viewer");
        // Both viewers map to the one account every machine has: the pools
        // must still keep them apart.
        self.store
            .set_unix_account(user.id, RUN_AS)
            .expect("account");
        user
    }
}

/// Waits (at most two seconds) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn job(lease: &Lease) -> String {
    lease.process().job.clone()
}

#[tokio::test]
async fn the_pool_grows_by_load_factor() {
    let w = world(|s| limits(s, 3, 4, 0.5), false);
    let mut leases = Vec::new();
    let mut processes = Vec::new();
    for _ in 0..5 {
        leases.push(w.lease(None).await);
        processes.push(w.fake.started().len());
    }
    // A second process once a connection would put the pool above half
    // of 4; a third above half of 8.
    assert_eq!(processes, [1, 1, 2, 2, 3]);
    assert_eq!(w.scheduler.total(), 3);
    // Each new connection went to the least busy process.
    let mut per_job = std::collections::HashMap::<String, usize>::new();
    for lease in &leases {
        *per_job.entry(job(lease)).or_default() += 1;
    }
    let mut counts: Vec<usize> = per_job.into_values().collect();
    counts.sort();
    assert_eq!(counts, [1, 2, 2]);
    let started = w.fake.started();
    assert!(started.iter().all(|s| s.account == RUN_AS));
    assert!(started.iter().all(|s| s
        .env
        .iter()
        .any(|(k, v)| k == "CONNECT_CONTENT_GUID" && *v == w.content.guid)));
}

#[tokio::test]
async fn max_processes_answers_content_full() {
    let w = world(|s| limits(s, 1, 2, 1.0), false);
    let first = w.lease(None).await;
    let second = w.lease(None).await;
    assert_eq!(job(&first), job(&second), "room on the one process");
    match w.acquire(None).await {
        Err(AcquireError::ContentBusy {
            max_processes: 1,
            max_conns: 2,
        }) => {}
        Err(e) => panic!("wrong refusal: {e}"),
        Ok(_) => panic!("a third connection found room"),
    }
    assert_eq!(w.fake.started().len(), 1);
    drop(second);
    let again = w.lease(None).await;
    assert_eq!(job(&again), job(&first), "a freed connection is reused");
}

#[tokio::test]
async fn max_total_processes_answers_server_full() {
    let w = world(
        |s| {
            limits(s, 3, 1, 1.0);
            s.scheduler.max_total_processes = 2;
        },
        false,
    );
    let _a = w.lease(None).await;
    let _b = w.lease(None).await;
    match w.acquire(None).await {
        Err(AcquireError::ServerBusy(2)) => {}
        Err(e) => panic!("wrong refusal: {e}"),
        Ok(_) => panic!("a third process started"),
    }
    assert_eq!(w.fake.started().len(), 2);
    assert_eq!(w.scheduler.total(), 2);
}

#[tokio::test]
async fn idle_processes_stop_but_min_processes_stay() {
    let w = world(
        |s| {
            limits(s, 3, 1, 1.0);
            s.scheduler.min_processes = 1;
            s.scheduler.idle_timeout = Duration::from_millis(50);
        },
        false,
    );
    let a = w.lease(None).await;
    let b = w.lease(None).await;
    let jobs = [job(&a), job(&b)];
    assert_ne!(jobs[0], jobs[1]);
    // Busy processes are never reaped, however long they have run.
    tokio::time::sleep(Duration::from_millis(100)).await;
    w.scheduler.reap_once();
    assert!(w.fake.stopped().is_empty(), "a busy process was reaped");
    drop((a, b));
    tokio::time::sleep(Duration::from_millis(100)).await;
    w.scheduler.reap_once();
    eventually("one process is left", || w.scheduler.total() == 1).await;
    let stopped = w.fake.stopped();
    assert_eq!(stopped.len(), 1, "MinProcesses = 1 keeps one: {stopped:?}");
    assert!(jobs.contains(&stopped[0]));
    assert_eq!(w.fake.grace_of(&stopped[0]), Some(STOP_GRACE));
    // The last one stays however long it idles.
    tokio::time::sleep(Duration::from_millis(100)).await;
    w.scheduler.reap_once();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(w.scheduler.total(), 1);
    assert_eq!(w.fake.stopped().len(), 1);
    let ended: Vec<_> = w
        .store
        .jobs(w.content.id)
        .expect("jobs")
        .into_iter()
        .filter(|j| j.ended_time.is_some())
        .map(|j| j.key)
        .collect();
    assert_eq!(ended, stopped, "the reaped process's job row ended");
}

#[tokio::test]
async fn init_timeout_stops_a_process_that_never_listens() {
    let w = world(
        |s| {
            limits(s, 3, 4, 0.5);
            s.scheduler.init_timeout = Duration::from_millis(300);
        },
        false,
    );
    w.fake.next(Behaviour::NeverListen);
    let started = Instant::now();
    let error = match w.acquire(None).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a process that never listens was used"),
    };
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        error.contains("did not listen within InitTimeout"),
        "{error}"
    );
    let job = w.fake.started()[0].job.clone();
    eventually("the process is stopped and forgotten", || {
        w.scheduler.total() == 0
    })
    .await;
    assert_eq!(w.fake.stopped(), vec![job.clone()]);
    let row = w.store.jobs(w.content.id).expect("jobs");
    assert_eq!(row.len(), 1);
    assert_eq!(row[0].key, job);
    assert!(row[0].ended_time.is_some());
    // The next request starts afresh, and this one listens.
    let lease = w.lease(None).await;
    assert_ne!(lease.process().job, job);
}

#[tokio::test]
async fn a_crash_is_reported_and_the_next_request_gets_a_fresh_process() {
    let w = world(|s| limits(s, 1, 20, 1.0), false);
    let lease = w.lease(None).await;
    let crashed = job(&lease);
    let process = lease.process().clone();
    w.fake.exit(&crashed, 3);
    eventually("the crash is noticed", || w.scheduler.total() == 0).await;
    assert_eq!(
        *process.state.borrow(),
        ProcessState::Exited("the process ended (exit status: 3)".to_owned())
    );
    let rows = w.store.jobs(w.content.id).expect("jobs");
    assert_eq!(rows[0].key, crashed);
    assert_eq!(rows[0].exit_code, Some(3));
    assert!(rows[0].ended_time.is_some());
    assert!(w.fake.stopped().is_empty(), "it ended by itself");
    // Even with a connection still held on the dead one (MaxProcesses 1),
    // the next request gets a new process.
    let fresh = w.lease(None).await;
    assert_ne!(job(&fresh), crashed);
    assert_eq!(w.fake.started().len(), 2);
    drop(lease);
}

#[tokio::test]
async fn a_process_that_exits_before_listening_fails_the_request() {
    let w = world(|s| limits(s, 3, 4, 0.5), false);
    w.fake.next(Behaviour::ExitAtOnce(1));
    match w.acquire(None).await {
        Err(AcquireError::StartFailed(why)) => {
            assert_eq!(why, "the process ended (exit status: 1)")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a dead process was used"),
    }
    eventually("it is forgotten", || w.scheduler.total() == 0).await;
}

#[tokio::test]
async fn a_launch_failure_is_reported_in_the_log_and_the_job_row() {
    let w = world(|s| limits(s, 3, 4, 0.5), false);
    w.fake
        .next(Behaviour::FailToStart("cannot start /bin/app".to_owned()));
    match w.acquire(None).await {
        Err(AcquireError::StartFailed(why)) => assert_eq!(why, "cannot start /bin/app"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a process that failed to start was used"),
    }
    assert_eq!(w.scheduler.total(), 0);
    let rows = w.store.jobs(w.content.id).expect("jobs");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].pid, None);
    assert!(rows[0].ended_time.is_some());
    let log = std::fs::read_to_string(&rows[0].log_path).expect("log");
    assert_eq!(
        log,
        "connectd: could not start this process: cannot start /bin/app\n"
    );
}

#[tokio::test]
async fn current_user_content_never_shares_a_process_across_viewers() {
    let w = world_with(
        |s| {
            limits(s, 1, 20, 1.0);
            s.run_as_current_user = true;
        },
        true,
        // Viewers' accounts come from the store, as provisioned.
        AccountSource::Provisioned,
    );
    let alice = w.viewer("alice");
    let bob = w.viewer("bob");
    let a = w.lease(Some(&alice)).await;
    let b = w.lease(Some(&bob)).await;
    assert_ne!(job(&a), job(&b), "two viewers shared a process");
    // Each viewer's pool is their own: MaxProcesses = 1 applies per viewer,
    // and Alice's second connection joins her process.
    let a2 = w.lease(Some(&alice)).await;
    assert_eq!(job(&a2), job(&a));
    assert_eq!(w.fake.started().len(), 2);
    let mut viewers: Vec<Option<String>> = w
        .store
        .jobs(w.content.id)
        .expect("jobs")
        .into_iter()
        .map(|j| j.viewer_guid)
        .collect();
    viewers.sort();
    let mut expected = vec![Some(alice.guid.clone()), Some(bob.guid.clone())];
    expected.sort();
    assert_eq!(viewers, expected);
    // An anonymous viewer runs as RunAs, in a pool of its own.
    let anonymous = w.lease(None).await;
    assert_ne!(job(&anonymous), job(&a));
    assert_ne!(job(&anonymous), job(&b));
}

#[tokio::test]
async fn a_launcher_that_hands_out_tcp_ports_gets_apps_on_tcp() {
    use crate::proxy::Target;
    use crate::run::launcher::Endpoint;

    let w = world(|s| limits(s, 1, 4, 1.0), false);
    w.fake.hand_out_tcp();
    let lease = w.lease(None).await;
    let started = w.fake.started();
    assert_eq!(started.len(), 1);
    let Some(Endpoint::Tcp(address)) = started[0].listen else {
        panic!("the spec listens on {:?}", started[0].listen);
    };
    // The proxy goes where the launcher said, and the process was ready
    // there (the fake's port accepted the readiness probe).
    assert_eq!(lease.process().upstream.target(), &Target::Tcp(address));
    // The app was told to listen there: python-api's runner binds it
    // rather than a socket.
    let args = &started[0].args;
    let bind = args.iter().position(|a| a == "--bind");
    let bind = bind.unwrap_or_else(|| panic!("no --bind in {args:?}"));
    assert_eq!(args[bind + 1], address.to_string());
    assert!(!args.iter().any(|a| a == "--socket"), "{args:?}");
}

#[tokio::test]
async fn a_tcp_port_nobody_listens_on_is_not_ready() {
    let w = world(
        |s| {
            limits(s, 1, 4, 1.0);
            s.scheduler.init_timeout = Duration::from_millis(300);
        },
        false,
    );
    w.fake.hand_out_tcp();
    w.fake.next(Behaviour::NeverListen);
    let error = match w.acquire(None).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a process whose port refuses connections was used"),
    };
    assert!(
        error.contains("did not listen within InitTimeout"),
        "{error}"
    );
    let job = w.fake.started()[0].job.clone();
    eventually("the process is stopped", || {
        w.fake.stopped() == [job.clone()]
    })
    .await;
}
