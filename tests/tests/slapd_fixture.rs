//! The LDAP fixture (connect_tests::slapd) is a real directory: entries with
//! the custom schema, groups, password binds, StartTLS and ldaps verified
//! against its throwaway CA, and a server that really goes away on `stop`.

use std::net::TcpStream;
use std::time::Instant;

use connect_tests::need_root;
use connect_tests::slapd::Slapd;

/// Exit status of an OpenLDAP client tool: the LDAP result code.
const INVALID_CREDENTIALS: i32 = 49;
const SERVER_DOWN: i32 = 255;

fn whoami(slapd: &Slapd, dn: &str, password: &str, url: &str, extra: &[&str]) -> (i32, String) {
    let out = slapd
        .bind_command(dn, password, url)
        .args(extra)
        .output()
        .expect("run ldapwhoami");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn alice(slapd: &Slapd) {
    slapd.add_user(
        "alice",
        "alice-pw",
        "Alice",
        "Liddell",
        "alice@example.org",
        &[
            ("Department", &["Engineering"]),
            ("RSC-Role", &["publisher"]),
        ],
    );
}

#[test]
fn users_groups_and_custom_attributes() {
    if need_root() {
        return;
    }
    let began = Instant::now();
    let slapd = Slapd::start();
    eprintln!("slapd answered after {:?}", began.elapsed());
    alice(&slapd);
    slapd.add_group("publishers", &["alice"]);
    let alice_dn = slapd.user_dn("alice");
    assert_eq!(alice_dn, "uid=alice,ou=people,dc=example,dc=org");

    let entry = slapd.search_as_reader(
        slapd.people_dn(),
        "(&(uid=alice)(Department=engineering)(RSC-Role=publisher))",
        &["Department", "RSC-Role", "mail", "objectClass"],
    );
    for line in [
        "dn: uid=alice,ou=people,dc=example,dc=org",
        "Department: Engineering",
        "RSC-Role: publisher",
        "mail: alice@example.org",
        "objectClass: connectTestPerson",
    ] {
        assert!(entry.lines().any(|l| l == line), "{line:?} in:\n{entry}");
    }
    let group = slapd.search_as_reader(slapd.groups_dn(), "(cn=publishers)", &["member"]);
    assert!(
        group.lines().any(|l| l == format!("member: {alice_dn}")),
        "{group}"
    );

    let uuid = slapd.entry_uuid("alice");
    assert_eq!(uuid.len(), 36, "{uuid}");
    assert_eq!(uuid.matches('-').count(), 4, "{uuid}");

    // Multi-valued replace, then delete.
    slapd.set_user_attribute("alice", "RSC-Role", &["publisher", "viewer"]);
    let entry = slapd.search_as_reader(slapd.people_dn(), "(uid=alice)", &["RSC-Role"]);
    assert!(entry.contains("RSC-Role: viewer") && entry.contains("RSC-Role: publisher"));
    slapd.set_user_attribute("alice", "Department", &[]);
    slapd.set_user_attribute("alice", "Department", &[]);
    let entry = slapd.search_as_reader(slapd.people_dn(), "(uid=alice)", &["Department"]);
    assert!(!entry.contains("Department"), "{entry}");

    // Membership changes; an emptied group keeps the placeholder member.
    slapd.add_user("bob", "bob-pw", "Bob", "Builder", "", &[]);
    slapd.add_group("empty", &[]);
    slapd.add_member("empty", "bob");
    slapd.add_member("publishers", "bob");
    let members = |cn: &str| {
        let text = slapd.search_as_reader(slapd.groups_dn(), &format!("(cn={cn})"), &["member"]);
        let mut members: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("member: "))
            .map(str::to_string)
            .collect();
        members.sort();
        members
    };
    assert_eq!(members("empty"), [slapd.user_dn("bob")]);
    assert_eq!(
        members("publishers"),
        [alice_dn.clone(), slapd.user_dn("bob")]
    );
    slapd.remove_member("publishers", "alice");
    assert_eq!(members("publishers"), [slapd.user_dn("bob")]);
    slapd.remove_member("empty", "bob");
    assert_eq!(members("empty"), [slapd.placeholder_member_dn()]);

    // Values that are not LDIF-safe round-trip, and odd uids are escaped.
    slapd.add_user(
        " o'brien, jr+",
        "pw: with\nnewline",
        "Zoë",
        "O'Brien",
        "",
        &[("Department", &["R&D, Zürich", ":colon", " lead"])],
    );
    let dn = slapd.user_dn(" o'brien, jr+");
    assert_eq!(dn, "uid=\\ o'brien\\, jr\\+,ou=people,dc=example,dc=org");
    let (code, text) = whoami(&slapd, &dn, "pw: with\nnewline", &slapd.url(), &[]);
    assert_eq!(code, 0, "{text}");
    slapd.delete_user(" o'brien, jr+");
    let gone = slapd.search_as_reader(slapd.people_dn(), "(givenName=Zo*)", &["uid"]);
    assert!(gone.trim().is_empty(), "{gone}");

    slapd.delete_user("bob");
    let left = slapd.search_as_reader(slapd.people_dn(), "(uid=*)", &["uid"]);
    let mut uids: Vec<&str> = left
        .lines()
        .filter_map(|l| l.strip_prefix("uid: "))
        .collect();
    uids.sort();
    assert_eq!(uids, ["alice"]);
}

#[test]
fn binds_check_passwords_and_anonymous_sees_nothing() {
    if need_root() {
        return;
    }
    let slapd = Slapd::start();
    alice(&slapd);
    let dn = slapd.user_dn("alice");
    let url = slapd.url();

    let (code, text) = whoami(&slapd, &dn, "alice-pw", &url, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("dn:{dn}")), "{text}");
    let (code, text) = whoami(&slapd, &dn, "wrong", &url, &[]);
    assert_eq!(code, INVALID_CREDENTIALS, "{text}");
    let (code, text) = whoami(
        &slapd,
        "uid=nobody,ou=people,dc=example,dc=org",
        "x",
        &url,
        &[],
    );
    assert_eq!(code, INVALID_CREDENTIALS, "{text}");
    let (code, text) = whoami(
        &slapd,
        slapd.reader_dn(),
        slapd.reader_password(),
        &url,
        &[],
    );
    assert_eq!(code, 0, "{text}");

    slapd.set_user_password("alice", "new-pw");
    let (code, text) = whoami(&slapd, &dn, "alice-pw", &url, &[]);
    assert_eq!(code, INVALID_CREDENTIALS, "{text}");
    let (code, text) = whoami(&slapd, &dn, "new-pw", &url, &[]);
    assert_eq!(code, 0, "{text}");

    // Anonymous can authenticate but not read; a user reads only itself,
    // and nobody but the reader and the admin reads passwords.
    let search = |auth: &[&str], attrs: &[&str]| {
        let out = slapd
            .ldap_command("ldapsearch")
            .args(["-LLL", "-o", "ldif-wrap=no", "-x", "-H", &url])
            .args(["-b", slapd.base_dn()])
            .args(auth)
            .arg("(objectClass=*)")
            .args(attrs)
            .output()
            .expect("run ldapsearch");
        assert!(
            out.status.success() || out.status.code() == Some(32),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(search(&[], &[]).trim(), "", "anonymous read something");
    // (A user reads its own entry by its DN; the base is not disclosed to it.)
    let own = search(
        &["-D", &dn, "-w", "new-pw", "-s", "base", "-b", &dn],
        &["*"],
    );
    let dns: Vec<&str> = own.lines().filter(|l| l.starts_with("dn:")).collect();
    assert_eq!(dns, [format!("dn: {dn}")], "{own}");
    assert!(!own.contains("userPassword"), "{own}");
    let all = search(
        &["-D", slapd.reader_dn(), "-w", slapd.reader_password()],
        &[],
    );
    for dn in [slapd.base_dn(), slapd.people_dn(), slapd.groups_dn(), &dn] {
        assert!(all.contains(&format!("dn: {dn}\n")), "{dn} in:\n{all}");
    }
    assert!(all.contains("userPassword"), "{all}");
}

#[test]
fn starttls_and_ldaps_verify_against_the_throwaway_ca() {
    if need_root() {
        return;
    }
    let slapd = Slapd::start();
    let (admin, password) = (slapd.admin_dn(), slapd.admin_password());
    assert!(slapd.ca_cert_path().is_file());

    let (code, text) = whoami(&slapd, admin, password, &slapd.url(), &["-ZZ"]);
    assert_eq!(code, 0, "StartTLS: {text}");
    let (code, text) = whoami(&slapd, admin, password, &slapd.ldaps_url(), &[]);
    assert_eq!(code, 0, "ldaps: {text}");
    // The certificate is valid for DNS:localhost too (for rustls clients).
    // OpenLDAP's client cannot show it: it checks `localhost` as the machine's
    // own host name, so ask openssl.
    for (check, name) in [
        ("-verify_hostname", "localhost"),
        ("-verify_ip", "127.0.0.1"),
    ] {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-brief", "-verify_return_error", "-CAfile"])
            .arg(slapd.ca_cert_path())
            .args([check, name, "-connect", &slapd.ldaps_host_port()])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run openssl s_client");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // With another CA, verification fails: the TLS really is checked.
    let other_ca = slapd.dir().join("other-ca.pem");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=other CA",
        ])
        .arg("-keyout")
        .arg(slapd.dir().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (url, extra) in [(slapd.url(), &["-ZZ"][..]), (slapd.ldaps_url(), &[][..])] {
        let out = slapd
            .bind_command(admin, password, &url)
            .args(extra)
            .env("LDAPTLS_CACERT", &other_ca)
            .output()
            .expect("run ldapwhoami");
        assert!(!out.status.success(), "{url} trusted without its CA");
    }
}

#[test]
fn stop_refuses_connections_and_restart_keeps_the_data() {
    if need_root() {
        return;
    }
    let mut slapd = Slapd::start();
    alice(&slapd);
    let uuid = slapd.entry_uuid("alice");
    let (admin, password) = (slapd.admin_dn(), slapd.admin_password());

    slapd.stop();
    assert!(!slapd.is_running());
    for addr in [slapd.host_port(), slapd.ldaps_host_port()] {
        let err = TcpStream::connect(&addr).expect_err("connected to a stopped slapd");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{addr}");
    }
    let (code, text) = whoami(&slapd, admin, password, &slapd.url(), &[]);
    assert_eq!(code, SERVER_DOWN, "{text}");

    slapd.restart();
    assert!(slapd.is_running());
    assert_eq!(slapd.entry_uuid("alice"), uuid);

    slapd.kill();
    let err = TcpStream::connect(slapd.host_port()).expect_err("connected to a killed slapd");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        slapd.log_text().contains("slapd starting"),
        "{}",
        slapd.log_text()
    );

    // A port taken while the directory was down is detected, not waited on.
    let squatter = std::net::TcpListener::bind(slapd.host_port()).expect("take the port");
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| slapd.restart()));
    let message = failed.expect_err("restarted on a taken port");
    let message = message
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(message.contains("ports were taken"), "{message}");
    drop(squatter);
    slapd.restart();
    assert_eq!(slapd.entry_uuid("alice"), uuid);
}
