//! The memory-mapped fast path, driven through the client library the NSS
//! module runs, in one long-lived process (this one): hits without the
//! daemon, changes visible at once, a restart or a replaced file noticed,
//! and a corrupt or untrusted file never believed.
//!
//! One test function on purpose: it points the client at the sandbox with
//! process-wide environment variables.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use connect_memcache::mapped::Mapped;
use connect_nss_client as client;
use connect_tests::*;

/// Deadline for things that happen "about 200 ms later" or "within a
/// second": generous, so a loaded machine fails only on a real stall.
const SOON: Duration = Duration::from_secs(10);

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

fn uid_of(name: &str) -> Option<u32> {
    client::user_by_name(name).ok().flatten().map(|u| u.uid)
}

/// How many lookups have reached the daemon (its lookup cache counts every
/// one, hit or miss): the way to tell an answer from the file, which the
/// daemon never sees, from one the daemon gave.
fn daemon_lookups(sandbox: &Sandbox) -> u64 {
    block_on(async {
        let stats = sandbox
            .provisioning()
            .await
            .cache_stats(v1::CacheStatsRequest {})
            .await
            .expect("cache stats")
            .into_inner();
        stats.hits + stats.negative_hits + stats.misses
    })
}

/// Puts `bytes` in place of the cache file the way the daemon does (written
/// beside it, renamed over it), with the given mode.
fn replace_cache_file(sandbox: &Sandbox, bytes: &[u8], mode: u32) {
    let tmp = sandbox.run_dir.join("replacement");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).expect("chmod");
    std::fs::rename(&tmp, sandbox.run_dir.join("cache")).expect("rename");
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
    wait_until("a snapshot with alice", SOON, || {
        std::fs::read(sandbox.run_dir.join("cache")).is_ok_and(|bytes| {
            let mut copy = connect_memcache::AlignedCopy::new(&bytes);
            copy.snapshot().is_ok_and(|snapshot| {
                matches!(
                    snapshot.user_by_name("alice"),
                    connect_memcache::Answer::Hit(_)
                )
            })
        })
    });
    assert_eq!(
        client::user_by_name("alice").ok().flatten().map(|u| u.uid),
        Some(alice.uid)
    );

    // Hits need no daemon: with it stopped, known names still resolve (the
    // answers prove it: asking the stopped daemon would time out).
    daemon.pause();
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
    // Misses are never answered from the file: they go to the (hung) daemon.
    assert_eq!(
        client::user_by_name("nobody-here"),
        Err(client::Unavailable::TimedOut)
    );
    daemon.signal(libc::SIGCONT);
    wait_until(
        "the daemon answering again after the fail-fast window",
        client::FAIL_FAST_WINDOW + SOON,
        || client::user_by_name("nobody-here") == Ok(None),
    );

    // A lock is visible to the very next lookup, in this long-lived process
    // that has the old file mapped (the daemon retires it before replying).
    assert_eq!(shell_of("alice").as_deref(), Some("/bin/bash"));
    let before = cache_inode(&sandbox);
    assert!(sandbox.ctl(&["lock", "alice"]).status.success());
    assert_eq!(shell_of("alice").as_deref(), Some("/usr/sbin/nologin"));
    // ...and a fresh file follows within a second, which serves it without the daemon.
    let took = wait_until("a new snapshot after the lock", SOON, || {
        cache_inode(&sandbox) != before
    });
    eprintln!("new snapshot {took:?} after the lock");
    daemon.pause();
    wait_until("the new file in use", SOON, || {
        shell_of("alice").as_deref() == Some("/usr/sbin/nologin")
    });
    daemon.signal(libc::SIGCONT);

    // New group membership: visible at once.
    provision("uid=alice", "alice", &["Sales", "Finance"]);
    assert!(client::supplementary_groups("alice")
        .ok()
        .flatten()
        .is_some_and(|g| g.len() == 3));

    // A daemon killed and restarted: the new one retires the file the old
    // one left, so a reader that has it mapped (a long-lived process) stops
    // answering from it before the new daemon's first snapshot.
    let settled = || {
        std::fs::read(sandbox.run_dir.join("cache"))
            .map(|b| connect_memcache::AlignedCopy::new(&b).snapshot().is_ok())
            .unwrap_or(false)
    };
    wait_until("a settled snapshot", SOON, settled);
    daemon.kill();
    let cache_path = CString::new(
        sandbox
            .run_dir
            .join("cache")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .expect("path without NUL");
    let leftover = Mapped::open(&cache_path).expect("the killed daemon's file is valid");
    assert!(
        matches!(leftover.snapshot(), Ok(ref s) if matches!(s.user_by_name("alice"), connect_memcache::Answer::Hit(_))),
        "the leftover answers while no daemon has retired it"
    );
    let daemon = sandbox.start_daemon();
    assert_eq!(
        leftover.snapshot().err(),
        Some(connect_memcache::Invalid::Retired),
        "the restarted daemon retired the file the killed one left"
    );
    drop(leftover);
    let bob = provision("uid=bob", "bob", &[]);
    assert_eq!(uid_of("bob"), Some(bob.uid));

    // A corrupt file put in place (by root, so trusted by ownership) is never
    // believed. The client has the good file mapped: it must notice the new
    // one (its answers then come from the daemon) and never answer from it.
    wait_until("a settled snapshot", SOON, settled);
    wait_until("the client answering from the settled file", SOON, || {
        let seen = daemon_lookups(&sandbox);
        uid_of("bob") == Some(bob.uid) && daemon_lookups(&sandbox) == seen
    });
    let mut garbage = std::fs::read(sandbox.run_dir.join("cache")).expect("cache");
    for (i, byte) in garbage
        .iter_mut()
        .enumerate()
        .skip(connect_memcache::HEADER_SIZE)
    {
        *byte ^= (i as u8).wrapping_mul(31) | 1;
    }
    replace_cache_file(&sandbox, &garbage, 0o644);
    wait_until(
        "the client to drop the replaced file (a lookup that reaches the daemon)",
        SOON,
        || {
            let seen = daemon_lookups(&sandbox);
            let right = client::user_by_uid(alice.uid)
                .ok()
                .flatten()
                .map(|u| u.name)
                == Some("alice".into());
            right && daemon_lookups(&sandbox) > seen
        },
    );
    let seen = daemon_lookups(&sandbox);
    for _ in 0..20 {
        assert_eq!(uid_of("bob"), Some(bob.uid));
        assert_eq!(
            client::user_by_uid(alice.uid)
                .ok()
                .flatten()
                .map(|u| u.name),
            Some("alice".into())
        );
    }
    assert!(
        daemon_lookups(&sandbox) >= seen + 40,
        "every one of the 40 lookups was the daemon's, none the corrupt file's"
    );

    // A well-formed file that anyone could have written (mode 0666) is not
    // trusted, even though it claims bob is someone else and names a user
    // the daemon does not know. The client, holding no valid file, looks at
    // the path every 50 ms (at most every second): for well over a second,
    // neither claim is believed.
    let forged = connect_memcache::build(
        &[
            connect_memcache::User {
                name: "bob".into(),
                uid: 4242,
                gid: 4242,
                ..Default::default()
            },
            connect_memcache::User {
                name: "only-in-the-file".into(),
                uid: 4343,
                gid: 4343,
                ..Default::default()
            },
        ],
        &[],
        (1, 2),
        1,
        0,
    )
    .expect("build");
    replace_cache_file(&sandbox, &forged, 0o666);
    let refusing = Instant::now();
    while refusing.elapsed() < Duration::from_millis(1500) {
        assert_eq!(uid_of("bob"), Some(bob.uid), "bob from a 0666 file");
        assert_eq!(
            client::user_by_name("only-in-the-file"),
            Ok(None),
            "a user from a 0666 file"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The same file made writable by root alone is believed: it was its
    // mode, and nothing else, that kept it out.
    std::fs::set_permissions(
        sandbox.run_dir.join("cache"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    wait_until("the file, once trusted, in use", SOON, || {
        uid_of("only-in-the-file") == Some(4343)
    });

    // A clean stop withdraws the file: nothing is answered for a daemon
    // that is gone.
    assert!(daemon.stop());
    assert!(!sandbox.run_dir.join("cache").exists());
    wait_until("the withdrawn file out of use", SOON, || {
        client::user_by_name("bob").is_err()
    });
}
