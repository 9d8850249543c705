//! The review's attack, through connectd: an app running as the RunAs
//! account tried to reach another content item's process that also runs as
//! that account, through /proc/<pid>/root and environ, its working
//! directory and its socket. Each content process now has its own PID
//! namespace and /proc, and other content's files and sockets are under the
//! hidden data directory.

use connect_tests::connectd::Connectd;
use connect_tests::content::*;
use connect_tests::*;
use serde_json::{json, Value};

fn open_json(server: &Connectd, guid: &str, path: &str, admin: &str) -> (u16, Value) {
    let r = server.open(guid, path, Some(admin));
    let json = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, json)
}

#[test]
fn two_apps_of_one_account_cannot_see_read_signal_or_connect_to_each_other() {
    if need_root() {
        return;
    }
    let sandbox = pam_world(&[]);
    let server = Connectd::start_in(&sandbox, &pam_config(""));
    let admin = sign_in(&server, "admin1");
    let mut guids = Vec::new();
    for name in ["attacker", "victim"] {
        let app = server.create_content(&admin, json!({"name": name, "access_type": "all"}));
        let guid = app["guid"].as_str().expect("guid").to_owned();
        server.deploy(&admin, &guid, &probe_bundle());
        guids.push(guid);
    }
    let (attacker, victim) = (&guids[0], &guids[1]);
    let (_, me) = open_json(&server, attacker, "whoami", &admin);
    let (_, them) = open_json(&server, victim, "whoami", &admin);
    assert_eq!(me["uid"], them["uid"], "both run as RunAs: {me} {them}");
    let victim_pid = host_pid(&them).expect("the victim's pid");
    // The victim writes a file in its working directory.
    let (status, _) = open_json(&server, victim, "write?name=secret.txt&text=s3cret", &admin);
    assert_eq!(status, 200);

    // Only the attacker's own namespace is in its /proc.
    let (status, listing) = open_json(&server, attacker, "list?path=/proc", &admin);
    assert_eq!(status, 200, "{listing}");
    let pids: Vec<&str> = listing["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(Value::as_str)
        .filter(|e| e.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(pids, ["1", "2"], "{listing}");

    // The victim's process, by the pid the host knows it by.
    for path in [
        format!("read?path=/proc/{victim_pid}/environ"),
        format!("list?path=/proc/{victim_pid}/root/"),
        format!("list?path=/proc/{victim_pid}/cwd/"),
    ] {
        let (status, answer) = open_json(&server, attacker, &path, &admin);
        assert_eq!(status, 403, "{path}: {answer}");
        assert_eq!(answer["errno"], 2, "ENOENT for {path}: {answer}");
    }

    // Its files and its socket, by their paths on the host.
    let cwd = them["cwd"].as_str().expect("cwd");
    let data = cwd
        .strip_suffix(&format!("/apps/{victim}/work"))
        .unwrap_or_else(|| panic!("{cwd} is not under a data directory"));
    let jobs = server
        .get_with_cookie(&format!("/__api__/v1/content/{victim}/jobs"), &admin)
        .json();
    let job = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["running"] == true && j["kind"] == "run")
        .unwrap_or_else(|| panic!("no running job: {jobs}"));
    assert_eq!(job["pid"].as_u64(), Some(victim_pid), "{job}");
    let key = job["key"].as_str().expect("key");
    for path in [
        format!("read?path={cwd}/secret.txt"),
        format!("connect?path={data}/run/{key}/app.sock"),
    ] {
        let (status, answer) = open_json(&server, attacker, &path, &admin);
        assert_eq!(status, 403, "{path}: {answer}");
        assert_eq!(answer["errno"], 2, "ENOENT for {path}: {answer}");
    }
    // The victim is untouched and still answers.
    let (status, again) = open_json(&server, victim, "whoami", &admin);
    assert_eq!(status, 200);
    assert_eq!(host_pid(&again), Some(victim_pid));
}
