//! The glibc NSS contract, checked by tests/c/nss_harness.c through real
//! glibc (getpwnam_r & co.) and by calling the module's functions directly
//! after dlopen: short buffers, errno, fork, threads, descriptors, exit-time
//! lookups, initgroups growth, and a dead or hung daemon.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use connect_nss_client::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};
use connect_tests::*;

/// Turns the fast path off for one harness run: every lookup reaches the
/// daemon over a socket (a fast-path hit opens no descriptor, needs no
/// connection, and so cannot show what the fork or descriptor checks ask).
const DAEMON_PATH: &[(&str, &str)] = &[("CONNECT_NSS_CACHE", "off")];

/// The most a lookup may take when it must fail fast (daemon stopped, or
/// inside the window after a timeout). Generous for a loaded machine, yet
/// below the 250 ms connect timeout, so a lookup that waited on any of the
/// client's timeouts cannot pass.
fn fail_fast_bound_ms() -> String {
    (CONNECT_TIMEOUT.as_millis() * 4 / 5).to_string()
}

/// The most the one lookup that meets a hung daemon may take: the request
/// timeout plus slack, and less than two timeouts, so a retry cannot pass.
fn one_timeout_bound_ms() -> String {
    (REQUEST_TIMEOUT + Duration::from_millis(800))
        .as_millis()
        .to_string()
}

fn sandbox_with_alice() -> (Sandbox, Daemon) {
    let sandbox = Sandbox::new("");
    let daemon = sandbox.start_daemon();
    let groups: Vec<String> = (0..40).map(|i| format!("--group=team-{i:02}")).collect();
    let mut args = vec![
        "provision",
        "--provider",
        "ldap",
        "--id",
        "uid=alice",
        "--username",
        "alice",
        "--display-name",
        "Alice Liddell",
    ];
    args.extend(groups.iter().map(String::as_str));
    let out = sandbox.ctl(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (sandbox, daemon)
}

#[test]
fn short_buffers_get_erange_then_success_with_aligned_members() {
    if need_root() {
        return;
    }
    let (sandbox, _daemon) = sandbox_with_alice();
    let out = sandbox.harness(&["buffers", "alice", "team-00"]);
    assert!(out.contains("success at"), "{out}");
}

#[test]
fn errno_changes_on_every_failure() {
    if need_root() {
        return;
    }
    let (sandbox, _daemon) = sandbox_with_alice();
    sandbox.harness(&["errno-unknown", "nobody-here"]);
}

#[test]
fn lookups_survive_fork_in_parent_and_child() {
    if need_root() {
        return;
    }
    let (sandbox, _daemon) = sandbox_with_alice();
    // Once with the fast path answering (no connection at all)...
    wait_for_cache_file(&sandbox);
    sandbox.harness(&["fork", "alice"]);
    // ...and once on the daemon path, where the harness also checks the
    // connections: each child dials its own, and the parent's survives its
    // children.
    let out = sandbox.harness_with_env(DAEMON_PATH, &["fork", "alice"]);
    assert!(out.contains("daemon path: yes"), "{out}");
}

#[test]
fn eight_threads_look_up_at_once_and_leave_no_thread_behind() {
    if need_root() {
        return;
    }
    let (sandbox, _daemon) = sandbox_with_alice();
    wait_for_cache_file(&sandbox);
    sandbox.harness(&["threads", "alice", "8", "200"]);
    // On the daemon path: each thread's own connection and runtime, and
    // none left running.
    sandbox.harness_with_env(DAEMON_PATH, &["threads", "alice", "8", "50"]);
}

#[test]
fn descriptors_are_close_on_exec() {
    if need_root() {
        return;
    }
    let (sandbox, _daemon) = sandbox_with_alice();
    // The harness fails unless the lookup opened a socket to the daemon.
    sandbox.harness_with_env(DAEMON_PATH, &["cloexec", "alice"]);
}

#[test]
fn lookups_during_thread_and_process_exit_do_not_crash() {
    if need_root() {
        return;
    }
    let (sandbox, _daemon) = sandbox_with_alice();
    let out = sandbox.harness(&["atexit", "alice"]);
    assert!(out.contains("atexit lookup: ok"), "{out}");
}

#[test]
fn initgroups_adds_every_group_without_duplicates() {
    if need_root() {
        return;
    }
    let (sandbox, _daemon) = sandbox_with_alice();
    let out = sandbox.harness(&["initgroups", "alice", &GID_BASE.to_string()]);
    let gids: Vec<u32> = out
        .lines()
        .filter_map(|l| l.strip_prefix("gid "))
        .map(|g| g.trim().parse().expect("gid"))
        .collect();
    // The shared group (primary) plus 40 teams, each once.
    assert_eq!(gids.len(), 41, "{out}");
    let mut unique = gids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 41, "{out}");
}

#[test]
fn enumeration_through_getpwent() {
    if need_root() {
        return;
    }
    let (sandbox, _daemon) = sandbox_with_alice();
    let out = sandbox.harness(&["enumerate", "2"]);
    // The files entries alone would satisfy a count: the provisioned
    // accounts must be there, exactly, with their ids.
    let listed = |kind: &str, id: &str| -> BTreeMap<String, u32> {
        out.lines()
            .filter_map(|l| l.strip_prefix(kind))
            .filter_map(|l| {
                let (name, number) = l.split_once(&format!(" {id}="))?;
                Some((name.to_owned(), number.trim().parse().ok()?))
            })
            .collect()
    };
    let users = listed("user ", "uid");
    let groups = listed("group ", "gid");
    assert_eq!(users.get("root"), Some(&0), "files first:\n{out}");
    let provisioned_users: Vec<(&str, u32)> = users
        .iter()
        .filter(|(_, &uid)| uid >= UID_BASE)
        .map(|(name, &uid)| (name.as_str(), uid))
        .collect();
    assert_eq!(provisioned_users, vec![("alice", UID_BASE)], "{out}");
    let provisioned_groups: BTreeMap<&str, u32> = groups
        .iter()
        .filter(|(_, &gid)| gid >= GID_BASE)
        .map(|(name, &gid)| (name.as_str(), gid))
        .collect();
    let mut expected: Vec<String> = (0..40).map(|i| format!("team-{i:02}")).collect();
    expected.push(SHARED_GROUP.into());
    expected.sort();
    assert_eq!(
        provisioned_groups.keys().copied().collect::<Vec<_>>(),
        expected,
        "{out}"
    );
    assert_eq!(
        provisioned_groups.get(SHARED_GROUP),
        Some(&GID_BASE),
        "{out}"
    );
    let mut gids: Vec<u32> = provisioned_groups.values().copied().collect();
    gids.sort_unstable();
    gids.dedup();
    assert_eq!(gids.len(), 41, "every group its own gid:\n{out}");
}

#[test]
fn direct_calls_set_errnop_and_respect_the_buffer() {
    if need_root() {
        return;
    }
    let (sandbox, daemon) = sandbox_with_alice();
    let module = sandbox.lib_dir.join("libnss_connect.so.2");
    let module = module.to_str().expect("utf-8");
    let out = sandbox.harness(&["direct", module, "alice", "team-00", "nobody-here"]);
    assert!(
        !out.contains("module unavailable"),
        "the daemon was up:\n{out}"
    );
    // And with the daemon gone (a clean stop also withdraws the cache
    // file), every call is UNAVAIL with errnop set.
    assert!(daemon.stop());
    let out = sandbox.harness(&["direct", module, "alice", "team-00", "nobody-here"]);
    assert!(out.contains("module unavailable"), "{out}");
}

#[test]
fn a_stopped_daemon_fails_fast_and_files_still_answers() {
    if need_root() {
        return;
    }
    let (sandbox, daemon) = sandbox_with_alice();
    assert!(daemon.stop(), "clean exit on SIGTERM");
    assert!(
        !sandbox.run_dir.join("lookup.sock").exists(),
        "SIGTERM removes the sockets"
    );
    assert!(sandbox
        .getent(&["passwd", "root"])
        .1
        .starts_with("root:x:0:0:"));
    assert_eq!(sandbox.getent(&["passwd", "alice"]).0, 2);
    // Timed inside one process (a whole process's namespace set-up is no
    // measure of the module): the first lookup and each of the next 20.
    let out = sandbox.harness(&["errno-unavail", "alice", &fail_fast_bound_ms()]);
    assert!(out.contains("subsequent max"), "{out}");
}

#[test]
fn a_hung_daemon_costs_one_bounded_timeout_then_fails_fast() {
    if need_root() {
        return;
    }
    let (sandbox, daemon) = sandbox_with_alice();
    wait_for_cache_file(&sandbox);
    daemon.pause();
    // Known accounts are still answered, from the cache file: with the
    // daemon stopped, an answer can come from nowhere else (asking it
    // would time out and fail).
    assert_eq!(sandbox.getent(&["passwd", "alice"]).0, 0);
    assert_eq!(sandbox.getent(&["group", "team-07"]).0, 0);
    // A name the file does not hold goes to the daemon: the 1 s request
    // timeout (plus slack) once, then each of 50 fails fast.
    let (one_timeout, fail_fast) = (one_timeout_bound_ms(), fail_fast_bound_ms());
    sandbox.harness(&["hung", "ghost", &one_timeout, &fail_fast]);
    // Every new process is bounded too: one timeout, then fail fast.
    sandbox.harness(&["hung", "ghost", &one_timeout, &fail_fast]);
    assert_eq!(sandbox.getent(&["passwd", "ghost"]).0, 2);
    assert_eq!(sandbox.getent(&["passwd", "root"]).0, 0);
    daemon.signal(libc::SIGCONT);
    assert_eq!(
        sandbox.getent(&["passwd", "alice"]).0,
        0,
        "answers once resumed"
    );
}

/// Waits (at most 10 s: it comes about 200 ms after a change) until the
/// daemon has published a snapshot holding alice.
fn wait_for_cache_file(sandbox: &Sandbox) {
    let path = sandbox.run_dir.join("cache");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(bytes) = std::fs::read(&path) {
            let mut copy = connect_memcache::AlignedCopy::new(&bytes);
            if let Ok(snap) = copy.snapshot() {
                if matches!(snap.user_by_name("alice"), connect_memcache::Answer::Hit(_)) {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no cache file holding alice was published within 10 s");
}
