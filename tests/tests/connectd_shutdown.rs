//! SIGTERM: a request connectd is already handling completes, and connectd
//! exits once it has, cleanly (status 0).
//!
//! "In flight" is an event, not a guess: the upload is sent with
//! `Expect: 100-continue`, and connectd answers `100 Continue` only when the
//! handler starts reading the body. SIGTERM is sent then; the body follows
//! only after connectd has logged that it is stopping.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use connect_tests::connectd::Connectd;
use connect_tests::content::static_bundle;
use connect_tests::*;
use serde_json::json;

/// Reads from `stream` until `buffer` holds a blank line (the end of a
/// response head); returns the head.
fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> String {
    let mut byte = [0u8; 1];
    while !buffer.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(buffer)
            ),
            Ok(_) => buffer.push(byte[0]),
            Err(e) => panic!(
                "reading a response head: {e} (so far {:?})",
                String::from_utf8_lossy(buffer)
            ),
        }
    }
    String::from_utf8_lossy(&std::mem::take(buffer)).into_owned()
}

fn wait_for_log(server: &Connectd, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while server.log_lines_with(needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no log line {needle:?} within {within:?}:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_request_in_flight_at_sigterm_completes_before_connectd_exits() {
    if need_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(dir.path(), "");
    let admin = server.sign_up("ada", "correct horse battery");
    let app = server.create_content(&admin, json!({"name": "inflight"}));
    let guid = app["guid"].as_str().expect("guid").to_owned();

    let bundle = static_bundle("<p>uploaded during shutdown</p>");
    let mut stream = TcpStream::connect(server.address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    write!(
        stream,
        "POST /__api__/v1/content/{guid}/bundles HTTP/1.1\r\nHost: {}\r\n\
         Cookie: {admin}\r\nContent-Type: application/gzip\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n",
        server.address,
        bundle.len()
    )
    .expect("send head");
    let mut buffer = Vec::new();
    let interim = read_head(&mut stream, &mut buffer);
    assert!(
        interim.starts_with("HTTP/1.1 100"),
        "the handler reads the body: {interim:?}"
    );

    server.signal(libc::SIGTERM);
    wait_for_log(
        &server,
        "stopping: finishing requests in flight",
        Duration::from_secs(30),
    );
    stream
        .write_all(&bundle)
        .expect("send the body after SIGTERM");
    let head = read_head(&mut stream, &mut buffer);
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("read the body");
    buffer.extend(rest);
    let answer = String::from_utf8_lossy(&buffer);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "the upload in flight at SIGTERM completes: {head}{answer}\n{}",
        server.log_text()
    );
    assert!(answer.contains("\"id\""), "a bundle id: {answer}");

    let log = server.log_text();
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "connectd exits cleanly: {status}\n{log}");
    let bundles = dir
        .path()
        .join("data")
        .join("apps")
        .join(&guid)
        .join("bundles");
    assert!(
        std::fs::read_dir(&bundles).is_ok_and(|mut d| d.next().is_some()),
        "the bundle uploaded during shutdown was kept in {}",
        bundles.display()
    );
}
