//! Bundles built and run end to end: real interpreters, real packages,
//! real processes answering on their sockets.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::tests::manifest_json;
use super::unpack_tests::{gz, tar_bytes, E};
use super::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::time::Instant;

// ----- end to end -----------------------------------------------------

/// Runs the build steps as they are (no sandbox), failing with their output.
fn build(m: &Manifest, bundle: &Path, env: &Path, rt: &Runtimes) {
    for step in build_steps(m, bundle, env, rt).unwrap() {
        let started = Instant::now();
        // As connectd does: HOME is the build's cache, not anyone's home.
        let out = step
            .to_command()
            .env("HOME", &rt.cache_dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build step \"{}\" failed ({}):\n$ {}\n--- stdout\n{}\n--- stderr\n{}",
            step.description,
            out.status,
            step.command_line(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{} ({:.1?})", step.description, started.elapsed());
    }
}

/// A started app; killed when dropped.
struct App {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl App {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }
}

fn start(m: &Manifest, bundle: &Path, env: &Path, work: &Path, rt: &Runtimes) -> App {
    let socket = work.join("app.sock");
    let step = run_step(m, bundle, env, work, Listen::Unix(&socket), rt).unwrap();
    let log = work.join("app.log");
    let log_file = fs::File::create(&log).unwrap();
    let child = step
        .to_command()
        .env("HOME", work)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let mut app = App { child, socket, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if UnixStream::connect(&app.socket).is_ok() {
            return app;
        }
        if let Ok(Some(status)) = app.child.try_wait() {
            panic!(
                "the app exited ({status}) before listening:\n$ {}\n{}",
                step.command_line(),
                app.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the app did not listen on {} within 60 s:\n{}",
            app.socket.display(),
            app.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(super) struct Response {
    pub(super) status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one HTTP/1.1 response (Content-Length, chunked, or to the end).
pub(super) fn read_response(r: &mut impl BufRead) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap();
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(length) = response.header("content-length") {
        let mut body = vec![0; length.parse().unwrap()];
        r.read_exact(&mut body).unwrap();
        response.body = body;
    } else if response.header("transfer-encoding") == Some("chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            response.body.extend_from_slice(&chunk[..size]);
        }
    } else {
        r.read_to_end(&mut response.body).unwrap();
    }
    response
}

fn get(app: &App, path: &str) -> Response {
    let mut s = app.connect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_response(&mut BufReader::new(s))
}

pub(super) struct Deployed {
    _dirs: tempfile::TempDir,
    pub(super) bundle: PathBuf,
    pub(super) env: PathBuf,
    pub(super) work: PathBuf,
    pub(super) rt: Runtimes,
    pub(super) manifest: Manifest,
}

/// Packs `files` into a .tar.gz, unpacks, reads the manifest and builds:
/// the whole deployment, as connectd does it.
pub(super) fn deploy(files: &[(&str, &str)]) -> Deployed {
    let dirs = tempfile::tempdir().unwrap();
    let (bundle, env, work, cache) = (
        dirs.path().join("bundle"),
        dirs.path().join("env"),
        dirs.path().join("work"),
        dirs.path().join("cache"),
    );
    for d in [&bundle, &env, &work, &cache] {
        fs::create_dir(d).unwrap();
    }
    let entries: Vec<E<'_>> = files
        .iter()
        .map(|(name, text)| E::File(name, text.as_bytes(), 0o644))
        .collect();
    unpack(&gz(&tar_bytes(&entries))[..], &bundle, &Limits::default()).unwrap();
    let manifest = read_manifest(&bundle).unwrap();
    let rt = Runtimes {
        cache_dir: cache,
        ..Runtimes::default()
    };
    build(&manifest, &bundle, &env, &rt);
    Deployed {
        _dirs: dirs,
        bundle,
        env,
        work,
        rt,
        manifest,
    }
}

impl Deployed {
    fn start(&self) -> App {
        start(
            &self.manifest,
            &self.bundle,
            &self.env,
            &self.work,
            &self.rt,
        )
    }
}

const WSGI_APP: &str = r#"
import os

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part %d\n" % i for i in range(3))
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    with open("visits.txt", "a") as f:  # cwd is the shared working directory
        f.write(path + "\n")
    text = "%s %s?%s from %s via %s: %r" % (
        environ["REQUEST_METHOD"], path, environ["QUERY_STRING"],
        environ["REMOTE_ADDR"], environ["wsgi.url_scheme"], body)
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Cwd", os.getcwd())])
    return [text.encode()]
"#;

#[test]
fn wsgi_app_end_to_end() {
    let d = deploy(&[
        (
            "manifest.json",
            &manifest_json("python-api", r#", "entrypoint": "hello:app""#, ""),
        ),
        ("hello.py", WSGI_APP),
    ]);
    assert!(d.env.join("venv/bin/python").exists());
    assert_eq!(
        fs::read_to_string(d.env.join(WSGI_RUNNER_FILE)).unwrap(),
        WSGI_RUNNER
    );
    let app = d.start();
    assert!(fs::symlink_metadata(&app.socket)
        .unwrap()
        .file_type()
        .is_socket());

    let r = get(&app, "/hello%20world?x=1");
    assert_eq!(r.status, 201, "{}\n{}", r.text(), app.log());
    assert_eq!(
        r.text(),
        "GET /hello world?x=1 from 127.0.0.1 via http: b''"
    );
    assert_eq!(r.header("x-cwd"), Some(d.work.to_str().unwrap()));

    // Keep-alive: a POST with a body, then a chunked response, on one
    // connection; the proxy's forwarding headers are honoured.
    let s = app.connect();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    write!(
        w,
        "POST /submit HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
             X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\
             Content-Length: 11\r\n\r\nhello there"
    )
    .unwrap();
    let r = read_response(&mut reader);
    assert_eq!(r.status, 201);
    assert_eq!(
        r.text(),
        "POST /submit? from 203.0.113.7 via https: b'hello there'"
    );
    write!(w, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = read_response(&mut reader);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "part 0\npart 1\npart 2\n");

    assert_eq!(
        fs::read_to_string(d.work.join("visits.txt")).unwrap(),
        "/hello world\n/submit\n"
    );
    let log = app.log();
    assert!(log.contains("\"POST /submit HTTP/1.1\" 201"), "{log}");
    // Nothing written next to the code.
    assert!(!d.bundle.join("__pycache__").exists());
}

#[test]
fn wsgi_app_that_fails_to_import_reports_it() {
    let d = deploy(&[
        ("manifest.json", &manifest_json("python-api", "", "")),
        ("app.py", "import no_such_module\n"),
    ]);
    let step = run_step(
        &d.manifest,
        &d.bundle,
        &d.env,
        &d.work,
        Listen::Unix(&d.work.join("s")),
        &d.rt,
    )
    .unwrap();
    let out = step.to_command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No module named 'no_such_module'"), "{err}");
    assert!(!d.work.join("s").exists());
}

pub(super) const FASTAPI_APP: &str = r#"
from fastapi import FastAPI, Request, WebSocket

app = FastAPI()

@app.get("/")
def root(request: Request):
    return {"hello": "fastapi", "client": request.client.host if request.client else None,
            "scheme": request.url.scheme}

@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        await websocket.send_text("echo: " + text)
"#;

/// Opens a WebSocket (`extra`: more request headers, each ending in CRLF).
fn websocket_open(app: &App, path: &str, extra: &str) -> (UnixStream, BufReader<UnixStream>) {
    let mut s = app.connect();
    write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.contains(" 101 "), "{status}\n{}", app.log());
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
    }
    (s, reader)
}

/// Sends `text` as one masked WebSocket frame and reads one text frame.
fn websocket_echo(app: &App, path: &str, text: &str) -> String {
    let (mut s, mut reader) = websocket_open(app, path, "");
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
    let mut head = [0u8; 2];
    reader.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x81, "a final text frame");
    let mut payload = vec![0; usize::from(head[1] & 0x7f)];
    reader.read_exact(&mut payload).unwrap();
    String::from_utf8(payload).unwrap()
}

#[test]
fn fastapi_app_end_to_end() {
    let d = deploy(&[
        (
            "manifest.json",
            &manifest_json("python-fastapi", r#", "entrypoint": "main:app""#, ""),
        ),
        ("main.py", FASTAPI_APP),
        ("requirements.txt", "fastapi\n"),
    ]);
    let app = d.start();
    let mut s = app.connect();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.9\r\n\
             X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut BufReader::new(s));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), app.log());
    assert_eq!(
        r.text(),
        r#"{"hello":"fastapi","client":"198.51.100.9","scheme":"https"}"#
    );
    assert_eq!(websocket_echo(&app, "/ws", "ping"), "echo: ping");
}

const NODE_SERVER: &str = r#"
const http = require('http');
const server = http.createServer(async (req, res) => {
  let extra = '';
  if (process.env.NODE_PATH) {
    const isNumber = require('is-number');
    const esm = await import('./esm.mjs');
    extra = ` cjs:${isNumber('42')} esm:${esm.check('x')}`;
  }
  res.setHeader('Content-Type', 'text/plain');
  res.end(`node ${req.method} ${req.url}${extra}`);
});
server.listen(process.env.PORT, () => console.log('listening on', process.env.PORT));
"#;

const NODE_ESM: &str = r#"
import isNumber from 'is-number';
export function check(value) { return isNumber(value); }
"#;

#[test]
fn node_app_without_packages_end_to_end() {
    let d = deploy(&[
        (
            "manifest.json",
            &manifest_json("nodejs", r#", "entrypoint": "server.js""#, ""),
        ),
        ("server.js", NODE_SERVER),
    ]);
    let app = d.start();
    let r = get(&app, "/hi");
    assert_eq!(r.status, 200, "{}", app.log());
    assert_eq!(r.text(), "node GET /hi");
}

#[test]
fn node_app_with_an_npm_package_end_to_end() {
    let package = r#"{"name": "demo", "version": "1.0.0", "main": "server.js",
            "scripts": {"postinstall": "node setup-that-is-not-in-env-dir.js"},
            "dependencies": {"is-number": "^7.0.0"}}"#;
    let d = deploy(&[
        ("manifest.json", &manifest_json("nodejs", "", "")),
        ("package.json", package),
        ("server.js", NODE_SERVER),
        ("esm.mjs", NODE_ESM),
    ]);
    assert!(d.env.join("node_modules/is-number/package.json").exists());
    assert!(!d.bundle.join("node_modules").exists());
    let app = d.start();
    let r = get(&app, "/pkg");
    assert_eq!(r.status, 200, "{}", app.log());
    assert_eq!(r.text(), "node GET /pkg cjs:true esm:false");
}

/// Also checks that the launcher's Unix socket support still works with
/// the newest Streamlit (it patches a private function: see
/// connect_streamlit.py).
#[test]
fn streamlit_app_end_to_end() {
    let d = deploy(&[
        ("manifest.json", &manifest_json("python-streamlit", "", "")),
        ("app.py", "import streamlit as st\nst.write('hello')\n"),
    ]);
    let app = d.start();
    let r = get(&app, "/_stcore/health");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", app.log());
    let r = get(&app, "/");
    assert!(
        r.text().contains("<title>Streamlit</title>"),
        "{}",
        r.text()
    );
    websocket_open(
        &app,
        "/_stcore/stream",
        "Sec-WebSocket-Protocol: streamlit\r\n",
    );
}
