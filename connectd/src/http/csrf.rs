//! Cross-site request forgery: a page on another origin must not act with
//! a viewer's cookie, nor sign a viewer in as someone else.
//!
//! `SameSite=Lax` keeps the cookie off cross-site POSTs, but not off
//! requests from a sibling host of the same site, nor off old browsers'.
//! So every state-changing request the cookie authenticates (and every
//! sign-in, sign-up and sign-out, and every WebSocket handshake, which a
//! foreign page can open with the viewer's cookie) must come from this
//! server's own pages, as the browser says through `Sec-Fetch-Site`, or
//! failing that `Origin`, or failing that `Referer`. A request with none
//! of them is not from a browser, and a forged one needs a browser, so it
//! passes: curl and scripts keep working. Requests with an API key pass:
//! a foreign page cannot attach one.

use axum::http::header::{HOST, ORIGIN, REFERER, UPGRADE};
use axum::http::{HeaderMap, Method};

/// Why a request is refused as cross-origin, or `None` to let it through.
pub(super) fn refusal(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    has_session_cookie: bool,
    server_address: Option<&str>,
) -> Option<String> {
    if !needs_checking(method, path, headers, has_session_cookie) {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match header("sec-fetch-site") {
        Some("same-origin" | "none") => return None,
        Some(site @ ("same-site" | "cross-site")) => {
            let from = header(ORIGIN.as_str()).unwrap_or("another page");
            return Some(refused(from, site));
        }
        _ => {}
    }
    let from = header(ORIGIN.as_str())
        .map(str::to_owned)
        .or_else(|| header(REFERER.as_str()).map(|r| origin_of(r).unwrap_or(r).to_owned()))?;
    let host = header(HOST.as_str());
    if is_own_origin(&from, host, server_address) {
        None
    } else {
        Some(refused(&from, "cross-origin"))
    }
}

fn needs_checking(method: &Method, path: &str, headers: &HeaderMap, cookie: bool) -> bool {
    if headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Key "))
    {
        return false;
    }
    let websocket = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && !websocket;
    if safe {
        return false;
    }
    // The identity provider posts SAML responses here from its own site,
    // by design; the sign-in's browser binding and the response's signature
    // protect it, and an IdP on a sibling host must not be refused for a
    // viewer who still has a session cookie.
    if path == "/__login__/callback" {
        return false;
    }
    // Sign-in pages set a cookie rather than use one.
    cookie
        || matches!(
            path,
            "/__login__" | "/__login__/confirm" | "/__signup__" | "/__logout__"
        )
}

fn refused(from: &str, site: &str) -> String {
    format!(
        "Refused a {site} request from {from}: only this server's own pages may make it with \
         a viewer's session. If connectd is behind a proxy that rewrites the Host header, set \
         [Server] Address to the URL viewers use."
    )
}

/// `scheme://host[:port]` of a URL, if it has one.
fn origin_of(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&url[..url.len() - rest.len() + end])
}

/// Whether `origin` is this server: the configured `Server.Address`, or
/// else whatever host the request was sent to.
fn is_own_origin(origin: &str, host: Option<&str>, server_address: Option<&str>) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // "null", from sandboxed frames and file: pages
    };
    if let Some(own) = server_address.and_then(origin_of) {
        if own.eq_ignore_ascii_case(origin) {
            return true;
        }
    }
    let Some(host) = host else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let with_port = |a: &str| {
        let a = a.to_ascii_lowercase();
        let bracketed_v6 = a.starts_with('[') && a.ends_with(']');
        if a.contains(':') && !bracketed_v6 {
            a
        } else {
            format!("{a}:{default_port}")
        }
    };
    with_port(authority) == with_port(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    fn refused(method: Method, path: &str, pairs: &[(&'static str, &str)], cookie: bool) -> bool {
        refusal(&method, path, &headers(pairs), cookie, None).is_some()
    }

    const HOST: (&str, &str) = ("host", "connect.example");

    #[test]
    fn the_browsers_own_word_decides_first() {
        for site in ["same-site", "cross-site"] {
            assert!(refused(
                Method::POST,
                "/x",
                &[HOST, ("sec-fetch-site", site)],
                true
            ));
        }
        for site in ["same-origin", "none"] {
            // Even with an Origin that would not match: the browser knows.
            let pairs = [HOST, ("sec-fetch-site", site), ("origin", "http://other")];
            assert!(!refused(Method::POST, "/x", &pairs, true));
        }
    }

    #[test]
    fn origin_then_referer_must_be_this_server() {
        let post = |pairs: &[(&'static str, &str)]| refused(Method::DELETE, "/x", pairs, true);
        assert!(!post(&[HOST, ("origin", "http://connect.example")]));
        assert!(!post(&[HOST, ("origin", "http://connect.example:80")]));
        assert!(!post(&[
            ("host", "CONNECT.example:80"),
            ("origin", "http://connect.example")
        ]));
        // TLS ended by a proxy in front: the browser saw https.
        assert!(!post(&[HOST, ("origin", "https://connect.example")]));
        assert!(post(&[HOST, ("origin", "https://connect.example:8443")]));
        assert!(post(&[HOST, ("origin", "http://connect.example.evil")]));
        assert!(post(&[HOST, ("origin", "null")]));
        assert!(post(&[("origin", "http://connect.example")]));
        assert!(!post(&[
            HOST,
            ("referer", "http://connect.example/content/x/?a=1")
        ]));
        assert!(post(&[
            HOST,
            ("referer", "http://evil.example/connect.example")
        ]));
        // No browser headers at all: not a browser, so not a forgery.
        assert!(!post(&[HOST]));
    }

    #[test]
    fn the_configured_address_counts_as_this_server() {
        let pairs = headers(&[
            ("host", "127.0.0.1:3939"),
            ("origin", "https://connect.example"),
        ]);
        let behind_proxy = Some("https://connect.example/");
        assert!(refusal(&Method::POST, "/x", &pairs, true, behind_proxy).is_none());
        assert!(refusal(&Method::POST, "/x", &pairs, true, None).is_some());
    }

    #[test]
    fn only_what_a_forged_request_could_abuse_is_checked() {
        let foreign = [HOST, ("origin", "http://evil.example")];
        assert!(!refused(Method::GET, "/x", &foreign, true));
        assert!(
            !refused(Method::POST, "/x", &foreign, false),
            "no cookie, no victim"
        );
        assert!(
            refused(Method::POST, "/__login__", &foreign, false),
            "login CSRF"
        );
        let websocket = [foreign[0], foreign[1], ("upgrade", "websocket")];
        assert!(refused(Method::GET, "/content/x/ws", &websocket, true));
        let with_key = [foreign[0], foreign[1], ("authorization", "Key abc.def")];
        assert!(!refused(Method::POST, "/x", &with_key, true));
    }

    #[test]
    fn the_idp_may_post_to_the_callback_and_confirmations_come_from_here() {
        let idp = [
            HOST,
            ("origin", "https://idp.example"),
            ("sec-fetch-site", "same-site"),
        ];
        assert!(
            !refused(Method::POST, "/__login__/callback", &idp, true),
            "a SAML response from an IdP on a sibling host, to a viewer with a session"
        );
        let foreign = [HOST, ("origin", "http://evil.example")];
        assert!(
            refused(Method::POST, "/__login__/confirm", &foreign, false),
            "an IdP-started sign-in is confirmed on this server's page only"
        );
    }
}
