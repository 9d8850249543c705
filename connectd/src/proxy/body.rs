//! What comes after the app's response head: its body on the way to the
//! client, driving the connection it comes from, or the splicing of an
//! upgraded connection. Uses `upstream` (its connections and pool), never
//! the other way round.

use std::any::Any;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::upstream::{Conn, Upstream};
use super::Chain;

/// Relays bytes both ways between the client's and the app's upgraded
/// connections until both are closed, holding the caller's guard.
pub(super) async fn splice(
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

/// The app's response body on its way to the client, driving the
/// connection it comes from. At its end the connection goes back to the
/// pool and the caller's guard is dropped; if it is dropped before its end
/// (client went away), the connection is closed (HTTP/1.1 cannot skip the
/// rest of a response) and the guard dropped.
pub(super) struct ResponseBody {
    pub(super) inner: Incoming,
    pub(super) done: Option<Done>,
}

pub(super) struct Done {
    pub(super) guard: Box<dyn Any + Send + Sync>,
    pub(super) conn: Conn,
    pub(super) upstream: Upstream,
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
