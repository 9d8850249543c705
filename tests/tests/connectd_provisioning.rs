//! An LDAP sign-in with RunAsCurrentUser on provisions the viewer's Unix
//! account through nameserviced before the sign-in completes, so
//! `getent passwd <viewer>` (real glibc, the real module, in a private mount
//! namespace) shows it in the shared group at once. With the nameservice
//! down, the sign-in still succeeds, the failure is logged, and the account
//! is provisioned at the next chance.

use connect_tests::connectd::Connectd;
use connect_tests::slapd::Slapd;
use connect_tests::*;

fn ldap_config(slapd: &Slapd) -> String {
    format!(
        "[Authentication]\nProvider = ldap\n[LDAP \"corp\"]\nServerAddress = {}\n\
         BindDN = {}\nBindPassword = {}\nUserSearchBaseDN = {}\nGroupSearchBaseDN = {}\n\
         [Applications]\nRunAsCurrentUser = true\n",
        slapd.host_port(),
        slapd.reader_dn(),
        slapd.reader_password(),
        slapd.people_dn(),
        slapd.groups_dn(),
    )
}

/// The gid of the shared group, as glibc sees it in the namespace.
fn shared_gid(sandbox: &Sandbox) -> String {
    let (code, line) = sandbox.getent(&["group", SHARED_GROUP]);
    assert_eq!(code, 0, "the shared group resolves");
    line.split(':').nth(2).expect("gid").to_owned()
}

#[test]
fn ldap_sign_in_provisions_the_viewers_account_before_it_completes() {
    if need_root() {
        return;
    }
    let slapd = Slapd::start();
    slapd.add_user("alice", "alice pw", "Alice", "Liddell", "", &[]);
    slapd.add_group("Data-Science", &["alice"]);
    let sandbox = Sandbox::new("");
    let _daemon = sandbox.start_daemon();
    let server = Connectd::start_in(&sandbox, &ldap_config(&slapd));

    let (code, _) = sandbox.getent(&["passwd", "alice"]);
    assert_eq!(code, 2, "no account before the first sign-in");
    let r = server.login("alice", "alice pw");
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());

    // No waiting: the account exists when the sign-in answers.
    let (code, line) = sandbox.getent(&["passwd", "alice"]);
    assert_eq!(
        code,
        0,
        "getent passwd alice after sign-in:\n{}",
        server.log_text()
    );
    let fields: Vec<&str> = line.trim().split(':').collect();
    assert_eq!(fields[0], "alice");
    let uid: u32 = fields[2].parse().expect("uid");
    assert!((UID_BASE..UID_BASE + 100_000).contains(&uid), "{line}");
    assert_eq!(
        fields[3],
        shared_gid(&sandbox),
        "primary group is the shared group: {line}"
    );
    assert!(
        fields[4].contains("Alice Liddell"),
        "GECOS from the directory: {line}"
    );
    // The directory's groups came along.
    let (code, groups) = sandbox.getent(&["initgroups", "alice"]);
    assert_eq!(code, 0);
    let (code, ds) = sandbox.getent(&["group", "data-science"]);
    assert_eq!(code, 0, "the IdP group was provisioned");
    let ds_gid = ds.split(':').nth(2).expect("gid");
    assert!(
        groups.split_whitespace().any(|g| g == ds_gid),
        "{groups} / {ds}"
    );
    assert!(!server.log_lines_with("Unix account ready").is_empty());

    // Signing in again changes nothing.
    let again = server.login("alice", "alice pw");
    assert_eq!(again.status, 200);
    let (_, line2) = sandbox.getent(&["passwd", "alice"]);
    assert_eq!(line, line2, "provisioning is idempotent");
}

#[test]
fn a_nameservice_outage_does_not_block_sign_in_and_is_retried() {
    if need_root() {
        return;
    }
    let slapd = Slapd::start();
    slapd.add_user("bob", "bob pw", "Bob", "Builder", "", &[]);
    let sandbox = Sandbox::new("");
    // nameserviced is not running.
    let server = Connectd::start_in(&sandbox, &ldap_config(&slapd));
    let r = server.login("bob", "bob pw");
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
    let logged = server.log_lines_with("could not provision the Unix account at sign-in");
    assert_eq!(logged.len(), 1, "{}", server.log_text());
    assert!(
        logged[0].contains("is nameserviced running") && logged[0].contains("user=bob"),
        "the log says what failed and what to check: {}",
        logged[0]
    );
    let home = server.get_with_cookie("/connect/", &r.session_cookie());
    assert!(home.body.contains("not ready yet"), "{}", home.body);

    // The nameservice comes back: the next chance provisions the account.
    let _daemon = sandbox.start_daemon();
    let r = server.login("bob", "bob pw");
    assert_eq!(r.status, 200);
    let (code, line) = sandbox.getent(&["passwd", "bob"]);
    assert_eq!(code, 0, "{}", server.log_text());
    assert!(line.starts_with("bob:"), "{line}");
    let home = server.get_with_cookie("/connect/", &r.session_cookie());
    assert!(!home.body.contains("not ready yet"), "{}", home.body);
}
