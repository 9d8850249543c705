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
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

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

/// Sets the forwarding headers the app may believe, after removing every
/// one a client sent (`Forwarded`, `X-Real-IP`, any `X-Forwarded-*`: the
/// WSGI runner, for one, builds links from `X-Forwarded-Prefix`):
/// X-Forwarded-For is the TCP peer (appended to the value already there
/// only when `trust_forwarded_for`, the peer being a trusted front proxy),
/// X-Forwarded-Host the Host the client used, X-Forwarded-Proto `http`
/// (connectd serves plain HTTP) and X-Forwarded-Prefix the content's URL
/// prefix, which the proxy removed from the path. Makes sure Host is
/// present, which HTTP/1.1 requires.
pub(super) fn add_forwarded(
    headers: &mut HeaderMap,
    extensions: &axum::http::Extensions,
    uri: &Uri,
    prefix: &str,
    trust_forwarded_for: bool,
) {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_canonical());
    let forwarded_for = peer.and_then(|ip| {
        let earlier = trust_forwarded_for.then(|| headers.get_all(X_FORWARDED_FOR));
        forwarded_for(earlier, ip)
    });
    remove_client_forwarding(headers);
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR, value);
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
    if let Ok(prefix) = HeaderValue::from_str(prefix) {
        headers.insert(X_FORWARDED_PREFIX, prefix);
    }
}

/// Removes `Forwarded`, `X-Real-IP` and every `X-Forwarded-*` header.
fn remove_client_forwarding(headers: &mut HeaderMap) {
    // Allocated only when a client sent one of the rarer names.
    let mut names: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let text = name.as_str();
        if text.starts_with("x-forwarded-") || text == "forwarded" || text == "x-real-ip" {
            names.push(name.clone());
        }
    }
    for name in names {
        headers.remove(name);
    }
}

/// `earlier`'s values (a trusted proxy's) with `ip` appended, or `ip`.
fn forwarded_for(
    earlier: Option<axum::http::header::GetAll<'_, HeaderValue>>,
    ip: IpAddr,
) -> Option<HeaderValue> {
    let mut value = Vec::with_capacity(48);
    for previous in earlier.into_iter().flatten() {
        value.extend_from_slice(previous.as_bytes());
        value.extend_from_slice(b", ");
    }
    // Writing to a Vec cannot fail.
    let _ = write!(value, "{ip}");
    HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_peer(peer: &str, sent: &[(&'static str, &'static str)], trust: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("connect.example"));
        for (name, value) in sent {
            headers.append(*name, HeaderValue::from_static(value));
        }
        let mut extensions = axum::http::Extensions::new();
        let peer: SocketAddr = peer.parse().expect("address");
        extensions.insert(ConnectInfo(peer));
        let uri = Uri::from_static("/content/abc/x");
        add_forwarded(&mut headers, &extensions, &uri, "/content/abc", trust);
        headers
    }

    fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("text"))
            .collect()
    }

    #[test]
    fn a_trusted_proxys_forwarded_for_is_kept_and_extended() {
        let sent = [
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "198.51.100.2"),
            ("x-forwarded-prefix", "/elsewhere"),
        ];
        let trusted = from_peer("10.0.0.5:4000", &sent, true);
        assert_eq!(
            values(&trusted, "x-forwarded-for"),
            ["203.0.113.7, 198.51.100.2, 10.0.0.5"]
        );
        // Even a trusted proxy does not choose the prefix.
        assert_eq!(values(&trusted, "x-forwarded-prefix"), ["/content/abc"]);

        let untrusted = from_peer("[::ffff:192.0.2.1]:4000", &sent, false);
        assert_eq!(values(&untrusted, "x-forwarded-for"), ["192.0.2.1"]);
        assert_eq!(values(&untrusted, "x-forwarded-host"), ["connect.example"]);
        assert_eq!(values(&untrusted, "x-forwarded-proto"), ["http"]);
    }
}
