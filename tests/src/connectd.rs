//! Running the real connectd binary for end-to-end tests, and a small
//! HTTP/1.1 client that can choose its source address (the proxy trust
//! tests connect from 127.0.0.1 and from 127.0.0.2).

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::{artifacts, isolated_command, Sandbox};

/// A free TCP port on loopback (the OS picks; a tiny race is acceptable in tests).
/// A loopback port free at this moment. Another process may take it
/// before the caller binds it: only for servers that cannot report the port
/// they bound (connectd itself listens on port 0, see [`Connectd::start`]).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The `address=` of the first "connectd listening" line of a log.
fn listening_address(log: &str) -> Option<SocketAddr> {
    log.lines()
        .find(|l| l.contains("connectd listening"))?
        .split_whitespace()
        .find_map(|word| word.strip_prefix("address="))?
        .parse()
        .ok()
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
        let config = dir.join("connectd.gcfg");
        fs::write(&config, connectd_config(dir, 0, body)).expect("write config");
        let mut command = isolated_command(dir, &artifacts().connectd);
        command.arg("--config").arg(&config);
        Self::spawn(command, dir, config)
    }

    /// Starts connectd inside the sandbox's private mount namespace (its
    /// nsswitch.conf, module and bind mounts), reading the sandbox's own
    /// configuration file, to which `body` is appended.
    pub fn start_in(sandbox: &Sandbox, body: &str) -> Connectd {
        Self::start_in_with_env(sandbox, body, &[])
    }

    /// [`Connectd::start_in`] with `env` added to connectd's own
    /// environment (e.g. a marker that content must never see).
    pub fn start_in_with_env(sandbox: &Sandbox, body: &str, env: &[(&str, &str)]) -> Connectd {
        let dir = sandbox.dir.path();
        let mut text = fs::read_to_string(&sandbox.config).expect("sandbox config");
        text.push_str(&connectd_config(dir, 0, body));
        fs::write(&sandbox.config, text).expect("write config");
        let mut command = sandbox.command(
            &artifacts().connectd,
            &["--config", sandbox.config.to_str().expect("utf-8 path")],
        );
        command.envs(env.iter().copied());
        Self::spawn(command, dir, sandbox.config.clone())
    }

    /// Starts connectd (configured with `Listen = 127.0.0.1:0`) and learns
    /// its port from its own "connectd listening" log line. A port picked in
    /// advance could be taken by another server first (a second copy of the
    /// suite, a test's slapd), and the test would then talk to that server.
    fn spawn(mut command: Command, dir: &Path, config: PathBuf) -> Connectd {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let log = dir.join(format!("connectd-{}.log", STARTS.fetch_add(1, SeqCst)));
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
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            config,
        };
        server.address = server.wait_ready();
        server
    }

    /// The address in connectd's "connectd listening" line, once it is
    /// there and the address accepts connections.
    fn wait_ready(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("connectd exited at start ({status}):\n{}", self.log_text());
            }
            if let Some(address) = listening_address(&self.log_text()) {
                if std::net::TcpStream::connect(address).is_ok() {
                    return address;
                }
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

    /// `POST /__signup__` with a password (the first account becomes the
    /// administrator); requires 201 and returns the session cookie.
    pub fn sign_up(&self, username: &str, password: &str) -> String {
        let body = serde_json::json!({"username": username, "password": password}).to_string();
        let r = self.request(&HttpRequest {
            method: "POST",
            path: "/__signup__",
            headers: vec![("Content-Type", "application/json".into())],
            body: body.as_bytes(),
            source: None,
        });
        assert_eq!(r.status, 201, "sign-up of {username}: {}", r.body);
        r.session_cookie()
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
                remove_cgroups_of(child.id());
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        remove_cgroups_of(child.id());
        false
    }
}

impl Connectd {
    /// The process id of connectd itself (exec'd by the namespace shell).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends `signal` to connectd.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Waits for connectd to exit (after a signal); panics with the log if
    /// it is still running after `within`.
    pub fn wait_exit(mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("connectd was started");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait for connectd") {
                remove_cgroups_of(child.id());
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "connectd still running {within:?} after being asked to stop:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as the OOM killer or a crash would, and reap it.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            remove_cgroups_of(child.id());
        }
    }
}

/// A killed connectd cannot remove the cgroups it made for its content
/// (cgroup v1 `connectd-<pid>` below this test's own cgroup in each
/// hierarchy): removed here, so that tests leave nothing on the host. Its
/// content processes die with it, but may take a moment.
fn remove_cgroups_of(pid: u32) {
    let Ok(membership) = fs::read_to_string("/proc/self/cgroup") else {
        return;
    };
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        for controller in controllers.split(',').filter(|c| !c.is_empty()) {
            let dir = Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(path.trim_start_matches('/'))
                .join(format!("connectd-{pid}"));
            if !dir.is_dir() {
                continue;
            }
            for _ in 0..200 {
                let jobs = fs::read_dir(&dir).into_iter().flatten().flatten();
                for job in jobs.filter(|j| j.path().is_dir()) {
                    let _ = fs::remove_dir(job.path());
                }
                if fs::remove_dir(&dir).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Connectd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            remove_cgroups_of(c.id());
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

/// Starts connectd for real (no `--check`) with `text` as the whole file
/// and waits, at most `within`, for it to exit: for refusals at start.
/// Panics if it is still running then (it accepted the file).
pub fn connectd_start_refused(dir: &Path, text: &str, within: Duration) -> Output {
    let config = dir.join("refused.gcfg");
    fs::write(&config, text).expect("write config");
    let mut child = isolated_command(dir, &artifacts().connectd)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run connectd");
    let deadline = Instant::now() + within;
    while child.try_wait().expect("wait for connectd").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap connectd");
            panic!(
                "connectd started on a file it must refuse, still running after {within:?}:\n\
                 {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("connectd output")
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
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(at) => (&raw[..at], &raw[at + 4..]),
        None => (&raw[..], &[][..]),
    };
    let head = String::from_utf8_lossy(head).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {:?}", String::from_utf8_lossy(&raw)));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    // Chunk sizes count bytes: decode after de-chunking, never before.
    let body = if chunked {
        String::from_utf8_lossy(&dechunk(body)).into_owned()
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// The data of a `Transfer-Encoding: chunked` body (RFC 9112 section 7.1).
/// A malformed body panics, naming what is wrong: a test must not judge a
/// silently truncated answer.
pub fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        assert!(
            !body.is_empty(),
            "malformed chunked body: it ends after {} bytes without the last (zero-size) chunk",
            out.len()
        );
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "malformed chunked body: no CRLF after a chunk size (at byte {} of the data, \
                     rest {:?})",
                    out.len(),
                    String::from_utf8_lossy(body)
                )
            });
        let size_line = String::from_utf8_lossy(&body[..line_end]).into_owned();
        // Chunk extensions (";name=value") carry nothing we need.
        let size_text = size_line.split(';').next().unwrap_or_default().trim();
        let hex = !size_text.is_empty() && size_text.bytes().all(|b| b.is_ascii_hexdigit());
        let size = usize::from_str_radix(size_text, 16)
            .ok()
            .filter(|_| hex)
            .unwrap_or_else(|| panic!("malformed chunked body: bad chunk size line {size_line:?}"));
        let rest = &body[line_end + 2..];
        if size == 0 {
            // The last chunk; trailer fields (unused) end with an empty line.
            assert!(
                rest.ends_with(b"\r\n"),
                "malformed chunked body: the last chunk is not followed by CRLF: {:?}",
                String::from_utf8_lossy(rest)
            );
            return out;
        }
        assert!(
            rest.len() >= size,
            "malformed chunked body: a chunk of {size} bytes has only {} bytes of data",
            rest.len()
        );
        assert!(
            rest[size..].starts_with(b"\r\n"),
            "malformed chunked body: no CRLF after a chunk of {size} bytes (found {:?})",
            String::from_utf8_lossy(&rest[size..rest.len().min(size + 8)])
        );
        out.extend_from_slice(&rest[..size]);
        body = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn well_formed_bodies_are_joined() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\n"),
            b"hello!"
        );
        assert_eq!(
            dechunk(b"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n"),
            b"0123456789"
        );
        assert_eq!(dechunk(b"0\r\n\r\n"), b"");
    }

    #[test]
    #[should_panic(expected = "bad chunk size line \"zz\"")]
    fn a_bad_size_line_panics() {
        dechunk(b"zz\r\nhello\r\n0\r\n\r\n");
    }

    #[test]
    #[should_panic(expected = "has only 3 bytes of data")]
    fn short_data_panics() {
        dechunk(b"5\r\nhel");
    }

    #[test]
    #[should_panic(expected = "no CRLF after a chunk of 5 bytes")]
    fn a_missing_crlf_after_data_panics() {
        dechunk(b"5\r\nhelloXX0\r\n\r\n");
    }

    #[test]
    #[should_panic(expected = "ends after 5 bytes without the last (zero-size) chunk")]
    fn a_body_without_its_last_chunk_panics() {
        dechunk(b"5\r\nhello\r\n");
    }

    #[test]
    #[should_panic(expected = "no CRLF after a chunk size")]
    fn a_size_line_without_crlf_panics() {
        dechunk(b"5");
    }

    #[test]
    #[should_panic(expected = "the last chunk is not followed by CRLF")]
    fn a_last_chunk_without_its_empty_line_panics() {
        dechunk(b"5\r\nhello\r\n0\r\n");
    }
}
