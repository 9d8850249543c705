//! LDAP sign-in against a real slapd the test starts: groups synced from
//! the directory, TLS, several directories, and bad sign-ins that fail
//! cleanly and create nobody.

use connect_tests::connectd::Connectd;
use connect_tests::slapd::Slapd;
use connect_tests::*;
use serde_json::json;

/// The `[Authentication]` and `[LDAP "corp"]` sections for `slapd`.
fn ldap_config(slapd: &Slapd, extra: &str) -> String {
    format!(
        "[Authentication]\nProvider = ldap\n[LDAP \"corp\"]\nServerAddress = {}\n\
         BindDN = {}\nBindPassword = {}\nUserSearchBaseDN = {}\nGroupSearchBaseDN = {}\n\
         Timeout = 5s\n{extra}\n",
        slapd.host_port(),
        slapd.reader_dn(),
        slapd.reader_password(),
        slapd.people_dn(),
        slapd.groups_dn(),
    )
}

fn names(list: &serde_json::Value) -> Vec<String> {
    list["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|g| g["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn ldap_sign_in_syncs_the_users_groups() {
    if need_root() {
        return;
    }
    let slapd = Slapd::start();
    slapd.add_user(
        "alice",
        "alice pw",
        "Alice",
        "Liddell",
        "alice@example.org",
        &[],
    );
    slapd.add_group("Sales", &["alice"]);
    slapd.add_group("Data-Science", &["alice"]);
    slapd.add_group("Finance", &[]);
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(dir.path(), &ldap_config(&slapd, ""));

    let r = server.login("Alice", "alice pw");
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
    let user = r.json();
    assert_eq!(user["username"], "alice", "the directory's spelling");
    assert_eq!(user["first_name"], "Alice");
    assert_eq!(user["last_name"], "Liddell");
    assert_eq!(user["email"], "alice@example.org");
    let cookie = r.session_cookie();
    let groups = server.get_with_cookie("/__api__/v1/groups", &cookie).json();
    assert_eq!(names(&groups), ["Data-Science", "Sales"]);

    // Membership changes in the directory show at the next sign-in.
    slapd.remove_member("Sales", "alice");
    slapd.add_member("Finance", "alice");
    let r = server.login("alice", "alice pw");
    assert_eq!(r.status, 200, "{}", r.body);
    let groups = server.get_with_cookie("/__api__/v1/groups", &cookie).json();
    let sales = groups["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|g| g["name"] == "Sales")
        .expect("Sales is still a known group");
    let members = server
        .get_with_cookie(
            &format!(
                "/__api__/v1/groups/{}/members",
                sales["guid"].as_str().expect("guid")
            ),
            &cookie,
        )
        .json();
    assert_eq!(members["total"], 0, "alice left Sales: {members}");
    let mut known = names(&groups);
    known.sort();
    assert_eq!(known, ["Data-Science", "Finance", "Sales"]);
}

#[test]
fn bad_ldap_sign_ins_fail_cleanly_and_create_nobody() {
    if need_root() {
        return;
    }
    let mut slapd = Slapd::start();
    slapd.add_user("alice", "alice pw", "Alice", "L", "", &[]);
    slapd.add_user("bob", "bob pw", "Bob", "B", "", &[]);
    slapd.add_user("mallory", "mallory pw", "Mallory", "M", "", &[]);
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(dir.path(), &ldap_config(&slapd, ""));
    let admin = server.login("alice", "alice pw");
    assert_eq!(admin.status, 200, "{}", admin.body);
    let admin_cookie = admin.session_cookie();
    let total = || {
        server
            .get_with_cookie("/__api__/v1/users", &admin_cookie)
            .json()["total"]
            .clone()
    };

    // Wrong password, unknown user, empty password (an unauthenticated
    // bind would "succeed"), filter injection.
    for (name, password) in [
        ("bob", "wrong"),
        ("nobody", "bob pw"),
        ("bob", ""),
        ("*", "bob pw"),
        ("*)(uid=*", "bob pw"),
        ("bob)(|(uid=*", "bob pw"),
        ("b*", "bob pw"),
    ] {
        let r = server.login(name, password);
        assert_eq!(r.status, 401, "{name:?}/{password:?}: {}", r.body);
        assert_eq!(r.json()["error"], "Invalid username or password.");
    }
    assert_eq!(total(), 1, "no user was created");

    // A locked user: the directory says yes, connectd says code 50.
    let r = server.login("mallory", "mallory pw");
    assert_eq!(r.status, 200);
    let guid = r.json()["guid"].as_str().expect("guid").to_owned();
    let r = server.json(
        "POST",
        &format!("/__api__/v1/users/{guid}/lock"),
        &admin_cookie,
        &json!({"locked": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = server.login("mallory", "mallory pw");
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (403, json!(50)),
        "{}",
        r.body
    );
    assert_eq!(total(), 2);

    // The directory goes away: a clear "unavailable", logged, nobody created.
    slapd.stop();
    let r = server.login("bob", "bob pw");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("cannot be reached"), "{}", r.body);
    let logged = server.log_lines_with("cannot reach ldap://");
    assert!(!logged.is_empty(), "{}", server.log_text());
    assert_eq!(total(), 2, "bob was not created");
}

#[test]
fn starttls_and_ldaps_verify_the_directory_certificate() {
    if need_root() {
        return;
    }
    let slapd = Slapd::start();
    slapd.add_user("alice", "alice pw", "Alice", "L", "", &[]);
    let ca = slapd.ca_cert_path();
    for extra in [
        format!("StartTLS = true\nTLSCACertificate = {}\n", ca.display()),
        format!(
            "TLS = true\nTLSCACertificate = {}\nServerAddress = {}\n",
            ca.display(),
            slapd.ldaps_host_port()
        ),
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let server = Connectd::start(dir.path(), &ldap_config(&slapd, &extra));
        let r = server.login("alice", "alice pw");
        assert_eq!(r.status, 200, "{extra}: {}\n{}", r.body, server.log_text());
    }
    // A CA that did not sign the server's certificate: refused, not trusted.
    let dir = tempfile::tempdir().expect("dir");
    let other_ca = dir.path().join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-keyout")
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let server = Connectd::start(
        dir.path(),
        &ldap_config(
            &slapd,
            &format!(
                "StartTLS = true\nTLSCACertificate = {}\n",
                other_ca.display()
            ),
        ),
    );
    let r = server.login("alice", "alice pw");
    assert_eq!(r.status, 503, "{}", r.body);
}

#[test]
fn a_directory_that_is_down_does_not_hide_the_next_one() {
    if need_root() {
        return;
    }
    let slapd = Slapd::start();
    slapd.add_user("alice", "alice pw", "Alice", "L", "", &[]);
    let dead_port = connect_tests::connectd::free_port();
    let dir = tempfile::tempdir().expect("dir");
    let config = format!(
        "[Authentication]\nProvider = ldap\n[LDAP \"old\"]\nServerAddress = 127.0.0.1:{dead_port}\n\
         UserSearchBaseDN = {}\nTimeout = 2s\n{}",
        slapd.people_dn(),
        ldap_config(&slapd, "").replace("[Authentication]\nProvider = ldap\n", "")
    );
    let server = Connectd::start(dir.path(), &config);
    let r = server.login("alice", "alice pw");
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
    assert!(!server
        .log_lines_with("[LDAP \"old\"] cannot reach")
        .is_empty());
    let r = server.login("nobody", "x pw");
    assert_eq!(
        r.status, 503,
        "one directory could not be asked: {}",
        r.body
    );
}
