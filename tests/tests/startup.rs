//! nameserviced refuses to start, with a message that names the problem and
//! the fix, on configurations that could hand out someone else's id.

use connect_tests::*;

fn refusal(sandbox: &Sandbox) -> String {
    let out = sandbox.daemon_once(&["--check"]);
    assert_eq!(
        out.status.code(),
        Some(78),
        "EX_CONFIG expected; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_default_test_configuration_is_valid() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("");
    let out = sandbox.daemon_once(&["--check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn refuses_reserved_ranges() {
    if need_root() {
        return;
    }
    for (extra, needle) in [
        ("UidRange = 900-5000\n", "overlaps 0-999"),
        ("UidRange = 60500-70000\n", "overlaps 60000-65535"),
        ("GidRange = 0-10\n", "overlaps 0-999"),
    ] {
        let text = refusal(&Sandbox::new(extra));
        assert!(text.contains(needle), "{extra}: {text}");
    }
}

#[test]
fn refuses_ranges_holding_local_accounts_groups_or_subids() {
    if need_root() {
        return;
    }
    let mut sandbox = Sandbox::new(&format!("UidRange = {UID_BASE}-{}\n", UID_BASE + 10));
    let passwd = connect_tests::host_passwd()
        + &format!("olduser:x:{}:100::/home/olduser:/bin/sh\n", UID_BASE + 5);
    sandbox.bind_file("/etc/passwd", &passwd);
    let text = refusal(&sandbox);
    assert!(
        text.contains("olduser") && text.contains(&(UID_BASE + 5).to_string()),
        "{text}"
    );

    let mut sandbox = Sandbox::new("");
    let group = connect_tests::host_group() + &format!("oldgroup:x:{}:\n", GID_BASE + 7);
    sandbox.bind_file("/etc/group", &group);
    let text = refusal(&sandbox);
    assert!(text.contains("oldgroup"), "{text}");

    let mut sandbox = Sandbox::new("");
    sandbox.bind_file(
        "/etc/subuid",
        &format!("someone:{}:65536\n", UID_BASE - 1000),
    );
    let text = refusal(&sandbox);
    assert!(text.contains("/etc/subuid"), "{text}");

    let mut sandbox = Sandbox::new("");
    sandbox.bind_file(
        "/etc/subgid",
        &format!("someone:{}:65536\n", GID_BASE + 50_000),
    );
    let text = refusal(&sandbox);
    assert!(text.contains("/etc/subgid"), "{text}");
}

#[test]
fn refuses_malformed_files_naming_the_line() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("StripDomain = sometimes\n");
    let text = refusal(&sandbox);
    assert!(
        text.contains("StripDomain") && text.contains("connect.gcfg:"),
        "{text}"
    );
    let sandbox = Sandbox::new("[Broken\n");
    let text = refusal(&sandbox);
    // The standard sections take lines 1-9; the extra text starts at line 10.
    assert!(text.contains("connect.gcfg:10:"), "{text}");
}

#[test]
fn refuses_a_missing_file_naming_it() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("");
    std::fs::remove_file(&sandbox.config).expect("rm");
    let text = refusal(&sandbox);
    assert!(text.contains("connect.gcfg"), "{text}");
}

#[test]
fn refuses_to_run_beside_a_running_daemon() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("");
    let daemon = sandbox.start_daemon();
    let out = sandbox.daemon_once(&[]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("another nameserviced is using the state directory"),
        "{text}"
    );
    // The first daemon is unharmed.
    assert!(sandbox.ctl(&["health"]).status.success());
    assert!(daemon.stop());
}
