//! What the proxy rewrites in both directions: the path, hop-by-hop
//! headers, connectd's session cookie and API key, and the `X-Forwarded-*`
//! headers.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::header::{
    CONNECTION, CONTENT_LENGTH, COOKIE, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, SET_COOKIE,
    TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use bytes::Bytes;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the usual non-standard ones)
/// that are removed in both directions. `Upgrade` and `Connection` are
/// handled apart because an upgrade needs them.
const HOP_BY_HOP: [HeaderName; 7] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
];

/// The path and query the app sees: `prefix` stripped, always starting
/// with `/`.
pub(super) fn upstream_uri(uri: &Uri, prefix: &str) -> Uri {
    let full = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let rest = match full.strip_prefix(prefix) {
        // Only at a segment boundary: "/content/abc" is not a prefix of
        // "/content/abcdef".
        Some(rest) if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') => rest,
        _ => full,
    };
    let parsed = if rest.starts_with('/') {
        Uri::try_from(rest)
    } else {
        let mut path = String::with_capacity(rest.len() + 1);
        path.push('/');
        path.push_str(rest);
        Uri::try_from(path)
    };
    // Cannot fail: a tail of a valid path-and-query, after a '/', is one.
    // Should it anyway, the request goes out with its original target.
    parsed.unwrap_or_else(|_| uri.clone())
}

/// Removes hop-by-hop headers, including those `Connection` names. Returns
/// whether the message asks for an upgrade (`Connection: upgrade` and an
/// `Upgrade` header); if so and `allow_upgrade`, `Connection: upgrade` and
/// `Upgrade` are kept, otherwise they are removed too.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, allow_upgrade: bool) -> bool {
    let mut upgrade = false;
    // Allocated only for the rare extra names; `keep-alive`, `close` and
    // `upgrade` are the usual tokens and are dealt with anyway.
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"upgrade") {
                upgrade = true;
            } else if token.is_empty()
                || token.eq_ignore_ascii_case(b"keep-alive")
                || token.eq_ignore_ascii_case(b"close")
            {
            } else if let Ok(name) = HeaderName::from_bytes(token) {
                // The app needs Host whatever a client claims.
                if name != HOST {
                    named.push(name);
                }
            }
        }
    }
    headers.remove(CONNECTION);
    for name in &named {
        headers.remove(name);
    }
    // A message with both framed its body by Transfer-Encoding (RFC 9112
    // §6.3); the stale Content-Length must not go on with the body, which
    // hyper re-frames.
    if headers.contains_key(TRANSFER_ENCODING) {
        headers.remove(CONTENT_LENGTH);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    let upgrade = upgrade && headers.contains_key(UPGRADE);
    if upgrade && allow_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
    upgrade
}

/// The name of one `name=value` cookie pair.
fn cookie_name(pair: &[u8]) -> &[u8] {
    let name = match pair.iter().position(|&b| b == b'=') {
        Some(end) => &pair[..end],
        None => pair,
    };
    name.trim_ascii()
}

/// Removes the session cookie from `Cookie`, keeping the others: the app
/// must not be able to act as the viewer on connectd.
pub(super) fn strip_session_cookie(headers: &mut HeaderMap, session_cookie: &str) {
    let is_session = |pair: &[u8]| cookie_name(pair) == session_cookie.as_bytes();
    let found = headers
        .get_all(COOKIE)
        .iter()
        .any(|v| v.as_bytes().split(|&b| b == b';').any(is_session));
    if !found {
        return;
    }
    let mut kept = Vec::new();
    for value in headers.get_all(COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if pair.is_empty() || is_session(pair) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    headers.remove(COOKIE);
    if !kept.is_empty() {
        // Pieces of valid header values joined by "; " are a valid value.
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(kept)) {
            headers.insert(COOKIE, value);
        }
    }
}

/// Removes any `Set-Cookie` for the session cookie from the app's
/// response: content is served from connectd's origin, and an app setting
/// that cookie could fix a viewer's session (or sign them out).
pub(super) fn strip_set_session_cookie(headers: &mut HeaderMap, session_cookie: &str) {
    let is_session = |v: &HeaderValue| {
        let pair = v
            .as_bytes()
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        cookie_name(pair) == session_cookie.as_bytes()
    };
    if !headers.get_all(SET_COOKIE).iter().any(is_session) {
        return;
    }
    tracing::warn!("content process tried to set connectd's session cookie; removed");
    let kept: Vec<HeaderValue> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter(|v| !is_session(v))
        .cloned()
        .collect();
    headers.remove(SET_COOKIE);
    for value in kept {
        headers.append(SET_COOKIE, value);
    }
}

/// `Authorization: Key …` is connectd's API key scheme; the scheme name is
/// case-insensitive (RFC 9110 §11.1).
pub(super) fn is_api_key(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .get(..4)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"key "))
}

/// Adds X-Forwarded-For (the TCP peer appended to any value already
/// there), X-Forwarded-Host (the Host the client used; a client-sent one is
/// replaced) and X-Forwarded-Proto (connectd serves plain HTTP). Makes sure
/// Host is present, which HTTP/1.1 requires.
pub(super) fn add_forwarded(
    headers: &mut HeaderMap,
    extensions: &axum::http::Extensions,
    uri: &Uri,
) {
    if let Some(ConnectInfo(peer)) = extensions.get::<ConnectInfo<SocketAddr>>() {
        if let Some(value) = forwarded_for(headers, peer.ip().to_canonical()) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if !headers.contains_key(HOST) {
        // HTTP/1.0 clients may omit it; an absolute request target has it.
        let host = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or(HeaderValue::from_static("localhost"));
        headers.insert(HOST, host);
    }
    if let Some(host) = headers.get(HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

fn forwarded_for(headers: &HeaderMap, ip: IpAddr) -> Option<HeaderValue> {
    let mut value = Vec::with_capacity(48);
    for previous in headers.get_all(X_FORWARDED_FOR) {
        value.extend_from_slice(previous.as_bytes());
        value.extend_from_slice(b", ");
    }
    // Writing to a Vec cannot fail.
    let _ = write!(value, "{ip}");
    HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
}
