//! The README's scaling rules with real processes: a new process starts
//! when connections would pass `LoadFactor` x capacity (and not before),
//! and a shared pool keeps `MinProcesses` processes past `IdleTimeout`
//! while stopping the rest. Connections are known to be in flight because
//! the probe says it holds them (`/hold`), never by sleeping.

use std::time::{Duration, Instant};

use connect_tests::connectd::{Connectd, HttpResponse};
use connect_tests::content::*;
use connect_tests::*;
use serde_json::{json, Value};

/// IdleTimeout of the pool whose reaping the test waits for.
const IDLE_SECONDS: u64 = 3;

/// How long the probe holds a request at most: far beyond what the test
/// needs, and inside the test client's 60 s read timeout.
const HOLD_SECONDS: u64 = 45;

fn running_pids(server: &Connectd, cookie: &str, guid: &str) -> Vec<u64> {
    let mut pids: Vec<u64> = server
        .get_with_cookie(&format!("/__api__/v1/content/{guid}/jobs"), cookie)
        .json()
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|j| j["running"] == true && j["kind"] == "run")
        .filter_map(|j| j["pid"].as_u64())
        .collect();
    pids.sort_unstable();
    pids
}

fn deployed(server: &Connectd, admin: &str, fields: Value) -> String {
    let app = server.create_content(admin, fields);
    let guid = app["guid"].as_str().expect("guid").to_owned();
    server.deploy(admin, &guid, &probe_bundle());
    // Warm: the first process runs before the holds begin, so no hold
    // waits for a cold start on top of its own time.
    let r = server.open(&guid, "whoami", None);
    assert_eq!(r.status, 200, "{}", r.body);
    guid
}

/// Opens `count` connections to `guid` one after the other, each only
/// once the one before is held (so the scheduler saw it), and returns the
/// process that holds each; `then` runs while all are held, after which
/// they are released and must have been held throughout.
fn hold_in_turn(
    server: &Connectd,
    sandbox: &Sandbox,
    guid: &str,
    count: usize,
    then: impl FnOnce(&[Held]),
) {
    let work = work_dir(sandbox, guid);
    let prefix = &guid[..8];
    std::thread::scope(|scope| {
        let release = ReleaseOnDrop::new(&work, (0..count).map(|i| format!("{prefix}-{i}")));
        let mut handles = Vec::new();
        let mut held = Vec::new();
        for i in 0..count {
            let name = format!("{prefix}-{i}");
            let path = format!("hold?name={name}&seconds={HOLD_SECONDS}");
            handles.push(scope.spawn(move || server.open(guid, &path, None)));
            held.push(wait_until_held(
                &work,
                &name,
                Duration::from_secs(120),
                || server.log_text(),
            ));
        }
        then(&held);
        drop(release);
        for handle in handles {
            let r: HttpResponse = handle.join().expect("holder");
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.json()["released"], true, "held throughout: {}", r.body);
        }
    });
}

#[test]
fn load_factor_starts_processes_and_min_processes_outlive_idle_timeout() {
    if need_root() {
        return;
    }
    let sandbox = pam_world(&[]);
    let server = Connectd::start_in(&sandbox, &pam_config(""));
    let admin = sign_in(&server, "admin1");

    // Capacity 4 connections a process. LoadFactor 0.5: a connection that
    // would make more than 2 on one process starts another.
    let eager = deployed(
        &server,
        &admin,
        json!({"name": "eager", "access_type": "all", "max_processes": 3,
               "max_conns_per_process": 4, "load_factor": 0.5, "min_processes": 1,
               "idle_timeout": IDLE_SECONDS}),
    );
    let mut two = Vec::new();
    hold_in_turn(&server, &sandbox, &eager, 3, |held| {
        assert_eq!(
            held[1].pid, held[0].pid,
            "2 connections of 4 is LoadFactor 0.5, not past it: one process"
        );
        assert_ne!(
            held[2].pid,
            held[0].pid,
            "a 3rd connection passes 0.5 x 4: a second process:\n{}",
            server.log_text()
        );
        let mut expected = vec![held[0].pid, held[2].pid];
        expected.sort_unstable();
        assert_eq!(running_pids(&server, &admin, &eager), expected);
        two = expected;
    });

    // LoadFactor 1: the same three connections share the one process.
    let patient = deployed(
        &server,
        &admin,
        json!({"name": "patient", "access_type": "all", "max_processes": 3,
               "max_conns_per_process": 4, "load_factor": 1.0, "idle_timeout": 600}),
    );
    hold_in_turn(&server, &sandbox, &patient, 3, |held| {
        assert!(
            held.iter().all(|h| h.pid == held[0].pid),
            "3 of 4 connections is below LoadFactor 1: one process, not {held:?}"
        );
        assert_eq!(running_pids(&server, &admin, &patient), vec![held[0].pid]);
    });

    // The eager pool has been idle since its holds ended: IdleTimeout stops
    // one of its two processes, and MinProcesses (1) keeps the other.
    let deadline = Instant::now() + Duration::from_secs(60);
    while two.iter().all(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "no idle process was stopped within 60 s:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The survivor must outlast several more IdleTimeouts (the reaper looks
    // twice a second): survival can only be shown by letting time pass.
    std::thread::sleep(Duration::from_secs(3 * IDLE_SECONDS));
    let survivors: Vec<u64> = two.iter().copied().filter(|p| alive(*p)).collect();
    assert_eq!(
        survivors.len(),
        1,
        "MinProcesses = 1 survives IdleTimeout:\n{}",
        server.log_text()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while running_pids(&server, &admin, &eager) != survivors {
        assert!(
            Instant::now() < deadline,
            "connectd records {:?} running, not {survivors:?}",
            running_pids(&server, &admin, &eager)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = server.open(&eager, "whoami", None);
    assert_eq!(host_pid(&r.json()), Some(survivors[0]), "{}", r.body);
}
