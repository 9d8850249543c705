//! The header helpers on their own.

use axum::http::header::{CONNECTION, CONTENT_LENGTH, COOKIE, HOST, TRANSFER_ENCODING, UPGRADE};
use axum::http::{HeaderMap, HeaderValue, Uri};

use super::headers::*;
use super::tests::GUID;
use crate::http::SESSION_COOKIE;

#[test]
fn upstream_uri_strips_only_a_whole_prefix() {
    let prefix = format!("/content/{GUID}");
    let cases = [
        (format!("/content/{GUID}/x/y?q=1"), "/x/y?q=1"),
        (format!("/content/{GUID}"), "/"),
        (format!("/content/{GUID}?q"), "/?q"),
        (
            format!("/content/{GUID}extra/x"),
            "/content/3f2a9c1e-0b7d-4e55-9a61-2c8f0d4b7e10extra/x",
        ),
        ("/other/x".to_owned(), "/other/x"),
        (format!("http://host:1/content/{GUID}/abs"), "/abs"),
    ];
    for (target, expected) in cases {
        let uri: Uri = target.parse().expect("uri");
        assert_eq!(upstream_uri(&uri, &prefix), expected, "{target}");
    }
}

#[test]
fn hop_by_hop_headers_go_and_upgrades_stay_when_allowed() {
    let mut headers = HeaderMap::new();
    headers.append(CONNECTION, HeaderValue::from_static("Upgrade, x-one"));
    headers.append(CONNECTION, HeaderValue::from_static("x-two, host"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert("x-one", HeaderValue::from_static("1"));
    headers.insert("x-two", HeaderValue::from_static("2"));
    headers.insert(HOST, HeaderValue::from_static("h"));
    headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
    let mut plain = headers.clone();

    assert!(strip_hop_by_hop(&mut headers, true));
    assert_eq!(headers.get(CONNECTION).expect("connection"), "upgrade");
    assert_eq!(headers.get(UPGRADE).expect("upgrade"), "websocket");
    assert_eq!(headers.get(HOST).expect("host"), "h");
    for gone in ["x-one", "x-two", "transfer-encoding", "content-length"] {
        assert!(!headers.contains_key(gone), "{gone}");
    }

    assert!(strip_hop_by_hop(&mut plain, false));
    assert!(!plain.contains_key(CONNECTION));
    assert!(!plain.contains_key(UPGRADE));

    // An Upgrade header alone is no upgrade request.
    let mut headers = HeaderMap::new();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    assert!(!strip_hop_by_hop(&mut headers, true));
    assert!(!headers.contains_key(UPGRADE));
}

#[test]
fn cookies_and_keys() {
    let mut headers = HeaderMap::new();
    headers.append(COOKIE, HeaderValue::from_static("a=1;connect_session=x"));
    headers.append(
        COOKIE,
        HeaderValue::from_static(" connect_session_other=2 ; b=3"),
    );
    strip_session_cookie(&mut headers, SESSION_COOKIE);
    let cookies: Vec<_> = headers.get_all(COOKIE).iter().collect();
    assert_eq!(cookies, ["a=1; connect_session_other=2; b=3"]);

    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, HeaderValue::from_static("a=1; b=2"));
    strip_session_cookie(&mut headers, SESSION_COOKIE);
    assert_eq!(headers.get(COOKIE).expect("cookie"), "a=1; b=2");

    assert!(is_api_key(&HeaderValue::from_static("Key abc")));
    assert!(is_api_key(&HeaderValue::from_static("key abc")));
    assert!(!is_api_key(&HeaderValue::from_static("Keys abc")));
    assert!(!is_api_key(&HeaderValue::from_static("Bearer abc")));
    assert!(!is_api_key(&HeaderValue::from_static("Key")));
}
