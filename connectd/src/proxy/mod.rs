//! The reverse proxy from /content/{guid}/ to a content process on its Unix
//! socket or TCP address.
//!
//! [`forward`] sends one viewer request to the content process behind an
//! [`Upstream`] and gives back the process's response, streaming both bodies.
//! It speaks HTTP/1.1 to the process over keep-alive connections kept in a
//! small per-socket pool, and relays WebSocket (or any other HTTP/1.1)
//! upgrades by splicing the two upgraded connections together.
//!
//! What the content process sees: the path with the content's prefix
//! stripped, the viewer's own headers minus hop-by-hop ones, minus
//! connectd's session cookie and API key, plus [`CREDENTIALS_HEADER`] (only
//! ever the one connectd set) and `X-Forwarded-For/-Host/-Proto/-Prefix`
//! (any a client sent are removed first, with `Forwarded` and `X-Real-IP`).
//!
//! The caller owns the policy (who may see the content, which process, what
//! to show when it is gone): it passes a [`Forward`] and turns a
//! [`ProxyError`] into a friendly page.
//!
//! This module keeps the public API and the order of a forward; `upstream`
//! owns the pooled connections to one process (and the request body they
//! send), `body` what follows the response head (its body, or the splice of
//! an upgrade), `headers` what is rewritten on the way. `body` may use
//! `upstream`, not the other way round. A leaf: imports nothing of connectd
//! (`crate::`), so that `http` and `run` may both use it.

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::pin::pin;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONNECTION, EXPECT, UPGRADE};
use axum::http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Body as HttpBody;
use hyper::upgrade::OnUpgrade;
use tokio::sync::oneshot;

use body::{splice, Done, ResponseBody};
use headers::{
    add_forwarded, is_api_key, strip_hop_by_hop, strip_session_cookie, strip_set_session_cookie,
    upstream_uri,
};
use upstream::OutBody;

mod body;
mod headers;
mod upstream;

pub use upstream::{Target, Upstream};

#[cfg(test)]
mod headers_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upstream_tests;

/// Posit Connect's name for the viewer's identity, so that existing apps
/// work unchanged: JSON `{"user": "alice", "groups": ["g1"]}`, absent for
/// anonymous viewers.
pub const CREDENTIALS_HEADER: &str = "RStudio-Connect-Credentials";

/// [`CREDENTIALS_HEADER`] as a header name (names are stored lower-case).
const CREDENTIALS: HeaderName = HeaderName::from_static("rstudio-connect-credentials");

type BoxError = Box<dyn StdError + Send + Sync>;

/// One request to forward, with what the caller decided about it.
pub struct Forward {
    /// The content's URL prefix, e.g. `/content/3f2a…`, stripped from the
    /// path: `/content/<guid>/x/y?q=1` becomes `/x/y?q=1` and
    /// `/content/<guid>` becomes `/`. A path without the prefix is sent as
    /// it is.
    pub prefix: String,
    /// Sent as [`CREDENTIALS_HEADER`]; any value the client sent is always
    /// removed first.
    pub credentials: Option<HeaderValue>,
    /// How long to wait for the response head once the request (body
    /// included) has been sent.
    pub read_timeout: Duration,
    /// `ConnectionTimeout`: an upgraded connection (a WebSocket) that
    /// carries no data either way for this long is closed, so abandoned
    /// viewers do not hold processes forever. `None` or zero: never.
    pub idle_timeout: Option<Duration>,
    /// Dropped when the response body has been fully sent (or the client
    /// went away), or, for an upgraded connection, when that connection
    /// closes; dropped at once when `forward` fails.
    pub guard: Box<dyn Any + Send + Sync>,
    /// The name of the cookie that carries the viewer's session on the
    /// server in front: removed from the request (the app must not be able
    /// to act as the viewer) and from any `Set-Cookie` in the response (an
    /// app on the server's origin must not fix or end a viewer's session).
    pub session_cookie: &'static str,
    /// The TCP peer is a trusted front proxy: its `X-Forwarded-For` is
    /// kept, with the peer appended. Otherwise a client's is replaced.
    pub trust_forwarded_for: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The socket is missing or refuses connections, or nothing listens at
    /// the TCP address: the process is gone.
    #[error("cannot connect to the content process: {0}")]
    Connect(io::Error),
    /// No response head within `read_timeout`.
    #[error("the content process did not answer in time")]
    Timeout,
    /// Anything else on the way: protocol error, connection reset before
    /// the response head, request body aborted by the client.
    #[error("proxying to the content process failed: {}", Chain(&**.0))]
    Upstream(BoxError),
}

/// Forwards `request` to the content process behind `upstream`.
///
/// Returns once the response head has arrived; the response body then
/// streams from the process to the client. Request headers are rewritten as
/// the module documentation describes. On a `101 Switching Protocols`
/// answer to an upgrade request, the two connections are spliced in a
/// spawned task that owns `forward.guard`.
///
/// The returned body drives the connection to the app (reading the rest of
/// the response, and of a request body the app answered before reading in
/// full): hand it to hyper (return it from the handler) rather than
/// holding it unpolled. Dropping it closes that connection.
///
/// Must run inside a Tokio runtime with I/O and time enabled.
pub async fn forward(
    upstream: &Upstream,
    request: Request<Body>,
    forward: Forward,
) -> Result<Response<Body>, ProxyError> {
    let Forward {
        prefix,
        credentials,
        read_timeout,
        idle_timeout,
        guard,
        session_cookie,
        trust_forwarded_for,
    } = forward;
    let (mut parts, body) = request.into_parts();
    let headers = &mut parts.headers;

    let upgrade = strip_hop_by_hop(headers, true);
    // hyper's server put this here if the client connection can upgrade.
    let client_upgrade = if upgrade {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    if upgrade && client_upgrade.is_none() {
        // Nothing to splice the app's side to: make it a plain request.
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
    // hyper's server already answered any `100-continue` to the client.
    headers.remove(EXPECT);
    strip_session_cookie(headers, session_cookie);
    if headers.get_all(AUTHORIZATION).iter().any(is_api_key) {
        headers.remove(AUTHORIZATION);
    }
    headers.remove(CREDENTIALS);
    if let Some(credentials) = credentials {
        headers.insert(CREDENTIALS, credentials);
    }
    add_forwarded(
        headers,
        &parts.extensions,
        &parts.uri,
        &prefix,
        trust_forwarded_for,
    );

    let has_body = !body.is_end_stream();
    let replayable = !has_body && parts.method.is_idempotent();
    let (body_sent, sent) = if has_body {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let mut outgoing = Request::new(OutBody {
        inner: body,
        sent: body_sent,
    });
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = upstream_uri(&parts.uri, &prefix);
    // The app always gets HTTP/1.1, whatever the client spoke, so that
    // keep-alive and chunked bodies work.
    *outgoing.version_mut() = Version::HTTP_11;
    *outgoing.headers_mut() = parts.headers;

    let exchange = upstream.exchange(outgoing, replayable);
    // The read timeout covers waiting for the app, not a slow client's
    // upload: with a body, the clock starts once the body has been sent
    // (or the app answered early).
    let outcome = match sent {
        None => tokio::time::timeout(read_timeout, exchange).await,
        Some(sent) => {
            let mut exchange = pin!(exchange);
            tokio::select! {
                biased;
                result = &mut exchange => Ok(result),
                _ = sent => tokio::time::timeout(read_timeout, exchange).await,
            }
        }
    };
    let (mut response, conn) = outcome.map_err(|_| ProxyError::Timeout)??;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ProxyError::Upstream(
                "101 Switching Protocols to a request that asked for no upgrade".into(),
            ));
        };
        let app_upgrade = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        let idle_timeout = idle_timeout.filter(|t| !t.is_zero());
        tokio::spawn(splice(
            client_upgrade,
            app_upgrade,
            conn,
            guard,
            idle_timeout,
        ));
        return Ok(Response::from_parts(parts, Body::empty()));
    }

    let (mut parts, incoming) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    strip_set_session_cookie(&mut parts.headers, session_cookie);
    let body = ResponseBody {
        inner: incoming,
        done: Some(Done {
            guard,
            conn,
            upstream: upstream.clone(),
        }),
    };
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Displays an error with its chain of causes: hyper's errors say only
/// "connection error" and keep the interesting part in `source()`.
struct Chain<'a>(&'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
