//! Provisioning under stress and abuse: kill -9 mid-burst, a thundering herd
//! on one identity, hostile input, unprivileged callers, a full range.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use connect_tests::*;
use tonic::Code;

#[test]
fn acknowledged_accounts_survive_kill_9_and_no_uid_is_given_twice() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("");
    let daemon = sandbox.start_daemon();
    let acknowledged: HashMap<String, u32> = block_on(async {
        let mut workers = Vec::new();
        for worker in 0..8 {
            let mut client = sandbox.provisioning().await;
            workers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..10_000 {
                    let id = format!("w{worker}-{i}");
                    match client
                        .ensure_user(ensure("oidc", &id, &format!("user-{id}"), &["burst"]))
                        .await
                    {
                        Ok(reply) => {
                            let account = reply.into_inner().account.expect("account");
                            acked.push((id, account.uid));
                        }
                        // The daemon died under us: whatever was not
                        // acknowledged may or may not exist.
                        Err(_) => break,
                    }
                }
                acked
            }));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        daemon.kill();
        let mut all = HashMap::new();
        for w in workers {
            all.extend(w.await.expect("worker"));
        }
        all
    });
    assert!(
        acknowledged.len() > 20,
        "the burst got going: {}",
        acknowledged.len()
    );

    let _daemon = sandbox.start_daemon();
    block_on(async {
        let mut client = sandbox.provisioning().await;
        let accounts = all_accounts(&mut client).await;
        let uids: HashSet<u32> = accounts.iter().map(|a| a.uid).collect();
        assert_eq!(uids.len(), accounts.len(), "no uid given twice");
        let by_identity: HashMap<String, u32> = accounts
            .iter()
            .map(|a| (a.identity.clone().unwrap_or_default().unique_id, a.uid))
            .collect();
        for (id, uid) in &acknowledged {
            assert_eq!(
                by_identity.get(id),
                Some(uid),
                "acknowledged {id} kept uid {uid}"
            );
        }
        // A new identity after the crash never reuses a uid.
        let fresh = client
            .ensure_user(ensure("oidc", "after-crash", "after-crash", &[]))
            .await
            .expect("provision after restart")
            .into_inner()
            .account
            .expect("account");
        assert!(!uids.contains(&fresh.uid));
    });
    // And a sample resolves through glibc with the acknowledged uid.
    for (id, uid) in acknowledged.iter().take(20) {
        let (code, line) = sandbox.getent(&["passwd", &format!("user-{id}")]);
        assert_eq!(code, 0, "user-{id}");
        assert_eq!(line.split(':').nth(2), Some(uid.to_string().as_str()));
    }
}

#[test]
fn fifty_simultaneous_provisionings_of_one_identity_make_one_account() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("");
    let _daemon = sandbox.start_daemon();
    block_on(async {
        let mut calls = Vec::new();
        for _ in 0..50 {
            let mut client = sandbox.provisioning().await;
            calls.push(tokio::spawn(async move {
                client
                    .ensure_user(ensure("saml", "carol@idp", "carol", &["Analysts"]))
                    .await
                    .map(|r| r.into_inner())
            }));
        }
        let mut uids = HashSet::new();
        let mut created = 0;
        for call in calls {
            let reply = call.await.expect("task").expect("ensure_user");
            uids.insert(reply.account.expect("account").uid);
            created += usize::from(reply.created);
        }
        assert_eq!(uids.len(), 1, "one uid for one identity");
        assert_eq!(created, 1, "exactly one call created it");
        let mut client = sandbox.provisioning().await;
        assert_eq!(all_accounts(&mut client).await.len(), 1);
    });
    let (_, group) = sandbox.getent(&["group", "analysts"]);
    assert!(group.trim_end().ends_with(":carol"), "{group}");
}

#[test]
fn bad_names_are_refused_clearly_and_create_nothing() {
    if need_root() {
        return;
    }
    let mut sandbox = Sandbox::new("");
    let passwd = connect_tests::host_passwd() + "dave:x:1234:1234:Dave Local:/home/dave:/bin/sh\n";
    sandbox.bind_file("/etc/passwd", &passwd);
    let _daemon = sandbox.start_daemon();
    block_on(async {
        let mut client = sandbox.provisioning().await;
        let long = "a".repeat(300);
        let cases: Vec<(&str, &str)> = vec![
            ("", "empty"),
            (&long, "at most"),
            ("root", "reserved"),
            ("0", "must start with a letter"),
            ("../x", "'/'"),
            ("a\0b", "NUL"),
            ("josé", "'é'"),
            ("dave", "local account"),
        ];
        for (name, needle) in cases {
            let err = client
                .ensure_user(ensure("ldap", &format!("id-{name}"), name, &[]))
                .await
                .expect_err(name);
            assert_eq!(err.code(), Code::InvalidArgument, "{name:?}: {err:?}");
            assert!(
                err.message().contains(needle),
                "{name:?}: {}",
                err.message()
            );
        }
        let missing = client
            .ensure_user(v1::EnsureUserRequest {
                username: "x".into(),
                ..Default::default()
            })
            .await
            .expect_err("no identity");
        assert_eq!(missing.code(), Code::InvalidArgument);
        let empty_id = client
            .ensure_user(ensure("ldap", "", "erin", &[]))
            .await
            .expect_err("empty unique id");
        assert_eq!(empty_id.code(), Code::InvalidArgument);
        assert!(
            all_accounts(&mut client).await.is_empty(),
            "nothing was created"
        );

        // Two identities that normalise to the same name: the second is suffixed.
        let first = client
            .ensure_user(ensure("ldap", "u1", "Frank", &[]))
            .await
            .expect("first")
            .into_inner();
        let second = client
            .ensure_user(ensure("oidc", "u2", "frank@other.example", &[]))
            .await
            .expect("second")
            .into_inner();
        assert_eq!(first.account.expect("a").name, "frank");
        assert_eq!(second.account.expect("a").name, "frank-2");
        assert!(
            second.warnings.iter().any(|w| w.contains("taken")),
            "{:?}",
            second.warnings
        );
    });
    // The local account is still answered by files, untouched.
    assert!(sandbox
        .getent(&["passwd", "dave"])
        .1
        .starts_with("dave:x:1234:"));
}

#[test]
fn only_root_and_the_service_account_may_provision() {
    if need_root() {
        return;
    }
    // The service account is `daemon` (uid 1, gid 1): the provisioning
    // socket is group-owned by gid 1, so a caller with gid 1 but another uid
    // passes the file mode and must be stopped by SO_PEERCRED.
    let sandbox = Sandbox::new("[Nameservice]\nServiceAccount = daemon\n");
    let _daemon = sandbox.start_daemon();
    let ctl = |uid: &str, gid: &str| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
            ])
            .arg(&artifacts().nameservicectl)
            .arg("--config")
            .arg(&sandbox.config)
            .args([
                "provision",
                "--provider",
                "ldap",
                "--id",
                "x1",
                "--username",
                "xavier",
            ])
            .output()
            .expect("setpriv")
    };
    let denied = ctl("65534", "1");
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("permission denied") && stderr.contains("uid 65534"),
        "{stderr}"
    );
    // Outside the group the file mode stops it first (EACCES): named as a
    // permission problem, not as a daemon that is not running.
    let outsider = ctl("65534", "65534");
    assert!(!outsider.status.success());
    let stderr = String::from_utf8_lossy(&outsider.stderr);
    assert!(
        stderr.contains("permission denied on") && stderr.contains("as root"),
        "{stderr}"
    );
    assert!(!stderr.contains("is it running"), "{stderr}");
    let allowed = ctl("1", "1");
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    // Lookups stay open to everyone.
    let health = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&artifacts().nameservicectl)
        .arg("--config")
        .arg(&sandbox.config)
        .arg("health")
        .output()
        .expect("setpriv");
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    assert!(String::from_utf8_lossy(&health.stdout).contains("users:   1"));
}

#[test]
fn an_exhausted_range_is_a_clear_error_and_corrupts_nothing() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new(&format!("UidRange = {UID_BASE}-{}\n", UID_BASE + 2));
    let _daemon = sandbox.start_daemon();
    block_on(async {
        let mut client = sandbox.provisioning().await;
        for i in 0..3 {
            client
                .ensure_user(ensure("ldap", &format!("p{i}"), &format!("p{i}"), &[]))
                .await
                .expect("fits in the range");
        }
        let err = client
            .ensure_user(ensure("ldap", "p3", "p3", &["New Group"]))
            .await
            .expect_err("range is full");
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(
            err.message().contains("UidRange") && err.message().contains("exhausted"),
            "{}",
            err.message()
        );
        // Nothing half-made: no account, and not the group either.
        let accounts = all_accounts(&mut client).await;
        assert_eq!(accounts.len(), 3);
        // Existing identities still work.
        client
            .ensure_user(ensure("ldap", "p1", "p1", &[]))
            .await
            .expect("existing identity");
    });
    assert_eq!(sandbox.getent(&["group", "new_group"]).0, 2);
    assert_eq!(sandbox.getent(&["passwd", "p2"]).0, 0);
}

#[test]
fn uids_are_stable_across_restarts_and_never_reused() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("");
    let daemon = sandbox.start_daemon();
    let first = block_on(async {
        let mut c = sandbox.provisioning().await;
        let a = c
            .ensure_user(ensure("ldap", "g1", "gina", &[]))
            .await
            .expect("gina")
            .into_inner();
        c.set_locked(v1::SetLockedRequest {
            account: Some(v1::AccountSelector {
                by: Some(v1::account_selector::By::Name("gina".into())),
            }),
            locked: true,
        })
        .await
        .expect("lock");
        a.account.expect("account").uid
    });
    assert!(daemon.stop());
    let daemon = sandbox.start_daemon();
    block_on(async {
        let mut c = sandbox.provisioning().await;
        let again = c
            .ensure_user(ensure("ldap", "g1", "gina", &[]))
            .await
            .expect("gina")
            .into_inner();
        let account = again.account.expect("account");
        assert_eq!(account.uid, first);
        assert!(account.locked, "the lock survived the restart");
        assert!(!again.created);
        let other = c
            .ensure_user(ensure("ldap", "h1", "hal", &[]))
            .await
            .expect("hal")
            .into_inner();
        assert_ne!(
            other.account.expect("account").uid,
            first,
            "a locked account's uid is not reused"
        );
    });
    // While gina's row exists, the check above cannot fail (a uid in use is
    // never free). What keeps her uid from coming back is the counter, which
    // only grows: remove her row by hand, as an administrator might, and no
    // new identity may get that uid.
    assert!(daemon.stop());
    let database = sandbox.path("state").join("nameservice.sqlite3");
    let db = nameserviced::store::open_writer(&database).expect("open the database");
    db.execute_batch(&format!(
        "DELETE FROM memberships WHERE uid = {first}; DELETE FROM users WHERE uid = {first};"
    ))
    .expect("remove gina");
    drop(db);
    let _daemon = sandbox.start_daemon();
    block_on(async {
        let mut c = sandbox.provisioning().await;
        let accounts = all_accounts(&mut c).await;
        assert!(
            accounts.iter().all(|a| a.uid != first),
            "gina's row is gone: {accounts:?}"
        );
        let newcomer = c
            .ensure_user(ensure("ldap", "i1", "ivy", &[]))
            .await
            .expect("ivy")
            .into_inner()
            .account
            .expect("account");
        assert_ne!(
            newcomer.uid, first,
            "the uid of a removed (locked) account was handed out again"
        );
    });
}

#[test]
fn the_state_directory_and_its_files_are_private_however_the_daemon_is_started() {
    if need_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // The harness made the state directory 0755, as a hand-made
    // /var/lib/connect-nameservice or an init without StateDirectoryMode
    // would, and starts the daemon under the usual umask (022).
    let sandbox = Sandbox::new("");
    let state = sandbox.dir.path().join("state");
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(&state), 0o755);
    let daemon = sandbox.start_daemon();
    block_on(async {
        let mut c = sandbox.provisioning().await;
        c.ensure_user(ensure("ldap", "s1", "sasha", &[]))
            .await
            .expect("sasha");
    });
    assert_eq!(mode(&state), 0o700, "the state directory");
    let files: Vec<_> = std::fs::read_dir(&state)
        .expect("state")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("nameservice.sqlite3-wal")),
        "{files:?}"
    );
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    // Another local user reads nothing of it.
    let read = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(state.join("nameservice.sqlite3"))
        .output()
        .expect("setpriv");
    assert!(!read.status.success());
    drop(daemon);
}
