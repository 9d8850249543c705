//! connectd with the built-in password provider: the first user is the
//! administrator, role changes follow Connect's rules, locked users cannot
//! sign in, API keys work and are revocable, secrets are stored hashed and
//! sign-ins are rate-limited.

use connect_tests::connectd::{Connectd, HttpRequest};
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

#[test]
fn sign_in_attempts_are_rate_limited_per_username() {
    if need_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(dir.path(), "[Password]\nSelfRegistration = true\n");
    signup(&server, "ada", "correct horse battery");
    let statuses: Vec<u16> = (0..8)
        .map(|_| server.login("ada", "guess").status)
        .collect();
    // A burst of six per username (the sign-up was the first), then 3 a minute.
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let r = server.login("ada", "correct horse battery");
    assert_eq!(r.status, 429, "even the right password waits: {}", r.body);
    assert!(!server
        .log_lines_with("sign-in rate limit reached")
        .is_empty());
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
    let login_page = server.get_with_cookie("/__login__?url=//evil.example", "");
    assert!(
        login_page.body.contains("name=\"url\" value=\"/\""),
        "no open redirect"
    );
}
