//! The pooled HTTP/1.1 connections to one content process: connecting (to a
//! Unix socket or a TCP address, see [`Target`]), keeping idle ones, and
//! sending a request (its body an [`OutBody`]) with one replay when a
//! kept-alive connection turns out dead.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::oneshot;

use super::{Chain, ProxyError};

/// Idle keep-alive connections kept per content process. Like nginx's
/// `keepalive 32`: enough for the bursts one app sees, small enough not to
/// pin many of the app's workers or file descriptors.
const MAX_IDLE: usize = 32;

type Sender = http1::SendRequest<OutBody>;
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
pub(super) struct Conn {
    sender: Sender,
    /// `None` once the connection is finished: closed, failed, or handed
    /// over to an upgrade. It must not be polled after that.
    driver: Option<Driver>,
}

impl Conn {
    /// Lets the connection make progress; returns whether it is still open.
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
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

/// Where a content process listens, as the proxy reaches it. The proxy's
/// own type, not the launcher's: it imports nothing of connectd, and the
/// scheduler maps one onto the other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// What the local launcher gives: a socket in a directory only the
    /// process's account and connectd may enter.
    Unix(PathBuf),
    /// A pod's address, say. Whoever hands it out must make sure only
    /// connectd can reach it: apps trust the credentials header and
    /// X-Forwarded-For of whoever connects.
    Tcp(SocketAddr),
}

/// The socket's path, as logs and errors have always named it, or
/// `host:port`.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(socket) => write!(f, "{}", socket.display()),
            Target::Tcp(address) => write!(f, "{address}"),
        }
    }
}

/// One content process's socket or address, with a small pool of idle
/// keep-alive HTTP/1.1 connections, so proxied requests do not pay a connect
/// and a handshake each time. Cheap to clone (an `Arc` inside); all clones share
/// the pool. Dropping the last clone closes the idle connections.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Shared>,
}

struct Shared {
    target: Target,
    /// Used as a stack: the most recently used connection is the likeliest
    /// to be alive and the others age out when the app closes them.
    idle: Mutex<Vec<Conn>>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("target", &self.inner.target)
            .field("idle", &self.idle().len())
            .finish()
    }
}

impl Upstream {
    pub fn new(target: Target) -> Self {
        Upstream {
            inner: Arc::new(Shared {
                target,
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn unix(socket: PathBuf) -> Self {
        Self::new(Target::Unix(socket))
    }

    pub fn tcp(address: SocketAddr) -> Self {
        Self::new(Target::Tcp(address))
    }

    pub fn target(&self) -> &Target {
        &self.inner.target
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

    pub(super) fn put_idle(&self, conn: Conn) {
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
        let target = &self.inner.target;
        // Keep the kind (NotFound, ConnectionRefused) for the caller and
        // name the socket for the log.
        let failed =
            |e: io::Error| ProxyError::Connect(io::Error::new(e.kind(), format!("{target}: {e}")));
        match target {
            Target::Unix(socket) => {
                handshake(UnixStream::connect(socket).await.map_err(failed)?).await
            }
            Target::Tcp(address) => {
                let stream = TcpStream::connect(address).await.map_err(failed)?;
                // A request head, a WebSocket frame: small writes that must
                // leave at once, not wait for the app's ACK of the last one.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%address, error = %e, "could not set TCP_NODELAY");
                }
                handshake(stream).await
            }
        }
    }

    /// Sends the request and waits for the response head.
    ///
    /// A reused connection may have been closed by the app (keep-alive
    /// timeout) just as the request went out. The request is then sent
    /// again, once, on a new connection, if hyper handed it back unsent, or
    /// if `replayable` (idempotent method, no body) so sending it twice is
    /// harmless. A new connection that fails is a real error.
    pub(super) async fn exchange(
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
                    socket = %self.inner.target,
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

/// An HTTP/1.1 connection over `stream`, upgrades allowed.
async fn handshake<S>(stream: S) -> Result<Conn, ProxyError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ProxyError::Upstream(e.into()))?;
    Ok(Conn {
        sender,
        driver: Some(Box::pin(connection.with_upgrades())),
    })
}

/// The request body on its way to the app: tells `forward` when it has
/// been sent in full, so that the read timeout starts then.
pub(super) struct OutBody {
    pub(super) inner: Body,
    pub(super) sent: Option<oneshot::Sender<()>>,
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
