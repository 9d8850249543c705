//! The scheduler with real processes: 20 concurrent viewers of current-user
//! content make 20 processes under 20 uids; the server-wide cap answers
//! "busy" instead of starting a 21st; idle processes are reaped; shared
//! content that is full answers "busy" too. Requests are known to be in
//! flight because the probe says it holds them (`/hold`), never by sleeping.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use connect_tests::connectd::Connectd;
use connect_tests::content::*;
use connect_tests::*;
use serde_json::json;

fn running_jobs(server: &Connectd, cookie: &str, guid: &str) -> Vec<serde_json::Value> {
    server
        .get_with_cookie(&format!("/__api__/v1/content/{guid}/jobs"), cookie)
        .json()
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|j| j["running"] == true && j["kind"] == "run")
        .cloned()
        .collect()
}

#[test]
fn twenty_viewers_twenty_processes_a_cap_and_reaping() {
    if need_root() {
        return;
    }
    let viewers = numbered_viewers(20);
    let sandbox = pam_world(&viewers);
    let server = Connectd::start_in(
        &sandbox,
        &pam_config("[Scheduler]\nMaxTotalProcesses = 20\n"),
    );
    let admin = sign_in(&server, "admin1");
    let app = server.create_content(
        &admin,
        json!({"name": "crowd", "access_type": "logged_in", "run_as_current_user": true,
               "idle_timeout": IDLE_SECONDS}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    server.deploy(&admin, &guid, &probe_bundle());
    let work = work_dir(&sandbox, &guid);
    let cookies: Vec<(String, u32, String)> = viewers
        .iter()
        .map(|(name, uid)| (name.clone(), *uid, sign_in(&server, name)))
        .collect();

    // All at once, each holding a request until the test releases it. A
    // process with a request in flight is never idle, so however slowly
    // the 20 cold starts go, none is reaped before all 20 run.
    std::thread::scope(|scope| {
        let release = ReleaseOnDrop::new(&work, cookies.iter().map(|(name, ..)| name.clone()));
        let handles: Vec<_> = cookies
            .iter()
            .map(|(name, _, cookie)| {
                let (server, guid) = (&server, &guid);
                scope.spawn(move || hold_until_released(server, guid, name, cookie))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(300);
        let held: Vec<(u32, Held)> = loop {
            let held: Vec<(u32, Held)> = cookies
                .iter()
                .filter_map(|(name, uid, _)| read_held(&work, name).map(|h| (*uid, h)))
                .collect();
            if held.len() == cookies.len() {
                break held;
            }
            if let Some(done) = handles.iter().position(|h| h.is_finished()) {
                let answer = handles.into_iter().nth(done).map(|h| h.join());
                panic!(
                    "a viewer's request ended before it was released: {answer:?}\n{}",
                    server.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "only {} of 20 requests are held after 300 s:\n{}",
                held.len(),
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };

        let mut pids = HashSet::new();
        for (uid, process) in &held {
            assert_eq!(process.uid, *uid, "the process runs as its viewer");
            assert_eq!(proc_uid(process.pid), Some(*uid), "/proc agrees for {uid}");
            pids.insert(process.pid);
        }
        assert_eq!(pids.len(), 20, "20 viewers, 20 processes");
        assert_eq!(running_jobs(&server, &admin, &guid).len(), 20);

        // The 21st process would pass [Scheduler] MaxTotalProcesses: busy.
        let r = server.open(&guid, "whoami", Some(&admin));
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.header("retry-after"), Some("5"));
        assert!(r.body.contains("MaxTotalProcesses"), "{}", r.body);
        // A viewer who has a process is still served by it.
        let (_, uid, cookie) = &cookies[0];
        let r = server.open(&guid, "whoami", Some(cookie));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["uid"], *uid);
        assert_eq!(host_pid(&r.json()), Some(held[0].1.pid));

        drop(release);
        for handle in handles {
            let (status, body) = handle.join().expect("viewer thread");
            assert_eq!(status, 200, "{body}");
        }

        // Idle for IdleTimeout: every process is reaped, and connectd has
        // recorded each end (a killed process dies a moment before its
        // supervisor notices).
        let deadline = Instant::now() + Duration::from_secs(60);
        while pids.iter().any(|p| alive(*p)) || !running_jobs(&server, &admin, &guid).is_empty() {
            assert!(
                Instant::now() < deadline,
                "idle processes were not reaped:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    assert!(!server
        .log_lines_with("stopping an idle content process")
        .is_empty());
    // Room again.
    let r = server.open(&guid, "whoami", Some(&admin));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["uid"], 1501);
}

/// IdleTimeout of the crowd: short, since the test waits for the reaping;
/// a held request keeps a process from counting as idle at all.
const IDLE_SECONDS: u64 = 3;

/// Holds `hold?name=<name>` until the test releases it, asking again each
/// time the probe gives up waiting (so no answer takes longer than the
/// client's read timeout); the gaps are far shorter than IdleTimeout.
/// Returns the last answer's status and body.
fn hold_until_released(server: &Connectd, guid: &str, name: &str, cookie: &str) -> (u16, String) {
    loop {
        let r = server.open(guid, &format!("hold?name={name}&seconds=10"), Some(cookie));
        if r.status != 200 || r.json()["released"] == true {
            return (r.status, r.body);
        }
    }
}

#[test]
fn full_shared_content_answers_busy_and_recovers() {
    if need_root() {
        return;
    }
    let sandbox = pam_world(&[]);
    let server = Connectd::start_in(&sandbox, &pam_config(""));
    let admin = sign_in(&server, "admin1");
    let viewer = sign_in(&server, "view1");
    let app = server.create_content(
        &admin,
        json!({"name": "narrow", "access_type": "all", "max_processes": 1,
               "max_conns_per_process": 1}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    server.deploy(&admin, &guid, &probe_bundle());
    assert_eq!(server.open(&guid, "whoami", None).status, 200);

    let work = work_dir(&sandbox, &guid);
    std::thread::scope(|scope| {
        let release = ReleaseOnDrop::new(&work, ["holder".to_owned()]);
        let holder =
            scope.spawn(|| server.open(&guid, "hold?name=holder&seconds=45", Some(&viewer)));
        // The one connection is in flight once the probe says it holds it.
        wait_until_held(&work, "holder", Duration::from_secs(60), || {
            server.log_text()
        });
        let r = server.open(&guid, "whoami", None);
        drop(release);
        assert_eq!(r.status, 503, "one process, one connection: {}", r.body);
        assert!(r.body.contains("MaxConnsPerProcess"), "{}", r.body);
        let held = holder.join().expect("holder");
        assert_eq!(held.status, 200, "{}", held.body);
        assert_eq!(
            held.json()["released"],
            true,
            "held throughout: {}",
            held.body
        );
    });
    let r = server.open(&guid, "whoami", None);
    assert_eq!(r.status, 200, "free again: {}", r.body);
    let pid = host_pid(&r.json()).expect("pid");

    // Deleting content stops its processes and removes its files.
    let r = server.send(
        "DELETE",
        &format!("/__api__/v1/content/{guid}"),
        Some(&viewer),
        "application/json",
        b"",
    );
    assert_eq!(
        r.status, 403,
        "only the owner or an administrator: {}",
        r.body
    );
    let r = server.send(
        "DELETE",
        &format!("/__api__/v1/content/{guid}"),
        Some(&admin),
        "application/json",
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let files = sandbox.path("data").join("apps").join(&guid);
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(pid) || files.exists() {
        assert!(Instant::now() < deadline, "process or files left behind");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.open(&guid, "whoami", None).status, 404);
}

#[test]
fn redeploying_builds_beside_the_live_environment_and_replaces_processes() {
    if need_root() {
        return;
    }
    let sandbox = pam_world(&[]);
    let server = Connectd::start_in(&sandbox, &pam_config(""));
    let admin = sign_in(&server, "admin1");
    let app = server.create_content(&admin, json!({"name": "again", "access_type": "all"}));
    let guid = app["guid"].as_str().expect("guid").to_owned();
    let bundle = probe_bundle();
    server.deploy(&admin, &guid, &bundle);
    let first = server.open(&guid, "whoami", None).json();
    let old_pid = host_pid(&first).expect("pid");

    // The same bundle again (a plain redeploy) while the process runs.
    server.deploy(&admin, &guid, &bundle);
    let second = server.open(&guid, "whoami", None);
    assert_eq!(second.status, 200, "{}", second.body);
    let new_pid = host_pid(&second.json()).expect("pid");
    assert_ne!(new_pid, old_pid, "new deployment, new process");
    let envs = sandbox.path("data").join("apps").join(&guid).join("envs");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let count = std::fs::read_dir(&envs).expect("envs").count();
        if !alive(old_pid) && count == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old process alive: {}, environments: {count}",
            alive(old_pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A failed build leaves the live deployment serving.
    let broken = bundle_with_requirement("no-such-package-connect-test==0.0.0");
    let r = server.send(
        "POST",
        &format!("/__api__/v1/content/{guid}/bundles"),
        Some(&admin),
        "application/gzip",
        &broken,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let bundle_id = r.json()["id"].as_str().expect("id").to_owned();
    let r = server.json(
        "POST",
        &format!("/__api__/v1/content/{guid}/deploy"),
        &admin,
        &json!({ "bundle_id": bundle_id }),
    );
    let task = r.json()["task_id"].as_str().expect("task").to_owned();
    // As long as the deploy helper allows a build that succeeds.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let t = server
            .get_with_cookie(&format!("/__api__/v1/tasks/{task}?wait=5"), &admin)
            .json();
        if t["finished"] == true {
            assert_ne!(t["code"], 0, "the build must fail: {t}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the failing build's task never finished: {t}\n{}",
            server.log_text()
        );
        // `wait` returns as soon as the task has output; do not spin.
        std::thread::sleep(Duration::from_millis(200));
    }
    let still = server.open(&guid, "whoami", None);
    assert_eq!(still.status, 200, "{}", still.body);
    assert_eq!(host_pid(&still.json()), Some(new_pid));
    assert_eq!(std::fs::read_dir(&envs).expect("envs").count(), 1);
}

fn bundle_with_requirement(requirement: &str) -> Vec<u8> {
    let manifest = json!({
        "version": 1,
        "metadata": {"appmode": "python-api", "entrypoint": "app:app"},
        "python": {"package_manager": {"name": "pip", "package_file": "requirements.txt"}},
    })
    .to_string();
    bundle(&[
        ("manifest.json", &manifest),
        ("requirements.txt", requirement),
        ("app.py", PROBE_APP),
    ])
}

#[test]
fn a_process_that_never_listens_is_stopped_after_init_timeout() {
    if need_root() {
        return;
    }
    let sandbox = pam_world(&[]);
    let server = Connectd::start_in(&sandbox, &pam_config(""));
    let admin = sign_in(&server, "admin1");
    let app = server.create_content(
        &admin,
        json!({"name": "stuck", "access_type": "all", "init_timeout": 2}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    let manifest = json!({
        "version": 1,
        "metadata": {"appmode": "python-api", "entrypoint": "app:app"},
    })
    .to_string();
    server.deploy(
        &admin,
        &guid,
        &bundle(&[
            ("manifest.json", &manifest),
            ("app.py", "import time\ntime.sleep(1000)\n"),
        ]),
    );
    let started = Instant::now();
    let r = server.open(&guid, "", None);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("InitTimeout"), "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !running_jobs(&server, &admin, &guid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the stuck process was not stopped:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!server
        .log_lines_with("did not listen within InitTimeout")
        .is_empty());
}
