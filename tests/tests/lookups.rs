//! What an administrator sees with getent and id, through real glibc and the
//! installed module, after accounts are provisioned.

use std::os::unix::fs::PermissionsExt;

use connect_tests::*;

fn provision_alice_and_bob(sandbox: &Sandbox) {
    let out = sandbox.ctl(&[
        "provision",
        "--provider",
        "ldap",
        "--id",
        "uid=alice,ou=people",
        "--username",
        "Alice@corp.example",
        "--display-name",
        "Alice Liddell",
        "--group",
        "Data-Science=cn=ds,ou=groups",
        "--group",
        "Sales Team=cn=sales,ou=groups",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sandbox.ctl(&[
        "provision",
        "--provider",
        "ldap",
        "--id",
        "uid=bob,ou=people",
        "--username",
        "bob",
        "--group",
        "Data-Science=cn=ds,ou=groups",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn getent_and_id_show_exactly_the_provisioned_accounts() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("");
    let _daemon = sandbox.start_daemon();
    provision_alice_and_bob(&sandbox);
    let alice_uid = UID_BASE;
    let shared_gid = GID_BASE; // allocated first, at start-up
    let ds_gid = GID_BASE + 1;
    let sales_gid = GID_BASE + 2;

    let expected_alice =
        format!("alice:x:{alice_uid}:{shared_gid}:Alice Liddell:/home/alice:/bin/bash\n");
    assert_eq!(
        sandbox.getent(&["passwd", "alice"]),
        (0, expected_alice.clone())
    );
    assert_eq!(
        sandbox.getent(&["passwd", &alice_uid.to_string()]),
        (0, expected_alice)
    );
    assert_eq!(
        sandbox.getent(&["group", SHARED_GROUP]),
        (0, format!("{SHARED_GROUP}:x:{shared_gid}:alice,bob\n"))
    );
    assert_eq!(
        sandbox.getent(&["group", "data-science"]),
        (0, format!("data-science:x:{ds_gid}:alice,bob\n"))
    );
    assert_eq!(
        sandbox.getent(&["group", &sales_gid.to_string()]),
        (0, format!("sales_team:x:{sales_gid}:alice\n"))
    );
    let (code, out) = sandbox.getent(&["initgroups", "alice"]);
    assert_eq!(code, 0);
    let gids: Vec<&str> = out.split_whitespace().skip(1).collect();
    assert_eq!(
        gids,
        vec![
            shared_gid.to_string(),
            ds_gid.to_string(),
            sales_gid.to_string()
        ]
    );

    let id = sandbox.run("id", &["alice"]);
    assert_eq!(
        String::from_utf8_lossy(&id.stdout),
        format!(
            "uid={alice_uid}(alice) gid={shared_gid}({SHARED_GROUP}) \
             groups={shared_gid}({SHARED_GROUP}),{ds_gid}(data-science),{sales_gid}(sales_team)\n"
        )
    );

    // Enumeration: the host's files first, then exactly our two accounts.
    let (code, all) = sandbox.getent(&["passwd"]);
    assert_eq!(code, 0);
    let ours: Vec<&str> = all
        .lines()
        .filter(|l| {
            l.split(':')
                .nth(2)
                .and_then(|u| u.parse::<u32>().ok())
                .is_some_and(|u| u >= UID_BASE)
        })
        .collect();
    assert_eq!(
        ours,
        vec![
            format!("alice:x:{alice_uid}:{shared_gid}:Alice Liddell:/home/alice:/bin/bash"),
            format!(
                "bob:x:{}:{shared_gid}:bob:/home/bob:/bin/bash",
                alice_uid + 1
            ),
        ]
    );
    assert!(all.starts_with("root:x:0:0:"), "files answers first");
    let (_, groups) = sandbox.getent(&["group"]);
    for name in [SHARED_GROUP, "data-science", "sales_team"] {
        assert!(
            groups.lines().any(|l| l.starts_with(&format!("{name}:"))),
            "{name} in getent group"
        );
    }

    // Unknown and implausible names: "not found" (exit 2), never an error.
    // (All-numeric keys are ids to getent, so "0" is root: not listed here.)
    for name in ["nosuch", "Alice", "../x", "root\u{1}", "é", "x y"] {
        assert_eq!(sandbox.getent(&["passwd", name]).0, 2, "passwd {name:?}");
        assert_eq!(sandbox.getent(&["group", name]).0, 2, "group {name:?}");
    }
    assert_eq!(
        sandbox.getent(&["passwd", &(UID_BASE + 500).to_string()]).0,
        2
    );
    // Local accounts still come from files.
    assert!(sandbox
        .getent(&["passwd", "root"])
        .1
        .starts_with("root:x:0:0:"));
}

#[test]
fn a_local_shared_group_gives_its_gid_and_files_answers_for_it() {
    if need_root() {
        return;
    }
    let mut sandbox = Sandbox::new("[Applications]\nSharedRunAsUnixGroup = rsc\n");
    let group = connect_tests::host_group() + "rsc:x:4321:\n";
    sandbox.bind_file("/etc/group", &group);
    let _daemon = sandbox.start_daemon();
    provision_alice_and_bob(&sandbox);
    let (code, line) = sandbox.getent(&["passwd", "alice"]);
    assert_eq!(code, 0);
    assert_eq!(line.split(':').nth(3), Some("4321"), "{line}");
    assert_eq!(
        sandbox.getent(&["group", "rsc"]),
        (0, "rsc:x:4321:\n".into())
    );
    let id = String::from_utf8_lossy(&sandbox.run("id", &["-gn", "alice"]).stdout).into_owned();
    assert_eq!(id, "rsc\n");
}

#[test]
fn lock_rename_and_new_membership_show_up_at_once() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("");
    let _daemon = sandbox.start_daemon();
    provision_alice_and_bob(&sandbox);
    // Warm the daemon's cache.
    assert_eq!(sandbox.getent(&["passwd", "bob"]).0, 0);

    let out = sandbox.ctl(&["lock", "bob"]);
    assert!(out.status.success());
    let (_, line) = sandbox.getent(&["passwd", "bob"]);
    assert!(line.trim_end().ends_with(":/usr/sbin/nologin"), "{line}");
    assert!(sandbox.ctl(&["unlock", "bob"]).status.success());
    assert!(sandbox
        .getent(&["passwd", "bob"])
        .1
        .trim_end()
        .ends_with(":/bin/bash"));

    // The identity provider renames bob and adds a group: same uid, new name.
    let out = sandbox.ctl(&[
        "provision",
        "--provider",
        "ldap",
        "--id",
        "uid=bob,ou=people",
        "--username",
        "robert",
        "--group",
        "Data-Science=cn=ds,ou=groups",
        "--group",
        "Finance=cn=fin,ou=groups",
    ]);
    assert!(out.status.success());
    assert_eq!(sandbox.getent(&["passwd", "bob"]).0, 2);
    let (_, line) = sandbox.getent(&["passwd", "robert"]);
    assert!(
        line.starts_with(&format!("robert:x:{}:", UID_BASE + 1)),
        "{line}"
    );
    let (_, finance) = sandbox.getent(&["group", "finance"]);
    assert!(finance.trim_end().ends_with(":robert"), "{finance}");

    // Repeated lookups that reach the daemon (fast path off) are served
    // from its LRU cache, and the counters say so.
    for _ in 0..3 {
        let out = sandbox
            .command("getent", &["passwd", "robert"])
            .env("CONNECT_NSS_CACHE", "off")
            .output()
            .expect("getent");
        assert!(out.status.success());
    }
    let stats = sandbox.ctl(&["cache-stats"]);
    let text = String::from_utf8_lossy(&stats.stdout);
    let hits: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("hits:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(hits >= 2, "{text}");
    assert!(text.contains("invalidations:"), "{text}");
}

#[test]
fn the_bypass_guard_makes_the_module_answer_unavailable_at_once() {
    if need_root() {
        return;
    }
    let sandbox = Sandbox::new("");
    let _daemon = sandbox.start_daemon();
    provision_alice_and_bob(&sandbox);
    assert_eq!(sandbox.getent(&["passwd", "alice"]).0, 0);
    // What nameserviced sets on itself: the module must not ask the daemon.
    let out = sandbox
        .command("getent", &["passwd", "alice"])
        .env("CONNECT_NSS_BYPASS", "1")
        .output()
        .expect("getent");
    assert_eq!(out.status.code(), Some(2));
    let out = sandbox
        .command("getent", &["passwd", "root"])
        .env("CONNECT_NSS_BYPASS", "1")
        .output()
        .expect("getent");
    assert_eq!(out.status.code(), Some(0), "files still answers");
}

/// An `/etc/ld.so.cache` (written to the sandbox) that also lists the
/// sandbox's copy of the module: setuid programs ignore `LD_LIBRARY_PATH`,
/// and without this they could not load the module at all, so "the override
/// is ignored" would be shown by a module that never ran. ldconfig runs in a
/// private namespace with its own /var/cache/ldconfig, so the host's cache
/// files are never touched.
fn ld_cache_with_the_module(sandbox: &Sandbox) -> std::path::PathBuf {
    let conf = sandbox.path("ld.so.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ld.so.conf.d/*.conf\n{}\n",
            sandbox.lib_dir.display()
        ),
    )
    .expect("ld.so.conf");
    let cache = sandbox.path("ld.so.cache");
    let status = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(
            "set -e; mount -t tmpfs tmpfs /var/cache/ldconfig; \
             ldconfig -X -C \"$1\" -f \"$2\"",
        )
        .arg("ldconfig")
        .arg(&cache)
        .arg(&conf)
        .status()
        .expect("run ldconfig");
    assert!(status.success(), "ldconfig: {status}");
    cache
}

#[test]
fn setuid_programs_ignore_the_socket_and_cache_overrides() {
    if need_root() {
        return;
    }
    let mut sandbox = Sandbox::new("");
    let _daemon = sandbox.start_daemon();
    provision_alice_and_bob(&sandbox);
    let alice_uid = UID_BASE;
    // The same getent twice, as the same unprivileged user: one plain, one
    // setuid root (so glibc runs it with AT_SECURE and secure_getenv
    // returns nothing).
    let plain = sandbox.path("getent-plain");
    let setuid = sandbox.path("getent-setuid");
    for (copy, mode) in [(&plain, 0o755), (&setuid, 0o4755)] {
        std::fs::copy("/usr/bin/getent", copy).expect("copy getent");
        std::fs::set_permissions(copy, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let ld_cache = ld_cache_with_the_module(&sandbox);
    sandbox.bind_dir(&ld_cache, "/etc/ld.so.cache");
    // A well-formed, trusted (root's, 0644) cache file that tells a
    // different story about alice.
    let other_cache = sandbox.path("other-cache");
    let other = connect_memcache::build(
        &[connect_memcache::User {
            name: "alice".into(),
            uid: 4242,
            gid: 4242,
            gecos: "from the other file".into(),
            home: "/nonexistent".into(),
            shell: "/bin/false".into(),
            groups: vec![],
        }],
        &[],
        (7, 9),
        1,
        0,
    )
    .expect("build");
    std::fs::write(&other_cache, other).expect("write");
    std::fs::set_permissions(&other_cache, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let lookup = |program: &std::path::Path, var: &str, value: &std::ffi::OsStr| {
        let out = sandbox
            .command(
                "setpriv",
                &[
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    program.to_str().expect("utf-8"),
                    "passwd",
                    "alice",
                ],
            )
            .env(var, value)
            .output()
            .expect("getent as nobody");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let real = format!("alice:x:{alice_uid}:");

    // Pointed at a socket nobody listens on: honoured by a plain process
    // (alice is unavailable, and the fast path is off for another daemon's
    // socket), ignored by the setuid one (the default socket and file answer).
    let nowhere = std::ffi::OsStr::new("/nonexistent/connect/lookup.sock");
    let (code, line, err) = lookup(&plain, "CONNECT_NSS_SOCKET", nowhere);
    assert_eq!(
        code, 2,
        "plain process honours CONNECT_NSS_SOCKET: {line}{err}"
    );
    let (code, line, err) = lookup(&setuid, "CONNECT_NSS_SOCKET", nowhere);
    assert_eq!(code, 0, "setuid process ignores CONNECT_NSS_SOCKET: {err}");
    assert!(line.starts_with(&real), "{line}");

    // Pointed at another cache file: honoured by a plain process, ignored
    // by the setuid one.
    let (code, line, err) = lookup(&plain, "CONNECT_NSS_CACHE", other_cache.as_os_str());
    assert_eq!(code, 0, "{err}");
    assert!(
        line.starts_with("alice:x:4242:4242:from the other file:"),
        "plain process honours CONNECT_NSS_CACHE: {line}"
    );
    let (code, line, err) = lookup(&setuid, "CONNECT_NSS_CACHE", other_cache.as_os_str());
    assert_eq!(code, 0, "{err}");
    assert!(
        line.starts_with(&real),
        "setuid process ignores CONNECT_NSS_CACHE: {line}"
    );
}
