//! A Node.js app with a real WebSocket library (`ws`, installed by npm at
//! deploy time as the RunAs account) works through connectd's proxy, for a
//! viewer whose process runs under their own account; the open WebSocket
//! keeps the process busy, so it is not reaped while in use.

use std::net::TcpStream;
use std::time::Duration;

use connect_tests::connectd::Connectd;
use connect_tests::content::*;
use connect_tests::*;
use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

const APP: &str = r#"
const http = require('http');
const { WebSocketServer } = require('ws');
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain' });
  res.end(`node ok ${req.url} uid=${process.getuid()}`);
});
const wss = new WebSocketServer({ server });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    ws.send(isBinary ? data : `echo: ${data} from uid ${process.getuid()}`, { binary: isBinary });
  });
});
server.listen(process.env.PORT);
"#;

#[test]
fn websockets_reach_a_node_app_through_the_proxy() {
    if need_root() {
        return;
    }
    let sandbox = pam_world(&[]);
    let server = Connectd::start_in(&sandbox, &pam_config(""));
    let admin = sign_in(&server, "admin1");
    let viewer = sign_in(&server, "view1");
    let app = server.create_content(
        &admin,
        json!({"name": "sockets", "access_type": "logged_in", "run_as_current_user": true,
               "idle_timeout": 1}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    let manifest = json!({
        "version": 1,
        "metadata": {"appmode": "nodejs", "entrypoint": "app.js"},
    })
    .to_string();
    let package = json!({
        "name": "sockets", "version": "1.0.0", "private": true,
        "dependencies": {"ws": "^8.18.0"},
    })
    .to_string();
    let output = server.deploy(
        &admin,
        &guid,
        &bundle(&[
            ("manifest.json", &manifest),
            ("package.json", &package),
            ("app.js", APP),
        ]),
    );
    assert!(
        output.iter().any(|l| l.contains("npm")),
        "npm ran: {output:?}"
    );

    let r = server.open(&guid, "hello", Some(&viewer));
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
    assert_eq!(r.body, "node ok /hello uid=1503");

    let mut socket = open_socket(&server, &guid, &viewer, Duration::from_secs(30));
    socket.send(Message::text("hello")).expect("send");
    assert_eq!(
        socket.read().expect("read"),
        Message::text("echo: hello from uid 1503")
    );
    socket
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .expect("send binary");
    assert_eq!(
        socket.read().expect("read"),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    // Idle timeout is 1 s, but an open WebSocket is a connection in use.
    std::thread::sleep(Duration::from_secs(3));
    socket.send(Message::text("still there?")).expect("send");
    assert_eq!(
        socket.read().expect("read"),
        Message::text("echo: still there? from uid 1503")
    );
    socket.close(None).expect("close");
    while socket.read().is_ok() {}

    // ConnectionTimeout: a WebSocket silent for that long is closed.
    let r = server.json(
        "PATCH",
        &format!("/__api__/v1/content/{guid}"),
        &admin,
        &json!({"connection_timeout": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mut socket = open_socket(&server, &guid, &viewer, Duration::from_secs(10));
    socket.send(Message::text("hi")).expect("send");
    assert_eq!(
        socket.read().expect("read"),
        Message::text("echo: hi from uid 1503")
    );
    let started = std::time::Instant::now();
    let ended = socket.read();
    assert!(
        !matches!(ended, Ok(Message::Text(_) | Message::Binary(_))),
        "{ended:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(8),
        "closed after {waited:?}, not after ConnectionTimeout (1 s)"
    );
}

/// A WebSocket to the content's root with the viewer's session; the
/// handshake must answer 101.
fn open_socket(
    server: &Connectd,
    guid: &str,
    cookie: &str,
    read_timeout: Duration,
) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(server.address).expect("connect");
    stream
        .set_read_timeout(Some(read_timeout))
        .expect("timeout");
    let mut request = format!("ws://{}/content/{guid}/", server.address)
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("Cookie", cookie.parse().expect("cookie header"));
    let (socket, response) = tungstenite::client(request, stream).expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    socket
}
