//! No test answer comes from a copy of the product installed on the host.
//!
//! `scripts/up` installs a real nameserviced, its sockets and cache file at
//! the default paths, `connect` in /etc/nsswitch.conf and
//! /etc/connect/connect.gcfg; the README then runs the whole suite on that
//! same machine. So this test builds exactly that world around the harness:
//! a live decoy nameserviced whose sockets and cache file sit at the default
//! paths, the decoy's configuration at the default config path, and an
//! nsswitch.conf that names the module. It then re-runs this very test
//! binary inside that world (the `#[ignore]`d scenarios below) and requires:
//!
//! 1. the decoy is live (a plain `getent` there finds its account), so the
//!    other checks can fail;
//! 2. each of the harness's ways of pointing a process elsewhere (the
//!    client's socket override, a sandbox, a connectd with no sandbox of its
//!    own) answers from its own daemon or from none, never from the decoy;
//! 3. the decoy's accounts are unchanged afterwards: no test provisioned
//!    into an installed system.
//!
//! The world is a private mount namespace with an overlay over /etc, so the
//! host's files are never touched.

use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Stdio};

use connect_tests::connectd::Connectd;
use connect_tests::slapd::Slapd;
use connect_tests::*;

/// The decoy's ranges: no other test hands out these ids.
const DECOY_UID: u32 = 4_000_000;
const DECOY_GID: u32 = 5_000_000;
/// Set on the re-run, so the scenarios run only inside the decoy world.
const IN_DECOY_WORLD: &str = "CONNECT_TEST_IN_DECOY_WORLD";

/// Usernames of the decoy's accounts, sorted.
fn decoy_usernames(decoy: &Sandbox) -> Vec<String> {
    let accounts = block_on(async {
        let mut client = decoy.provisioning().await;
        all_accounts(&mut client).await
    });
    let mut names: Vec<String> = accounts.into_iter().map(|a| a.name).collect();
    names.sort();
    names
}

#[test]
fn an_installed_copy_at_the_default_paths_answers_no_test() {
    if need_root() {
        return;
    }
    let decoy = Sandbox::new(&format!(
        "[Nameservice]\nUidRange = {DECOY_UID}-{}\nGidRange = {DECOY_GID}-{}\n",
        DECOY_UID + 99,
        DECOY_GID + 99
    ));
    let _daemon = decoy.start_daemon();
    for (id, name) in [("decoy-1", "alice"), ("decoy-2", "carol")] {
        let out = decoy.ctl(&[
            "provision",
            "--provider",
            "demo",
            "--id",
            id,
            "--username",
            name,
        ]);
        assert!(out.status.success(), "{out:?}");
    }
    let before = decoy_usernames(&decoy);
    assert_eq!(before, ["alice", "carol"]);
    // The decoy publishes its cache file shortly after a change: wait until
    // it holds the accounts, as an installed system's would.
    let cache = std::ffi::CString::new(decoy.run_dir.join("cache").into_os_string().into_vec())
        .expect("path");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cache_answers(&cache, "alice") {
        assert!(
            std::time::Instant::now() < deadline,
            "the decoy never published its cache file"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // The installed system's configuration, at the default path, naming the
    // default sockets and cache file (where the decoy's are mounted).
    let state = decoy.path("state");
    let installed_config = decoy.path("installed.gcfg");
    std::fs::write(
        &installed_config,
        format!(
            "[Applications]\nSharedRunAsUnixGroup = {SHARED_GROUP}\n[Nameservice]\n\
             UidRange = {DECOY_UID}-{}\nGidRange = {DECOY_GID}-{}\nStateDirectory = {}\n",
            DECOY_UID + 99,
            DECOY_GID + 99,
            state.display()
        ),
    )
    .expect("write the installed config");
    let nsswitch = decoy.path("installed-nsswitch.conf");
    std::fs::write(
        &nsswitch,
        "passwd: files connect\ngroup: files connect\ninitgroups: files connect\n\
         shadow: files\nhosts: files dns\n",
    )
    .expect("write nsswitch.conf");

    let world = "set -e; \
        mount -t tmpfs -o mode=755 tmpfs /run; mkdir -p /run/connect-nameservice; \
        mount --bind \"$DECOY_RUN\" /run/connect-nameservice; \
        mkdir -p \"$OVERLAY\"; mount -t tmpfs tmpfs \"$OVERLAY\"; \
        mkdir \"$OVERLAY/upper\" \"$OVERLAY/work\"; \
        mount -t overlay overlay -o \"lowerdir=/etc,upperdir=$OVERLAY/upper,workdir=$OVERLAY/work\" /etc; \
        mkdir -p /etc/connect; cp \"$DECOY_CONFIG\" /etc/connect/connect.gcfg; \
        cp \"$DECOY_NSSWITCH\" /etc/nsswitch.conf; \
        exec \"$@\"";
    let test_binary = std::env::current_exe().expect("this test binary");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(world)
        .arg("decoy-world")
        .arg(&test_binary)
        .args(["--ignored", "--exact", "scenarios_inside_the_decoy_world"])
        .args(["--nocapture", "--test-threads", "1"])
        .env(IN_DECOY_WORLD, "1")
        .env("DECOY_RUN", &decoy.run_dir)
        .env("DECOY_CONFIG", &installed_config)
        .env("DECOY_NSSWITCH", &nsswitch)
        .env("OVERLAY", decoy.path("overlay"))
        // The installed module, as ld.so would find it in /usr/lib.
        .env("LD_LIBRARY_PATH", &decoy.lib_dir)
        .env_remove("CONNECT_NSS_SOCKET")
        .env_remove("CONNECT_NSS_CACHE")
        .stdin(Stdio::null())
        .output()
        .expect("run the scenarios in the decoy world");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "a scenario failed in the decoy world:\n{text}"
    );
    // The re-run must have run the scenarios, not filtered them all out.
    assert!(
        text.contains("test result: ok. 1 passed"),
        "the scenarios did not run:\n{text}"
    );
    assert_eq!(
        decoy_usernames(&decoy),
        before,
        "a test provisioned into the installed nameservice:\n{text}"
    );
}

/// Runs only inside the world built above; panics on the first answer that
/// came from the decoy.
#[test]
#[ignore = "run by an_installed_copy_at_the_default_paths_answers_no_test"]
fn scenarios_inside_the_decoy_world() {
    assert_eq!(
        std::env::var(IN_DECOY_WORLD).as_deref(),
        Ok("1"),
        "only meaningful inside the decoy world"
    );

    // 1. The decoy answers a process that asks it, through glibc and through
    //    the client, so each check below can fail.
    let (code, line) = getent(&["passwd", "alice"]);
    assert_eq!(
        code, 0,
        "the decoy is not answering; the checks would prove nothing"
    );
    assert!(line.contains(&format!(":{DECOY_UID}:")), "{line}");
    match connect_nss_client::user_by_name("carol") {
        Ok(Some(user)) => assert_eq!(user.uid, DECOY_UID + 1),
        other => panic!("the decoy is not answering the client: {other:?}"),
    }

    let default_cache = std::ffi::CString::new(connect_proto::DEFAULT_CACHE_FILE).expect("path");
    assert!(
        cache_answers(&default_cache, "alice"),
        "the default cache file does not hold the decoy's account"
    );

    // 2a. The client pointed at another (absent) daemon asks that daemon
    //     only: not the default socket, and not the default cache file.
    //     Run in a thread of its own, whose fast path has not been set up.
    let answer = std::thread::spawn(|| {
        // SAFETY: this binary runs one test at a time here (--test-threads 1),
        // and no other thread reads the environment meanwhile.
        unsafe { std::env::set_var("CONNECT_NSS_SOCKET", "/nonexistent/lookup.sock") };
        let answer = connect_nss_client::user_by_name("alice");
        // SAFETY: as above.
        unsafe { std::env::remove_var("CONNECT_NSS_SOCKET") };
        answer
    })
    .join()
    .expect("lookup thread");
    assert!(
        matches!(answer, Err(connect_nss_client::Unavailable::Failed(_))),
        "a socket override still answered from the installed system: {answer:?}"
    );

    // 2b. A sandbox answers from its own daemon, through glibc.
    let sandbox = Sandbox::new("");
    let _daemon = sandbox.start_daemon();
    let out = sandbox.ctl(&[
        "provision",
        "--provider",
        "test",
        "--id",
        "bob-1",
        "--username",
        "bob",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sandbox.getent(&["passwd", "alice"]).0, 2);
    let (code, line) = sandbox.getent(&["passwd", "bob"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains(&format!(":{UID_BASE}:")), "{line}");

    // 2c. A connectd the tests start without a sandbox: an LDAP sign-in
    //     (which provisions) must not reach the installed daemon, and its
    //     own lookups must not see the decoy's accounts.
    let slapd = Slapd::start();
    slapd.add_user("dave", "dave pw", "Dave", "Jones", "dave@example.org", &[]);
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(
        dir.path(),
        &format!(
            "[Authentication]\nProvider = ldap\n[LDAP \"corp\"]\nServerAddress = {}\n\
             BindDN = {}\nBindPassword = {}\nUserSearchBaseDN = {}\n\
             GroupSearchBaseDN = {}\nTimeout = 5s\n\
             [Applications]\nRunAsCurrentUser = true\n",
            slapd.host_port(),
            slapd.reader_dn(),
            slapd.reader_password(),
            slapd.people_dn(),
            slapd.groups_dn(),
        ),
    );
    let r = server.login("dave", "dave pw");
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
    assert!(server.stop(), "connectd did not stop cleanly");
}

/// Does the cache file at `path` itself answer `name` (no daemon asked)?
fn cache_answers(path: &std::ffi::CStr, name: &str) -> bool {
    let Ok(mapped) = connect_memcache::mapped::Mapped::open(path) else {
        return false;
    };
    let Ok(snapshot) = mapped.snapshot() else {
        return false;
    };
    matches!(
        snapshot.user_by_name(name),
        connect_memcache::Answer::Hit(_)
    )
}

/// `getent` in this process's world (no sandbox of its own).
fn getent(args: &[&str]) -> (i32, String) {
    let out = Command::new("getent")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run getent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
