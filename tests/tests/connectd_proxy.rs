//! Proxied authentication: identity headers are believed only from the
//! trusted proxy's address ([ProxyAuth] TrustedProxy); the same headers from
//! anywhere else are refused and create no user.

use std::net::IpAddr;

use connect_tests::connectd::{Connectd, HttpRequest, HttpResponse};
use connect_tests::*;

const TRUSTED: &str = "127.0.0.2";
const UNTRUSTED: &str = "127.0.0.1";

fn as_user(
    server: &Connectd,
    from: &str,
    path: &str,
    headers: &[(&'static str, &str)],
) -> HttpResponse {
    server.request(&HttpRequest {
        method: "GET",
        path,
        headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        body: b"",
        source: Some(from.parse::<IpAddr>().expect("ip")),
    })
}

#[test]
fn headers_count_only_from_the_trusted_proxy() {
    if need_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(
        dir.path(),
        &format!(
            "[Authentication]\nProvider = proxy\n[ProxyAuth]\nTrustedProxy = {TRUSTED}\n\
             UsernameHeader = X-Auth-Username\nGroupsHeader = X-Auth-Groups\n\
             RoleHeader = X-Auth-Role\nEmailHeader = X-Auth-Email\nLogging = true\n"
        ),
    );
    let alice = [
        ("X-Auth-Username", "alice"),
        ("X-Auth-Groups", "Sales, Data-Science"),
        ("X-Auth-Role", "administrator"),
        ("X-Auth-Email", "alice@example.org"),
    ];
    let r = as_user(&server, TRUSTED, "/__api__/v1/user", &alice);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["username"], "alice");
    assert_eq!(r.json()["user_role"], "administrator");
    assert_eq!(r.json()["email"], "alice@example.org");
    let cookie = r.session_cookie();
    assert_eq!(
        server
            .log_lines_with("Matched 'administrator' as role (administrator)")
            .len(),
        1,
        "{}",
        server.log_text()
    );
    let groups = as_user(&server, TRUSTED, "/__api__/v1/groups", &alice).json();
    let names: Vec<_> = groups["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|g| g["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["Data-Science", "Sales"]);

    // The same headers from an untrusted peer: refused and logged.
    let mallory = [
        ("X-Auth-Username", "mallory"),
        ("X-Auth-Role", "administrator"),
    ];
    let r = as_user(&server, UNTRUSTED, "/__api__/v1/user", &mallory);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("only accepted from the trusted proxy"),
        "{}",
        r.body
    );
    assert!(
        !server
            .log_lines_with("refused identity headers from a peer that is not a trusted proxy")
            .is_empty(),
        "{}",
        server.log_text()
    );
    // Not even alice's own session makes them acceptable.
    let r = as_user(
        &server,
        UNTRUSTED,
        "/__api__/v1/user",
        &[("X-Auth-Username", "alice"), ("Cookie", cookie.as_str())],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // Without headers, an untrusted peer is simply not signed in.
    assert_eq!(
        as_user(&server, UNTRUSTED, "/__api__/v1/user", &[]).status,
        401
    );

    let users = as_user(&server, TRUSTED, "/__api__/v1/users", &alice).json();
    assert_eq!(users["total"], 1, "mallory was never created: {users}");

    // A password form is not a way around the proxy.
    let r = server.login("alice", "anything");
    assert_eq!(r.status, 401, "{}", r.body);
}
