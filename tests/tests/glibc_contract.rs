//! The glibc NSS contract, checked by tests/c/nss_harness.c through real
//! glibc (getpwnam_r & co.) and by calling the module's functions directly
//! after dlopen: short buffers, errno, fork, threads, descriptors, exit-time
//! lookups, initgroups growth, and a dead or hung daemon.

use std::time::Instant;

use connect_tests::*;

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
    sandbox.harness(&["fork", "alice"]);
}

#[test]
fn eight_threads_look_up_at_once_and_leave_no_thread_behind() {
    if need_root() {
        return;
    }
    let (sandbox, _daemon) = sandbox_with_alice();
    sandbox.harness(&["threads", "alice", "8", "200"]);
}

#[test]
fn descriptors_are_close_on_exec() {
    if need_root() {
        return;
    }
    let (sandbox, _daemon) = sandbox_with_alice();
    sandbox.harness(&["cloexec", "alice"]);
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
    sandbox.harness(&["enumerate", "2"]);
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
    let started = Instant::now();
    assert_eq!(sandbox.getent(&["passwd", "alice"]).0, 2);
    // Whole process, namespace set-up included; the lookup itself is
    // checked below inside one process.
    assert!(started.elapsed().as_millis() < 2000);
    let out = sandbox.harness(&["errno-unavail", "alice", "100"]);
    assert!(out.contains("subsequent max"), "{out}");
}

#[test]
fn a_hung_daemon_costs_one_bounded_timeout_then_fails_fast() {
    if need_root() {
        return;
    }
    let (sandbox, daemon) = sandbox_with_alice();
    wait_for_cache_file(&sandbox);
    daemon.signal(libc::SIGSTOP);
    // Known accounts are still answered, from the cache file, at once.
    let started = Instant::now();
    assert_eq!(sandbox.getent(&["passwd", "alice"]).0, 0);
    assert_eq!(sandbox.getent(&["group", "team-07"]).0, 0);
    assert!(
        started.elapsed().as_millis() < 1000,
        "{:?}",
        started.elapsed()
    );
    // A name the file does not hold goes to the daemon: the 1 s request
    // timeout (plus slack) once, then fail fast.
    sandbox.harness(&["hung", "ghost", "1500", "5"]);
    // Every new process is bounded too.
    let started = Instant::now();
    assert_eq!(sandbox.getent(&["passwd", "ghost"]).0, 2);
    assert!(
        started.elapsed().as_millis() < 2500,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sandbox.getent(&["passwd", "root"]).0, 0);
    daemon.signal(libc::SIGCONT);
    assert_eq!(
        sandbox.getent(&["passwd", "alice"]).0,
        0,
        "answers once resumed"
    );
}

/// Waits (at most 5 s) until the daemon has published a snapshot holding alice.
fn wait_for_cache_file(sandbox: &Sandbox) {
    let path = sandbox.run_dir.join("cache");
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(bytes) = std::fs::read(&path) {
            let mut copy = connect_memcache::AlignedCopy::new(&bytes);
            if let Ok(snap) = copy.snapshot() {
                if matches!(snap.user_by_name("alice"), connect_memcache::Answer::Hit(_)) {
                    return;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("no cache file holding alice was published within 5 s");
}
