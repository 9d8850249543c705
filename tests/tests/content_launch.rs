//! Launching content as real Unix accounts (PAM accounts in a private
//! namespace): current-user content runs as each viewer, checked in /proc;
//! anonymous viewers get the RunAs account; per-content run_as works; shared
//! content serves several viewers from one process; accounts outside the
//! shared group, root and system accounts are refused with a clear page and
//! log line; the process sees none of connectd's files; a crashing app gives
//! an error page and connectd lives on.

use connect_tests::connectd::Connectd;
use connect_tests::content::*;
use connect_tests::*;
use serde_json::{json, Value};

fn whoami(server: &Connectd, guid: &str, cookie: Option<&str>) -> Value {
    let r = server.open(guid, "whoami", cookie);
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
    r.json()
}

#[test]
fn content_runs_as_the_viewer_the_runas_account_or_its_own_account() {
    if need_root() {
        return;
    }
    let sandbox = pam_world(&[]);
    let server = Connectd::start_in(&sandbox, &pam_config(""));
    let admin = sign_in(&server, "admin1");
    let viewer = sign_in(&server, "view1");

    // Current-user content, open to anyone.
    let app = server.create_content(
        &admin,
        json!({"name": "mine", "access_type": "all", "run_as_current_user": true}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    server.deploy(&admin, &guid, &probe_bundle());

    let as_viewer = whoami(&server, &guid, Some(&viewer));
    let as_admin = whoami(&server, &guid, Some(&admin));
    let anonymous = whoami(&server, &guid, None);
    for (seen, uid, name) in [
        (&as_viewer, 1503, "view1"),
        (&as_admin, 1501, "admin1"),
        (&anonymous, 999, "connect"),
    ] {
        let pid = host_pid(seen).expect("pid");
        assert_eq!(seen["uid"], uid, "{seen}");
        assert_eq!(seen["euid"], uid, "{seen}");
        assert_eq!(proc_uid(pid), Some(uid), "the kernel agrees: {seen}");
        assert_eq!(seen["env"]["USER"], name, "{seen}");
        assert_eq!(seen["env"]["LOGNAME"], name, "{seen}");
        assert_eq!(seen["env"]["CONNECT_CONTENT_GUID"], guid.as_str(), "{seen}");
        assert!(
            seen["env"]["CONNECT_SERVER"]
                .as_str()
                .is_some_and(|s| s.starts_with("http://")),
            "{seen}"
        );
        let groups: Vec<u64> = seen["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        assert!(groups.contains(&(SHARED_GID as u64)), "{seen}");
        assert!(!groups.contains(&0), "no root group: {seen}");
        assert_eq!(seen["umask"], "0o27", "{seen}");
    }
    assert_eq!(as_viewer["env"]["HOME"], "/home/view1");
    let pids: std::collections::HashSet<u64> = [&as_viewer, &as_admin, &anonymous]
        .iter()
        .map(|s| host_pid(s).expect("pid"))
        .collect();
    assert_eq!(pids.len(), 3, "one process per viewer");
    // Every process of the content shares one working directory.
    assert_eq!(as_viewer["cwd"], as_admin["cwd"]);
    assert_eq!(as_viewer["cwd"], anonymous["cwd"]);

    // The viewer's process sees nothing of connectd's data or configuration,
    // and a /tmp of its own.
    let data = sandbox.path("data");
    for hidden in [
        data.join("connect.db").display().to_string(),
        sandbox.config.display().to_string(),
    ] {
        let r = server.open(&guid, &format!("read?path={hidden}"), Some(&viewer));
        assert_eq!(r.status, 403, "{hidden} must be hidden: {}", r.body);
        assert_eq!(r.json()["errno"], 2, "hidden means absent: {}", r.body);
    }
    // Named per process: a second copy of the suite removes only its own.
    let marker_name = format!("connect-host-tmp-marker-{}", std::process::id());
    let marker = std::path::Path::new("/tmp").join(&marker_name);
    std::fs::write(&marker, "host").expect("marker");
    let r = server.open(&guid, "list?path=/tmp", Some(&viewer));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !r.body.contains(&marker_name),
        "the host's /tmp is hidden: {}",
        r.body
    );
    let _ = std::fs::remove_file(&marker);

    // connectd's session cookie never reaches the app; the identity does.
    let r = server.open(&guid, "headers", Some(&viewer));
    let headers = r.json();
    let cookie = headers["HTTP_COOKIE"].as_str().unwrap_or("");
    assert!(!cookie.contains("connect_session"), "{headers}");
    let credentials: Value = serde_json::from_str(
        headers["HTTP_RSTUDIO_CONNECT_CREDENTIALS"]
            .as_str()
            .expect("credentials header"),
    )
    .expect("credentials are JSON");
    assert_eq!(credentials["user"], "view1", "{headers}");

    // The same content as a shared account: one process for everyone.
    let r = server.json(
        "PATCH",
        &format!("/__api__/v1/content/{guid}"),
        &admin,
        &json!({"run_as_current_user": false}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let shared: Vec<Value> = [Some(viewer.as_str()), Some(admin.as_str()), None]
        .iter()
        .map(|c| whoami(&server, &guid, *c))
        .collect();
    assert!(
        shared.iter().all(|s| s["uid"] == 999
            && host_pid(s).is_some()
            && host_pid(s) == host_pid(&shared[0])),
        "one RunAs process serves every viewer: {shared:?}"
    );

    // Per-content run_as.
    let r = server.json(
        "PATCH",
        &format!("/__api__/v1/content/{guid}"),
        &admin,
        &json!({"run_as": "svcdata"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let own = whoami(&server, &guid, Some(&viewer));
    assert_eq!(own["uid"], 1650, "{own}");
    let own_pid = host_pid(&own).expect("pid");
    assert_eq!(proc_uid(own_pid), Some(1650));

    // A crash: the viewer gets a page, connectd lives, the next request
    // starts a new process.
    let spawned = server.open(&guid, "spawn", Some(&viewer)).json();
    let orphan = host_child_pid(&spawned).expect("child pid");
    assert!(alive(orphan));
    let r = server.open(&guid, "crash", Some(&viewer));
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("stopped unexpectedly"), "{}", r.body);
    let r = server.request(&connect_tests::connectd::HttpRequest {
        method: "GET",
        path: "/__ping__",
        headers: vec![],
        body: b"",
        source: None,
    });
    assert_eq!(r.status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(orphan) {
        assert!(
            std::time::Instant::now() < deadline,
            "the app's child outlived it"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let again = whoami(&server, &guid, Some(&viewer));
    // (Namespace numbers are reused once freed: compare host pids.)
    assert_ne!(
        host_pid(&again),
        Some(own_pid),
        "a new process after the crash"
    );

    // Owners read the processes and their logs.
    let jobs = server
        .get_with_cookie(&format!("/__api__/v1/content/{guid}/jobs"), &admin)
        .json();
    let jobs = jobs.as_array().expect("jobs");
    assert!(
        jobs.iter().any(|j| j["exit_code"] == 3),
        "the crash is recorded: {jobs:?}"
    );
    let run = jobs.iter().find(|j| j["kind"] == "run").expect("a run job");
    let log = server.get_with_cookie(
        &format!(
            "/__api__/v1/content/{guid}/jobs/{}/log",
            run["key"].as_str().expect("key")
        ),
        &admin,
    );
    assert_eq!(log.status, 200, "{}", log.body);
    assert!(
        log.body.contains("GET /whoami"),
        "per-process request log: {}",
        log.body
    );
    let r = server.get_with_cookie(&format!("/__api__/v1/content/{guid}/jobs"), &viewer);
    assert_eq!(
        r.status, 403,
        "viewers do not read process logs: {}",
        r.body
    );
    assert!(
        server.stop(),
        "connectd stops cleanly with processes running"
    );
}

#[test]
fn accounts_that_may_not_run_content_are_refused_clearly() {
    if need_root() {
        return;
    }
    let sandbox = pam_world(&[]);
    let server = Connectd::start_in(&sandbox, &pam_config(""));
    let admin = sign_in(&server, "admin1");
    let app = server.create_content(
        &admin,
        json!({"name": "mine", "access_type": "logged_in", "run_as_current_user": true}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    server.deploy(&admin, &guid, &probe_bundle());

    // Signed out: current-user content open to logged-in users asks for a sign-in.
    let r = server.open(&guid, "whoami", None);
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        r.header("location")
            .is_some_and(|l| l.starts_with("/__login__")),
        "{:?}",
        r.headers
    );

    for (name, expected) in [
        ("outsider", "is not a member of the group connect-users"),
        ("root", "root never runs content"),
        ("sysacct", "system account"),
        // Supplementary gid 0 only (primary group staff1500): refused at
        // launch as well as in a PATCH of run_as. (The page escapes the
        // apostrophe of "root's", so the text starts after it.)
        ("rootgrp", "group (gid 0), which never runs content"),
    ] {
        let cookie = sign_in(&server, name);
        let r = server.open(&guid, "whoami", Some(&cookie));
        assert_eq!(r.status, 403, "{name}: {}", r.body);
        assert!(r.body.contains(expected), "{name}: {}", r.body);
        assert!(
            server
                .log_lines_with("refused to launch content")
                .iter()
                .any(|l| l.contains(name) && l.contains(expected)),
            "{name}: the log says why:\n{}",
            server.log_text()
        );
    }
    // Nothing ran as any of them, and nothing as root: not in connectd's
    // records, and (for the accounts only these tests use) not in /proc.
    let refused = ["outsider", "root", "sysacct", "rootgrp"];
    let jobs = server
        .get_with_cookie(&format!("/__api__/v1/content/{guid}/jobs"), &admin)
        .json();
    for job in jobs.as_array().expect("jobs") {
        assert!(
            !refused.contains(&job["unix_account"].as_str().unwrap_or("")),
            "{job}"
        );
        assert_ne!(job["uid"], 0, "{job}");
    }
    for (name, uid) in [("outsider", 1700), ("sysacct", 500), ("rootgrp", 1660)] {
        let under_it = pids_of_uid(uid);
        assert!(under_it.is_empty(), "{name} runs processes {under_it:?}");
    }

    // A connectd that is killed (not stopped) leaves no content behind.
    let who = server.open(&guid, "whoami", Some(&admin));
    assert_eq!(who.status, 200, "{}", who.body);
    let pid = host_pid(&who.json()).expect("pid");
    assert!(alive(pid));
    server.kill();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} outlived a killed connectd"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Every process whose real uid is `uid`.
fn pids_of_uid(uid: u32) -> Vec<u64> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| proc_uid(*pid) == Some(uid))
        .collect()
}
