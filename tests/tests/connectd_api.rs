//! connectd with the built-in password provider: the first user is the
//! administrator, role changes follow Connect's rules, locked users cannot
//! sign in, API keys work and are revocable, secrets are stored hashed and
//! sign-ins are rate-limited.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use connect_tests::connectd::{Connectd, HttpRequest, HttpResponse};
use connect_tests::*;
use serde_json::json;

fn signup(server: &Connectd, username: &str, password: &str) -> (serde_json::Value, String) {
    let body = json!({"username": username, "password": password, "first_name": "F"}).to_string();
    let r = server.request(&HttpRequest {
        method: "POST",
        path: "/__signup__",
        headers: vec![("Content-Type", "application/json".into())],
        body: body.as_bytes(),
        source: None,
    });
    assert_eq!(r.status, 201, "{}", r.body);
    (r.json(), r.session_cookie())
}

fn error_code(r: &connect_tests::connectd::HttpResponse) -> u64 {
    r.json()["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no code: {}", r.body))
}

#[test]
fn roles_locking_keys_and_cookies_follow_the_rules() {
    if need_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(dir.path(), "[Password]\nSelfRegistration = true\n");

    let (admin, admin_cookie) = signup(&server, "ada", "correct horse battery");
    assert_eq!(admin["user_role"], "administrator", "the first user ever");
    let (bob, bob_cookie) = signup(&server, "bob", "another long password");
    assert_eq!(bob["user_role"], "viewer", "DefaultUserRole");

    // Cookies: HttpOnly and SameSite; not Secure over plain HTTP.
    let login = server.login("bob", "another long password");
    assert_eq!(login.status, 200, "{}", login.body);
    let set = login.header("set-cookie").expect("cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "{set}");

    let bob_guid = bob["guid"].as_str().expect("guid");
    let admin_guid = admin["guid"].as_str().expect("guid");
    let path = format!("/__api__/v1/users/{bob_guid}");

    // A viewer cannot give roles (23), even to themself.
    let r = server.json(
        "PUT",
        &path,
        &bob_cookie,
        &json!({"user_role": "administrator"}),
    );
    assert_eq!((r.status, error_code(&r)), (403, 23), "{}", r.body);
    assert_eq!(
        r.json()["error"],
        "You don't have permission to give the user this role."
    );
    // Unknown role (112).
    let r = server.json(
        "PUT",
        &path,
        &admin_cookie,
        &json!({"user_role": "superuser"}),
    );
    assert_eq!((r.status, error_code(&r)), (400, 112), "{}", r.body);
    assert_eq!(
        r.json()["error"],
        "The provided user role is not recognized."
    );
    // The only administrator cannot be demoted (61).
    let r = server.json(
        "PUT",
        &format!("/__api__/v1/users/{admin_guid}"),
        &admin_cookie,
        &json!({"user_role": "viewer"}),
    );
    assert_eq!((r.status, error_code(&r)), (400, 61), "{}", r.body);
    assert_eq!(
        r.json()["error"],
        "You cannot change the role of the only remaining administrator."
    );
    // An administrator can.
    let r = server.json(
        "PUT",
        &path,
        &admin_cookie,
        &json!({"user_role": "publisher"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user_role"], "publisher");

    // API keys: shown once, usable, listed without the secret, revocable.
    let r = server.json(
        "POST",
        "/__api__/v1/keys",
        &bob_cookie,
        &json!({"name": "ci"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let key = r.json()["key"].as_str().expect("key").to_owned();
    let key_guid = r.json()["guid"].as_str().expect("guid").to_owned();
    let with_key = |key: &str| {
        server.request(&HttpRequest {
            method: "GET",
            path: "/__api__/v1/user",
            headers: vec![("Authorization", format!("Key {key}"))],
            body: b"",
            source: None,
        })
    };
    let me = with_key(&key);
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["username"], "bob");
    let listed = server.get_with_cookie("/__api__/v1/keys", &bob_cookie);
    assert!(!listed.body.contains(&key), "keys are never shown again");
    let forged = format!("{}x", &key[..key.len() - 1]);
    assert_eq!(with_key(&forged).status, 401);

    // Locking: sessions and keys stop working, and sign-in says code 50.
    let r = server.json(
        "POST",
        &format!("{path}/lock"),
        &admin_cookie,
        &json!({"locked": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        server
            .get_with_cookie("/__api__/v1/user", &bob_cookie)
            .status,
        401
    );
    let r = with_key(&key);
    assert_eq!((r.status, error_code(&r)), (403, 50), "{}", r.body);
    let r = server.login("bob", "another long password");
    assert_eq!((r.status, error_code(&r)), (403, 50), "{}", r.body);
    assert_eq!(r.json()["error"], "This user is locked.");
    let r = server.json(
        "POST",
        &format!("{path}/lock"),
        &admin_cookie,
        &json!({"locked": false}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let login = server.login("bob", "another long password");
    assert_eq!(login.status, 200, "{}", login.body);
    let bob_cookie = login.session_cookie();
    let r = server.request(&HttpRequest {
        method: "DELETE",
        path: &format!("/__api__/v1/keys/{key_guid}"),
        headers: vec![("Cookie", bob_cookie.clone())],
        body: b"",
        source: None,
    });
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(with_key(&key).status, 401, "a deleted key is dead at once");

    // Wrong passwords fail cleanly; the database holds only Argon2 hashes.
    let r = server.login("bob", "wrong password");
    assert_eq!(r.status, 401, "{}", r.body);
    let r = server.login("nobody", "whatever it is");
    assert_eq!(r.status, 401, "{}", r.body);
    let users = server
        .get_with_cookie("/__api__/v1/users", &admin_cookie)
        .json();
    assert_eq!(users["total"], 2, "failed sign-ins create nobody: {users}");
    let mut stored = Vec::new();
    for name in ["connect.db", "connect.db-wal"] {
        stored.extend(std::fs::read(dir.path().join("data").join(name)).unwrap_or_default());
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(
        stored.contains("$argon2id$"),
        "password hashes are Argon2id"
    );
    assert!(!stored.contains("another long password") && !stored.contains(&key));
    assert!(server.stop(), "SIGTERM stops connectd cleanly");
}

/// `POST /__login__` with JSON credentials from `source` (a loopback address).
fn login_from(server: &Connectd, source: IpAddr, username: &str, password: &str) -> u16 {
    let body = json!({"username": username, "password": password}).to_string();
    server
        .request(&HttpRequest {
            method: "POST",
            path: "/__login__",
            headers: vec![("Content-Type", "application/json".into())],
            body: body.as_bytes(),
            source: Some(source),
        })
        .status
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Sends attempts until one is answered 429; returns how many were let
/// through before it and how long the run took. Panics after `most`.
fn attempts_until_refused(most: usize, mut attempt: impl FnMut(usize) -> u16) -> (usize, Duration) {
    let started = Instant::now();
    for i in 0..most {
        match attempt(i) {
            429 => return (i, started.elapsed()),
            401 => {}
            other => panic!("attempt {i}: expected 401 or 429, got {other}"),
        }
    }
    panic!("{most} sign-in attempts and none was refused with 429");
}

/// What a limit of `burst` then one every `every` lets through in `elapsed`
/// (the bucket refills while the attempts run; Argon2 takes its time).
fn allowed_within(burst: usize, every: Duration, elapsed: Duration) -> usize {
    burst + (elapsed.as_secs_f64() / every.as_secs_f64()).ceil() as usize
}

#[test]
fn sign_in_attempts_are_rate_limited_per_address() {
    if need_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(dir.path(), "[Password]\nSelfRegistration = true\n");
    signup(&server, "ada", "correct horse battery");
    // A different username every time, all from one address: no username
    // limit can be what answers 429.
    let guesser = loopback(2);
    let (let_through, elapsed) = attempts_until_refused(200, |i| {
        login_from(&server, guesser, &format!("guess{i:03}"), "guess")
    });
    // README: 30 a minute per client address (a burst of 30, then one
    // every 2 s).
    let most = allowed_within(30, Duration::from_secs(2), elapsed);
    assert!(
        (30..=most).contains(&let_through),
        "{let_through} attempts from one address before 429 in {elapsed:?}; expected 30 to {most}"
    );
    // The address is blocked, even for the right password of a real user
    // (the bucket may refill by one while these run, and no more).
    let blocked_since = Instant::now();
    let right: Vec<u16> = (0..5)
        .map(|_| login_from(&server, guesser, "ada", "correct horse battery"))
        .collect();
    let refills = allowed_within(0, Duration::from_secs(2), blocked_since.elapsed());
    let refused = right.iter().filter(|s| **s == 429).count();
    assert!(
        refused + refills >= right.len(),
        "the right password from the blocked address: {right:?}"
    );
    // ...and only that address: another one signs in.
    assert_eq!(
        login_from(&server, loopback(3), "ada", "correct horse battery"),
        200,
        "{}",
        server.log_text()
    );
    let logged = server.log_lines_with("sign-in rate limit reached");
    assert!(
        logged.iter().any(|l| l.contains("client=127.0.0.2")),
        "{logged:?}"
    );
}

#[test]
fn sign_in_attempts_are_rate_limited_per_username() {
    if need_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(dir.path(), "[Password]\nSelfRegistration = true\n");
    signup(&server, "ada", "correct horse battery");
    signup(&server, "bob", "another long password");
    // One username, a new address every time: no address limit can be what
    // answers 429.
    let (let_through, elapsed) = attempts_until_refused(100, |i| {
        login_from(&server, loopback(10 + i as u8), "ada", "guess")
    });
    // README: a burst of 6 per username (the sign-up was the first), then 3
    // a minute (one every 20 s).
    let most = allowed_within(5, Duration::from_secs(20), elapsed);
    assert!(
        (5..=most).contains(&let_through),
        "{let_through} attempts on one username before 429 in {elapsed:?}; expected 5 to {most}"
    );
    // Even the right password waits, from addresses never seen before (the
    // bucket may refill by one while these run, and no more)...
    let blocked_since = Instant::now();
    let right: Vec<u16> = (0..3)
        .map(|i| login_from(&server, loopback(200 + i), "ada", "correct horse battery"))
        .collect();
    let refills = allowed_within(0, Duration::from_secs(20), blocked_since.elapsed());
    let refused = right.iter().filter(|s| **s == 429).count();
    assert!(
        refused + refills >= right.len(),
        "the right password for the blocked username: {right:?}"
    );
    // ...while another user signs in from the very address just refused.
    let refused_address = loopback(10 + let_through as u8);
    assert_eq!(
        login_from(&server, refused_address, "bob", "another long password"),
        200,
        "{}",
        server.log_text()
    );
    let logged = server.log_lines_with("sign-in rate limit reached");
    assert!(logged.iter().any(|l| l.contains("user=ada")), "{logged:?}");
}

#[test]
fn cookies_are_secure_behind_https_and_signup_closes_after_the_first_user() {
    if need_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(
        dir.path(),
        "[Server]\nAddress = https://connect.example.org/\n",
    );
    let (admin, cookie) = signup(&server, "ada", "correct horse battery");
    assert_eq!(admin["user_role"], "administrator");
    let login = server.login("ada", "correct horse battery");
    assert!(login
        .header("set-cookie")
        .expect("cookie")
        .contains("; Secure"));
    let body = json!({"username": "mallory", "password": "long enough password"}).to_string();
    let r = server.request(&HttpRequest {
        method: "POST",
        path: "/__signup__",
        headers: vec![("Content-Type", "application/json".into())],
        body: body.as_bytes(),
        source: None,
    });
    assert_eq!(
        r.status, 403,
        "self-registration is off once someone exists: {}",
        r.body
    );
    // Administrators create password users instead.
    let r = server.json(
        "POST",
        "/__api__/v1/users",
        &cookie,
        &json!({"username": "carol", "password": "long enough password", "user_role": "publisher"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["user_role"], "publisher");
}

/// `sha256sum` of `text` in hex: computed outside connectd, so a wrong
/// hash in connectd cannot agree with it.
fn sha256_hex(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_owned()
}

/// One column of a query on connectd's database, with the sqlite3 shell.
fn sql_column(database: &std::path::Path, query: &str) -> Vec<String> {
    let out = std::process::Command::new("sqlite3")
        .arg(database)
        .arg(query)
        .output()
        .expect("run sqlite3");
    assert!(
        out.status.success(),
        "sqlite3 {query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn session_tokens_and_api_keys_are_stored_only_as_hashes() {
    if need_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(dir.path(), "");
    let (_, signup_cookie) = signup(&server, "ada", "correct horse battery");
    let login = server.login("ada", "correct horse battery");
    assert_eq!(login.status, 200, "{}", login.body);
    let login_cookie = login.session_cookie();
    let r = server.json(
        "POST",
        "/__api__/v1/keys",
        &login_cookie,
        &json!({"name": "ci"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let key = r.json()["key"].as_str().expect("key").to_owned();
    let (key_id, key_secret) = key.split_once('.').expect("<id>.<secret>");
    let me = server.request(&HttpRequest {
        method: "GET",
        path: "/__api__/v1/user",
        headers: vec![("Authorization", format!("Key {key}"))],
        body: b"",
        source: None,
    });
    assert_eq!(me.status, 200, "the key works: {}", me.body);

    let tokens: Vec<String> = [&signup_cookie, &login_cookie]
        .iter()
        .map(|cookie| {
            let token = cookie
                .strip_prefix("connect_session=")
                .unwrap_or_else(|| panic!("session cookie: {cookie}"));
            assert!(token.len() >= 43, "a 256-bit token: {token}");
            token.to_owned()
        })
        .collect();
    for (token, cookie) in tokens.iter().zip([&signup_cookie, &login_cookie]) {
        let r = server.get_with_cookie("/__api__/v1/user", cookie);
        assert_eq!(r.status, 200, "session {token} works: {}", r.body);
    }

    // Every byte SQLite keeps: the database, its write-ahead log, the index.
    let data = dir.path().join("data");
    let database = data.join("connect.db");
    let mut stored = Vec::new();
    for name in ["connect.db", "connect.db-wal", "connect.db-shm"] {
        stored.extend(std::fs::read(data.join(name)).unwrap_or_default());
    }
    let contains = |needle: &str| stored.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains(key_id), "the scan sees the key's public id");
    for token in &tokens {
        assert!(
            !contains(token),
            "the raw session token {token} is in connectd's database files"
        );
    }
    assert!(
        !contains(&key),
        "the whole API key is in the database files"
    );
    assert!(
        !contains(key_secret),
        "the API key's secret is in the database files"
    );

    // What is stored instead: SHA-256 of each token, Argon2id of the secret.
    let stored_hashes = sql_column(&database, "SELECT token_hash FROM sessions");
    for token in &tokens {
        let hash = sha256_hex(token);
        assert!(
            stored_hashes.contains(&hash),
            "sessions.token_hash holds SHA-256({token}) = {hash}: {stored_hashes:?}"
        );
    }
    let key_hashes = sql_column(
        &database,
        &format!("SELECT hash FROM api_keys WHERE key_id = '{key_id}'"),
    );
    assert_eq!(key_hashes.len(), 1, "{key_hashes:?}");
    assert!(key_hashes[0].starts_with("$argon2id$"), "{key_hashes:?}");
}

/// A browser's sign-in form, `url` exactly as it would be on the wire
/// (already form-encoded).
fn form_login(server: &Connectd, source: IpAddr, username: &str, url: &str) -> HttpResponse {
    let body = format!("username={username}&password=long+enough+password&url={url}");
    server.request(&HttpRequest {
        method: "POST",
        path: "/__login__",
        headers: vec![("Content-Type", "application/x-www-form-urlencoded".into())],
        body: body.as_bytes(),
        source: Some(source),
    })
}

#[test]
fn sign_in_redirects_only_to_local_paths() {
    if need_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(dir.path(), "");
    let (_, admin) = signup(&server, "ada", "correct horse battery");
    // Each `url` as the form sends it, and why a browser would leave the
    // site if the redirect kept it: browsers drop tab, CR and LF anywhere
    // in a URL, read `\` as `/` and skip leading spaces, so each becomes
    // `//evil.example/` (a host) or a scheme.
    let off_site = [
        "%2F%2Fevil.example%2F",
        "//evil.example/",
        "https://evil.example/",
        "https%3A%2F%2Fevil.example%2F",
        "javascript:alert(1)",
        "/%5Cevil.example",
        "%5C%5Cevil.example",
        "/%09/evil.example/",
        "/%0A/evil.example/",
        "/%0D/evil.example/",
        "/%0D%0A/evil.example/",
        "%09//evil.example/",
        "+//evil.example/",
        "/%00/evil.example/",
        "/%7F/evil.example/",
    ];
    // A local path with a query: it is kept, so the checks above see the
    // redirect itself, not a constant.
    let local = ("%2Fcontent%2Fabc%2F%3Fpage%3D2", "/content/abc/?page=2");
    let cases = off_site
        .iter()
        .map(|url| (*url, "/"))
        .chain(std::iter::once(local));
    for (i, (url, expected)) in cases.enumerate() {
        // A user and an address per attempt, clear of the rate limits.
        let username = format!("viewer{i}");
        let r = server.json(
            "POST",
            "/__api__/v1/users",
            &admin,
            &json!({"username": username, "password": "long enough password"}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let r = form_login(&server, loopback(20 + i as u8), &username, url);
        assert_eq!(
            (r.status, r.header("location")),
            (303, Some(expected)),
            "after POST /__login__ with url={url}: {:?}\n{}",
            r.headers,
            r.body
        );
        assert!(r.header("set-cookie").is_some(), "signed in: {url}");
    }
    // The form a GET shows carries the same, already sanitised, target.
    for url in ["//evil.example", "/%09/evil.example/", "/%5Cevil.example"] {
        let page = server.get_with_cookie(&format!("/__login__?url={url}"), "");
        assert!(
            page.body.contains("name=\"url\" value=\"/\""),
            "GET /__login__?url={url}: {}",
            page.body
        );
    }
}
