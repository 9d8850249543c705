//! Running the real connectd binary for end-to-end tests, and a small
//! HTTP/1.1 client that can choose its source address (the proxy trust
//! tests connect from 127.0.0.1 and from 127.0.0.2).

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{artifacts, isolated_command, Sandbox};

/// A free TCP port on loopback (the OS picks; a tiny race is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One running connectd with its own data directory and log.
pub struct Connectd {
    child: Option<Child>,
    pub address: SocketAddr,
    pub log: PathBuf,
    pub config: PathBuf,
}

/// The sections every test's connectd gets: its own data directory and a
/// loopback port; `body` adds the test's own.
pub fn connectd_config(dir: &Path, port: u16, body: &str) -> String {
    format!(
        "[Server]\nDataDir = {}\n[HTTP]\nListen = 127.0.0.1:{port}\n{body}\n",
        dir.join("data").display()
    )
}

impl Connectd {
    /// Starts connectd with `body` as configuration, isolated from any
    /// installed nameservice ([`isolated_command`]): with no sandbox of its
    /// own, its provisioning finds no daemon, as on a host without one.
    pub fn start(dir: &Path, body: &str) -> Connectd {
        let port = free_port();
        let config = dir.join("connectd.gcfg");
        fs::write(&config, connectd_config(dir, port, body)).expect("write config");
        let mut command = isolated_command(dir, &artifacts().connectd);
        command.arg("--config").arg(&config);
        Self::spawn(command, dir, port, config)
    }

    /// Starts connectd inside the sandbox's private mount namespace (its
    /// nsswitch.conf, module and bind mounts), reading the sandbox's own
    /// configuration file, to which `body` is appended.
    pub fn start_in(sandbox: &Sandbox, body: &str) -> Connectd {
        let port = free_port();
        let dir = sandbox.dir.path();
        let mut text = fs::read_to_string(&sandbox.config).expect("sandbox config");
        text.push_str(&connectd_config(dir, port, body));
        fs::write(&sandbox.config, text).expect("write config");
        let command = sandbox.command(
            &artifacts().connectd,
            &["--config", sandbox.config.to_str().expect("utf-8 path")],
        );
        Self::spawn(command, dir, port, sandbox.config.clone())
    }

    fn spawn(mut command: Command, dir: &Path, port: u16, config: PathBuf) -> Connectd {
        let log = dir.join(format!("connectd-{port}.log"));
        let file = fs::File::create(&log).expect("log file");
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .env("RUST_LOG", "info");
        // SAFETY: prctl is async-signal-safe; connectd dies with the test.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn connectd");
        let mut server = Connectd {
            child: Some(child),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            config,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("connectd exited at start ({status}):\n{}", self.log_text());
            }
            if std::net::TcpStream::connect(self.address).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("connectd did not start in time:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Log lines containing `needle` (the log is plain text on stderr).
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    pub fn request(&self, request: &HttpRequest<'_>) -> HttpResponse {
        http(self.address, request)
    }

    /// `POST /__login__` with JSON credentials.
    pub fn login(&self, username: &str, password: &str) -> HttpResponse {
        let body = serde_json::json!({"username": username, "password": password}).to_string();
        self.request(&HttpRequest {
            method: "POST",
            path: "/__login__",
            headers: vec![("Content-Type", "application/json".into())],
            body: body.as_bytes(),
            source: None,
        })
    }

    /// `GET path` with a session cookie (from a login's Set-Cookie).
    pub fn get_with_cookie(&self, path: &str, cookie: &str) -> HttpResponse {
        self.request(&HttpRequest {
            method: "GET",
            path,
            headers: vec![("Cookie", cookie.to_owned())],
            body: b"",
            source: None,
        })
    }

    /// A JSON request authenticated by a cookie.
    pub fn json(
        &self,
        method: &str,
        path: &str,
        cookie: &str,
        body: &serde_json::Value,
    ) -> HttpResponse {
        let text = body.to_string();
        self.request(&HttpRequest {
            method,
            path,
            headers: vec![
                ("Cookie", cookie.to_owned()),
                ("Content-Type", "application/json".into()),
            ],
            body: text.as_bytes(),
            source: None,
        })
    }

    /// SIGTERM and wait (bounded); true if it exited cleanly.
    pub fn stop(mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Connectd {
    /// SIGKILL, as the OOM killer or a crash would, and reap it.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Connectd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `connectd --config FILE` to completion with `text` as the whole
/// file (for start-up refusals).
pub fn connectd_once(dir: &Path, text: &str) -> Output {
    let config = dir.join("refused.gcfg");
    fs::write(&config, text).expect("write config");
    isolated_command(dir, &artifacts().connectd)
        .arg("--config")
        .arg(&config)
        .arg("--check")
        .stdin(Stdio::null())
        .output()
        .expect("run connectd")
}

pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: &'a [u8],
    /// Local address to connect from (e.g. 127.0.0.2).
    pub source: Option<IpAddr>,
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// `name=value` of the session cookie this response set.
    pub fn session_cookie(&self) -> String {
        let set = self
            .header("set-cookie")
            .unwrap_or_else(|| panic!("no Set-Cookie in {} {}", self.status, self.body));
        set.split(';').next().unwrap_or_default().to_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn http(address: SocketAddr, request: &HttpRequest<'_>) -> HttpResponse {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    if let Some(source) = request.source {
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .expect("bind source address");
    }
    socket
        .connect_timeout(&address.into(), Duration::from_secs(5))
        .expect("connect to connectd");
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        request.method,
        request.path,
        request.body.len()
    );
    for (k, v) in &request.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(request.body).expect("send body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
