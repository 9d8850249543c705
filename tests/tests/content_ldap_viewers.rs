//! The seed's promise, end to end: two directory users signed in through a
//! real slapd, provisioned by the real nameservice, open the same
//! current-user app. Two processes run under their own uids (checked in
//! /proc); each reads its own directory on a shared filesystem and is
//! denied the other's; a file one writes into the shared working directory
//! is readable by the other through the shared group, and a file written
//! with mode 0400 is not (the seed's warning).

use std::fs;
use std::os::unix::fs::PermissionsExt;

use connect_tests::connectd::Connectd;
use connect_tests::content::*;
use connect_tests::slapd::Slapd;
use connect_tests::*;
use serde_json::json;

#[test]
fn two_directory_viewers_share_an_app_but_not_their_data() {
    if need_root() {
        return;
    }
    // connectd inherits this umask; content must get 027 all the same.
    // SAFETY: umask has no memory-safety preconditions.
    unsafe { libc::umask(0o022) };
    let slapd = Slapd::start();
    slapd.add_user("alice", "alice pw", "Alice", "Liddell", "", &[]);
    slapd.add_user("bob", "bob pw", "Bob", "Builder", "", &[]);
    slapd.add_user("carol", "carol pw", "Carol", "Admin", "", &[]);

    // Local RunAs account and the shared group (which the nameservice then
    // uses as every provisioned account's primary group); a "shared
    // filesystem" mounted at /mnt in the namespace.
    let mut sandbox = Sandbox::new("");
    let passwd = connect_tests::host_passwd();
    let group = connect_tests::host_group();
    sandbox.bind_file(
        "/etc/passwd",
        &format!("{passwd}connect:x:999:999:Connect:/var/lib/connect:/usr/sbin/nologin\n"),
    );
    sandbox.bind_file(
        "/etc/group",
        &format!("{group}connect:x:999:\n{SHARED_GROUP}:x:{SHARED_GID}:connect\n"),
    );
    let shared_fs = sandbox.path("shared");
    fs::create_dir_all(&shared_fs).expect("mkdir");
    fs::set_permissions(&shared_fs, fs::Permissions::from_mode(0o755)).expect("chmod");
    sandbox.bind_dir(&shared_fs, "/mnt");

    let _daemon = sandbox.start_daemon();
    let server = Connectd::start_in(
        &sandbox,
        &format!(
            "[Authentication]\nProvider = ldap\n{}\
             [Applications]\nRunAsCurrentUser = true\nRunAs = connect\n",
            slapd.connectd_section(),
        ),
    );
    let login = |name: &str, password: &str| {
        let r = server.login(name, password);
        assert_eq!(r.status, 200, "{name}: {}\n{}", r.body, server.log_text());
        r.session_cookie()
    };
    let carol = login("carol", "carol pw"); // first user: administrator
    let alice = login("alice", "alice pw");
    let bob = login("bob", "bob pw");
    let (alice_uid, bob_uid) = (sandbox.uid_of("alice"), sandbox.uid_of("bob"));
    assert_ne!(alice_uid, bob_uid);

    // Each viewer's private directory on the shared filesystem.
    for (name, uid) in [("alice", alice_uid), ("bob", bob_uid)] {
        let dir = shared_fs.join(name);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join("secret.txt"), format!("{name}'s data")).expect("write");
        for path in [dir.join("secret.txt"), dir.clone()] {
            std::os::unix::fs::chown(&path, Some(uid), Some(SHARED_GID)).expect("chown");
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
        fs::set_permissions(dir.join("secret.txt"), fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }

    let app = server.create_content(
        &carol,
        json!({"name": "explorer", "access_type": "logged_in", "run_as_current_user": true}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    server.deploy(&carol, &guid, &probe_bundle());

    let who_alice = server.open(&guid, "whoami", Some(&alice)).json();
    let who_bob = server.open(&guid, "whoami", Some(&bob)).json();
    let (pid_a, pid_b) = (
        host_pid(&who_alice).expect("pid"),
        host_pid(&who_bob).expect("pid"),
    );
    assert_ne!(pid_a, pid_b, "two viewers, two processes");
    assert_eq!(proc_uid(pid_a), Some(alice_uid), "{who_alice}");
    assert_eq!(proc_uid(pid_b), Some(bob_uid), "{who_bob}");
    assert_eq!(who_alice["env"]["USER"], "alice");
    assert_eq!(who_bob["env"]["USER"], "bob");

    // Content may look accounts up but never provision them.
    let r = server.open(
        &guid,
        "connect?path=/run/connect-nameservice/provision.sock",
        Some(&alice),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["errno"], 13, "EACCES: {}", r.body);
    let r = server.open(
        &guid,
        "connect?path=/run/connect-nameservice/lookup.sock",
        Some(&alice),
    );
    assert_eq!(r.status, 200, "lookups stay possible: {}", r.body);
    // Nor can content running as Applications.RunAs (the default
    // [Nameservice] ServiceAccount used to be that account).
    let shared = server.create_content(
        &carol,
        json!({"name": "shared", "access_type": "logged_in"}),
    );
    let shared_guid = shared["guid"].as_str().expect("guid").to_owned();
    server.deploy(&carol, &shared_guid, &probe_bundle());
    assert_eq!(
        server.open(&shared_guid, "whoami", Some(&alice)).json()["uid"],
        999
    );
    let r = server.open(
        &shared_guid,
        "connect?path=/run/connect-nameservice/provision.sock",
        Some(&alice),
    );
    assert_eq!(r.json()["errno"], 13, "RunAs may not provision: {}", r.body);

    // Own data yes, the other's no: the kernel decides.
    let read =
        |cookie: &str, path: &str| server.open(&guid, &format!("read?path={path}"), Some(cookie));
    let r = read(&alice, "/mnt/alice/secret.txt");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["text"], "alice's data");
    let r = read(&bob, "/mnt/bob/secret.txt");
    assert_eq!(r.json()["text"], "bob's data", "{}", r.body);
    let r = read(&alice, "/mnt/bob/secret.txt");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["errno"], 13, "EACCES: {}", r.body);
    let r = read(&bob, "/mnt/alice/secret.txt");
    assert_eq!(r.json()["errno"], 13, "EACCES: {}", r.body);

    // The shared working directory: group-readable by default, because
    // connectd gives every process umask 027 (the probe reads its umask and
    // never sets one; connectd's own, inherited from this test, is 022).
    for who in [&who_alice, &who_bob] {
        assert_eq!(who["umask"], "0o27", "connectd set the umask: {who}");
    }
    let work = who_alice["cwd"].as_str().expect("cwd").to_owned();
    assert_eq!(who_bob["cwd"], work.as_str());
    let r = server.open(
        &guid,
        "write?name=shared.txt&text=from%20alice",
        Some(&alice),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["gid"],
        SHARED_GID,
        "the shared group owns it: {}",
        r.body
    );
    assert_eq!(
        r.json()["mode"],
        "0o640",
        "group-readable, hidden from others: {}",
        r.body
    );
    let r = read(&bob, &format!("{work}/shared.txt"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["text"], "from alice");
    // ... but mode 0400 keeps other viewers out, as the seed warns.
    let r = server.open(
        &guid,
        "write?name=mine.txt&text=only%20me&mode=0400",
        Some(&alice),
    );
    assert_eq!(r.json()["mode"], "0o400", "{}", r.body);
    let r = read(&bob, &format!("{work}/mine.txt"));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["errno"], 13, "{}", r.body);
    let r = read(&alice, &format!("{work}/mine.txt"));
    assert_eq!(r.json()["text"], "only me", "{}", r.body);
}

/// A directory rename (modrdn) is followed through `entryUUID`: the user
/// signs in with the new name and is the same connectd user, with the same
/// Unix uid (now under the new name), and the content runs as that uid.
#[test]
fn a_renamed_directory_user_keeps_their_user_and_uid() {
    if need_root() {
        return;
    }
    let slapd = Slapd::start();
    slapd.add_user("alice", "alice pw", "Alice", "Liddell", "", &[]);
    let mut sandbox = Sandbox::new("");
    let passwd = connect_tests::host_passwd();
    let group = connect_tests::host_group();
    sandbox.bind_file(
        "/etc/passwd",
        &format!("{passwd}connect:x:999:999:Connect:/var/lib/connect:/usr/sbin/nologin\n"),
    );
    sandbox.bind_file(
        "/etc/group",
        &format!("{group}connect:x:999:\n{SHARED_GROUP}:x:{SHARED_GID}:connect\n"),
    );
    let _daemon = sandbox.start_daemon();
    let server = Connectd::start_in(
        &sandbox,
        &format!(
            "[Authentication]\nProvider = ldap\n{}\
             [Applications]\nRunAsCurrentUser = true\nRunAs = connect\n",
            slapd.connectd_section(),
        ),
    );
    let r = server.login("alice", "alice pw");
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
    let before = r.json();
    let cookie = r.session_cookie();
    let uid = sandbox.uid_of("alice");
    let app = server.create_content(
        &cookie,
        json!({"name": "mine", "access_type": "logged_in", "run_as_current_user": true}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    server.deploy(&cookie, &guid, &probe_bundle());
    let who = server.open(&guid, "whoami", Some(&cookie)).json();
    assert_eq!(who["uid"], uid, "{who}");

    let entry_uuid = slapd.entry_uuid("alice");
    slapd.rename_user("alice", "alicia");
    assert_eq!(
        slapd.entry_uuid("alicia"),
        entry_uuid,
        "a rename, not a new entry"
    );

    let r = server.login("alicia", "alice pw");
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
    let after = r.json();
    assert_eq!(after["username"], "alicia", "the directory's new name");
    assert_eq!(after["guid"], before["guid"], "the same connectd user");
    let renamed_cookie = r.session_cookie();
    let (code, line) = sandbox.getent(&["passwd", "alicia"]);
    assert_eq!(code, 0, "the account has the new name");
    assert_eq!(
        line.split(':').nth(2).and_then(|u| u.parse::<u32>().ok()),
        Some(uid),
        "and the same uid: {line}"
    );
    let (code, line) = sandbox.getent(&["passwd", "alice"]);
    assert_eq!(code, 2, "the old name is gone: {line}");
    let r = server.login("alice", "alice pw");
    assert_eq!(
        r.status, 401,
        "no directory user has the old name: {}",
        r.body
    );

    // The content still runs as that uid for the renamed user.
    let r = server.open(&guid, "whoami", Some(&renamed_cookie));
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
    let pid = host_pid(&r.json()).expect("pid");
    assert_eq!(proc_uid(pid), Some(uid));
}
