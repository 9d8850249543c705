//! `forward` through the whole chain: a viewer's hyper client, an axum
//! server that forwards, and a hyper app on a Unix socket (or a TCP port). The harness is
//! shared with `upstream_tests`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{
    AUTHORIZATION, CONNECTION, COOKIE, HOST, PROXY_AUTHORIZATION, SET_COOKIE, TE,
    TRANSFER_ENCODING, UPGRADE,
};
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::*;
use crate::http::SESSION_COOKIE;

pub(super) const GUID: &str = "3f2a9c1e-0b7d-4e55-9a61-2c8f0d4b7e10";
const ANON_GUID: &str = "0a0a0a0a-1b1b-4c4c-8d8d-2e2e2e2e2e2e";
pub(super) const CREDS: &str = r#"{"user": "alice", "groups": ["g1"]}"#;
const HOST_NAME: &str = "viewer.example:3939";
pub(super) const WAIT: Duration = Duration::from_secs(10);

type TestBody = BoxBody<Bytes, BoxError>;

pub(super) fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

pub(super) fn empty() -> TestBody {
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

pub(super) async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ----- The content process: a hyper server on a Unix socket. -----

#[derive(Default)]
pub(super) struct App {
    pub(super) connections: AtomicUsize,
    pub(super) closed: AtomicUsize,
    pub(super) gate: Notify,
    pub(super) ws_credentials: Mutex<Option<String>>,
}

pub(super) async fn start_app(socket: &Path) -> Arc<App> {
    let listener = UnixListener::bind(socket).expect("bind the app's socket");
    let app = Arc::new(App::default());
    let state = app.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            serve_app(&state, stream);
        }
    });
    app
}

/// The same app on a TCP port of 127.0.0.1, as a pod would listen.
pub(super) async fn start_tcp_app() -> (SocketAddr, Arc<App>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a port");
    let address = listener.local_addr().expect("the app's address");
    let app = Arc::new(App::default());
    let state = app.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            serve_app(&state, stream);
        }
    });
    (address, app)
}

fn serve_app<S>(state: &Arc<App>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
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

pub(super) struct Seen {
    pub(super) target: String,
    pub(super) headers: Vec<(String, String)>,
}

impl Seen {
    pub(super) fn parse(body: &[u8]) -> Seen {
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

    pub(super) fn all(&self, name: &str) -> Vec<&str> {
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
        let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
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

pub(super) fn forward_for(
    guid: &str,
    read_timeout: Duration,
    dropped: &Arc<AtomicUsize>,
) -> Forward {
    Forward {
        idle_timeout: None,
        prefix: format!("/content/{guid}"),
        credentials: (guid != ANON_GUID).then(|| HeaderValue::from_static(CREDS)),
        read_timeout,
        guard: Box::new(Guard(dropped.clone())),
        session_cookie: SESSION_COOKIE,
        trust_forwarded_for: false,
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
pub(super) async fn start_proxy(upstream: Upstream) -> (SocketAddr, Arc<AtomicUsize>) {
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

pub(super) struct Setup {
    pub(super) _dir: TempDir,
    pub(super) socket: PathBuf,
    pub(super) app: Arc<App>,
    pub(super) addr: SocketAddr,
    pub(super) dropped: Arc<AtomicUsize>,
}

pub(super) async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("app.sock");
    let app = start_app(&socket).await;
    let (addr, dropped) = start_proxy(Upstream::unix(socket.clone())).await;
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

pub(super) async fn client(addr: SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).await.expect("connect to proxy");
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

pub(super) fn request(method: &str, target: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(target)
        .header(HOST, HOST_NAME)
}

pub(super) async fn send(
    client: &mut Client,
    req: Request<TestBody>,
) -> (StatusCode, HeaderMap, Bytes) {
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

pub(super) async fn get(addr: SocketAddr, target: &str) -> (StatusCode, HeaderMap, Bytes) {
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
        .header("x-forwarded-prefix", "https://evil.example")
        .header("x-forwarded-port", "8443")
        .header("forwarded", "for=10.9.9.9;host=evil.example")
        .header("x-real-ip", "10.9.9.9")
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
    // A client's forwarding headers are replaced, never passed on: the
    // peer is not a trusted proxy.
    assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-host"), [HOST_NAME]);
    assert_eq!(seen.all("x-forwarded-proto"), ["http"]);
    assert_eq!(
        seen.all("x-forwarded-prefix"),
        [format!("/content/{GUID}").as_str()]
    );
    for gone in ["x-forwarded-port", "forwarded", "x-real-ip"] {
        assert!(seen.all(gone).is_empty(), "{gone} reached the app");
    }
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
    let upstream = Upstream::unix(socket);
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
async fn a_silent_app_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("app.sock");
    let _app = start_app(&socket).await;
    let upstream = Upstream::unix(socket);
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
