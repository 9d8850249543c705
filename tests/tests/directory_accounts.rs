//! Existing accounts: RFC 2307 entries of a real slapd answered through real
//! glibc, refused when they would collide, kept when the directory goes
//! away; identities bound to directory accounts and to accounts only a
//! second NSS source (extrausers) knows; content running under those uids.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use connect_tests::connectd::Connectd;
use connect_tests::content::*;
use connect_tests::slapd::Slapd;
use connect_tests::*;
use serde_json::json;

/// ada and bea are RFC 2307 accounts; the others are entries the
/// nameservice must refuse.
fn directory_with_posix_accounts() -> Slapd {
    let slapd = Slapd::start();
    for (name, uid_number) in [
        ("ada", 5001),
        ("bea", 5002),
        ("cyd", 5003),
        ("zero", 0),
        ("inrange", UID_BASE + 7),
        ("nobody", 5009),
    ] {
        slapd.add_user(name, &format!("{name} pw"), name, "Example", "", &[]);
        slapd.make_posix(name, uid_number, 5000, &format!("/home/{name}"), "/bin/zsh");
    }
    slapd.add_posix_group("primary", 5000, &[]);
    slapd.add_posix_group("research", 5100, &["ada", "bea"]);
    slapd.add_posix_group("ops", 5101, &["ada"]);
    // A local group's name: refused, the local one answers.
    slapd.add_posix_group("staff", 5102, &["ada"]);
    slapd
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `getent` answered by the daemon, not the cache file.
fn getent_daemon(sandbox: &Sandbox, args: &[&str]) -> (i32, String) {
    let out = sandbox
        .command("getent", args)
        .env("CONNECT_NSS_CACHE", "off")
        .output()
        .expect("getent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn directory_accounts_answer_through_glibc_and_outlive_the_directory() {
    if need_root() {
        return;
    }
    let mut slapd = directory_with_posix_accounts();
    let sandbox = Sandbox::new(&format!(
        "{}CacheTtl = 1h\nNegativeCacheTtl = 1m\n",
        slapd.nameservice_section()
    ));
    let daemon = sandbox.start_daemon();

    // The directory's own view, through glibc.
    assert_eq!(
        sandbox.getent(&["passwd", "ada"]),
        (0, "ada:x:5001:5000:ada Example:/home/ada:/bin/zsh\n".into())
    );
    assert_eq!(
        sandbox.getent(&["passwd", "5002"]).1.split(':').next(),
        Some("bea")
    );
    assert_eq!(
        sandbox.getent(&["group", "research"]),
        (0, "research:x:5100:ada,bea\n".into())
    );
    assert_eq!(
        sandbox.getent(&["group", "5101"]),
        (0, "ops:x:5101:ada\n".into())
    );
    let id = ok(&sandbox.run("id", &["ada"]));
    assert_eq!(
        id.trim(),
        "uid=5001(ada) gid=5000(primary) groups=5000(primary),5100(research),5101(ops)",
    );
    let (code, initgroups) = sandbox.getent(&["initgroups", "ada"]);
    assert_eq!(code, 0);
    let gids: Vec<&str> = initgroups.split_whitespace().skip(1).collect();
    assert!(
        gids.contains(&"5100") && gids.contains(&"5101"),
        "{initgroups}"
    );
    // Now cached: the fast path (cache file) answers it too.
    assert_eq!(sandbox.getent(&["passwd", "ada"]).0, 0);

    // Refused entries: root's uid, a uid inside the provisioning range, a
    // local account's name, a local group's name. Each is logged.
    assert_eq!(sandbox.getent(&["passwd", "zero"]).0, 2);
    assert_eq!(sandbox.getent(&["passwd", "inrange"]).0, 2);
    let (_, nobody) = sandbox.getent(&["passwd", "nobody"]);
    assert!(
        nobody.starts_with("nobody:x:65534:"),
        "the local one: {nobody}"
    );
    assert_eq!(
        getent_daemon(&sandbox, &["passwd", "5009"]).0,
        2,
        "nobody's directory uid"
    );
    let (_, staff) = sandbox.getent(&["group", "staff"]);
    assert!(
        !staff.contains("5102"),
        "the local staff group answers: {staff}"
    );
    let log = daemon.log_text();
    for why in [
        "uidNumber is 0",
        "inside [Nameservice] UidRange",
        "is a local account",
    ] {
        assert!(log.contains(why), "logged: {why}\n{log}");
    }

    // Filter syntax in a lookup key matches nothing: as a name it is not a
    // name at all, and as an identity's unique id it is escaped.
    assert_eq!(getent_daemon(&sandbox, &["passwd", "a*"]).0, 2);
    let account = block_on(async {
        let mut client = sandbox.provisioning().await;
        client
            .ensure_user(ensure("ldap/corp", "*)(entryUUID=*", "mallory", &[]))
            .await
            .expect("provisioned")
            .into_inner()
            .account
            .expect("account")
    });
    assert!(
        (UID_BASE..UID_BASE + 100_000).contains(&account.uid),
        "a fresh provisioned uid, not a directory one: {account:?}"
    );
    assert_eq!(account.source, "provisioned");

    // An identity whose entryUUID is ada's is bound to ada's account.
    let ada_uuid = slapd.entry_uuid("ada");
    let bound = block_on(async {
        let mut client = sandbox.provisioning().await;
        client
            .ensure_user(ensure("ldap/corp", &ada_uuid, "ada", &[]))
            .await
            .expect("bound")
            .into_inner()
            .account
            .expect("account")
    });
    assert_eq!(
        (bound.name.as_str(), bound.uid, bound.gid),
        ("ada", 5001, 5000)
    );
    assert_eq!(bound.source, "directory corp");
    let shown = ok(&sandbox.ctl(&["user", "ada"]));
    assert!(shown.contains("source:        directory corp"), "{shown}");
    assert!(shown.contains("bound:"), "{shown}");

    // The directory goes away.
    slapd.stop();
    // Known accounts keep answering, from the cache file and the daemon.
    assert_eq!(sandbox.getent(&["passwd", "ada"]).0, 0);
    assert_eq!(getent_daemon(&sandbox, &["passwd", "ada"]).0, 0);
    assert_eq!(getent_daemon(&sandbox, &["group", "research"]).0, 0);
    assert!(ok(&sandbox.run("id", &["ada"])).contains("5100(research)"));
    // Never-seen entries fail fast, several times, logged once.
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(getent_daemon(&sandbox, &["passwd", "cyd"]).0, 2);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }
    // A bound identity still signs in; a first-seen one of this provider
    // is refused as a temporary failure, not given a new uid.
    block_on(async {
        let mut client = sandbox.provisioning().await;
        let again = client
            .ensure_user(ensure("ldap/corp", &ada_uuid, "ada", &[]))
            .await
            .expect("bound identity works offline")
            .into_inner();
        assert_eq!(again.account.expect("account").uid, 5001);
        let refused = client
            .ensure_user(ensure("ldap/corp", "new-person-uuid", "newbie", &[]))
            .await
            .expect_err("a directory that may hold the account is down");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(
            refused.message().contains("new uid"),
            "{}",
            refused.message()
        );
        let all = all_accounts(&mut client).await;
        assert!(
            all.iter().all(|a| a.name != "newbie"),
            "nobody was provisioned"
        );
    });
    let log = daemon.log_text();
    assert_eq!(
        log.matches("cached entries keep answering").count(),
        1,
        "the outage is logged once:\n{log}"
    );

    // Back again: the never-seen user resolves once the backoff is over,
    // and an administrator can refresh and flush.
    slapd.restart();
    let deadline = Instant::now() + Duration::from_secs(70);
    while getent_daemon(&sandbox, &["passwd", "cyd"]).0 != 0 {
        assert!(
            Instant::now() < deadline,
            "cyd never resolved:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(daemon.log_text().contains("directory reachable again"));
    slapd.set_user_attribute("ada", "loginShell", &["/bin/bash"]);
    let refreshed = ok(&sandbox.ctl(&["refresh", "ada"]));
    assert!(
        refreshed.contains("shell:         /bin/bash"),
        "{refreshed}"
    );
    assert_eq!(
        sandbox.getent(&["passwd", "ada"]).1,
        "ada:x:5001:5000:ada Example:/home/ada:/bin/bash\n",
        "the cache file follows the refresh"
    );
    let flushed = ok(&sandbox.ctl(&["flush-cache"]));
    assert!(flushed.contains("refreshed next"), "{flushed}");
}

/// The seed's promise for existing accounts: a directory viewer and a
/// viewer mapped onto an account only a second NSS source (extrausers)
/// knows sign in to connectd; each one's content runs under their own
/// existing uid and reads the files that uid owns on a shared directory.
#[test]
fn existing_accounts_run_content_under_their_own_uids() {
    if need_root() {
        return;
    }
    let slapd = Slapd::start();
    slapd.add_user("ada", "ada pw", "Ada", "Lovelace", "", &[]);
    slapd.make_posix("ada", 5001, 5000, "/home/ada", "/bin/sh");
    slapd.add_posix_group("primary", 5000, &[]);
    slapd.add_user("dora", "dora pw", "Dora", "Explorer", "", &[]);
    slapd.add_user("carol", "carol pw", "Carol", "Admin", "", &[]);

    let mut sandbox = Sandbox::new(&slapd.nameservice_section());
    sandbox.set_nsswitch(
        "passwd: files connect extrausers\ngroup: files connect extrausers\n\
         initgroups: files connect extrausers\nshadow: files\nhosts: files dns\n",
    );
    let extrausers = sandbox.path("extrausers");
    fs::create_dir_all(&extrausers).expect("mkdir");
    fs::write(
        extrausers.join("passwd"),
        "dora:x:4001:4001:Dora:/home/dora:/bin/sh\n",
    )
    .expect("write");
    fs::write(extrausers.join("group"), "dora:x:4001:\n").expect("write");
    sandbox.bind_dir(&extrausers, "/var/lib/extrausers");
    // The shared group is a local one, so its members are listed there, as
    // an administrator would for existing accounts.
    sandbox.bind_file(
        "/etc/passwd",
        &format!(
            "{}connect:x:999:999:Connect:/var/lib/connect:/usr/sbin/nologin\n",
            host_passwd()
        ),
    );
    sandbox.bind_file(
        "/etc/group",
        &format!(
            "{}connect:x:999:\n{SHARED_GROUP}:x:{SHARED_GID}:connect,ada,dora\n",
            host_group()
        ),
    );
    let shared_fs = sandbox.path("shared");
    for (name, uid) in [("ada", 5001), ("dora", 4001)] {
        let dir = shared_fs.join(name);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("data.txt"), format!("{name}'s existing data")).expect("write");
        for path in [dir.join("data.txt"), dir.clone()] {
            std::os::unix::fs::chown(&path, Some(uid), Some(uid)).expect("chown");
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
        fs::set_permissions(dir.join("data.txt"), fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    fs::set_permissions(&shared_fs, fs::Permissions::from_mode(0o755)).expect("chmod");
    sandbox.bind_dir(&shared_fs, "/mnt");
    let daemon = sandbox.start_daemon();

    // Mapping onto host accounts: the extrausers one is found (the daemon
    // asked NSS without asking itself); root, accounts the nameservice
    // provisioned itself and accounts already bound are refused.
    let dora_uuid = slapd.entry_uuid("dora");
    let mapped = ok(&sandbox.ctl(&[
        "map",
        "--provider",
        "ldap/corp",
        "--id",
        &dora_uuid,
        "--local-user",
        "dora",
    ]));
    assert!(mapped.contains("uid:           4001"), "{mapped}");
    assert!(mapped.contains("source:        host"), "{mapped}");
    let refused = sandbox.ctl(&[
        "map",
        "--provider",
        "x",
        "--id",
        "1",
        "--local-user",
        "root",
    ]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("never mapped to root"));
    ok(&sandbox.ctl(&[
        "provision",
        "--provider",
        "x",
        "--id",
        "p",
        "--username",
        "prov",
    ]));
    assert_eq!(
        sandbox.getent(&["passwd", "prov"]).0,
        0,
        "glibc sees it through the module"
    );
    let refused = sandbox.ctl(&[
        "map",
        "--provider",
        "x",
        "--id",
        "2",
        "--local-user",
        "prov",
    ]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("resolves no account"),
        "the daemon's own lookups bypass the module: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let refused = sandbox.ctl(&[
        "map",
        "--provider",
        "x",
        "--id",
        "3",
        "--local-user",
        "dora",
    ]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already bound"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let server = Connectd::start_in(
        &sandbox,
        &format!(
            "[Authentication]\nProvider = ldap\n{}\
             [Applications]\nRunAsCurrentUser = true\nRunAs = connect\n\
             SharedRunAsUnixGroup = {SHARED_GROUP}\n",
            slapd.connectd_section(),
        ),
    );
    let login = |name: &str| {
        let r = server.login(name, &format!("{name} pw"));
        assert_eq!(r.status, 200, "{name}: {}\n{}", r.body, server.log_text());
        r.session_cookie()
    };
    let carol = login("carol");
    let ada = login("ada");
    let dora = login("dora");
    let app = server.create_content(
        &carol,
        json!({"name": "existing", "access_type": "logged_in", "run_as_current_user": true}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    server.deploy(&carol, &guid, &probe_bundle());
    for (cookie, name, uid) in [(&ada, "ada", 5001), (&dora, "dora", 4001)] {
        let who = server.open(&guid, "whoami", Some(cookie)).json();
        let pid = host_pid(&who).expect("pid");
        assert_eq!(
            proc_uid(pid),
            Some(uid),
            "{name}: {who}\n{}",
            daemon.log_text()
        );
        let r = server.open(
            &guid,
            &format!("read?path=/mnt/{name}/data.txt"),
            Some(cookie),
        );
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert_eq!(r.json()["text"], format!("{name}'s existing data"));
    }
    let r = server.open(&guid, "read?path=/mnt/dora/data.txt", Some(&ada));
    assert_eq!(r.json()["errno"], 13, "ada cannot read dora's: {}", r.body);
    // The dashboard's inspector says where each account comes from.
    for (cookie, expected) in [
        (&ada, "an existing directory corp account"),
        (&dora, "an existing account of this host"),
    ] {
        let guid = server.get_with_cookie("/__api__/v1/user", cookie).json()["guid"]
            .as_str()
            .expect("guid")
            .to_owned();
        let page = server.get_with_cookie(&format!("/connect/people/{guid}/account"), &carol);
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains(expected), "{expected}: {}", page.body);
    }
    // Bound, not provisioned: nobody got a uid from the range.
    let accounts = block_on(async { all_accounts(&mut sandbox.provisioning().await).await });
    assert!(
        accounts.iter().all(|a| a.name != "ada" && a.name != "dora"),
        "{accounts:?}"
    );
}
