//! Content processes get nothing of connectd's environment (README, "Each
//! process"): a marker set in connectd's environment is in connectd's
//! /proc/<pid>/environ and in no content process's, whether the process
//! runs as the viewer or as RunAs.

use connect_tests::connectd::Connectd;
use connect_tests::content::*;
use connect_tests::*;
use serde_json::json;

const MARKER_NAME: &str = "CONNECTD_ONLY_MARKER";
const MARKER_VALUE: &str = "connectd-environment-must-not-leak-7f3a";

/// `/proc/<pid>/environ` as `NAME=value` strings (the kernel's word).
fn environ(pid: u64) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/environ: {e}"));
    raw.split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

#[test]
fn content_processes_get_nothing_of_connectds_environment() {
    if need_root() {
        return;
    }
    let sandbox = pam_world(&[]);
    let server =
        Connectd::start_in_with_env(&sandbox, &pam_config(""), &[(MARKER_NAME, MARKER_VALUE)]);
    let marker = format!("{MARKER_NAME}={MARKER_VALUE}");
    assert!(
        environ(server.pid() as u64).contains(&marker),
        "the marker is in connectd's own environment (pid {})",
        server.pid()
    );

    let admin = sign_in(&server, "admin1");
    let app = server.create_content(
        &admin,
        json!({"name": "env", "access_type": "all", "run_as_current_user": true}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    server.deploy(&admin, &guid, &probe_bundle());

    // One process as the viewer, one as RunAs (anonymous).
    for cookie in [Some(admin.as_str()), None] {
        let r = server.open(&guid, "whoami", cookie);
        assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
        let seen = r.json();
        let pid = host_pid(&seen).expect("pid");
        let env = environ(pid);
        // The right process: the environment connectd built for it.
        assert!(
            env.contains(&format!("CONNECT_CONTENT_GUID={guid}")),
            "pid {pid}: {env:?}"
        );
        let leaked: Vec<&String> = env
            .iter()
            .filter(|e| e.contains(MARKER_NAME) || e.contains(MARKER_VALUE))
            .collect();
        assert!(
            leaked.is_empty(),
            "content process {pid} (uid {}) has connectd's {leaked:?}; its whole \
             environment: {env:?}",
            seen["uid"]
        );
    }
}
