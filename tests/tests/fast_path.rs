//! The memory-mapped fast path, driven through the client library the NSS
//! module runs, in one long-lived process (this one): hits without the
//! daemon, changes visible at once, a restart or a replaced file noticed,
//! and a corrupt or untrusted file never believed.
//!
//! One test function on purpose: it points the client at the sandbox with
//! process-wide environment variables.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use connect_nss_client as client;
use connect_tests::*;

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what}: not within {limit:?}");
}

fn cache_inode(sandbox: &Sandbox) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(sandbox.run_dir.join("cache"))
        .ok()
        .map(|m| m.ino())
}

fn shell_of(name: &str) -> Option<String> {
    client::user_by_name(name).ok().flatten().map(|u| u.shell)
}

#[test]
fn the_fast_path_is_fresh_and_never_misled() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("");
    // SAFETY: this test binary has a single test; nothing else reads the
    // environment concurrently.
    unsafe {
        std::env::set_var("CONNECT_NSS_SOCKET", sandbox.run_dir.join("lookup.sock"));
        std::env::set_var("CONNECT_NSS_CACHE", sandbox.run_dir.join("cache"));
    }
    let daemon = sandbox.start_daemon();
    let provision = |id: &str, name: &str, groups: &[&str]| {
        block_on(async {
            sandbox
                .provisioning()
                .await
                .ensure_user(ensure("ldap", id, name, groups))
                .await
                .expect("provision")
                .into_inner()
                .account
                .expect("account")
        })
    };
    let alice = provision("uid=alice", "alice", &["Sales"]);
    let first = cache_inode(&sandbox);
    wait_until("a snapshot with alice", Duration::from_secs(2), || {
        cache_inode(&sandbox) != first && cache_inode(&sandbox).is_some()
    });
    assert_eq!(
        client::user_by_name("alice").ok().flatten().map(|u| u.uid),
        Some(alice.uid)
    );

    // Hits need no daemon: with it stopped, known names still resolve at once.
    daemon.signal(libc::SIGSTOP);
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(
            client::user_by_uid(alice.uid)
                .ok()
                .flatten()
                .map(|u| u.name),
            Some("alice".into())
        );
        assert_eq!(
            client::group_by_name("sales")
                .ok()
                .flatten()
                .map(|g| g.members),
            Some(vec!["alice".into()])
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // Misses are never answered from the file: they go to the (hung) daemon.
    assert_eq!(
        client::user_by_name("nobody-here"),
        Err(client::Unavailable::TimedOut)
    );
    daemon.signal(libc::SIGCONT);
    std::thread::sleep(client::FAIL_FAST_WINDOW);

    // A lock is visible to the very next lookup, in this long-lived process
    // that has the old file mapped (the daemon retires it before replying).
    assert_eq!(shell_of("alice").as_deref(), Some("/bin/bash"));
    let before = cache_inode(&sandbox);
    assert!(sandbox.ctl(&["lock", "alice"]).status.success());
    assert_eq!(shell_of("alice").as_deref(), Some("/usr/sbin/nologin"));
    // ...and a fresh file follows within a second, which serves it without the daemon.
    let took = wait_until(
        "a new snapshot after the lock",
        Duration::from_secs(1),
        || cache_inode(&sandbox) != before,
    );
    eprintln!("new snapshot {took:?} after the lock");
    daemon.signal(libc::SIGSTOP);
    wait_until("the new file in use", Duration::from_secs(2), || {
        shell_of("alice").as_deref() == Some("/usr/sbin/nologin")
    });
    daemon.signal(libc::SIGCONT);

    // New group membership: visible at once.
    provision("uid=alice", "alice", &["Sales", "Finance"]);
    assert!(client::supplementary_groups("alice")
        .ok()
        .flatten()
        .is_some_and(|g| g.len() == 3));

    // A daemon killed and restarted: the new one retires the file the old one left.
    let settled = || {
        std::fs::read(sandbox.run_dir.join("cache"))
            .map(|b| connect_memcache::AlignedCopy::new(&b).snapshot().is_ok())
            .unwrap_or(false)
    };
    wait_until("a settled snapshot", Duration::from_secs(2), settled);
    daemon.kill();
    let stale =
        std::fs::read(sandbox.run_dir.join("cache")).expect("file left by the killed daemon");
    let daemon = sandbox.start_daemon();
    let mut copy = connect_memcache::AlignedCopy::new(&stale);
    assert!(
        copy.snapshot().is_ok(),
        "the leftover was valid when read before the restart"
    );
    let leftover_now = std::fs::read(sandbox.run_dir.join("cache")).expect("cache");
    assert_ne!(
        leftover_now, stale,
        "the restarted daemon replaced or retired the file"
    );
    let bob = provision("uid=bob", "bob", &[]);
    assert_eq!(
        client::user_by_name("bob").ok().flatten().map(|u| u.uid),
        Some(bob.uid)
    );

    // A corrupt file put in place (by root, so trusted by ownership) is never
    // believed: lookups fall back to the daemon and stay right.
    wait_until("a settled snapshot", Duration::from_secs(2), settled);
    let mut garbage = std::fs::read(sandbox.run_dir.join("cache")).expect("cache");
    for (i, byte) in garbage
        .iter_mut()
        .enumerate()
        .skip(connect_memcache::HEADER_SIZE)
    {
        *byte ^= (i as u8).wrapping_mul(31) | 1;
    }
    let tmp = sandbox.run_dir.join("garbage");
    std::fs::write(&tmp, &garbage).expect("write");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::rename(&tmp, sandbox.run_dir.join("cache")).expect("rename");
    std::thread::sleep(Duration::from_millis(1100)); // past the once-a-second stat
    for _ in 0..20 {
        assert_eq!(
            client::user_by_name("bob").ok().flatten().map(|u| u.uid),
            Some(bob.uid)
        );
        assert_eq!(
            client::user_by_uid(alice.uid)
                .ok()
                .flatten()
                .map(|u| u.name),
            Some("alice".into())
        );
    }

    // A well-formed file that anyone could have written (mode 0666) is not
    // trusted, even if it claims bob is someone else.
    let forged = connect_memcache::build(
        &[connect_memcache::User {
            name: "bob".into(),
            uid: 4242,
            gid: 4242,
            ..Default::default()
        }],
        &[],
        (1, 2),
        1,
        0,
    )
    .expect("build");
    std::fs::write(&tmp, &forged).expect("write");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    std::fs::rename(&tmp, sandbox.run_dir.join("cache")).expect("rename");
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..20 {
        assert_eq!(
            client::user_by_name("bob").ok().flatten().map(|u| u.uid),
            Some(bob.uid)
        );
    }

    // A clean stop withdraws the file: nothing is answered for a daemon
    // that is gone.
    assert!(daemon.stop());
    assert!(!sandbox.run_dir.join("cache").exists());
    std::thread::sleep(Duration::from_millis(1100));
    assert!(client::user_by_name("bob").is_err());
}
