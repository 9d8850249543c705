//! `[Scheduler] MemoryLimit`: each content process has a cgroup of its own
//! with the limit; one that grows past it is killed, its viewer gets a page
//! that says so, and other content keeps serving from its own process.

use connect_tests::connectd::Connectd;
use connect_tests::content::*;
use connect_tests::*;
use serde_json::json;

#[test]
fn a_memory_hungry_app_is_killed_at_its_limit_and_others_keep_serving() {
    if need_root() {
        return;
    }
    let sandbox = pam_world(&[]);
    // 128 MiB.
    let server = Connectd::start_in(
        &sandbox,
        &pam_config("[Scheduler]\nMemoryLimit = 134217728\n"),
    );
    let admin = sign_in(&server, "admin1");
    let mut guids = Vec::new();
    for name in ["hungry", "steady"] {
        let app = server.create_content(&admin, json!({"name": name, "access_type": "all"}));
        let guid = app["guid"].as_str().expect("guid").to_owned();
        server.deploy(&admin, &guid, &probe_bundle());
        guids.push(guid);
    }
    let (hungry, steady) = (&guids[0], &guids[1]);

    let before = server.open(steady, "whoami", Some(&admin));
    assert_eq!(before.status, 200, "{}", before.body);
    let steady_pid = host_pid(&before.json()).expect("steady's pid");
    // Within the limit it answers; past it, it is killed.
    let small = server.open(hungry, "hog?mib=16", Some(&admin));
    assert_eq!(small.status, 200, "{}", small.body);
    let r = server.open(hungry, "hog?mib=1024", Some(&admin));
    assert_eq!(r.status, 503, "{}\n{}", r.body, server.log_text());
    assert!(r.body.contains("ran out of memory"), "{}", r.body);
    assert!(r.body.contains("memory limit of 128 MiB"), "{}", r.body);
    assert!(
        server
            .log_text()
            .contains("killed for using more than its memory limit of 128 MiB"),
        "{}",
        server.log_text()
    );

    // Each process is in a cgroup of its own.
    let cgroups = std::fs::read_to_string(format!("/proc/{steady_pid}/cgroup")).expect("cgroup");
    assert!(cgroups.contains("/job-"), "{cgroups}");
    // Out of memory, the kernel picks the content, never the sandbox's
    // init (its parent) that would take the namespace down with it.
    let score = |pid: u64| {
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).expect("oom_score_adj")
    };
    let stat = std::fs::read_to_string(format!("/proc/{steady_pid}/stat")).expect("stat");
    let init: u64 = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|ppid| ppid.parse().ok())
        .expect("ppid");
    assert_eq!(score(steady_pid).trim(), "0");
    // Unless the host withholds CAP_SYS_RESOURCE (some containers).
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .expect("CapEff");
    const CAP_SYS_RESOURCE: u64 = 24;
    if effective & (1 << CAP_SYS_RESOURCE) != 0 {
        assert_eq!(score(init).trim(), "-1000");
    } else {
        eprintln!("no CAP_SYS_RESOURCE here: init's OOM protection not checked");
    }
    // The other app kept serving, from the same process.
    let after = server.open(steady, "whoami", Some(&admin));
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(host_pid(&after.json()), Some(steady_pid));
    // And the hungry one starts again on the next request.
    let again = server.open(hungry, "whoami", Some(&admin));
    assert_eq!(again.status, 200, "{}", again.body);

    // A content item may ask for less than the server's limit, never more.
    let patch = |body: serde_json::Value| {
        server.json(
            "PATCH",
            &format!("/__api__/v1/content/{hungry}"),
            &admin,
            &body,
        )
    };
    let r = patch(json!({"memory_limit": 256u64 << 20}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("may not exceed the Scheduler.MemoryLimit"),
        "{}",
        r.body
    );
    let r = patch(json!({"memory_limit": 1000}));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = patch(json!({"memory_limit": 64u64 << 20}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["memory_limit"], 64u64 << 20);
    // Its next process has the lower limit: 96 MiB, under the server's
    // 128, is now too much.
    let r = server.open(hungry, "hog?mib=96", Some(&admin));
    assert_eq!(r.status, 503, "{}\n{}", r.body, server.log_text());
    assert!(r.body.contains("memory limit of 64 MiB"), "{}", r.body);

    // What connectd said at start-up about where the limits live.
    let log = server.log_text();
    assert!(
        log.contains("content limits (MemoryLimit 128 MiB") && !log.contains("NOT enforced"),
        "{log}"
    );
}
