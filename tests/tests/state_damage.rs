//! A uid is never handed out twice, even when the state goes back in time
//! or is damaged: on real state directories of a real nameserviced, the
//! WAL is truncated, torn or garbled, the database emptied, a page of a
//! table or an index overwritten, and an old backup restored. Each ends in
//! a refusal to start that says what happened and what to do, or in a
//! daemon that serves what it has, refuses new accounts until an
//! administrator confirms, and then never gives a uid that was
//! acknowledged before.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};

use connect_tests::*;
use tonic::Code;

const DATABASE: &str = "nameservice.sqlite3";

/// Moves everything in the WAL into the database file and removes the
/// WAL, as SQLite does when its last connection closes: the damage below
/// is then to the only copy.
fn checkpoint(db: &std::path::Path) {
    let conn = nameserviced::store::open_writer(db).expect("open");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    conn.pragma_update(None, "journal_mode", "DELETE")
        .expect("no WAL");
    drop(conn);
}

/// Runs nameserviced, which must refuse to start: its exit code and
/// output. Killed (and the test failed) if it serves instead.
fn refused_start(sandbox: &Sandbox) -> (Option<i32>, String) {
    let mut child = sandbox
        .command(
            &connect_tests::artifacts().nameserviced,
            &["--config", sandbox.config.to_str().expect("utf-8 path")],
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start nameserviced");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap");
            panic!(
                "nameserviced served a state it must refuse:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// Provisions `count` identities `prefix-N`; returns every acknowledged uid.
fn provision(sandbox: &Sandbox, prefix: &str, count: usize) -> Vec<u32> {
    block_on(async {
        let mut client = sandbox.provisioning().await;
        let mut uids = Vec::new();
        for i in 0..count {
            let id = format!("{prefix}-{i}");
            let reply = client
                .ensure_user(ensure("oidc", &id, &id, &["team"]))
                .await
                .unwrap_or_else(|e| panic!("provision {id}: {e}"))
                .into_inner();
            uids.push(reply.account.expect("account").uid);
        }
        uids
    })
}

/// A new identity's provisioning: its uid, or the refusal.
fn try_new(sandbox: &Sandbox, id: &str) -> Result<u32, tonic::Status> {
    block_on(async {
        let mut client = sandbox.provisioning().await;
        client
            .ensure_user(ensure("oidc", id, id, &[]))
            .await
            .map(|r| r.into_inner().account.expect("account").uid)
    })
}

fn health(sandbox: &Sandbox) -> String {
    let out = sandbox.ctl(&["health"]);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn ctl_text(sandbox: &Sandbox, args: &[&str]) -> String {
    let out = sandbox.ctl(args);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nameservicectl {args:?}: {text}");
    text
}

/// After the database lost acknowledged accounts: lookups of what it has
/// go on, new accounts are refused until confirmed, then get uids above
/// every acknowledged one.
fn held_back_until_confirmed(sandbox: &Sandbox, acknowledged: &[u32], kept_name: &str) {
    let (code, line) = sandbox.getent(&["passwd", kept_name]);
    assert_eq!(code, 0, "accounts the database kept still resolve: {line}");
    let refused = try_new(sandbox, "newcomer").expect_err("a new account must wait");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("older than the high-water mark")
            && refused.message().contains("nameservicectl confirm-restore"),
        "{}",
        refused.message()
    );
    assert!(health(sandbox).contains("degraded"), "{}", health(sandbox));
    let report = ctl_text(sandbox, &["check-restore"]);
    assert!(
        report.contains("were handed out but are not in this database"),
        "{report}"
    );
    ctl_text(sandbox, &["confirm-restore"]);
    let uid = try_new(sandbox, "newcomer").expect("confirmed: new accounts again");
    let highest = acknowledged.iter().max().copied().unwrap_or(0);
    assert!(
        uid > highest,
        "the new uid {uid} is above every acknowledged uid (highest {highest})"
    );
    let again = try_new(sandbox, "second-newcomer").expect("and the next");
    assert!(again > uid);
    assert!(health(sandbox).contains("ok"), "{}", health(sandbox));
}

#[test]
fn a_damaged_wal_loses_no_uid() {
    if need_root() {
        return;
    }
    type Damage = fn(&std::path::Path);
    let damages: [(&str, Damage); 3] = [
        ("truncated", |wal| {
            let len = fs::metadata(wal).expect("wal").len();
            OpenOptions::new()
                .write(true)
                .open(wal)
                .expect("wal")
                .set_len(len / 2)
                .expect("truncate");
        }),
        ("torn in its last frame", |wal| {
            let len = fs::metadata(wal).expect("wal").len();
            OpenOptions::new()
                .write(true)
                .open(wal)
                .expect("wal")
                .set_len(len - 100)
                .expect("tear");
        }),
        ("garbled in the middle", |wal| {
            let len = fs::metadata(wal).expect("wal").len();
            let mut f = OpenOptions::new().write(true).open(wal).expect("wal");
            f.seek(SeekFrom::Start(len / 2)).expect("seek");
            f.write_all(&[0xA5; 512]).expect("garble");
        }),
    ];
    for (what, damage) in damages {
        let sandbox = Sandbox::new("");
        let daemon = sandbox.start_daemon();
        let acknowledged = provision(&sandbox, "early", 3);
        // A checkpoint moves these into the database file itself.
        assert!(daemon.stop());
        let daemon = sandbox.start_daemon();
        let mut all = acknowledged.clone();
        all.extend(provision(&sandbox, "late", 40));
        // Killed: the late accounts are only in the WAL.
        daemon.kill();
        let wal = sandbox.path("state").join(format!("{DATABASE}-wal"));
        assert!(
            fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
            "{what}: a WAL to damage"
        );
        damage(&wal);
        let _daemon = sandbox.start_daemon();
        held_back_until_confirmed(&sandbox, &all, "early-0");
        let unique: HashSet<u32> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "{what}");
    }
}

#[test]
fn an_emptied_database_is_refused_and_start_over_keeps_the_mark() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("");
    let daemon = sandbox.start_daemon();
    let acknowledged = provision(&sandbox, "gone", 5);
    assert!(daemon.stop());
    let db = sandbox.path("state").join(DATABASE);
    checkpoint(&db);
    fs::write(&db, b"").expect("empty the database");

    let (code, text) = refused_start(&sandbox);
    assert_eq!(code, Some(78), "refused at start: {text}");
    assert!(
        text.contains("was initialised") && text.contains("empty or missing"),
        "{text}"
    );
    assert!(
        text.contains("--start-over") && text.contains("Restore"),
        "{text}"
    );
    // Missing altogether is the same.
    fs::remove_file(&db).expect("remove");
    assert_eq!(refused_start(&sandbox).0, Some(78));

    // Starting over on purpose: no accounts, and no uid given again.
    let daemon = sandbox.start_daemon_with(&["--start-over"]);
    let uid = try_new(&sandbox, "fresh").expect("a new account after starting over");
    assert!(
        uid > *acknowledged.iter().max().expect("some"),
        "{uid} is above {acknowledged:?}"
    );
    assert!(
        daemon
            .log_text()
            .contains("starting over with an empty database"),
        "{}",
        daemon.log_text()
    );
    assert!(daemon.stop());
    // Once is enough: the next start is an ordinary one.
    let _daemon = sandbox.start_daemon();
    assert!(try_new(&sandbox, "fresh-2").expect("provision") > uid);
}

/// The page number of `name` (a table or index) in the database.
fn root_page(db: &std::path::Path, name: &str) -> (u64, u64) {
    let conn = nameserviced::store::open_reader(db).expect("open");
    let page: i64 = conn
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .expect("rootpage");
    let size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page size");
    (page as u64, size as u64)
}

#[test]
fn a_damaged_table_or_index_page_is_refused_naming_the_file() {
    if need_root() {
        return;
    }
    for object in ["users", "sqlite_autoindex_users_2"] {
        let sandbox = Sandbox::new("");
        let daemon = sandbox.start_daemon();
        provision(&sandbox, "page", 300);
        assert!(daemon.stop());
        let db = sandbox.path("state").join(DATABASE);
        checkpoint(&db);
        let (page, size) = root_page(&db, object);
        let mut f = OpenOptions::new().write(true).open(&db).expect("db");
        f.seek(SeekFrom::Start((page - 1) * size + 8))
            .expect("seek");
        f.write_all(&vec![0x5A; (size - 16) as usize])
            .expect("overwrite");
        drop(f);

        let (code, text) = refused_start(&sandbox);
        assert_eq!(code, Some(78), "{object}: refused at start: {text}");
        assert!(
            text.contains("is damaged") && text.contains(&db.display().to_string()),
            "{object}: names the file: {text}"
        );
        assert!(
            text.contains("restore the newest backup"),
            "{object}: {text}"
        );
    }
}

#[test]
fn an_old_backup_restored_holds_new_accounts_until_confirmed() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("");
    let daemon = sandbox.start_daemon();
    let mut all = provision(&sandbox, "before", 4);
    let backup = sandbox.path("backup-1");
    let text = ctl_text(&sandbox, &["backup", backup.to_str().expect("path")]);
    assert!(text.contains("backed up"), "{text}");
    all.extend(provision(&sandbox, "after", 6));
    assert!(daemon.stop());

    // The administrator restores last week's backup of the database.
    let state = sandbox.path("state");
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(state.join(format!("{DATABASE}{suffix}")));
    }
    fs::copy(backup.join(DATABASE), state.join(DATABASE)).expect("restore");
    let _daemon = sandbox.start_daemon();
    let report = ctl_text(&sandbox, &["check-restore"]);
    let lost = format!("uids {}-{}", all[4], all[9]);
    assert!(
        report.contains(&lost),
        "names the missing uids ({lost}): {report}"
    );
    held_back_until_confirmed(&sandbox, &all, "before-0");
    // Someone whose account the backup lacks signs in again: a new uid,
    // never one of the lost ones.
    let returning = try_new(&sandbox, "after-0").expect("returning identity");
    assert!(!all.contains(&returning), "{returning} in {all:?}");
}

#[test]
fn a_refused_provisioning_or_a_confirmed_restore_never_looks_like_lost_ids_later() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("");
    let daemon = sandbox.start_daemon();
    let mut all = provision(&sandbox, "ok", 3);
    // A uid is picked, then the second group's name is refused: the
    // transaction rolls back after the mark was raised.
    let long = "g".repeat(2000);
    let refused = block_on(async {
        let mut client = sandbox.provisioning().await;
        client
            .ensure_user(ensure("oidc", "refused", "refused", &["fine", &long]))
            .await
    });
    assert!(refused.is_err(), "{refused:?}");
    // Someone known signs in again: that commit publishes (and syncs) the
    // mark, which must not now claim the refused uid was handed out.
    assert_eq!(provision(&sandbox, "ok", 1), all[..1]);
    assert!(daemon.stop());
    let daemon = sandbox.start_daemon();
    let uid = try_new(&sandbox, "after-refusal").expect("not held back after a refusal");
    assert!(!all.contains(&uid));
    all.push(uid);

    // --start-over is refused on a database with data.
    assert!(daemon.stop());
    let mut args = vec!["--config", sandbox.config.to_str().expect("path")];
    args.push("--start-over");
    let out = sandbox.run(&connect_tests::artifacts().nameserviced, &args);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(
        text.contains("only for a state directory whose database is empty"),
        "{text}"
    );

    // Restore an old copy, confirm, then add accounts with no new groups
    // (only uids move): later starts are not held back again.
    let daemon = sandbox.start_daemon();
    let backup = sandbox.path("backup-2");
    ctl_text(&sandbox, &["backup", backup.to_str().expect("path")]);
    all.extend(provision(&sandbox, "lost", 3));
    assert!(daemon.stop());
    let state = sandbox.path("state");
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(state.join(format!("{DATABASE}{suffix}")));
    }
    fs::copy(backup.join(DATABASE), state.join(DATABASE)).expect("restore");
    let daemon = sandbox.start_daemon();
    ctl_text(&sandbox, &["confirm-restore"]);
    let fresh = try_new(&sandbox, "only-a-uid").expect("after the confirmation");
    assert!(fresh > *all.iter().max().expect("some"));
    assert!(daemon.stop());
    let _daemon = sandbox.start_daemon();
    assert!(health(&sandbox).contains("ok"), "{}", health(&sandbox));
    assert!(
        try_new(&sandbox, "next-start").is_ok(),
        "not held back again"
    );
}
