//! The reverse proxy from /content/{guid}/ to a content process on its Unix socket.
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
//! ever the one connectd set) and `X-Forwarded-For/-Host/-Proto`.
//!
//! The caller owns the policy (who may see the content, which process, what
//! to show when it is gone): it passes a [`Forward`] and turns a
//! [`ProxyError`] into a friendly page.

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, COOKIE, EXPECT, HOST, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::oneshot;

/// Posit Connect's name for the viewer's identity, so that existing apps
/// work unchanged: JSON `{"user": "alice", "groups": ["g1"]}`, absent for
/// anonymous viewers.
pub const CREDENTIALS_HEADER: &str = "RStudio-Connect-Credentials";

/// [`CREDENTIALS_HEADER`] as a header name (names are stored lower-case).
const CREDENTIALS: HeaderName = HeaderName::from_static("rstudio-connect-credentials");
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

/// Idle keep-alive connections kept per content process. Like nginx's
/// `keepalive 32`: enough for the bursts one app sees, small enough not to
/// pin many of the app's workers or file descriptors.
const MAX_IDLE: usize = 32;

type Sender = http1::SendRequest<OutBody>;
type BoxError = Box<dyn StdError + Send + Sync>;
/// hyper's connection state machine (`Connection::with_upgrades`, whose
/// type cannot be named): reads and writes the socket when polled.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One HTTP/1.1 connection to a content process.
///
/// It has no task of its own: whoever uses it polls its driver, the
/// exchange until the response head, then the response body as hyper's
/// server pulls it, all on the viewer's connection task. Requests and
/// responses are not handed between tasks (and often threads) on the way,
/// and no task can outlive its connection. While idle in the pool nobody
/// polls it; what happened meanwhile (usually the app closing it) is read
/// when it is next taken.
struct Conn {
    sender: Sender,
    /// `None` once the connection is finished: closed, failed, or handed
    /// over to an upgrade. It must not be polled after that.
    driver: Option<Driver>,
}

impl Conn {
    /// Lets the connection make progress; returns whether it is still open.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        drive(&mut self.driver, cx)
    }

    /// Open and waiting for a request.
    fn is_idle(&self) -> bool {
        self.driver.is_some() && self.sender.is_ready()
    }

    /// Sends `request` and drives the connection until the response head.
    async fn send(
        &mut self,
        request: Request<OutBody>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<OutBody>>> {
        let mut response = pin!(self.sender.try_send_request(request));
        let driver = &mut self.driver;
        poll_fn(|cx| {
            // Driver first: it writes the request and reads the answer. If
            // it finishes, the response future resolves (with an error, or
            // with a 101 whose connection was just handed over).
            drive(driver, cx);
            response.as_mut().poll(cx)
        })
        .await
    }
}

fn drive(driver: &mut Option<Driver>, cx: &mut Context<'_>) -> bool {
    if let Some(d) = driver {
        if let Poll::Ready(result) = d.as_mut().poll(cx) {
            if let Err(e) = result {
                tracing::debug!(
                    error = %Chain(&e),
                    "connection to content process ended with an error"
                );
            }
            *driver = None;
        }
    }
    driver.is_some()
}

/// One content process's socket, with a small pool of idle keep-alive
/// HTTP/1.1 connections, so proxied requests do not pay a connect and a
/// handshake each time. Cheap to clone (an `Arc` inside); all clones share
/// the pool. Dropping the last clone closes the idle connections.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Shared>,
}

struct Shared {
    socket: PathBuf,
    /// Used as a stack: the most recently used connection is the likeliest
    /// to be alive and the others age out when the app closes them.
    idle: Mutex<Vec<Conn>>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("socket", &self.inner.socket)
            .field("idle", &self.idle().len())
            .finish()
    }
}

impl Upstream {
    pub fn new(socket: PathBuf) -> Self {
        Upstream {
            inner: Arc::new(Shared {
                socket,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.inner.socket
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Conn>> {
        // The lock only guards pushes and pops of a Vec: a panic elsewhere
        // while it was held cannot have left it inconsistent.
        self.inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle().pop()
    }

    fn put_idle(&self, conn: Conn) {
        if !conn.is_idle() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        // Otherwise `conn` is dropped (after the lock is released), which
        // closes it.
    }

    /// An idle connection ready for a request, or a new one. The flag says
    /// whether it was reused, that is whether it may have died unnoticed.
    async fn checkout(&self) -> Result<(Conn, bool), ProxyError> {
        while let Some(mut conn) = self.take_idle() {
            // Nobody polled it while idle: let it read what came meanwhile,
            // most often the app closing it after its keep-alive timeout.
            let open = poll_fn(|cx| Poll::Ready(conn.drive(cx))).await;
            if open && conn.is_idle() {
                return Ok((conn, true));
            }
        }
        Ok((self.connect().await?, false))
    }

    async fn connect(&self) -> Result<Conn, ProxyError> {
        let socket = &self.inner.socket;
        let stream = UnixStream::connect(socket).await.map_err(|e| {
            // Keep the kind (NotFound, ConnectionRefused) for the caller and
            // name the socket for the log.
            ProxyError::Connect(io::Error::new(
                e.kind(),
                format!("{}: {e}", socket.display()),
            ))
        })?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::Upstream(e.into()))?;
        Ok(Conn {
            sender,
            driver: Some(Box::pin(connection.with_upgrades())),
        })
    }

    /// Sends the request and waits for the response head.
    ///
    /// A reused connection may have been closed by the app (keep-alive
    /// timeout) just as the request went out. The request is then sent
    /// again, once, on a new connection, if hyper handed it back unsent, or
    /// if `replayable` (idempotent method, no body) so sending it twice is
    /// harmless. A new connection that fails is a real error.
    async fn exchange(
        &self,
        request: Request<OutBody>,
        replayable: bool,
    ) -> Result<(Response<Incoming>, Conn), ProxyError> {
        let (mut conn, reused) = self.checkout().await?;
        // Only the head is copied (a few small allocations), and only when a
        // replay would be allowed.
        let replay = (reused && replayable).then(|| copy_head(&request));
        match conn.send(request).await {
            Ok(response) => Ok((response, conn)),
            Err(mut failed) => {
                let retry = if reused {
                    failed.take_message().or(replay)
                } else {
                    None
                };
                let Some(request) = retry else {
                    return Err(ProxyError::Upstream(failed.into_error().into()));
                };
                tracing::debug!(
                    socket = %self.inner.socket.display(),
                    error = %Chain(failed.error()),
                    "reused connection to content process failed; retrying on a new one"
                );
                drop(conn);
                let mut conn = self.connect().await?;
                let response = conn
                    .send(request)
                    .await
                    .map_err(|e| ProxyError::Upstream(e.into_error().into()))?;
                Ok((response, conn))
            }
        }
    }
}

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
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The socket is missing or refuses connections: the process is gone.
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
    add_forwarded(headers, &parts.extensions, &parts.uri);

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

/// Relays bytes both ways between the client's and the app's upgraded
/// connections until both are closed, holding the caller's guard.
async fn splice(
    client: OnUpgrade,
    app: OnUpgrade,
    mut conn: Conn,
    guard: Box<dyn Any + Send + Sync>,
    idle_timeout: Option<Duration>,
) {
    let _guard = guard;
    // The driver hands the connection over to `app` as it finishes (it may
    // have already).
    poll_fn(|cx| {
        if conn.drive(cx) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    drop(conn);
    let app = match app.await {
        Ok(app) => app,
        Err(e) => {
            tracing::debug!(error = %Chain(&e), "content process upgrade failed");
            return;
        }
    };
    // Resolves once our 101 has been written to the client.
    let client = match client.await {
        Ok(client) => client,
        Err(e) => {
            tracing::debug!(error = %Chain(&e), "client upgrade failed");
            return;
        }
    };
    let activity = Arc::new(Activity::new());
    let mut client = Tracked::new(TokioIo::new(client), &activity);
    let mut app = Tracked::new(TokioIo::new(app), &activity);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut app);
    let outcome = match idle_timeout {
        None => copy.await,
        Some(limit) => tokio::select! {
            outcome = copy => outcome,
            () = activity.idle_for(limit) => {
                tracing::debug!(
                    seconds = limit.as_secs(),
                    "closed an upgraded connection idle for ConnectionTimeout"
                );
                return;
            }
        },
    };
    match outcome {
        Ok((up, down)) => {
            tracing::debug!(up, down, "upgraded connection closed");
        }
        Err(e) => {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    }
}

/// When data last moved on an upgraded connection, either way.
struct Activity {
    start: tokio::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: tokio::time::Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start
                + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
            let deadline = last + limit;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// An upgraded connection that records activity on every transfer.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    fn new(inner: T, activity: &Arc<Activity>) -> Self {
        Self {
            inner,
            activity: activity.clone(),
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The request body on its way to the app: tells `forward` when it has
/// been sent in full, so that the read timeout starts then.
struct OutBody {
    inner: Body,
    sent: Option<oneshot::Sender<()>>,
}

impl OutBody {
    fn signal_sent(&mut self) {
        if let Some(sent) = self.sent.take() {
            // `forward` may have stopped listening (it got the response
            // early, or gave up): nothing to do then.
            let _ = sent.send(());
        }
    }
}

impl HttpBody for OutBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        // An error also ends the body: hyper aborts the request and the
        // exchange fails promptly, under the read timeout.
        if !matches!(frame, Some(Ok(_))) || this.inner.is_end_stream() {
            this.signal_sent();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The app's response body on its way to the client, driving the
/// connection it comes from. At its end the connection goes back to the
/// pool and the caller's guard is dropped; if it is dropped before its end
/// (client went away), the connection is closed (HTTP/1.1 cannot skip the
/// rest of a response) and the guard dropped.
struct ResponseBody {
    inner: Incoming,
    done: Option<Done>,
}

struct Done {
    guard: Box<dyn Any + Send + Sync>,
    conn: Conn,
    upstream: Upstream,
}

impl ResponseBody {
    fn finish(&mut self, reusable: bool, cx: Option<&mut Context<'_>>) {
        if let Some(mut done) = self.done.take() {
            if reusable {
                if let Some(cx) = cx {
                    // Let it see the end of the response and turn idle.
                    done.conn.drive(cx);
                }
                done.upstream.put_idle(done.conn);
            }
            drop(done.guard);
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        // Twice: polling `inner` tells the driver it wants more, and the
        // second round reads it now rather than after a trip through the
        // scheduler. Both register this task for wake-ups when pending.
        for _ in 0..2 {
            // The driver reads the app's socket into `inner` (and sends the
            // rest of a request body still on its way).
            if let Some(done) = &mut this.done {
                done.conn.drive(cx);
            }
            let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) else {
                continue;
            };
            match &frame {
                // With a known length the last data frame already ends the
                // body: finish now rather than wait for another poll.
                Some(Ok(_)) if this.inner.is_end_stream() => this.finish(true, Some(cx)),
                Some(Ok(_)) => {}
                None => this.finish(true, Some(cx)),
                Some(Err(e)) => {
                    tracing::debug!(error = %Chain(e), "content process response body failed");
                    this.finish(false, None);
                }
            }
            return Poll::Ready(frame);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper's server may drop an empty body (HEAD, 204, 304,
        // Content-Length: 0) without polling it: still reusable then, if
        // the connection is idle.
        let reusable = self.inner.is_end_stream();
        self.finish(reusable, None);
    }
}

/// The request line and headers again, for a replay of a body-less request.
fn copy_head(request: &Request<OutBody>) -> Request<OutBody> {
    let mut copy = Request::new(OutBody {
        inner: Body::empty(),
        sent: None,
    });
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// The path and query the app sees: `prefix` stripped, always starting
/// with `/`.
fn upstream_uri(uri: &Uri, prefix: &str) -> Uri {
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
fn strip_hop_by_hop(headers: &mut HeaderMap, allow_upgrade: bool) -> bool {
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
fn strip_session_cookie(headers: &mut HeaderMap, session_cookie: &str) {
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
fn strip_set_session_cookie(headers: &mut HeaderMap, session_cookie: &str) {
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
fn is_api_key(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .get(..4)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"key "))
}

/// Adds X-Forwarded-For (the TCP peer appended to any value already
/// there), X-Forwarded-Host (the Host the client used; a client-sent one is
/// replaced) and X-Forwarded-Proto (connectd serves plain HTTP). Makes sure
/// Host is present, which HTTP/1.1 requires.
fn add_forwarded(headers: &mut HeaderMap, extensions: &axum::http::Extensions, uri: &Uri) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::SESSION_COOKIE;

    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Instant;

    use axum::extract::State;
    use axum::Router;
    use futures_util::{SinkExt, StreamExt};
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use tempfile::TempDir;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream, UnixListener};
    use tokio::sync::{mpsc, Notify};
    use tokio::time::timeout;
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    const GUID: &str = "3f2a9c1e-0b7d-4e55-9a61-2c8f0d4b7e10";
    const ANON_GUID: &str = "0a0a0a0a-1b1b-4c4c-8d8d-2e2e2e2e2e2e";
    const CREDS: &str = r#"{"user": "alice", "groups": ["g1"]}"#;
    const HOST_NAME: &str = "viewer.example:3939";
    const WAIT: Duration = Duration::from_secs(10);

    type TestBody = BoxBody<Bytes, BoxError>;

    fn full(bytes: impl Into<Bytes>) -> TestBody {
        Full::new(bytes.into()).map_err(|e| match e {}).boxed()
    }

    fn empty() -> TestBody {
        Empty::new().map_err(|e| match e {}).boxed()
    }

    /// A body fed through a channel, so a test decides when each chunk goes.
    struct ChannelBody(mpsc::Receiver<Bytes>);

    impl HttpBody for ChannelBody {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
        }
    }

    fn channel_body(capacity: usize) -> (mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, ChannelBody(rx))
    }

    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let start = Instant::now();
        while !condition() {
            assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // ----- The content process: a hyper server on a Unix socket. -----

    #[derive(Default)]
    struct App {
        connections: AtomicUsize,
        closed: AtomicUsize,
        gate: Notify,
        ws_credentials: Mutex<Option<String>>,
    }

    async fn start_app(socket: &Path) -> Arc<App> {
        let listener = UnixListener::bind(socket).expect("bind the app's socket");
        let app = Arc::new(App::default());
        let state = app.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                state.connections.fetch_add(1, SeqCst);
                let state = state.clone();
                tokio::spawn(async move {
                    let app = state.clone();
                    let service = service_fn(move |req| app_service(app.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                    state.closed.fetch_add(1, SeqCst);
                });
            }
        });
        app
    }

    async fn app_service(
        app: Arc<App>,
        mut req: Request<Incoming>,
    ) -> Result<Response<TestBody>, Infallible> {
        let response = match req.uri().path() {
            // Streams the request body back as it arrives.
            "/echo" => Response::new(req.into_body().map_err(BoxError::from).boxed()),
            // Answers only once it has the whole body.
            "/count" => {
                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                Response::new(full(body.map_or(0, |b| b.len()).to_string()))
            }
            // One chunk, then waits for the test to open the gate.
            "/stream" => {
                let (tx, body) = channel_body(1);
                tokio::spawn(async move {
                    let _ = tx.send(Bytes::from_static(b"first,")).await;
                    app.gate.notified().await;
                    let _ = tx.send(Bytes::from_static(b"second")).await;
                });
                Response::new(body.boxed())
            }
            "/never" => {
                let _ = req.into_body().collect().await;
                std::future::pending::<()>().await;
                Response::new(empty())
            }
            "/no-content" => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(empty())
                .expect("response"),
            "/hop" => Response::builder()
                .header(CONNECTION, "x-app-hop")
                .header("x-app-hop", "1")
                .header("keep-alive", "timeout=5")
                .header(SET_COOKIE, "connect_session=planted; Path=/")
                .header(SET_COOKIE, "theme=dark")
                .header("x-normal", "yes")
                .body(full("hop"))
                .expect("response"),
            "/ws" => {
                *app.ws_credentials.lock().expect("lock") = req
                    .headers()
                    .get(CREDENTIALS)
                    .map(|v| v.to_str().expect("ascii").to_owned());
                websocket_echo(&mut req)
            }
            _ => Response::new(full(dump(&req))),
        };
        Ok(response)
    }

    /// What the app saw: the request target, then one line per header.
    fn dump(req: &Request<Incoming>) -> String {
        let mut out = format!("{}\n", req.uri());
        for (name, value) in req.headers() {
            out.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        out
    }

    struct Seen {
        target: String,
        headers: Vec<(String, String)>,
    }

    impl Seen {
        fn parse(body: &[u8]) -> Seen {
            let text = std::str::from_utf8(body).expect("utf-8 dump");
            let mut lines = text.lines();
            let target = lines.next().expect("request target").to_owned();
            let headers = lines
                .map(|line| {
                    let (name, value) = line.split_once(": ").expect("header line");
                    (name.to_owned(), value.to_owned())
                })
                .collect();
            Seen { target, headers }
        }

        fn all(&self, name: &str) -> Vec<&str> {
            self.headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        }
    }

    fn websocket_echo(req: &mut Request<Incoming>) -> Response<TestBody> {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .expect("websocket key")
            .as_bytes();
        let accept = derive_accept_key(key);
        let upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            let io = upgrade.await.expect("app-side upgrade");
            let mut ws =
                WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
            // Runs until the client's close has been answered.
            while let Some(Ok(message)) = ws.next().await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    break;
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "websocket")
            .header("sec-websocket-accept", accept)
            .body(empty())
            .expect("response")
    }

    // ----- connectd: `forward` behind a real axum server. -----

    #[derive(Clone)]
    struct ProxyState {
        upstream: Upstream,
        dropped: Arc<AtomicUsize>,
    }

    /// Counts its drops, as the scheduler would count connections.
    struct Guard(Arc<AtomicUsize>);

    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn forward_for(guid: &str, read_timeout: Duration, dropped: &Arc<AtomicUsize>) -> Forward {
        Forward {
            idle_timeout: None,
            prefix: format!("/content/{guid}"),
            credentials: (guid != ANON_GUID).then(|| HeaderValue::from_static(CREDS)),
            read_timeout,
            guard: Box::new(Guard(dropped.clone())),
            session_cookie: SESSION_COOKIE,
        }
    }

    async fn proxy_handler(
        State(state): State<ProxyState>,
        request: axum::extract::Request,
    ) -> Response<Body> {
        let anonymous = format!("/content/{ANON_GUID}");
        let guid = if request.uri().path().starts_with(&anonymous) {
            ANON_GUID
        } else {
            GUID
        };
        let fwd = forward_for(guid, Duration::from_secs(5), &state.dropped);
        match forward(&state.upstream, request, fwd).await {
            Ok(response) => response,
            Err(e) => Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from(e.to_string()))
                .expect("response"),
        }
    }

    /// Returns the proxy's address and its count of dropped guards.
    async fn start_proxy(upstream: Upstream) -> (SocketAddr, Arc<AtomicUsize>) {
        let dropped = Arc::new(AtomicUsize::new(0));
        let state = ProxyState {
            upstream,
            dropped: dropped.clone(),
        };
        let router = Router::new().fallback(proxy_handler).with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        (addr, dropped)
    }

    struct Setup {
        _dir: TempDir,
        socket: PathBuf,
        app: Arc<App>,
        addr: SocketAddr,
        dropped: Arc<AtomicUsize>,
    }

    async fn setup() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("app.sock");
        let app = start_app(&socket).await;
        let (addr, dropped) = start_proxy(Upstream::new(socket.clone())).await;
        Setup {
            _dir: dir,
            socket,
            app,
            addr,
            dropped,
        }
    }

    // ----- The viewer: a hyper client over TCP. -----

    type Client = http1::SendRequest<TestBody>;

    async fn client(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        sender
    }

    fn request(method: &str, target: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(target)
            .header(HOST, HOST_NAME)
    }

    async fn send(client: &mut Client, req: Request<TestBody>) -> (StatusCode, HeaderMap, Bytes) {
        client.ready().await.expect("client connection ready");
        let response = timeout(WAIT, client.send_request(req))
            .await
            .expect("response in time")
            .expect("response");
        let (parts, body) = response.into_parts();
        let body = timeout(WAIT, body.collect())
            .await
            .expect("body in time")
            .expect("body")
            .to_bytes();
        (parts.status, parts.headers, body)
    }

    async fn get(addr: SocketAddr, target: &str) -> (StatusCode, HeaderMap, Bytes) {
        let mut client = client(addr).await;
        send(
            &mut client,
            request("GET", target).body(empty()).expect("request"),
        )
        .await
    }

    // ----- Tests through the whole chain. -----

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn strips_the_prefix_from_the_path() {
        let s = setup().await;
        for (target, seen) in [
            (format!("/content/{GUID}/x/y?q=1"), "/x/y?q=1"),
            (format!("/content/{GUID}"), "/"),
            (format!("/content/{GUID}/"), "/"),
            (format!("/content/{GUID}?a=b&c"), "/?a=b&c"),
            (format!("/content/{GUID}/a%20b/"), "/a%20b/"),
            (format!("/content/{GUID}//twice"), "//twice"),
        ] {
            let (status, _, body) = get(s.addr, &target).await;
            assert_eq!(status, StatusCode::OK, "{target}");
            assert_eq!(Seen::parse(&body).target, seen, "{target}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rewrites_request_headers() {
        let s = setup().await;
        let mut client = client(s.addr).await;

        let req = request("GET", &format!("/content/{GUID}/h"))
            .header(COOKIE, "a=1; connect_session=secret; b=2")
            .header(AUTHORIZATION, "Key abcdef")
            .header(CREDENTIALS_HEADER, r#"{"user": "admin", "groups": []}"#)
            .header("x-forwarded-for", "10.1.2.3")
            .header("x-forwarded-host", "forged.example")
            .header("x-forwarded-proto", "https")
            .header(CONNECTION, "keep-alive, X-Hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header(TE, "trailers")
            .header(PROXY_AUTHORIZATION, "Basic Zm9vOmJhcg==")
            .header("x-custom", "kept")
            .body(empty())
            .expect("request");
        let (status, _, body) = send(&mut client, req).await;
        assert_eq!(status, StatusCode::OK);
        let seen = Seen::parse(&body);
        assert_eq!(seen.all("cookie"), ["a=1; b=2"]);
        assert!(seen.all("authorization").is_empty());
        assert_eq!(seen.all("rstudio-connect-credentials"), [CREDS]);
        assert_eq!(seen.all("x-forwarded-for"), ["10.1.2.3, 127.0.0.1"]);
        assert_eq!(seen.all("x-forwarded-host"), [HOST_NAME]);
        assert_eq!(seen.all("x-forwarded-proto"), ["http"]);
        assert_eq!(seen.all("host"), [HOST_NAME]);
        assert_eq!(seen.all("x-custom"), ["kept"]);
        for gone in ["x-hop", "keep-alive", "te", "proxy-authorization"] {
            assert!(seen.all(gone).is_empty(), "{gone} reached the app");
        }

        // Only the session cookie: no Cookie header at all. Other
        // authorization schemes are the app's business.
        let req = request("GET", &format!("/content/{GUID}/h"))
            .header(COOKIE, "connect_session=secret")
            .header(AUTHORIZATION, "Bearer app-token")
            .body(empty())
            .expect("request");
        let (_, _, body) = send(&mut client, req).await;
        let seen = Seen::parse(&body);
        assert!(seen.all("cookie").is_empty());
        assert_eq!(seen.all("authorization"), ["Bearer app-token"]);
        assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);

        // An anonymous viewer cannot forge an identity.
        let req = request("GET", &format!("/content/{ANON_GUID}/h"))
            .header(CREDENTIALS_HEADER, CREDS)
            .body(empty())
            .expect("request");
        let (_, _, body) = send(&mut client, req).await;
        let seen = Seen::parse(&body);
        assert_eq!(seen.target, "/h");
        assert!(seen.all("rstudio-connect-credentials").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn strips_hop_by_hop_headers_and_the_session_cookie_from_responses() {
        let s = setup().await;

        // The app really sends them (so this test can fail).
        let stream = UnixStream::connect(&s.socket)
            .await
            .expect("connect to app");
        let (mut direct, connection) = http1::handshake::<_, TestBody>(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let (_, headers, _) = send(
            &mut direct,
            request("GET", "/hop").body(empty()).expect("request"),
        )
        .await;
        assert!(headers.contains_key("x-app-hop"));
        assert!(headers.contains_key("keep-alive"));
        assert_eq!(headers.get_all(SET_COOKIE).iter().count(), 2);

        let (status, headers, body) = get(s.addr, &format!("/content/{GUID}/hop")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hop");
        assert_eq!(headers.get("x-normal").expect("x-normal"), "yes");
        assert!(!headers.contains_key("x-app-hop"));
        assert!(!headers.contains_key("keep-alive"));
        let cookies: Vec<_> = headers.get_all(SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["theme=dark"]);
    }

    fn pattern(offset: usize, len: usize) -> Bytes {
        (offset..offset + len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_a_large_request_body_and_its_echo() {
        const CHUNK: usize = 64 * 1024;
        const TOTAL: usize = 20 * 1024 * 1024;
        let s = setup().await;
        let mut client = client(s.addr).await;
        let (tx, body) = channel_body(2);
        let req = request("POST", &format!("/content/{GUID}/echo"))
            .body(body.boxed())
            .expect("request");
        tx.send(pattern(0, CHUNK)).await.expect("first chunk");
        let response = timeout(WAIT, client.send_request(req))
            .await
            .expect("head in time")
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();

        // The first chunk comes back while the upload is still open: neither
        // direction is buffered whole (it would hang here otherwise).
        let mut received = 0;
        while received < CHUNK {
            let frame = timeout(WAIT, body.frame())
                .await
                .expect("echo of the first chunk before the upload ends")
                .expect("frame")
                .expect("frame ok");
            if let Ok(data) = frame.into_data() {
                assert_eq!(data, pattern(received, data.len()));
                received += data.len();
            }
        }
        assert_eq!(s.dropped.load(SeqCst), 0, "guard dropped mid-body");

        let sender = tokio::spawn(async move {
            for offset in (CHUNK..TOTAL).step_by(CHUNK) {
                tx.send(pattern(offset, CHUNK)).await.expect("chunk");
            }
        });
        while let Some(frame) = timeout(WAIT, body.frame()).await.expect("frame in time") {
            if let Ok(data) = frame.expect("frame ok").into_data() {
                assert_eq!(data, pattern(received, data.len()), "at byte {received}");
                received += data.len();
            }
        }
        sender.await.expect("sender task");
        assert_eq!(received, TOTAL);
        eventually("the guard to drop", || s.dropped.load(SeqCst) == 1).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_upload_does_not_count_against_the_read_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("app.sock");
        let _app = start_app(&socket).await;
        let upstream = Upstream::new(socket);
        let dropped = Arc::new(AtomicUsize::new(0));

        let (tx, body) = channel_body(1);
        tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tx.send(Bytes::from_static(b"0123456789"))
                    .await
                    .expect("chunk");
            }
        });
        let req = request("POST", &format!("/content/{GUID}/count"))
            .body(Body::new(body))
            .expect("request");
        let fwd = forward_for(GUID, Duration::from_millis(300), &dropped);
        let response = forward(&upstream, req, fwd).await.expect("response");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(body, "60");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_a_chunked_response_and_drops_the_guard_at_its_end() {
        let s = setup().await;
        let mut client = client(s.addr).await;
        let req = request("GET", &format!("/content/{GUID}/stream"))
            .body(empty())
            .expect("request");
        let response = timeout(WAIT, client.send_request(req))
            .await
            .expect("head in time")
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get(TRANSFER_ENCODING).expect("chunked"),
            "chunked"
        );
        let mut body = response.into_body();
        let first = timeout(WAIT, body.frame())
            .await
            .expect("first chunk while the app holds the rest")
            .expect("frame")
            .expect("frame ok")
            .into_data()
            .expect("data");
        assert_eq!(first, "first,");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            s.dropped.load(SeqCst),
            0,
            "guard dropped before the body ended"
        );

        s.app.gate.notify_one();
        let rest = timeout(WAIT, body.collect())
            .await
            .expect("rest in time")
            .expect("rest")
            .to_bytes();
        assert_eq!(rest, "second");
        eventually("the guard to drop", || s.dropped.load(SeqCst) == 1).await;

        // A response with a length, read to its end.
        let (status, _, _) = get(s.addr, &format!("/content/{GUID}/plain")).await;
        assert_eq!(status, StatusCode::OK);
        eventually("the second guard to drop", || s.dropped.load(SeqCst) == 2).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drops_the_guard_when_the_client_goes_away() {
        let s = setup().await;
        let mut client = client(s.addr).await;
        let req = request("GET", &format!("/content/{GUID}/stream"))
            .body(empty())
            .expect("request");
        let response = timeout(WAIT, client.send_request(req))
            .await
            .expect("head in time")
            .expect("response");
        let mut body = response.into_body();
        let first = timeout(WAIT, body.frame())
            .await
            .expect("first chunk in time");
        assert!(first.is_some());
        assert_eq!(s.dropped.load(SeqCst), 0);
        // Hang up while the app still holds the rest of its body.
        drop(body);
        drop(client);
        eventually("the guard to drop", || s.dropped.load(SeqCst) == 1).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reuses_connections_to_the_app() {
        let s = setup().await;
        let mut client = client(s.addr).await;
        for i in 0..20 {
            let req = request("GET", &format!("/content/{GUID}/n?i={i}"))
                .body(empty())
                .expect("request");
            let (status, _, body) = send(&mut client, req).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(Seen::parse(&body).target, format!("/n?i={i}"));
        }
        // Bodiless responses too.
        for target in ["/n", "/no-content"] {
            let req = request("HEAD", &format!("/content/{GUID}{target}"))
                .body(empty())
                .expect("request");
            let (status, _, body) = send(&mut client, req).await;
            assert!(status.is_success(), "{status}");
            assert!(body.is_empty());
        }
        let req = request("GET", &format!("/content/{GUID}/no-content"))
            .body(empty())
            .expect("request");
        assert_eq!(send(&mut client, req).await.0, StatusCode::NO_CONTENT);
        assert_eq!(s.app.connections.load(SeqCst), 1);

        // Concurrent requests each get their own answer.
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let addr = s.addr;
                tokio::spawn(async move {
                    let (status, _, body) = get(addr, &format!("/content/{GUID}/c?i={i}")).await;
                    assert_eq!(status, StatusCode::OK);
                    assert_eq!(Seen::parse(&body).target, format!("/c?i={i}"));
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("concurrent request");
        }
        assert!(s.app.connections.load(SeqCst) <= 41);
        eventually("all guards to drop", || s.dropped.load(SeqCst) == 63).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_close_with_the_upstream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("app.sock");
        let app = start_app(&socket).await;
        let upstream = Upstream::new(socket);
        let dropped = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let req = request("GET", &format!("/content/{GUID}/"))
                .body(Body::empty())
                .expect("request");
            let response = forward(&upstream, req, forward_for(GUID, WAIT, &dropped))
                .await
                .expect("response");
            response.into_body().collect().await.expect("body");
        }
        assert_eq!(app.connections.load(SeqCst), 1);
        assert_eq!(app.closed.load(SeqCst), 0);
        assert_eq!(dropped.load(SeqCst), 3);
        // Nothing else holds the connection (no task of its own).
        drop(upstream);
        eventually("the app to see its connection closed", || {
            app.closed.load(SeqCst) == 1
        })
        .await;
    }

    /// A raw HTTP/1.1 app that answers the first request on each connection
    /// without saying it will close, then either hangs up at once or, if
    /// `read_one_more`, reads the next request and hangs up without
    /// answering it. Records the request methods it read.
    async fn start_flaky_app(socket: &Path, read_one_more: bool) -> Arc<Mutex<Vec<String>>> {
        let listener = UnixListener::bind(socket).expect("bind");
        let methods = Arc::new(Mutex::new(Vec::new()));
        let log = methods.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let requests = if read_one_more { 2 } else { 1 };
                    for n in 0..requests {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut byte).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => head.extend_from_slice(&byte[..k]),
                            }
                        }
                        let method = String::from_utf8_lossy(&head)
                            .split(' ')
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        log.lock().expect("lock").push(method);
                        if n == 0 {
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                        }
                    }
                    // Dropping the stream closes the connection.
                });
            }
        });
        methods
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recovers_when_the_app_closes_kept_alive_connections() {
        for read_one_more in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let socket = dir.path().join("app.sock");
            let methods = start_flaky_app(&socket, read_one_more).await;
            let (addr, _) = start_proxy(Upstream::new(socket)).await;
            let mut client = client(addr).await;
            for i in 0..10 {
                let req = request("GET", &format!("/content/{GUID}/r{i}"))
                    .body(empty())
                    .expect("request");
                let (status, _, body) = send(&mut client, req).await;
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "request {i} ({read_one_more}): {body:?}"
                );
                assert_eq!(body, "ok");
                if !read_one_more && i % 2 == 0 {
                    // Let the close be seen before the next request, too.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            if !read_one_more {
                // A request with a body on a connection the app has since
                // closed goes to a new one.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let req = request("POST", &format!("/content/{GUID}/p"))
                    .body(full("abc"))
                    .expect("request");
                let (status, _, body) = send(&mut client, req).await;
                assert_eq!(status, StatusCode::OK, "{body:?}");
            }
            if read_one_more {
                // Nine requests went to a connection that then died, and
                // were sent again.
                assert_eq!(methods.lock().expect("lock").len(), 19);
                // A POST that reached the app is not sent twice.
                let req = request("POST", &format!("/content/{GUID}/p"))
                    .body(full("x"))
                    .expect("request");
                let (status, _, _) = send(&mut client, req).await;
                assert_eq!(status, StatusCode::BAD_GATEWAY);
                let posts = methods
                    .lock()
                    .expect("lock")
                    .iter()
                    .filter(|m| *m == "POST")
                    .count();
                assert_eq!(posts, 1);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relays_websockets_and_holds_the_guard_until_they_close() {
        let s = setup().await;
        let stream = TcpStream::connect(s.addr).await.expect("connect");
        let url = format!("ws://{}/content/{GUID}/ws", s.addr);
        let (mut ws, response) = timeout(WAIT, tokio_tungstenite::client_async(url, stream))
            .await
            .expect("handshake in time")
            .expect("websocket handshake");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            s.app.ws_credentials.lock().expect("lock").as_deref(),
            Some(CREDS)
        );

        ws.send(Message::text("hello")).await.expect("send text");
        let echo = timeout(WAIT, ws.next()).await.expect("echo in time");
        assert_eq!(echo.expect("message").expect("ok"), Message::text("hello"));
        let bytes = vec![0u8, 1, 2, 254, 255];
        ws.send(Message::binary(bytes.clone()))
            .await
            .expect("send binary");
        let echo = timeout(WAIT, ws.next()).await.expect("echo in time");
        assert_eq!(echo.expect("message").expect("ok"), Message::binary(bytes));

        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            s.dropped.load(SeqCst),
            0,
            "guard dropped while the websocket is open"
        );

        ws.close(None).await.expect("close");
        while let Some(message) = timeout(WAIT, ws.next()).await.expect("close in time") {
            if message.is_err() {
                break;
            }
        }
        assert_eq!(s.dropped.load(SeqCst), 0, "the client has not hung up yet");
        // Like a browser, hang up once the close handshake is done.
        drop(ws);
        eventually("the guard to drop", || s.dropped.load(SeqCst) == 1).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_missing_process_is_a_connect_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dropped = Arc::new(AtomicUsize::new(0));

        let missing = Upstream::new(dir.path().join("missing.sock"));
        let req = request("GET", &format!("/content/{GUID}/"))
            .body(Body::empty())
            .expect("request");
        let err = forward(&missing, req, forward_for(GUID, WAIT, &dropped))
            .await
            .expect_err("no socket");
        assert!(
            matches!(&err, ProxyError::Connect(e) if e.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(err.to_string().contains("missing.sock"), "{err}");
        assert_eq!(dropped.load(SeqCst), 1);

        // A socket file left behind by a dead process.
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        let req = request("GET", &format!("/content/{GUID}/"))
            .body(Body::empty())
            .expect("request");
        let err = forward(
            &Upstream::new(stale),
            req,
            forward_for(GUID, WAIT, &dropped),
        )
        .await
        .expect_err("nobody listening");
        assert!(
            matches!(&err, ProxyError::Connect(e) if e.kind() == io::ErrorKind::ConnectionRefused),
            "{err:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_app_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("app.sock");
        let _app = start_app(&socket).await;
        let upstream = Upstream::new(socket);
        let dropped = Arc::new(AtomicUsize::new(0));
        let read_timeout = Duration::from_millis(300);

        for body in [Body::empty(), Body::from(vec![7u8; 1024 * 1024])] {
            let req = request("POST", &format!("/content/{GUID}/never"))
                .body(body)
                .expect("request");
            let start = Instant::now();
            let err = forward(&upstream, req, forward_for(GUID, read_timeout, &dropped))
                .await
                .expect_err("no answer");
            let elapsed = start.elapsed();
            assert!(matches!(err, ProxyError::Timeout), "{err:?}");
            assert!(elapsed >= read_timeout, "{elapsed:?}");
            assert!(elapsed < read_timeout * 5, "{elapsed:?}");
        }
        assert_eq!(dropped.load(SeqCst), 2);
    }

    // ----- The header helpers on their own. -----

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
}
