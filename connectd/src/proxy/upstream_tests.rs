//! The connection pool through `forward`: reuse, recovery from connections
//! the app closed, processes that are gone, and apps on a TCP port.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::COOKIE;
use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use super::tests::*;
use super::*;

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
    let upstream = Upstream::unix(socket);
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
        let (addr, _) = start_proxy(Upstream::unix(socket)).await;
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
async fn a_missing_process_is_a_connect_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dropped = Arc::new(AtomicUsize::new(0));

    let missing = Upstream::unix(dir.path().join("missing.sock"));
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
        &Upstream::unix(stale),
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

// ----- A content process on a TCP port, as a pod would listen. -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_a_tcp_upstream_and_reuses_its_connections() {
    let (address, app) = start_tcp_app().await;
    let upstream = Upstream::tcp(address);
    assert_eq!(upstream.target(), &Target::Tcp(address));
    let (addr, dropped) = start_proxy(upstream).await;
    let mut client = client(addr).await;
    for i in 0..5 {
        let req = request("GET", &format!("/content/{GUID}/t?i={i}"))
            .header(COOKIE, "a=1; connect_session=secret")
            .body(empty())
            .expect("request");
        let (status, _, body) = send(&mut client, req).await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        let seen = Seen::parse(&body);
        assert_eq!(seen.target, format!("/t?i={i}"));
        assert_eq!(seen.all("cookie"), ["a=1"]);
        assert_eq!(seen.all("rstudio-connect-credentials"), [CREDS]);
        assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);
    }
    let req = request("POST", &format!("/content/{GUID}/echo"))
        .body(full("over tcp"))
        .expect("request");
    let (status, _, body) = send(&mut client, req).await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("over tcp")));
    // All six went over one kept-alive connection.
    assert_eq!(app.connections.load(SeqCst), 1);
    eventually("all guards to drop", || dropped.load(SeqCst) == 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_websockets_to_a_tcp_upstream() {
    let (address, app) = start_tcp_app().await;
    let (addr, dropped) = start_proxy(Upstream::tcp(address)).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/content/{GUID}/ws");
    let (mut ws, response) = timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("handshake in time")
        .expect("websocket handshake");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        app.ws_credentials.lock().expect("lock").as_deref(),
        Some(CREDS)
    );
    ws.send(Message::text("hello")).await.expect("send text");
    let echo = timeout(WAIT, ws.next()).await.expect("echo in time");
    assert_eq!(echo.expect("message").expect("ok"), Message::text("hello"));
    assert_eq!(
        dropped.load(SeqCst),
        0,
        "guard dropped while the websocket is open"
    );
    drop(ws);
    eventually("the guard to drop", || dropped.load(SeqCst) == 1).await;
    assert_eq!(app.connections.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_tcp_port_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let dropped = Arc::new(AtomicUsize::new(0));
    let req = request("GET", &format!("/content/{GUID}/"))
        .body(Body::empty())
        .expect("request");
    let err = forward(
        &Upstream::tcp(address),
        req,
        forward_for(GUID, WAIT, &dropped),
    )
    .await
    .expect_err("nobody listening");
    assert!(
        matches!(&err, ProxyError::Connect(e) if e.kind() == io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
    assert!(err.to_string().contains(&address.to_string()), "{err}");
    assert_eq!(dropped.load(SeqCst), 1);
}
