//! OpenID Connect sign-in against a real provider (panva's oidc-provider,
//! tests/oidc), driven like a browser: redirects, cookies, the provider's
//! login form. A new viewer lands with their claims and mapped role, gets a
//! Unix account from the real nameservice and runs current-user content
//! under it; a rename at the provider keeps the account; a key rotation
//! needs no restart; and every refusal says why, in the log, and creates
//! nobody.

use std::time::Duration;

use connect_tests::connectd::{connectd_once, free_port, Connectd};
use connect_tests::content::*;
use connect_tests::oidc::{user, Browser, Idp};
use connect_tests::*;
use serde_json::{json, Value};

fn users() -> Value {
    json!({
        "u-carol": user("carol pw", json!({
            "preferred_username": "carol", "email": "carol@example.org",
            "given_name": "Carol", "family_name": "Admin", "groups": ["admins"], "role": "admin"
        })),
        "u-alice": user("alice pw", json!({
            "preferred_username": "alice", "email": "alice@example.org",
            "given_name": "Alice", "family_name": "Liddell",
            "groups": ["analysts", "staff"], "role": ["publisher"]
        })),
        "u-nameless": user("nameless pw", json!({"email": "nameless@example.org"})),
    })
}

/// `[Server]`/`[HTTP]` for a connectd on `port`, which the provider must
/// know before connectd starts (its callback is registered there).
fn server_sections(port: u16) -> String {
    format!("[Server]\nAddress = http://127.0.0.1:{port}\n[HTTP]\nListen = 127.0.0.1:{port}\n")
}

fn base(server: &Connectd) -> String {
    format!("http://{}", server.address)
}

/// Signs in through the provider; returns the session cookie.
fn sign_in(server: &Connectd, login: &str, password: &str) -> String {
    let browser = Browser::new();
    let landing = browser.walk(
        &format!("{}/__login__", base(server)),
        login,
        Some(password),
    );
    assert_eq!(
        landing.status,
        200,
        "{login}: {landing:?}\n{}",
        server.log_text()
    );
    browser
        .session_cookie(&base(server))
        .unwrap_or_else(|| panic!("{login} got no session: {landing:?}\n{}", server.log_text()))
}

fn me(server: &Connectd, cookie: &str) -> Value {
    let r = server.get_with_cookie("/__api__/v1/user", cookie);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn oidc_viewers_are_provisioned_keep_their_account_and_run_as_themselves() {
    if need_root() {
        return;
    }
    let mut sandbox = Sandbox::new("");
    sandbox.bind_run_as_account();
    let _daemon = sandbox.start_daemon();
    let port = free_port();
    let idp = Idp::start(
        sandbox.dir.path(),
        &format!("http://127.0.0.1:{port}/__login__/callback"),
        users(),
    );
    let server = Connectd::start_in(
        &sandbox,
        &format!(
            "{}{}[Authorization]\nUserRoleMapping = true\nPublisherRoleMapping = publisher\n\
             AdministratorRoleMapping = admin\n\
             [Applications]\nRunAsCurrentUser = true\nRunAs = connect\n",
            server_sections(port),
            idp.connectd_sections(
                "CustomScope = groups role\nRoleClaim = role\nGroupsAutoProvision = true\n\
                 Logging = true\n"
            ),
        ),
    );

    let carol = sign_in(&server, "u-carol", "carol pw");
    assert_eq!(me(&server, &carol)["user_role"], "administrator");
    let alice = sign_in(&server, "u-alice", "alice pw");
    let alice_json = me(&server, &alice);
    assert_eq!(alice_json["username"], "alice", "{alice_json}");
    assert_eq!(alice_json["email"], "alice@example.org");
    assert_eq!(alice_json["first_name"], "Alice");
    assert_eq!(alice_json["last_name"], "Liddell");
    assert_eq!(alice_json["user_role"], "publisher");
    assert!(
        !server
            .log_lines_with("Matched 'publisher' as role (publisher)")
            .is_empty(),
        "role mapping logs with Logging = true:\n{}",
        server.log_text()
    );
    let groups = server.get_with_cookie("/__api__/v1/groups", &carol).json();
    let names: Vec<&str> = groups["results"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    for group in ["analysts", "staff", "admins"] {
        assert!(names.contains(&group), "{group} in {groups}");
    }

    // The nameservice gave alice an account; current-user content runs
    // under it.
    let alice_uid = sandbox.uid_of("alice");
    let app = server.create_content(
        &carol,
        json!({"name": "explorer", "access_type": "logged_in", "run_as_current_user": true}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    server.deploy(&carol, &guid, &probe_bundle());
    let who = server.open(&guid, "whoami", Some(&alice)).json();
    assert_eq!(
        proc_uid(host_pid(&who).expect("pid")),
        Some(alice_uid),
        "{who}"
    );

    // A rename at the provider: same person (same sub), same account.
    let mut renamed = users();
    renamed["u-alice"]["claims"]["preferred_username"] = json!("alice.liddell");
    idp.set_users(renamed);
    let again = sign_in(&server, "u-alice", "alice pw");
    let again_json = me(&server, &again);
    assert_eq!(again_json["username"], "alice.liddell", "{again_json}");
    assert_eq!(
        again_json["guid"], alice_json["guid"],
        "the same connectd user"
    );
    let (code, line) = sandbox.getent(&["passwd", &alice_uid.to_string()]);
    assert_eq!(code, 0, "the account is still there: {line}");
    let who = server.open(&guid, "whoami", Some(&again)).json();
    assert_eq!(
        proc_uid(host_pid(&who).expect("pid")),
        Some(alice_uid),
        "after the rename content still runs under the same uid: {who}"
    );

    // The provider rotates its signing key: the next sign-in verifies with
    // the new key, without a restart.
    idp.rotate_key();
    let after_rotation = sign_in(&server, "u-alice", "alice pw");
    assert_eq!(me(&server, &after_rotation)["guid"], alice_json["guid"]);
    assert!(
        !server
            .log_lines_with("read the provider's keys again")
            .is_empty(),
        "{}",
        server.log_text()
    );

    // Sign-out ends the session here and offers the provider's.
    let browser = Browser::new();
    browser.walk(
        &format!("{}/__login__", base(&server)),
        "u-alice",
        Some("alice pw"),
    );
    let cookie = browser.session_cookie(&base(&server)).expect("session");
    let (status, page) = browser.post(&format!("{}/__logout__", base(&server)));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("You are signed out"), "{page}");
    assert!(
        page.contains(&format!(
            "{}/session/end?client_id=connect-tests",
            idp.issuer
        )),
        "RP-initiated logout is offered: {page}"
    );
    let r = server.get_with_cookie("/__api__/v1/user", &cookie);
    assert_eq!(r.status, 401, "the session is gone: {}", r.body);
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The log lines added since `before` bytes.
fn new_log(server: &Connectd, before: usize) -> String {
    server.log_text()[before..].to_owned()
}

#[test]
fn every_oidc_refusal_says_why_and_creates_nobody() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let idp = Idp::start(
        dir.path(),
        &format!("http://127.0.0.1:{port}/__login__/callback"),
        users(),
    );
    let server = Connectd::start(
        dir.path(),
        &format!(
            "{}{}",
            server_sections(port),
            idp.connectd_sections("RequireUsernameClaim = true\n")
        ),
    );
    let login = format!("{}/__login__", base(&server));

    // Carol signs in (and is the administrator who looks at the users).
    let carol_browser = Browser::new();
    let landing = carol_browser.walk(&login, "u-carol", Some("carol pw"));
    assert_eq!(landing.status, 200, "{landing:?}\n{}", server.log_text());
    let carol = carol_browser
        .session_cookie(&base(&server))
        .expect("session");
    let callback = landing.callback.expect("the callback URL");

    // Altered ID tokens, each refused with its precise cause in the log.
    let cases = [
        ("wrong-audience", "audience"),
        ("extra-audience", "someone-else"),
        ("wrong-issuer", "issuer"),
        ("expired", "expired"),
        ("future", "issued in the future"),
        ("bad-signature", "signature"),
        ("alg-none", "no signature found"),
        ("unadvertised-alg", "HS256"),
        ("wrong-nonce", "nonce"),
    ];
    for (mode, cause) in cases {
        let before = server.log_text().len();
        idp.tamper_next(mode);
        let landing = Browser::new().walk(&login, "u-alice", Some("alice pw"));
        assert_eq!(landing.status, 403, "{mode}: {landing:?}");
        assert!(
            landing.body.contains("could not be verified"),
            "{mode}: {}",
            landing.body
        );
        let log = new_log(&server, before);
        assert!(
            log.contains("sign-in refused") && log.to_lowercase().contains(&cause.to_lowercase()),
            "{mode}: the log names the cause ({cause}):\n{log}"
        );
    }

    // The viewer cancels at the provider: its access_denied, in plain words.
    let before = server.log_text().len();
    let landing = Browser::new().walk(&login, "u-alice", None);
    assert_eq!(landing.status, 403, "{landing:?}");
    assert!(
        landing.body.contains("declined the sign-in"),
        "{}",
        landing.body
    );
    assert!(new_log(&server, before).contains("answered access_denied"));

    // A callback used twice, or with a state connectd never issued.
    for url in [
        callback.clone(),
        format!("{}/__login__/callback?state=forged&code=abc", base(&server)),
        format!("{}/__login__/callback?code=abc", base(&server)),
    ] {
        let before = server.log_text().len();
        let (status, body) = Browser::new().get(&url);
        assert_eq!(status, 400, "{url}: {body}");
        assert!(body.contains("could not be completed"), "{body}");
        let log = new_log(&server, before);
        assert!(
            log.contains("already used") || log.contains("without a state"),
            "{url}:\n{log}"
        );
    }

    // Login CSRF: an attacker signs in at the provider in their browser
    // and sends the callback link to someone else. Refused there, and the
    // attacker's state is used up.
    let attacker = Browser::new();
    let link = attacker.walk_to_callback(&login, "u-alice", "alice pw");
    let before = server.log_text().len();
    let (status, body) = Browser::new().get(&link);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("could not be completed"), "{body}");
    assert!(new_log(&server, before).contains("started in another browser"));
    let (status, _) = attacker.get(&link);
    assert_eq!(status, 400, "a refused state cannot be used afterwards");

    // Mix-up (RFC 9207): the answer names another issuer; and a
    // parameter given twice.
    let browser = Browser::new();
    let link = browser.walk_to_callback(&login, "u-alice", "alice pw");
    let iss = format!("iss={}", url_encode(&idp.issuer));
    assert!(link.contains(&iss), "oidc-provider names itself: {link}");
    let before = server.log_text().len();
    let (status, body) = browser.get(&link.replace(&iss, "iss=https%3A%2F%2Fevil.example"));
    assert_eq!(status, 403, "{body}");
    assert!(new_log(&server, before).contains("(iss)"));
    let browser = Browser::new();
    let link = browser.walk_to_callback(&login, "u-alice", "alice pw");
    let before = server.log_text().len();
    let (status, body) = browser.get(&format!("{link}&code=another"));
    assert_eq!(status, 400, "{body}");
    assert!(new_log(&server, before).contains("twice"));

    // No username claim, with RequireUsernameClaim = true.
    let landing = Browser::new().walk(&login, "u-nameless", Some("nameless pw"));
    assert_eq!(landing.status, 403, "{landing:?}");
    assert!(
        landing.body.contains("did not send your username"),
        "{}",
        landing.body
    );

    // Nobody but carol was created.
    let users = server.get_with_cookie("/__api__/v1/users", &carol).json();
    let names: Vec<&str> = users["results"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names, ["carol"], "{users}");
}

#[test]
fn a_dead_hung_or_mismatched_provider_is_a_clear_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = |issuer: &str| {
        let sub = dir.path().join(free_port().to_string());
        std::fs::create_dir(&sub).expect("mkdir");
        let port = free_port();
        Connectd::start(
            &sub,
            &format!(
                "{}[Authentication]\nProvider = oauth2\n[OAuth2]\nOpenIDConnectIssuer = {issuer}\n\
                 ClientId = c\nClientSecret = s\nAllowInsecureLoopbackIssuer = true\n",
                server_sections(port)
            ),
        )
    };

    // Nothing listens at the issuer.
    let dead = start(&format!("http://127.0.0.1:{}", free_port()));
    let (status, body) = Browser::new().get(&format!("{}/__login__/start", base(&dead)));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot be reached"), "{body}");
    assert!(!dead
        .log_lines_with("cannot read the OpenID Connect discovery document")
        .is_empty());

    // The issuer accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let hung_issuer = format!("http://{}", hung.local_addr().expect("addr"));
    let _held = std::thread::spawn(move || {
        let held: Vec<_> = hung.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(60));
        drop(held);
    });
    let stuck = start(&hung_issuer);
    let started = std::time::Instant::now();
    let (status, body) = Browser::new().get(&format!("{}/__login__/start", base(&stuck)));
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the request timed out in time"
    );

    // The issuer answers with more than connectd reads (3 MB, without a
    // length, so only counting the body can stop it).
    let flood = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let flood_issuer = format!("http://{}", flood.local_addr().expect("addr"));
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in flood.incoming().take(4).flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            );
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..48 {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
    });
    let flooded = start(&flood_issuer);
    let (status, body) = Browser::new().get(&format!("{}/__login__/start", base(&flooded)));
    assert_eq!(status, 503, "{body}");
    assert!(
        !flooded
            .log_lines_with("larger than 1048576 bytes")
            .is_empty(),
        "{}",
        flooded.log_text()
    );

    // The provider names itself differently from the configuration.
    let idp = Idp::start(dir.path(), "http://127.0.0.1:1/__login__/callback", users());
    let other_name = idp.issuer.replace("127.0.0.1", "localhost");
    let mismatched = start(&other_name);
    let (status, body) = Browser::new().get(&format!("{}/__login__/start", base(&mismatched)));
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("misconfigured"), "{body}");
    assert!(
        !mismatched
            .log_lines_with("does not match [OAuth2] OpenIDConnectIssuer")
            .is_empty(),
        "{}",
        mismatched.log_text()
    );
}

#[test]
fn unusable_oauth2_settings_stop_connectd_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = connectd_once(
        dir.path(),
        "[Server]\nAddress = https://connect.example.com\n[Authentication]\nProvider = oauth2\n\
         [OAuth2]\nOpenIDConnectIssuer = http://idp.example.com\nClientId = c\nClientSecret = s\n",
    );
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("OpenIDConnectIssuer") && stderr.contains("https"),
        "{stderr}"
    );
}

#[test]
fn an_https_provider_with_a_private_ca_is_trusted_only_through_tls_ca_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    connect_tests::slapd::make_tls(dir.path());
    let tls = dir.path().join("tls");
    let port = free_port();
    let idp = Idp::start_tls(
        dir.path(),
        &format!("http://127.0.0.1:{port}/__login__/callback"),
        users(),
        &tls,
    );
    assert!(idp.issuer.starts_with("https://"), "{}", idp.issuer);
    let start = |port: u16, extra: &str| {
        let sub = dir.path().join(port.to_string());
        std::fs::create_dir(&sub).expect("mkdir");
        Connectd::start(
            &sub,
            &format!(
                "{}{}",
                server_sections(port),
                idp.connectd_sections_without_http(extra)
            ),
        )
    };

    // The system's CAs do not know the provider's: no sign-in, and the log
    // says it is the certificate.
    let untrusted = start(free_port(), "");
    let (status, body) = Browser::new().get(&format!("{}/__login__/start", base(&untrusted)));
    assert_eq!(status, 503, "{body}");
    let log = untrusted.log_text();
    assert!(
        log.contains("cannot read the OpenID Connect discovery document")
            && log.to_lowercase().contains("certificate"),
        "{log}"
    );

    // With TLSCACertificate the same provider signs people in.
    let trusted = start(
        port,
        &format!("TLSCACertificate = {}\n", tls.join("ca.pem").display()),
    );
    let carol = sign_in(&trusted, "u-carol", "carol pw");
    assert_eq!(me(&trusted, &carol)["username"], "carol");
}
