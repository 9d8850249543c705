//! `run_step` given a TCP address, as a launcher whose processes run
//! elsewhere (a pod) gives it: each mode's command, then apps of each mode
//! really listening there. The Unix socket forms are in `tests`.

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::run_tests::{deploy, read_response, Deployed, Response, FASTAPI_APP};
use super::steps::os;
use super::tests::manifest_json;
use super::*;

fn manifest(app_mode: AppMode, entrypoint: &str) -> Manifest {
    Manifest {
        app_mode,
        entrypoint: entrypoint.to_owned(),
        python_requirements: None,
        primary_html: None,
        python_version: None,
        package_json: false,
        npm_lockfile: None,
    }
}

fn tcp_step(mode: AppMode, entrypoint: &str, address: &str) -> Step {
    let address: SocketAddr = address.parse().unwrap();
    run_step(
        &manifest(mode, entrypoint),
        Path::new("/bundle"),
        Path::new("/env"),
        Path::new("/work"),
        Listen::Tcp(address),
        &Runtimes::default(),
    )
    .unwrap()
}

fn runner_args(runner: &str, bind: &str, entrypoint: &str) -> Vec<OsString> {
    [
        &format!("/env/{runner}"),
        "--bind",
        bind,
        "--app-dir",
        "/bundle",
        "--entrypoint",
        entrypoint,
    ]
    .into_iter()
    .map(os)
    .collect()
}

#[test]
fn the_python_runners_bind_the_address() {
    for (mode, runner, entrypoint) in [
        (AppMode::PythonApi, WSGI_RUNNER_FILE, "app:app"),
        (AppMode::PythonStreamlit, STREAMLIT_RUNNER_FILE, "app.py"),
    ] {
        let step = tcp_step(mode, entrypoint, "10.1.2.3:8000");
        assert_eq!(step.program, Path::new("/env/venv/bin/python"));
        assert_eq!(
            step.args,
            runner_args(runner, "10.1.2.3:8000", entrypoint),
            "{mode}"
        );
        assert_eq!(step.cwd, Path::new("/work"));
        // An IPv6 address in brackets, as the runners parse it.
        let step = tcp_step(mode, entrypoint, "[fd00::7]:8001");
        assert_eq!(
            step.args,
            runner_args(runner, "[fd00::7]:8001", entrypoint),
            "{mode}"
        );
    }
}

#[test]
fn uvicorn_gets_a_host_and_a_port() {
    for mode in [AppMode::PythonFastapi, AppMode::PythonShiny] {
        let step = tcp_step(mode, "main:app", "[fd00::7]:8001");
        assert_eq!(
            step.args[..6],
            ["-m", "uvicorn", "--host", "fd00::7", "--port", "8001"].map(os),
            "{mode}"
        );
        assert!(!step.args.contains(&os("--uds")), "{mode}: {step:?}");
        assert!(
            step.command_line()
                .contains("--proxy-headers --forwarded-allow-ips '*'"),
            "{}",
            step.command_line()
        );
        assert_eq!(step.args.last(), Some(&os("main:app")));
    }
}

#[test]
fn node_gets_the_port_in_port() {
    let step = tcp_step(AppMode::Nodejs, "server.js", "10.1.2.3:8000");
    assert!(step.env.contains(&(os("PORT"), os("8000"))), "{step:?}");
    assert_eq!(step.args, [os("/bundle/server.js")]);
}

// ----- end to end -----------------------------------------------------

/// A started app on a TCP port; killed when dropped.
struct App {
    child: Child,
    address: SocketAddr,
    log: std::path::PathBuf,
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

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.address).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }

    /// GETs `paths` on one connection, the last closing it.
    fn get(&self, paths: &[&str]) -> Vec<Response> {
        let s = self.connect();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut writer = s;
        let mut responses = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let close = if i + 1 == paths.len() {
                "Connection: close\r\n"
            } else {
                ""
            };
            write!(writer, "GET {path} HTTP/1.1\r\nHost: x\r\n{close}\r\n").unwrap();
            responses.push(read_response(&mut reader));
        }
        responses
    }
}

/// A port of `ip` nobody listens on now; `None` if the machine has no such
/// address.
fn free_port(ip: &str) -> Option<SocketAddr> {
    let listener = std::net::TcpListener::bind((ip, 0)).ok()?;
    listener.local_addr().ok()
}

fn start_on_tcp(d: &Deployed, address: SocketAddr) -> App {
    let step = run_step(
        &d.manifest,
        &d.bundle,
        &d.env,
        &d.work,
        Listen::Tcp(address),
        &d.rt,
    )
    .unwrap();
    let log = d.work.join("app.log");
    let log_file = fs::File::create(&log).unwrap();
    let child = step
        .to_command()
        .env("HOME", &d.work)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let mut app = App {
        child,
        address,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(address).is_err() {
        if let Ok(Some(status)) = app.child.try_wait() {
            panic!(
                "the app exited ({status}) before listening:\n$ {}\n{}",
                step.command_line(),
                app.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the app did not listen on {address} within 60 s:\n{}",
            app.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    app
}

const WSGI_APP: &str = r#"
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("wsgi %s from %s" % (environ["PATH_INFO"], environ["REMOTE_ADDR"])).encode()]
"#;

#[test]
fn wsgi_app_on_tcp_end_to_end() {
    let d = deploy(&[
        ("manifest.json", &manifest_json("python-api", "", "")),
        ("app.py", WSGI_APP),
    ]);
    let app = start_on_tcp(&d, free_port("127.0.0.1").unwrap());
    let r = app.get(&["/one", "/two"]);
    assert_eq!(r[0].status, 200, "{}", app.log());
    assert_eq!(r[0].text(), "wsgi /one from 127.0.0.1");
    // Kept alive for the second.
    assert_eq!(r[1].text(), "wsgi /two from 127.0.0.1");
    let log = app.log();
    let serving = format!("connect_wsgi: serving app:app on tcp:{}", app.address);
    assert!(log.contains(&serving), "{log}");
    drop(app);

    let Some(v6) = free_port("::1") else {
        eprintln!("no IPv6 loopback on this machine: the [::1] half is skipped");
        return;
    };
    let app = start_on_tcp(&d, v6);
    let r = app.get(&["/six"]);
    assert_eq!(r[0].status, 200, "{}", app.log());
    // Without X-Forwarded-For, the peer's address rather than the loopback
    // one a Unix socket's peer gets.
    assert_eq!(r[0].text(), "wsgi /six from ::1");
    let serving = format!("connect_wsgi: serving app:app on tcp:{v6}");
    assert!(app.log().contains(&serving), "{}", app.log());
}

/// uvicorn binds the host and port, and still trusts the proxy's
/// X-Forwarded-For/-Proto although connectd's address is not known to it.
#[test]
fn fastapi_app_on_tcp_end_to_end() {
    let d = deploy(&[
        (
            "manifest.json",
            &manifest_json("python-fastapi", r#", "entrypoint": "main:app""#, ""),
        ),
        ("main.py", FASTAPI_APP),
        ("requirements.txt", "fastapi\n"),
    ]);
    let app = start_on_tcp(&d, free_port("127.0.0.1").unwrap());
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
    let mut s = app.connect();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut status = String::new();
    BufReader::new(s).read_line(&mut status).unwrap();
    assert!(status.contains(" 101 "), "{status}\n{}", app.log());
}

const NODE_SERVER: &str = r#"
require('http')
  .createServer((req, res) => res.end(`node ${req.url}`))
  .listen(process.env.PORT);
"#;

#[test]
fn node_app_on_tcp_end_to_end() {
    let d = deploy(&[
        (
            "manifest.json",
            &manifest_json("nodejs", r#", "entrypoint": "server.js""#, ""),
        ),
        ("server.js", NODE_SERVER),
    ]);
    let app = start_on_tcp(&d, free_port("127.0.0.1").unwrap());
    let r = app.get(&["/hi"]);
    assert_eq!(r[0].status, 200, "{}", app.log());
    assert_eq!(r[0].text(), "node /hi");
}

/// Streamlit binds the port itself (connect_streamlit.py patches nothing
/// then), whichever server its version has.
#[test]
fn streamlit_app_on_tcp_end_to_end() {
    let d = deploy(&[
        ("manifest.json", &manifest_json("python-streamlit", "", "")),
        ("app.py", "import streamlit as st\nst.write('hello')\n"),
    ]);
    let app = start_on_tcp(&d, free_port("127.0.0.1").unwrap());
    let r = app.get(&["/_stcore/health"]);
    assert_eq!(
        (r[0].status, r[0].text().as_str()),
        (200, "ok"),
        "{}",
        app.log()
    );
    assert!(r[0].header("content-type").is_some());
}
