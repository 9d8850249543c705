//! packaging/private-log.sh, which install.sh runs on both daemons' log
//! files when there is no systemd: a log that was world-readable (the
//! review found 0644) becomes root:adm 0640, and one that is missing is
//! made so. On files in a temporary directory, never /var/log.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use connect_tests::*;

#[test]
fn daemon_logs_are_readable_by_root_and_adm_only() {
    if need_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    // Traversable, like /var/log: only the files' own modes protect them.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let existing = dir.path().join("connectd.log");
    std::fs::write(&existing, "sign-in failed for alice from 192.0.2.7\n").expect("log");
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let missing = dir.path().join("nameserviced.log");
    let script = workspace_root().join("packaging/private-log.sh");
    let ran = Command::new(&script)
        .arg(&existing)
        .arg(&missing)
        .output()
        .expect("private-log.sh");
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    // adm, where the system has it (Debian always does).
    let adm = Command::new("getent")
        .args(["group", "adm"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|line| line.split(':').nth(2)?.trim().parse::<u32>().ok())
        .unwrap_or(0);
    for log in [&existing, &missing] {
        let meta = std::fs::metadata(log).expect("metadata");
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o640,
            "{}",
            log.display()
        );
        assert_eq!((meta.uid(), meta.gid()), (0, adm), "{}", log.display());
    }
    // What was in it is kept.
    assert!(std::fs::read_to_string(&existing)
        .expect("read")
        .contains("alice"));
    // Another local user reads nothing of it.
    let read = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(&existing)
        .output()
        .expect("setpriv");
    assert!(!read.status.success());
}
