//! PAM sign-in through the real PAM stack (pam_unix), against a local
//! account that exists only inside a private mount namespace: /etc/passwd,
//! /etc/shadow and /etc/pam.d are bind-mounted copies, so the host's
//! accounts are never touched.

use std::fs;
use std::process::Command;

use connect_tests::connectd::Connectd;
use connect_tests::*;

fn openssl_hash(password: &str) -> String {
    let out = Command::new("openssl")
        .args(["passwd", "-6", "-salt", "connecttestsalt", password])
        .output()
        .expect("openssl passwd");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A sandbox with two local accounts (one usable, one with a locked
/// password) and a `connect` PAM service using pam_unix.
fn pam_sandbox() -> Sandbox {
    let mut sandbox = Sandbox::new("");
    let passwd = connect_tests::host_passwd();
    let shadow = connect_tests::host_shadow();
    let group = connect_tests::host_group();
    sandbox.bind_file(
        "/etc/passwd",
        &format!(
            "{passwd}pamuser:x:1500:1500:Pam User,,,:/nonexistent:/bin/sh\n\
             lockedpam:x:1501:1500:Locked Pam:/nonexistent:/bin/sh\n"
        ),
    );
    sandbox.bind_file(
        "/etc/shadow",
        &format!(
            "{shadow}pamuser:{}:19000:0:99999:7:::\nlockedpam:!{}:19000:0:99999:7:::\n",
            openssl_hash("pam password 1"),
            openssl_hash("pam password 2")
        ),
    );
    sandbox.bind_file("/etc/group", &format!("{group}pamgroup:x:1500:\n"));
    let pam_dir = sandbox.path("pam.d");
    fs::create_dir_all(&pam_dir).expect("mkdir");
    for entry in fs::read_dir("/etc/pam.d").expect("/etc/pam.d") {
        let entry = entry.expect("entry");
        fs::copy(entry.path(), pam_dir.join(entry.file_name())).expect("copy pam.d");
    }
    // `diruser` passes PAM without an entry in /etc/passwd, as an account
    // from a directory (sssd, pam_ldap) would: the nameservice would accept
    // to provision that name, so only connectd's rule keeps it out.
    fs::write(pam_dir.join("connect-directory-users"), "diruser\n").expect("user list");
    let directory = "pam_listfile.so item=user sense=allow onerr=fail \
                     file=/etc/pam.d/connect-directory-users";
    fs::write(
        pam_dir.join("connect"),
        format!(
            "auth sufficient {directory}\nauth required pam_unix.so nodelay\n\
             account sufficient {directory}\naccount required pam_unix.so\n"
        ),
    )
    .expect("pam service");
    sandbox.bind_dir(&pam_dir, "/etc/pam.d");
    sandbox
}

#[test]
fn pam_signs_in_local_accounts_and_skips_provisioning() {
    if need_root() {
        return;
    }
    let sandbox = pam_sandbox();
    // RunAsCurrentUser is on and nameserviced runs, reachable on the
    // sandbox's provisioning socket: PAM users are Unix accounts already
    // and must not be provisioned there.
    let daemon = sandbox.start_daemon();
    let server = Connectd::start_in(
        &sandbox,
        "[Authentication]\nProvider = pam\n[PAM]\nService = connect\n\
         [Applications]\nRunAsCurrentUser = true\n",
    );
    let r = server.login("pamuser", "pam password 1");
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
    let user = r.json();
    assert_eq!(user["username"], "pamuser");
    assert_eq!(user["first_name"], "Pam", "names come from GECOS");
    assert_eq!(user["last_name"], "User");
    assert_eq!(user["user_role"], "administrator", "the first user ever");
    let cookie = r.session_cookie();

    for (name, password) in [
        ("pamuser", "wrong"),
        ("lockedpam", "pam password 2"),
        ("nosuchuser", "pam password 1"),
        ("pamuser", ""),
    ] {
        let r = server.login(name, password);
        assert_eq!(r.status, 401, "{name}/{password}: {}", r.body);
    }
    let users = server.get_with_cookie("/__api__/v1/users", &cookie).json();
    assert_eq!(users["total"], 1, "failed sign-ins create nobody: {users}");
    let r = server.login("diruser", "any password");
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
    let log = server.log_text();
    assert!(
        log.contains("signed in") && log.contains("pamuser"),
        "{log}"
    );
    // Asked directly, the nameservice holds no account at all: neither
    // pamuser's (which it would refuse, as a local name) nor diruser's.
    let accounts = block_on(async {
        let mut client = sandbox.provisioning().await;
        all_accounts(&mut client).await
    });
    let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
    assert!(
        names.is_empty(),
        "PAM sign-ins provisioned {names:?} in nameserviced:\n{log}\n{}",
        daemon.log_text()
    );
    assert!(!log.contains("Unix account ready"), "{log}");
    assert!(!log.contains("could not provision"), "{log}");
}
