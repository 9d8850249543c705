//! Content benchmark: `sudo cargo run --release -p connect-tests --bin content-bench`.
//!
//! One run, on this machine, in a `pam_world` sandbox (private mount
//! namespace, local accounts `v01`…), with connectd built in release
//! (`CONNECT_E2E_RELEASE=1`, set here; `--smoke` keeps the debug build):
//!
//! 1. **Cold start**: a new viewer's first request to current-user content,
//!    from the TCP connect to the first byte of the response, while
//!    connectd starts the app under the viewer's uid; against the same app
//!    started directly as that uid (from spawn until its socket accepts and
//!    answers the same request). For the stdlib WSGI probe (`python-api`)
//!    and a dependency-free Node.js app (`nodejs`). Overhead = first byte
//!    through connectd − the app's own start, paired per viewer.
//! 2. **Proxied throughput**: a dependency-free Node.js hello-world as
//!    shared content (RunAs, one process, `max_conns_per_process` 200),
//!    measured with `wrk` (1 thread, 16 and 64 connections): directly on a
//!    TCP port (a second instance of the same code), through nginx to the
//!    very process connectd started (its Unix socket, found with the jobs
//!    API; nginx enters connectd's mount namespace with nsenter), and
//!    through connectd (anonymous, and with a session cookie so the
//!    identity header is built). Interleaved, `--runs` times, medians.
//! 3. **Memory**: RSS and PSS (`/proc/<pid>/smaps_rollup`) of each viewer's
//!    process for both apps, and connectd's own RSS along the way.
//!
//! Prints a table and a Markdown section for BENCHMARKS.md, written to
//! `bench/results/content-bench.md` (raw runs: `content-bench.jsonl`).
//! `--smoke` is the short run of `tests/tests/content_bench_smoke.rs`
//! (2 viewers, 1 s per wrk run; its numbers mean nothing).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use connect_tests::connectd::{free_port, Connectd};
use connect_tests::content::*;
use connect_tests::*;
use serde_json::{json, Value};

/// The Node.js app of the cold-start and throughput scenarios: no
/// dependencies, a constant body (computed once) with a Content-Length.
const NODE_APP: &str = r#"
const http = require('http');
const body = `Hello, world! uid=${process.getuid()} pid=${process.pid}\n`;
const length = Buffer.byteLength(body);
http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': length });
  res.end(body);
}).listen(process.env.PORT);
"#;

fn node_bundle() -> Vec<u8> {
    let manifest = json!({
        "version": 1,
        "metadata": {"appmode": "nodejs", "entrypoint": "app.js"},
    })
    .to_string();
    bundle(&[("manifest.json", &manifest), ("app.js", NODE_APP)])
}

// ---------------------------------------------------------------------
// Options

struct Opts {
    smoke: bool,
    runs: usize,
    viewers: usize,
    secs: u64,
    conns: Vec<usize>,
    out: Option<PathBuf>,
    install: bool,
    perf: bool,
    /// Keep the throughput set-up up this long before measuring, for
    /// looking at it by hand (strace, ss, perf).
    hold: u64,
    /// cold, throughput (memory comes with cold); empty = all.
    only: Vec<String>,
}

impl Opts {
    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }

    fn parse() -> Self {
        let mut o = Opts {
            smoke: false,
            runs: 3,
            viewers: 10,
            secs: 10,
            conns: vec![16, 64],
            out: Some(workspace_root().join("bench/results/content-bench.md")),
            install: true,
            perf: false,
            hold: 0,
            only: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        let number = |v: Option<String>, what: &str| -> u64 {
            v.and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("content-bench: {what} needs a number");
                std::process::exit(2)
            })
        };
        while let Some(a) = args.next() {
            match a.as_str() {
                "--smoke" => {
                    o.smoke = true;
                    o.runs = 1;
                    o.viewers = 2;
                    o.secs = 1;
                    o.install = false;
                    o.out = Some(workspace_root().join("target/e2e/content-bench-smoke.md"));
                }
                "--runs" => o.runs = number(args.next(), "--runs").max(1) as usize,
                "--viewers" => o.viewers = number(args.next(), "--viewers").clamp(1, 99) as usize,
                "--seconds" => o.secs = number(args.next(), "--seconds").max(1),
                "--conns" => {
                    o.conns = args
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .filter_map(|c| c.parse().ok())
                        .collect();
                }
                "--out" => o.out = args.next().map(PathBuf::from),
                "--no-install" => o.install = false,
                "--perf" => o.perf = true,
                "--hold" => o.hold = number(args.next(), "--hold"),
                "--only" => o.only.extend(
                    args.next()
                        .unwrap_or_default()
                        .split(',')
                        .map(str::to_owned),
                ),
                "-h" | "--help" => {
                    println!(
                        "content-bench [--smoke] [--runs N] [--viewers N] [--seconds S] \
                         [--conns 16,64] [--out FILE.md] [--no-install] [--perf] \
                         [--hold SECONDS] [--only cold,throughput]"
                    );
                    std::process::exit(0);
                }
                other => {
                    eprintln!("content-bench: unknown argument {other:?}");
                    std::process::exit(2);
                }
            }
        }
        if o.conns.is_empty() {
            eprintln!("content-bench: --conns needs numbers, e.g. 16,64");
            std::process::exit(2);
        }
        o
    }
}

// ---------------------------------------------------------------------
// Tools

struct Tools {
    wrk: PathBuf,
    nginx: PathBuf,
    node: PathBuf,
}

fn find_program(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain(extra.iter().map(PathBuf::from))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn python_venv_ok() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import ensurepip, venv"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn look_for_tools() -> (Option<Tools>, Vec<&'static str>) {
    let wrk = find_program("wrk", &["/usr/bin/wrk"]);
    let nginx = find_program("nginx", &["/usr/sbin/nginx"]);
    // connectd runs /usr/bin/node unless configured otherwise.
    let node = Some(PathBuf::from("/usr/bin/node")).filter(|p| p.exists());
    let mut missing = Vec::new();
    if wrk.is_none() {
        missing.push("wrk");
    }
    if nginx.is_none() {
        missing.push("nginx");
    }
    if node.is_none() {
        missing.push("nodejs");
    }
    if !python_venv_ok() {
        missing.extend(["python3", "python3-venv"]);
    }
    match (wrk, nginx, node) {
        (Some(wrk), Some(nginx), Some(node)) if missing.is_empty() => {
            (Some(Tools { wrk, nginx, node }), missing)
        }
        _ => (None, missing),
    }
}

/// wrk, nginx, node and Debian's python3 with venv; installs what is
/// missing with apt-get (never starting the nginx service), unless told not to.
fn ensure_tools(install: bool) -> Tools {
    let (tools, missing) = look_for_tools();
    if let Some(tools) = tools {
        return tools;
    }
    let fail = |why: &str| -> ! {
        eprintln!(
            "content-bench: missing {}: {why}\n  install them with scripts/deps.sh, or: \
             apt-get install -y wrk nginx nodejs python3-venv",
            missing.join(", ")
        );
        std::process::exit(1);
    };
    if !install {
        fail("not installing (--smoke or --no-install)");
    }
    eprintln!("content-bench: installing {}", missing.join(" "));
    // As scripts/deps.sh: forbid starting services during the install (the
    // nginx package would start a system nginx on port 80).
    let script = format!(
        "set -eu; policy=/usr/sbin/policy-rc.d; \
         if [ ! -e \"$policy\" ]; then trap 'rm -f \"$policy\"' EXIT; \
         printf '#!/bin/sh\\nexit 101\\n' >\"$policy\"; chmod 755 \"$policy\"; fi; \
         export DEBIAN_FRONTEND=noninteractive; apt-get update -q; \
         apt-get install -y -q --no-install-recommends {}",
        missing.join(" ")
    );
    let ok = Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        fail("apt-get install failed");
    }
    match look_for_tools() {
        (Some(tools), _) => tools,
        _ => fail("still missing after apt-get install"),
    }
}

/// connectd's runtime worker threads: `worker_threads(N)` in its main.rs,
/// else Tokio's default (one per CPU).
fn connectd_workers() -> (usize, &'static str) {
    let main =
        fs::read_to_string(workspace_root().join("connectd/src/main.rs")).unwrap_or_default();
    main.split("worker_threads(")
        .nth(1)
        .and_then(|rest| rest.split(')').next()?.trim().parse().ok())
        .map(|n| (n, "`worker_threads` in connectd/src/main.rs"))
        .unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            (cpus, "Tokio's default, one per CPU")
        })
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The commit the daemons were built from, and whether connectd's sources
/// had uncommitted changes.
fn source_state() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(workspace_root())
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty =
                git(&["status", "--porcelain", "--", "connectd"]).is_some_and(|s| !s.is_empty());
            format!(
                "commit {commit}{}",
                if dirty {
                    " with uncommitted changes in connectd/"
                } else {
                    ""
                }
            )
        }
        None => "an unknown commit".to_owned(),
    }
}

fn version_of(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------
// /proc

fn proc_stat_fields(pid: i32) -> Vec<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn ppid(pid: i32) -> Option<i32> {
    proc_stat_fields(pid).get(1)?.parse().ok()
}

/// utime + stime of the whole process (all its threads, live and ended), in ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let f = proc_stat_fields(pid);
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// Busy time of the whole machine (all CPUs, steal included), in ticks.
fn machine_busy_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum()
}

/// CPU time of our children that have been waited for, in ticks.
fn reaped_children_ticks() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime) + secs(usage.ru_stime)) * clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn children_of(parent: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| ppid(p) == Some(parent))
        .collect()
}

/// connectd's pid: our child (unshare → sh → exec connectd) running its binary.
fn connectd_pid(binary: &Path) -> i32 {
    let binary = fs::canonicalize(binary).unwrap_or_else(|_| binary.to_owned());
    let me = std::process::id() as i32;
    children_of(me)
        .into_iter()
        .find(|&p| fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == binary))
        .unwrap_or_else(|| panic!("no child process runs {}", binary.display()))
}

/// (RSS, peak RSS, PSS) in KiB.
#[derive(Clone, Copy, Default)]
struct Mem {
    rss: u64,
    hwm: u64,
    pss: u64,
}

fn mem(pid: i32) -> Mem {
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    Mem {
        rss: field(&status, "VmRSS:"),
        hwm: field(&status, "VmHWM:"),
        pss: field(&rollup, "Pss:"),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------
// Statistics

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v.to_vec());
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile (p90 of 10 samples is the 9th smallest).
fn percentile(v: &[f64], p: f64) -> f64 {
    let s = sorted(v.to_vec());
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "n/a".to_owned()
    } else if v.abs() >= 1000.0 {
        let whole = v.round() as i64;
        let digits = whole.abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if whole < 0 {
            format!("-{out}")
        } else {
            out
        }
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

// ---------------------------------------------------------------------
// HTTP, by hand: first-byte timing

struct Timed {
    first_byte: Duration,
    status: u16,
    body: String,
}

/// Sends `GET path` on `stream` (`Connection: close`), times the first
/// byte of the answer from `start`, reads the rest.
fn timed_get(
    mut stream: impl Read + Write,
    path: &str,
    cookie: Option<&str>,
    start: Instant,
) -> Timed {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(cookie) = cookie {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send request");
    let mut first = [0u8; 1];
    let n = stream.read(&mut first).expect("read the first byte");
    let first_byte = start.elapsed();
    assert_eq!(n, 1, "the connection closed without an answer");
    let mut raw = first.to_vec();
    stream.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Timed {
        first_byte,
        status,
        body,
    }
}

fn get_tcp(address: SocketAddr, path: &str, cookie: Option<&str>) -> Timed {
    let start = Instant::now();
    let stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    timed_get(stream, path, cookie, start)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `2026-11-22T22:41:22.590682Z` (tracing's UTC timestamps) in seconds
/// since the epoch.
fn parse_utc(stamp: &str) -> Option<f64> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3_600 + min * 60) as f64 + sec)
}

/// job key → when connectd logged "started a content process" (the app exec'd).
fn exec_times(log: &str) -> std::collections::HashMap<String, f64> {
    log.lines()
        .filter(|l| l.contains("started a content process"))
        .filter_map(|l| {
            let stamp = parse_utc(l.split_whitespace().next()?)?;
            let job = l.split_whitespace().find_map(|w| w.strip_prefix("job="))?;
            Some((job.to_owned(), stamp))
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------
// Processes started directly (the baselines)

/// Process groups of ours still running, killed if we are interrupted
/// (nginx's workers, for one, have no parent-death signal). Fixed slots of
/// atomics, so that the signal handler can read them.
static GROUPS: [std::sync::atomic::AtomicI32; 64] =
    [const { std::sync::atomic::AtomicI32::new(0) }; 64];

fn register_group(group: i32) {
    use std::sync::atomic::Ordering::SeqCst;
    let free = GROUPS
        .iter()
        .find(|slot| slot.compare_exchange(0, group, SeqCst, SeqCst).is_ok());
    assert!(free.is_some(), "more than {} process groups", GROUPS.len());
}

fn unregister_group(group: i32) {
    use std::sync::atomic::Ordering::SeqCst;
    for slot in &GROUPS {
        let _ = slot.compare_exchange(group, 0, SeqCst, SeqCst);
    }
}

extern "C" fn on_stop_signal(signal: libc::c_int) {
    // Async-signal-safe: atomic loads, kill and _exit only. connectd and
    // its content die with us by their parent-death signal.
    for slot in &GROUPS {
        let group = slot.load(std::sync::atomic::Ordering::SeqCst);
        if group > 0 {
            // SAFETY: kill and _exit are async-signal-safe.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
    }
    unsafe { libc::_exit(128 + signal) };
}

/// SIGINT, SIGTERM and SIGHUP kill our process groups and end the run.
/// A handler rather than a blocked mask and a waiting thread: children
/// inherit the mask (std no longer resets it), and a Python app with
/// SIGTERM blocked does not stop when asked.
fn stop_children_on_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only makes async-signal-safe calls.
        unsafe { libc::signal(signal, on_stop_signal as *const () as libc::sighandler_t) };
    }
}

/// A process of ours (leading its own group) that dies with us and is
/// stopped, with its group, when dropped.
struct Owned {
    child: Option<Child>,
    what: String,
}

impl Owned {
    fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    fn new(child: Child, what: String) -> Self {
        register_group(child.id() as i32);
        Owned {
            child: Some(child),
            what,
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            unregister_group(pid);
            // SAFETY: kill has no memory-safety preconditions. The process
            // leads its own group (process_group(0)): signal the group.
            unsafe { libc::kill(-pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    // Workers of a master (nginx) may take a moment longer.
                    std::thread::sleep(Duration::from_millis(50));
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("{} ignored SIGTERM; killing it", self.what);
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    fn check_alive(&mut self, log: &Path) {
        if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
            panic!(
                "{} exited ({status}):\n{}",
                self.what,
                fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Its own process group, and SIGKILL if we die.
fn owned_command(cmd: &mut Command) {
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// How to start one of the apps by hand, as connectd would (same program,
/// arguments and variables; a copy of its bundle and environment that the
/// account can read, since connectd's DataDir is root's alone).
#[derive(Clone)]
struct AppRecipe {
    program: PathBuf,
    /// `{socket}` is replaced by the socket path.
    args: Vec<String>,
    env: Vec<(String, String)>,
}

struct Account {
    name: String,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

fn spawn_as(
    recipe: &AppRecipe,
    account: &Account,
    socket_or_port: &str,
    dir: &Path,
    log: &Path,
) -> Owned {
    let mut cmd = Command::new(&recipe.program);
    cmd.args(
        recipe
            .args
            .iter()
            .map(|a| a.replace("{socket}", socket_or_port)),
    )
    .env_clear()
    .envs([
        ("HOME", format!("/home/{}", account.name)),
        ("USER", account.name.clone()),
        ("LOGNAME", account.name.clone()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ("LANG", "C.UTF-8".to_owned()),
        ("TMPDIR", "/tmp".to_owned()),
    ])
    .envs(
        recipe
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.replace("{socket}", socket_or_port))),
    )
    .current_dir(dir)
    .stdin(Stdio::null());
    let file = fs::File::create(log).expect("log");
    cmd.stdout(file.try_clone().expect("dup")).stderr(file);
    owned_command(&mut cmd);
    let (uid, gid, groups) = (account.uid, account.gid, account.groups.clone());
    // SAFETY: only async-signal-safe calls; `groups` was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
                // Changing credentials cleared the parent-death signal.
                || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            libc::umask(0o027);
            Ok(())
        });
    }
    Owned::new(
        cmd.spawn().expect("spawn the app"),
        format!("{} as {}", recipe.program.display(), account.name),
    )
}

/// A directory only `uid` uses.
fn private_dir(path: &Path, uid: u32, gid: u32) {
    fs::create_dir_all(path).expect("mkdir");
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).expect("chmod");
}

struct DirectStart {
    first_byte: Duration,
    mem: Mem,
}

/// Starts the app as `account` on a fresh socket and times spawn → first
/// byte of the answer to `GET path` (polling the socket every 250 µs).
fn direct_cold_start(
    recipe: &AppRecipe,
    account: &Account,
    path: &str,
    scratch: &Path,
    expect: &str,
) -> DirectStart {
    let dir = scratch.join(format!("direct-{}-{}", account.name, fastrand_suffix()));
    private_dir(&dir, account.uid, account.gid);
    let socket = dir.join("app.sock");
    let log = scratch.join(format!(
        "{}.log",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let start = Instant::now();
    let mut app = spawn_as(recipe, account, socket.to_str().expect("utf-8"), &dir, &log);
    let deadline = start + Duration::from_secs(60);
    let timed = loop {
        if let Ok(stream) = UnixStream::connect(&socket) {
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .expect("timeout");
            break timed_get(stream, path, None, start);
        }
        app.check_alive(&log);
        assert!(
            Instant::now() < deadline,
            "{} did not listen within 60 s",
            app.what
        );
        std::thread::sleep(Duration::from_micros(250));
    };
    assert!(
        timed.status == 200 && timed.body.contains(expect),
        "{}: {} {}",
        app.what,
        timed.status,
        timed.body
    );
    let mem = mem(app.pid());
    app.stop();
    let _ = fs::remove_dir_all(&dir);
    DirectStart {
        first_byte: timed.first_byte,
        mem,
    }
}

fn fastrand_suffix() -> String {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Copies connectd's bundle (and environment) of a content item to a
/// world-readable place for the direct runs.
/// The command line and environment of a process connectd started, made
/// to run outside connectd's sandbox: paths into the content's directory
/// point at a readable copy of it, the socket is `{socket}`, and HOME,
/// USER and LOGNAME are left for [`spawn_as`] to set per account.
fn recipe_from_process(pid: i32, data: &Path, job: &str, guid: &str, copy: &Path) -> AppRecipe {
    let split = |bytes: Vec<u8>| -> Vec<String> {
        bytes
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    };
    let cmdline = split(fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline"));
    let environ = split(fs::read(format!("/proc/{pid}/environ")).expect("environ"));
    let original = data.join("apps").join(guid);
    copy_readable(&original, copy);
    let socket = data.join("run").join(job).join("app.sock");
    let (original, copy, socket) = (
        original.display().to_string(),
        copy.display().to_string(),
        socket.display().to_string(),
    );
    let rewrite = |s: &str| s.replace(&socket, "{socket}").replace(&original, &copy);
    let (program, args) = cmdline.split_first().expect("a command line");
    AppRecipe {
        program: PathBuf::from(rewrite(program)),
        args: args.iter().map(|a| rewrite(a)).collect(),
        env: environ
            .iter()
            .filter_map(|e| e.split_once('='))
            .filter(|(k, _)| !["HOME", "USER", "LOGNAME"].contains(k))
            .map(|(k, v)| (k.to_owned(), rewrite(v)))
            .collect(),
    }
}

fn copy_readable(from: &Path, to: &Path) {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).expect("mkdir");
        fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(to)
            .status()
            .is_ok_and(|s| s.success());
    assert!(ok, "cannot copy {} to {}", from.display(), to.display());
}

// ---------------------------------------------------------------------
// wrk

#[derive(Clone, Default)]
struct WrkRun {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    errors: u64,
    /// CPU time of the proxy (and of the app) per request, µs.
    proxy_cpu_us: f64,
    app_cpu_us: f64,
    /// CPU used by anything but wrk, the proxy and the app during the run,
    /// in % of the machine: other work on the machine, or stolen by the
    /// hypervisor.
    other_cpu_pct: f64,
}

fn parse_duration_us(text: &str) -> f64 {
    let t = text.trim();
    let (num, scale) = if let Some(v) = t.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1e6)
    } else if let Some(v) = t.strip_suffix('m') {
        (v, 60e6)
    } else {
        (t, 1.0)
    };
    num.trim()
        .parse::<f64>()
        .map(|n| n * scale)
        .unwrap_or(f64::NAN)
}

fn parse_wrk(text: &str) -> WrkRun {
    let mut run = WrkRun {
        rps: f64::NAN,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        ..Default::default()
    };
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            run.rps = v.trim().parse().unwrap_or(f64::NAN);
        } else if let Some(v) = l.strip_prefix("50%") {
            run.p50_us = parse_duration_us(v);
        } else if let Some(v) = l.strip_prefix("99%") {
            run.p99_us = parse_duration_us(v);
        } else if l.contains("requests in") {
            run.requests = l
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            run.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            run.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    run
}

/// A proxy (or none) in front of the app, as wrk sees it.
struct Target {
    label: String,
    url: String,
    headers: Vec<String>,
    /// The proxy's processes, for CPU accounting (empty: no proxy).
    proxy_pids: Vec<i32>,
}

fn wrk_once(
    wrk: &Path,
    target: &Target,
    conns: usize,
    secs: u64,
    app_pid: i32,
) -> (WrkRun, String) {
    let proxy_before: u64 = target.proxy_pids.iter().map(|&p| cpu_ticks(p)).sum();
    let app_before = cpu_ticks(app_pid);
    let machine_before = machine_busy_ticks();
    let wrk_before = reaped_children_ticks();
    let started = Instant::now();
    let mut cmd = Command::new(wrk);
    cmd.args([
        "-t1".to_owned(),
        format!("-c{conns}"),
        format!("-d{secs}s"),
        "--latency".to_owned(),
        "--timeout".to_owned(),
        "10s".to_owned(),
    ]);
    for h in &target.headers {
        cmd.arg("-H").arg(h);
    }
    let out = cmd.arg(&target.url).output().expect("run wrk");
    let elapsed = started.elapsed().as_secs_f64();
    let machine = machine_busy_ticks().saturating_sub(machine_before) as f64;
    let wrk_ticks = reaped_children_ticks() - wrk_before;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed on {}: {}\n{text}\n{}",
        target.label,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut run = parse_wrk(&text);
    let ticks = clock_ticks();
    let per_req = |delta: u64| {
        if run.requests == 0 {
            f64::NAN
        } else {
            delta as f64 / ticks * 1e6 / run.requests as f64
        }
    };
    let proxy_after: u64 = target.proxy_pids.iter().map(|&p| cpu_ticks(p)).sum();
    run.proxy_cpu_us = if target.proxy_pids.is_empty() {
        f64::NAN
    } else {
        per_req(proxy_after.saturating_sub(proxy_before))
    };
    let app_ticks = cpu_ticks(app_pid).saturating_sub(app_before);
    run.app_cpu_us = per_req(app_ticks);
    let ours = wrk_ticks + proxy_after.saturating_sub(proxy_before) as f64 + app_ticks as f64;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    run.other_cpu_pct = ((machine - ours) / ticks / (elapsed * cpus) * 100.0).max(0.0);
    assert!(
        !run.rps.is_nan() && run.requests > 0,
        "no result from wrk on {}:\n{text}",
        target.label
    );
    (run, text)
}

// ---------------------------------------------------------------------
// nginx

struct Nginx {
    master: Owned,
    port: u16,
    workers: usize,
    dir: PathBuf,
}

impl Nginx {
    fn pids(&self) -> Vec<i32> {
        let master = self.master.pid();
        let mut all = vec![master];
        all.extend(children_of(master));
        all
    }
}

/// nginx as root (`user root;`, so it may open the socket in its 0700
/// directory), in connectd's own mount namespace (nsenter), proxying
/// `/content/{guid}/` to the Unix socket with keep-alive upstream
/// connections, like connectd's pool (32 idle connections, HTTP/1.1).
fn start_nginx(
    nginx: &Path,
    dir: &Path,
    workers: usize,
    socket: &Path,
    guid: &str,
    ns_pid: i32,
) -> Nginx {
    fs::create_dir_all(dir).expect("mkdir nginx");
    let port = free_port();
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    fs::write(
        &conf,
        format!(
            "user root;\n\
             worker_processes {workers};\n\
             daemon off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               upstream app {{\n\
                 server unix:{socket};\n\
                 keepalive 32;\n\
               }}\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 location /content/{guid}/ {{\n\
                   proxy_pass http://app/;\n\
                   proxy_http_version 1.1;\n\
                   proxy_set_header Connection \"\";\n\
                   proxy_set_header Host $host;\n\
                   proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                   proxy_set_header X-Forwarded-Host $host;\n\
                   proxy_set_header X-Forwarded-Proto $scheme;\n\
                 }}\n\
               }}\n\
             }}\n",
            socket = socket.display(),
        ),
    )
    .expect("nginx.conf");
    let log = dir.join("stderr.log");
    let file = fs::File::create(&log).expect("log");
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--mount=/proc/{ns_pid}/ns/mnt"))
        .arg("--")
        .arg(nginx)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup"))
        .stderr(file);
    owned_command(&mut cmd);
    let mut master = Owned::new(
        cmd.spawn().expect("spawn nginx"),
        format!("nginx ({workers} worker(s))"),
    );
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(address).is_err() {
        master.check_alive(&log);
        assert!(
            Instant::now() < deadline,
            "nginx did not listen in time:\n{}",
            fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Nginx {
        master,
        port,
        workers,
        dir: dir.to_owned(),
    }
}

// ---------------------------------------------------------------------
// Results

struct ColdRow {
    app: String,
    via_connectd_ms: Vec<f64>,
    direct_ms: Vec<f64>,
    overhead_ms: Vec<f64>,
    /// From the request to connectd's "started a content process" log
    /// line (written once the app is exec'd), and from there to the first
    /// byte.
    until_exec_ms: Vec<f64>,
    after_exec_ms: Vec<f64>,
}

struct MemRow {
    app: String,
    rss: Vec<f64>,
    pss: Vec<f64>,
    direct_rss: Vec<f64>,
}

struct ThroughputRow {
    label: String,
    conns: usize,
    runs: Vec<WrkRun>,
}

impl ThroughputRow {
    fn med(&self, f: impl Fn(&WrkRun) -> f64) -> f64 {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }
}

struct Report {
    machine: Vec<String>,
    source: String,
    cold: Vec<ColdRow>,
    memory: Vec<MemRow>,
    connectd_mem: Vec<(String, Mem)>,
    throughput: Vec<ThroughputRow>,
    notes: Vec<String>,
    raw: Vec<Value>,
}

fn describe_machine(tools: &Tools) -> Vec<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|k| k / 1048576.0)
        .unwrap_or(f64::NAN);
    let os = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let date = Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let rustc = std::env::var_os("CARGO")
        .map(|c| PathBuf::from(c).with_file_name("rustc"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("rustc"));
    let rustc = version_of(&rustc, &["--version"]);
    vec![
        format!(
            "{cpus} vCPUs ({model}), {mem_gib:.0} GiB, {os}, kernel {kernel}; {}",
            if rustc.is_empty() {
                "rustc unknown".to_owned()
            } else {
                rustc
            }
        ),
        format!(
            "Node.js {}, Python {} (Debian's, in the content's venv), {}, {}; run on {date}",
            version_of(&tools.node, &["--version"]),
            version_of(Path::new("/usr/bin/python3"), &["--version"]).trim_start_matches("Python "),
            version_of(&tools.nginx, &["-v"]).replace("nginx version: ", ""),
            version_of(&tools.wrk, &["-v"])
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ]
}

// ---------------------------------------------------------------------

fn content_guid(v: &Value) -> String {
    v["guid"].as_str().expect("guid").to_owned()
}

fn jobs(server: &Connectd, guid: &str, admin: &str) -> Vec<Value> {
    let r = server.get_with_cookie(&format!("/__api__/v1/content/{guid}/jobs"), admin);
    assert_eq!(r.status, 200, "jobs: {}", r.body);
    r.json().as_array().cloned().unwrap_or_default()
}

fn main() {
    let opts = Opts::parse();
    stop_children_on_signals();
    if need_root() {
        eprintln!("content-bench: run as root (sudo): it needs private mount namespaces");
        std::process::exit(1);
    }
    let tools = ensure_tools(opts.install);
    if !opts.smoke {
        // SAFETY: single-threaded here, before artifacts() reads it.
        unsafe { std::env::set_var("CONNECT_E2E_RELEASE", "1") };
    }
    let build = if opts.smoke { "debug" } else { "release" };
    eprintln!("content-bench: building the daemons ({build})…");
    let connectd_binary = artifacts().connectd.clone();

    let mut report = Report {
        machine: describe_machine(&tools),
        source: source_state(),
        cold: Vec::new(),
        memory: Vec::new(),
        connectd_mem: Vec::new(),
        throughput: Vec::new(),
        notes: Vec::new(),
        raw: Vec::new(),
    };

    let viewers = numbered_viewers(opts.viewers);
    let sandbox = pam_world(&viewers);
    let server = Connectd::start_in(&sandbox, &pam_config(""));
    let cpid = connectd_pid(&connectd_binary);
    let admin = sign_in(&server, "admin1");
    report
        .connectd_mem
        .push(("started, one sign-in".into(), mem(cpid)));
    let data = sandbox.path("data");
    let scratch = sandbox.path("bench");
    fs::create_dir_all(&scratch).expect("mkdir");
    fs::set_permissions(&scratch, fs::Permissions::from_mode(0o755)).expect("chmod");

    // --- Content ----------------------------------------------------------
    let per_viewer = json!({"access_type": "logged_in", "run_as_current_user": true,
                            "idle_timeout": 3600, "max_processes": 1});
    let mut fields = per_viewer.clone();
    fields["name"] = "bench-wsgi".into();
    let wsgi = content_guid(&server.create_content(&admin, fields));
    let mut fields = per_viewer.clone();
    fields["name"] = "bench-node".into();
    let node = content_guid(&server.create_content(&admin, fields));
    let shared = content_guid(&server.create_content(
        &admin,
        json!({"name": "bench-shared", "access_type": "all", "run_as_current_user": false,
               "max_conns_per_process": 200, "max_processes": 1, "min_processes": 1,
               "load_factor": 1.0, "idle_timeout": 3600}),
    ));
    eprintln!("content-bench: deploying…");
    server.deploy(&admin, &wsgi, &probe_bundle());
    server.deploy(&admin, &node, &node_bundle());
    server.deploy(&admin, &shared, &node_bundle());

    // The apps as connectd runs them: a first launch for admin1 (not
    // measured; it also warms the page cache before the first viewer), whose
    // command line and environment the direct runs then use.
    let warm_up = |guid: &str, path: &str| -> AppRecipe {
        let r = server.open(guid, path, Some(&admin));
        assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
        let job = jobs(&server, guid, &admin)
            .into_iter()
            .find(|j| j["running"] == true && j["unix_account"] == "admin1")
            .unwrap_or_else(|| panic!("no process of admin1 for {guid}"));
        recipe_from_process(
            job["pid"].as_i64().expect("pid") as i32,
            &data,
            job["key"].as_str().expect("key"),
            guid,
            &scratch.join(format!("app-{guid}")),
        )
    };
    let wsgi_recipe = warm_up(&wsgi, "whoami");
    let node_recipe = warm_up(&node, "");
    for r in [&wsgi_recipe, &node_recipe] {
        eprintln!(
            "content-bench: the app alone runs {} {}\n  with {}",
            r.program.display(),
            r.args.join(" "),
            r.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }

    // --- 1. Cold start, 3. memory per viewer process ----------------------
    if opts.wants("cold") {
        eprintln!("content-bench: cold starts for {} viewers…", viewers.len());
        struct App<'a> {
            label: &'a str,
            guid: &'a str,
            path: &'a str,
            recipe: &'a AppRecipe,
        }
        let apps = [
            App {
                label: "python-api (stdlib WSGI probe)",
                guid: &wsgi,
                path: "whoami",
                recipe: &wsgi_recipe,
            },
            App {
                label: "nodejs (hello world, no dependencies)",
                guid: &node,
                path: "",
                recipe: &node_recipe,
            },
        ];
        let mut cold: Vec<ColdRow> = apps
            .iter()
            .map(|a| ColdRow {
                app: a.label.into(),
                via_connectd_ms: Vec::new(),
                direct_ms: Vec::new(),
                overhead_ms: Vec::new(),
                until_exec_ms: Vec::new(),
                after_exec_ms: Vec::new(),
            })
            .collect();
        // (app, viewer) → (wall clock of the request, first byte ms).
        let mut sent_at: Vec<(usize, String, f64, f64)> = Vec::new();
        let mut direct_rss: Vec<Vec<f64>> = vec![Vec::new(); apps.len()];
        for (i, (name, uid)) in viewers.iter().enumerate() {
            if viewers.len() > 25 {
                // The sign-in limit is 30 per minute per address.
                std::thread::sleep(Duration::from_millis(2100));
            }
            let cookie = sign_in(&server, name);
            let account = Account {
                name: name.clone(),
                uid: *uid,
                gid: 1500,
                groups: vec![1500, SHARED_GID],
            };
            for (a, app) in apps.iter().enumerate() {
                let through = || {
                    let wall = unix_now();
                    let t = get_tcp(
                        server.address,
                        &format!("/content/{}/{}", app.guid, app.path),
                        Some(&cookie),
                    );
                    assert_eq!(
                        t.status,
                        200,
                        "{}: {}\n{}",
                        app.label,
                        t.body,
                        server.log_text()
                    );
                    assert!(
                        t.body.contains(&format!("\"uid\": {uid}"))
                            || t.body.contains(&format!("uid={uid} ")),
                        "not run as {name} ({uid}): {}",
                        t.body
                    );
                    (t.first_byte, wall)
                };
                let direct = || {
                    let expect = if app.path == "whoami" {
                        format!("\"uid\": {uid}")
                    } else {
                        format!("uid={uid} ")
                    };
                    direct_cold_start(
                        app.recipe,
                        &account,
                        &format!("/{}", app.path),
                        &scratch,
                        &expect,
                    )
                };
                // Alternate which goes first, so neither always runs on a
                // warmer cache.
                let ((via, wall), own) = if i % 2 == 0 {
                    let v = through();
                    (v, direct())
                } else {
                    let d = direct();
                    (through(), d)
                };
                let (v, d) = (ms(via), ms(own.first_byte));
                sent_at.push((a, name.clone(), wall, v));
                eprintln!(
                    "  {name} {:<40} connectd {v:>7.1} ms   direct {d:>7.1} ms   overhead {:>6.1} ms",
                    app.label,
                    v - d
                );
                cold[a].via_connectd_ms.push(v);
                cold[a].direct_ms.push(d);
                cold[a].overhead_ms.push(v - d);
                direct_rss[a].push(mib(own.mem.rss));
                report
                    .raw
                    .push(json!({"scenario": "cold start", "app": app.label,
                    "viewer": name, "connectd_first_byte_ms": v, "direct_first_byte_ms": d,
                    "direct_rss_kib": own.mem.rss}));
            }
        }
        // Where connectd's time goes: its log says when each app was exec'd.
        let started = exec_times(&server.log_text());
        for (a, app) in apps.iter().enumerate() {
            let jobs = jobs(&server, app.guid, &admin);
            for (_, name, wall, first_byte) in sent_at.iter().filter(|s| s.0 == a) {
                let exec = jobs
                    .iter()
                    .find(|j| j["unix_account"] == name.as_str() && j["kind"] == "run")
                    .and_then(|j| started.get(j["key"].as_str()?));
                if let Some(exec) = exec {
                    let until = (exec - wall) * 1e3;
                    cold[a].until_exec_ms.push(until);
                    cold[a].after_exec_ms.push(first_byte - until);
                    report
                        .raw
                        .push(json!({"scenario": "cold start split", "app": app.label,
                        "viewer": name, "until_exec_ms": until,
                        "exec_to_first_byte_ms": first_byte - until}));
                }
            }
        }
        report.connectd_mem.push((
            format!("{} viewer processes running", 2 * viewers.len()),
            mem(cpid),
        ));
        // Memory of each viewer's process, all of them running.
        for (a, app) in apps.iter().enumerate() {
            let mut row = MemRow {
                app: app.label.into(),
                rss: Vec::new(),
                pss: Vec::new(),
                direct_rss: direct_rss[a].clone(),
            };
            let running: Vec<Value> = jobs(&server, app.guid, &admin)
                .into_iter()
                .filter(|j| j["running"] == true && j["kind"] == "run")
                .filter(|j| viewers.iter().any(|(v, _)| j["unix_account"] == v.as_str()))
                .collect();
            assert_eq!(
                running.len(),
                viewers.len(),
                "one process per viewer for {}: {running:?}",
                app.label
            );
            for job in &running {
                let pid = job["pid"].as_i64().expect("pid") as i32;
                let uid = job["uid"].as_u64().expect("uid") as u32;
                assert_eq!(proc_uid(pid as u64), Some(uid), "{job}");
                let m = mem(pid);
                row.rss.push(mib(m.rss));
                row.pss.push(mib(m.pss));
                report.raw.push(json!({"scenario": "memory", "app": app.label,
                    "account": job["unix_account"], "pid": pid, "rss_kib": m.rss, "pss_kib": m.pss}));
            }
            report.memory.push(row);
        }
        report.cold = cold;
    }

    // --- 2. Throughput ------------------------------------------------------
    if opts.wants("throughput") {
        eprintln!("content-bench: throughput…");
        let hello = get_tcp(server.address, &format!("/content/{shared}/"), None);
        assert_eq!(hello.status, 200, "{}\n{}", hello.body, server.log_text());
        let running: Vec<Value> = jobs(&server, &shared, &admin)
            .into_iter()
            .filter(|j| j["running"] == true && j["kind"] == "run")
            .collect();
        assert_eq!(running.len(), 1, "one shared process: {running:?}");
        let job = running[0]["key"].as_str().expect("key").to_owned();
        let app_pid = running[0]["pid"].as_i64().expect("pid") as i32;
        // The app says its pid inside its PID namespace; the jobs API the
        // host's: the same process if the host's innermost pid matches.
        let inner = std::fs::read_to_string(format!("/proc/{app_pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .and_then(|l| l.split_whitespace().last().map(str::to_owned))
            })
            .unwrap_or_default();
        assert!(
            hello.body.contains(&format!("pid={inner}\n")),
            "the jobs API names the process that answered: {} vs {app_pid} (pid {inner} inside)",
            hello.body
        );
        let socket = data.join("run").join(&job).join("app.sock");
        assert!(socket.exists(), "no socket at {}", socket.display());

        // (a) The same code, a second instance, on a TCP port, as RunAs.
        let connect_account = Account {
            name: "connect".into(),
            uid: 999,
            gid: 999,
            groups: vec![999, SHARED_GID],
        };
        let direct_port = free_port();
        let direct_dir = scratch.join("direct-tcp");
        private_dir(&direct_dir, 999, 999);
        let direct_log = scratch.join("direct-tcp.log");
        let mut direct = spawn_as(
            &node_recipe,
            &connect_account,
            &direct_port.to_string(),
            &direct_dir,
            &direct_log,
        );
        let direct_address = SocketAddr::from(([127, 0, 0, 1], direct_port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(direct_address).is_err() {
            direct.check_alive(&direct_log);
            assert!(
                Instant::now() < deadline,
                "the direct Node app did not listen"
            );
            std::thread::sleep(Duration::from_millis(10));
        }

        // (b) nginx to connectd's process, with connectd's worker count, and with one.
        let (workers, _) = connectd_workers();
        let mut nginxes = vec![start_nginx(
            &tools.nginx,
            &scratch.join(format!("nginx-{workers}")),
            workers,
            &socket,
            &shared,
            cpid,
        )];
        if workers != 1 {
            nginxes.push(start_nginx(
                &tools.nginx,
                &scratch.join("nginx-1"),
                1,
                &socket,
                &shared,
                cpid,
            ));
        }
        for n in &nginxes {
            let via = get_tcp(
                SocketAddr::from(([127, 0, 0, 1], n.port)),
                &format!("/content/{shared}/"),
                None,
            );
            assert!(
                via.status == 200 && via.body == hello.body,
                "nginx reaches connectd's process: {} {:?} vs {:?}\n{}",
                via.status,
                via.body,
                hello.body,
                fs::read_to_string(n.dir.join("error.log")).unwrap_or_default()
            );
        }
        let viewer_cookie = sign_in(&server, &viewers[0].0);

        let path = format!("/content/{shared}/");
        let mut targets = vec![Target {
            label: "direct: Node on a TCP port (no proxy)".into(),
            url: format!("http://{direct_address}{path}"),
            headers: vec![],
            proxy_pids: vec![],
        }];
        for n in &nginxes {
            targets.push(Target {
                label: format!("nginx → app socket, {} worker(s)", n.workers),
                url: format!("http://127.0.0.1:{}{path}", n.port),
                headers: vec![],
                proxy_pids: n.pids(),
            });
        }
        targets.push(Target {
            label: "connectd, anonymous viewer".into(),
            url: format!("http://{}{path}", server.address),
            headers: vec![],
            proxy_pids: vec![cpid],
        });
        targets.push(Target {
            label: "connectd, signed-in viewer (cookie, identity header)".into(),
            url: format!("http://{}{path}", server.address),
            headers: vec![format!("Cookie: {viewer_cookie}")],
            proxy_pids: vec![cpid],
        });
        let direct_pid = direct.pid();
        let app_of = |t: &Target| {
            if t.proxy_pids.is_empty() {
                direct_pid
            } else {
                app_pid
            }
        };
        if opts.hold > 0 {
            eprintln!("content-bench: holding for {} s: connectd pid {cpid}, app pid {app_pid}, socket {}", opts.hold, socket.display());
            for t in &targets {
                eprintln!(
                    "  {}: {} {:?} proxy pids {:?}",
                    t.label, t.url, t.headers, t.proxy_pids
                );
            }
            std::thread::sleep(Duration::from_secs(opts.hold));
        }
        // Warm-up: every path once, not recorded.
        let warm = if opts.smoke { 1 } else { 2 };
        for t in &targets {
            let _ = wrk_once(&tools.wrk, t, opts.conns[0], warm, app_of(t));
        }
        let mut rows: Vec<ThroughputRow> = Vec::new();
        for &c in &opts.conns {
            for t in &targets {
                rows.push(ThroughputRow {
                    label: t.label.clone(),
                    conns: c,
                    runs: Vec::new(),
                });
            }
        }
        // Interleaved: run r of every (connections, target) before run r+1.
        for r in 0..opts.runs {
            for &c in &opts.conns {
                for t in &targets {
                    let (run, _text) = wrk_once(&tools.wrk, t, c, opts.secs, app_of(t));
                    eprintln!(
                        "  run {} {:<52} {c:>3} conns {:>9.0} req/s  p50 {:>7.0} µs  p99 {:>7.0} µs  proxy {:>5.1} µs/req  app {:>5.1} µs/req  other CPU {:>4.1}%{}",
                        r + 1,
                        t.label,
                        run.rps,
                        run.p50_us,
                        run.p99_us,
                        run.proxy_cpu_us,
                        run.app_cpu_us,
                        run.other_cpu_pct,
                        if run.errors > 0 { format!("  {} errors", run.errors) } else { String::new() }
                    );
                    report
                        .raw
                        .push(json!({"scenario": "throughput", "target": t.label,
                        "connections": c, "run": r + 1, "seconds": opts.secs,
                        "requests_per_s": run.rps, "p50_us": run.p50_us, "p99_us": run.p99_us,
                        "requests": run.requests, "errors": run.errors,
                        "proxy_cpu_us_per_request": run.proxy_cpu_us,
                        "app_cpu_us_per_request": run.app_cpu_us,
                        "other_cpu_percent": run.other_cpu_pct}));
                    let row = rows
                        .iter_mut()
                        .find(|row| row.conns == c && row.label == t.label)
                        .expect("row");
                    row.runs.push(run);
                }
            }
        }
        let other: Vec<f64> = rows
            .iter()
            .flat_map(|r| &r.runs)
            .map(|r| r.other_cpu_pct)
            .collect();
        report.notes.push(format!(
            "Background during the wrk runs (machine busy time from /proc/stat minus wrk, the \
             proxy and the app): median {:.1} %, max {:.1} % of the {} vCPUs{}.",
            median(&other),
            percentile(&other, 100.0),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            if percentile(&other, 100.0) > 5.0 {
                "; runs with more than a few % were disturbed by other work, see the .jsonl"
            } else {
                ""
            }
        ));
        let errors: u64 = rows.iter().flat_map(|r| &r.runs).map(|r| r.errors).sum();
        if errors > 0 {
            report.notes.push(format!(
                "wrk counted {errors} errors (non-2xx answers or socket errors) over all runs"
            ));
        }
        // Still the one process, never "busy".
        let after: Vec<Value> = jobs(&server, &shared, &admin)
            .into_iter()
            .filter(|j| j["running"] == true && j["kind"] == "run")
            .collect();
        assert!(
            after.len() == 1 && after[0]["pid"].as_i64() == Some(app_pid as i64),
            "connectd kept serving from process {app_pid}: {after:?}"
        );
        report.throughput = rows;

        if opts.perf {
            let target = targets
                .iter()
                .find(|t| t.label.starts_with("connectd, anonymous"))
                .expect("connectd target");
            profile(
                &tools,
                &scratch,
                cpid,
                target,
                *opts.conns.last().unwrap_or(&64),
                opts.secs,
                app_pid,
            );
        }
        for n in &mut nginxes {
            n.master.stop();
        }
        direct.stop();
    }

    report.connectd_mem.push(("at the end".into(), mem(cpid)));

    let markdown = render(&report, &opts);
    print_table(&report);
    println!("\n{markdown}");
    if let Some(out) = &opts.out {
        if let Some(dir) = out.parent() {
            let _ = fs::create_dir_all(dir);
        }
        fs::write(out, &markdown).expect("write the Markdown section");
        let raw: String = report.raw.iter().map(|v| format!("{v}\n")).collect();
        fs::write(out.with_extension("jsonl"), raw).expect("write the raw results");
        eprintln!(
            "content-bench: wrote {} and {}",
            out.display(),
            out.with_extension("jsonl").display()
        );
    }
    assert!(server.stop(), "connectd stops cleanly");
}

/// `perf record` of connectd during one more wrk run; prints the top symbols.
fn profile(
    tools: &Tools,
    scratch: &Path,
    cpid: i32,
    target: &Target,
    conns: usize,
    secs: u64,
    app_pid: i32,
) {
    let Some(perf) = find_program("perf", &["/usr/bin/perf"]) else {
        eprintln!("content-bench: --perf: perf is not installed (apt-get install linux-perf)");
        return;
    };
    let data = scratch.join("perf.data");
    let mut rec = Command::new(&perf);
    rec.args(["record", "-F", "1999", "-g", "-o"])
        .arg(&data)
        .args([
            "-p",
            &cpid.to_string(),
            "--",
            "sleep",
            &(secs + 1).to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut rec = rec.spawn().expect("perf record");
    std::thread::sleep(Duration::from_millis(500));
    let (run, _) = wrk_once(&tools.wrk, target, conns, secs, app_pid);
    let _ = rec.wait();
    println!(
        "\nperf: connectd, {conns} connections: {:.0} req/s under perf",
        run.rps
    );
    for sort in ["dso", "symbol"] {
        let out = Command::new(&perf)
            .args([
                "report",
                "--stdio",
                "--no-children",
                "-g",
                "none",
                "--percent-limit",
                "0.7",
                "--sort",
                sort,
                "-i",
            ])
            .arg(&data)
            .output()
            .expect("perf report");
        let text = String::from_utf8_lossy(&out.stdout);
        println!("--- perf report --sort {sort} ---");
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            println!("{line}");
        }
    }
}

fn print_table(report: &Report) {
    println!("\n| scenario | what | p50 / median | p90 / p99 | note |");
    println!("|---|---|---:|---:|---|");
    for c in &report.cold {
        println!(
            "| cold start | {}: first byte via connectd | {} ms | {} ms | |",
            c.app,
            fmt_num(median(&c.via_connectd_ms)),
            fmt_num(percentile(&c.via_connectd_ms, 90.0))
        );
        println!(
            "| cold start | {}: app alone, spawn to first byte | {} ms | {} ms | |",
            c.app,
            fmt_num(median(&c.direct_ms)),
            fmt_num(percentile(&c.direct_ms, 90.0))
        );
        println!(
            "| cold start | {}: connectd overhead | {} ms | {} ms | paired per viewer |",
            c.app,
            fmt_num(median(&c.overhead_ms)),
            fmt_num(percentile(&c.overhead_ms, 90.0))
        );
        println!(
            "| cold start | {}: request to app exec'd (connectd log) | {} ms | {} ms | |",
            c.app,
            fmt_num(median(&c.until_exec_ms)),
            fmt_num(percentile(&c.until_exec_ms, 90.0))
        );
        println!(
            "| cold start | {}: app exec'd to first byte | {} ms | {} ms | |",
            c.app,
            fmt_num(median(&c.after_exec_ms)),
            fmt_num(percentile(&c.after_exec_ms, 90.0))
        );
    }
    for t in &report.throughput {
        println!(
            "| throughput | {}, {} conns | {} µs | {} µs | {} req/s |",
            t.label,
            t.conns,
            fmt_num(t.med(|r| r.p50_us)),
            fmt_num(t.med(|r| r.p99_us)),
            fmt_num(t.med(|r| r.rps))
        );
    }
    for m in &report.memory {
        println!(
            "| memory | {}: per viewer process | {} MiB RSS | {} MiB PSS | |",
            m.app,
            fmt_num(median(&m.rss)),
            fmt_num(median(&m.pss))
        );
    }
    for (when, m) in &report.connectd_mem {
        println!(
            "| memory | connectd, {when} | {} MiB RSS | {} MiB peak | |",
            fmt_num(mib(m.rss)),
            fmt_num(mib(m.hwm))
        );
    }
}

fn render(report: &Report, opts: &Opts) -> String {
    let mut md = String::new();
    let w = |md: &mut String, s: &str| {
        md.push_str(s);
        md.push('\n');
    };
    let (workers, workers_from) = connectd_workers();
    let cpus = cpus();
    let n = opts.viewers;
    w(
        &mut md,
        "## Content: cold start, proxied throughput, memory per viewer",
    );
    w(&mut md, "");
    if opts.smoke {
        w(
            &mut md,
            "**Smoke run (`--smoke`): debug build, tiny counts; these numbers mean nothing.**",
        );
        w(&mut md, "");
    }
    w(&mut md, "```sh");
    w(
        &mut md,
        "sudo cargo run --release -p connect-tests --bin content-bench   # everything, 3 runs",
    );
    w(
        &mut md,
        "sudo cargo run --release -p connect-tests --bin content-bench -- --only throughput --perf",
    );
    w(&mut md, "```");
    w(&mut md, "");
    w(
        &mut md,
        "`tests/src/bin/content-bench.rs`; `--smoke` is the short run of",
    );
    w(
        &mut md,
        "`tests/tests/content_bench_smoke.rs`. Raw per-run results:",
    );
    w(&mut md, "`bench/results/content-bench.jsonl`.");
    w(&mut md, "");
    w(&mut md, "### Machine and method");
    w(&mut md, "");
    for m in &report.machine {
        w(&mut md, &format!("- {m}."));
    }
    w(
        &mut md,
        &format!(
            "- connectd {} build (`CONNECT_E2E_RELEASE=1`) of {}, its Tokio runtime at {workers} \
         worker threads ({workers_from}), PAM sign-in, in a `pam_world` sandbox (private mount \
         namespace, local accounts `v01`…`v{n:02}` in /etc/passwd bind-mounted), log level \
         info. Everything, wrk included, shares the machine's {cpus} vCPUs.",
            if opts.smoke { "debug" } else { "release" },
            report.source,
        ),
    );
    w(
        &mut md,
        &format!(
            "- **Cold start**: each of {n} new viewers signs in (not timed), then sends its first \
         request to current-user content (`run_as_current_user`, one process per viewer); \
         timed from the TCP connect to the first byte of the answer, while connectd resolves \
         the account, forks the app into its sandbox under the viewer's uid, waits for its \
         socket and proxies. Against **the app alone**: the command line and environment of \
         a process connectd started (read from /proc; paths into the content's directory \
         pointed at a readable copy of it), spawned directly as the same uid/gid/groups with \
         no sandbox, timed from spawn until its Unix socket accepts and answers the same \
         request (socket polled every 250 µs). The two alternate which goes first; overhead \
         is connectd − alone, paired per viewer. Before the viewers, one launch per app for \
         admin1, not timed (it warms the page cache, and gives the command line). p90 is \
         nearest-rank (the 9th of 10)."
        ),
    );
    w(
        &mut md,
        "- Apps: the stdlib WSGI probe (`python-api`, connectd's `connect_wsgi.py` runner, \
         `GET /whoami`) and a dependency-free Node.js hello-world (`nodejs`, \
         `server.listen(process.env.PORT)`, constant 40-byte body, `GET /`).",
    );
    w(
        &mut md,
        &format!(
        "- **Throughput**: the Node hello-world as shared content (RunAs `connect`, one process: \
         `max_processes` 1, `max_conns_per_process` 200, `load_factor` 1, so never busy; \
         `access_type` all). `wrk -t1 -cN -d{}s --latency` on `/content/<guid>/`, \
         N = {}; every (N, path) pair once per round, {} round(s), medians shown. Paths: (a) a \
         second instance of the same code on a TCP port, no proxy; (b) nginx in connectd's \
         mount namespace (nsenter), `user root`, `worker_processes {workers}` (= connectd's \
         worker threads; also 1), `access_log off`, upstream `unix:<DataDir>/run/<job>/app.sock` \
         of **the process connectd started** (from the jobs API; checked by its pid in the \
         answer) with `keepalive 32` (connectd keeps 32 idle connections), \
         `proxy_http_version 1.1`, X-Forwarded-For/-Host/-Proto set, prefix stripped; (c) \
         connectd, anonymous, and with a viewer's session cookie (session lookup, \
         identity header). A 1-2 s warm-up per path first, not recorded.",
        opts.secs,
        opts.conns.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" and "),
        opts.runs
    ),
    );
    w(
        &mut md,
        "- CPU per request: utime+stime from `/proc/<pid>/stat` (all threads; nginx master \
         and workers) over the run ÷ requests; 10 ms clock ticks, so ±1 µs or so.",
    );
    w(
        &mut md,
        &format!(
        "- **Memory**: VmRSS from `/proc/<pid>/status` and Pss from `/proc/<pid>/smaps_rollup` of \
         each viewer's process (the pid the jobs API gives, checked in /proc to run as the \
         viewer), after its first request, with all {} viewer processes running (PSS shares \
         common pages among them); median of {n}. The app alone: its RSS after its first answer.",
        2 * n
    ),
    );
    w(&mut md, "");

    if !report.cold.is_empty() {
        w(&mut md, &format!("### Cold start ({n} new viewers, ms)"));
        w(&mut md, "");
        w(&mut md, "| app | first byte via connectd p50 | p90 | app alone p50 | p90 | overhead p50 | p90 |");
        w(&mut md, "|---|---:|---:|---:|---:|---:|---:|");
        for c in &report.cold {
            w(
                &mut md,
                &format!(
                    "| {} | **{}** | {} | {} | {} | **{}** | {} |",
                    c.app,
                    fmt_num(median(&c.via_connectd_ms)),
                    fmt_num(percentile(&c.via_connectd_ms, 90.0)),
                    fmt_num(median(&c.direct_ms)),
                    fmt_num(percentile(&c.direct_ms, 90.0)),
                    fmt_num(median(&c.overhead_ms)),
                    fmt_num(percentile(&c.overhead_ms, 90.0)),
                ),
            );
        }
        w(&mut md, "");
        w(
            &mut md,
            "Where connectd's part goes (its log line \"started a content process\" is \
                    written once the app is exec'd):",
        );
        w(&mut md, "");
        w(&mut md, "| app | request → app exec'd p50 | p90 | exec'd → first byte p50 | p90 | app alone, spawn → first byte p50 |");
        w(&mut md, "|---|---:|---:|---:|---:|---:|");
        for c in &report.cold {
            w(
                &mut md,
                &format!(
                    "| {} | {} | {} | {} | {} | {} |",
                    c.app,
                    fmt_num(median(&c.until_exec_ms)),
                    fmt_num(percentile(&c.until_exec_ms, 90.0)),
                    fmt_num(median(&c.after_exec_ms)),
                    fmt_num(percentile(&c.after_exec_ms, 90.0)),
                    fmt_num(median(&c.direct_ms)),
                ),
            );
        }
        w(&mut md, "");
    }

    if !report.throughput.is_empty() {
        w(
            &mut md,
            &format!(
                "### Proxied throughput (Node hello-world, wrk 1 thread, {} s, median of {})",
                opts.secs, opts.runs
            ),
        );
        w(&mut md, "");
        w(&mut md, "| path | conns | req/s | p50 ms | p99 ms | proxy CPU µs/req | app CPU µs/req | vs nginx |");
        w(&mut md, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let nginx_label = format!("nginx → app socket, {workers} worker(s)");
        for t in &report.throughput {
            let nginx = report
                .throughput
                .iter()
                .find(|r| r.conns == t.conns && r.label == nginx_label)
                .map(|r| r.med(|x| x.rps))
                .unwrap_or(f64::NAN);
            let rps = t.med(|r| r.rps);
            let bold = t.label.starts_with("connectd, anonymous");
            let ratio = rps / nginx;
            w(
                &mut md,
                &format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    t.label,
                    t.conns,
                    if bold {
                        format!("**{}**", fmt_num(rps))
                    } else {
                        fmt_num(rps)
                    },
                    fmt_num(t.med(|r| r.p50_us) / 1e3),
                    fmt_num(t.med(|r| r.p99_us) / 1e3),
                    if t.label.starts_with("direct") {
                        String::new()
                    } else {
                        fmt_num(t.med(|r| r.proxy_cpu_us))
                    },
                    fmt_num(t.med(|r| r.app_cpu_us)),
                    if t.label.starts_with("direct") {
                        String::new()
                    } else if bold {
                        format!("**{ratio:.2} ×**")
                    } else {
                        format!("{ratio:.2} ×")
                    },
                ),
            );
        }
        w(&mut md, "");
        w(&mut md, "| target | measured (this run) | |");
        w(&mut md, "|---|---|---|");
        let mut parts = Vec::new();
        let mut met = true;
        for &c in &opts.conns {
            let get = |label: &str| {
                report
                    .throughput
                    .iter()
                    .find(|r| r.conns == c && r.label == label)
                    .map(|r| r.med(|x| x.rps))
                    .unwrap_or(f64::NAN)
            };
            let ratio = get("connectd, anonymous viewer") / get(&nginx_label);
            met &= ratio >= 0.8;
            parts.push(format!("{c} conns: {ratio:.2} ×"));
        }
        w(
            &mut md,
            &format!(
            "| connectd ≥ 0.8 × nginx (req/s, same process, {workers} workers each) | {} | {} |",
            parts.join("; "),
            if met { "met" } else { "**missed**" }
        ),
        );
        w(&mut md, "");
    }

    if !report.memory.is_empty() || !report.connectd_mem.is_empty() {
        w(
            &mut md,
            &format!("### Memory (median of {n} viewer processes, MiB)"),
        );
        w(&mut md, "");
        if !report.memory.is_empty() {
            w(
                &mut md,
                "| app | RSS per viewer process | PSS | p90 RSS | the app alone, RSS |",
            );
            w(&mut md, "|---|---:|---:|---:|---:|");
            for m in &report.memory {
                w(
                    &mut md,
                    &format!(
                        "| {} | **{}** | {} | {} | {} |",
                        m.app,
                        fmt_num(median(&m.rss)),
                        fmt_num(median(&m.pss)),
                        fmt_num(percentile(&m.rss, 90.0)),
                        fmt_num(median(&m.direct_rss)),
                    ),
                );
            }
            w(&mut md, "");
        }
        w(&mut md, "| connectd | RSS | peak RSS so far |");
        w(&mut md, "|---|---:|---:|");
        for (when, m) in &report.connectd_mem {
            w(
                &mut md,
                &format!(
                    "| {when} | {} | {} |",
                    fmt_num(mib(m.rss)),
                    fmt_num(mib(m.hwm))
                ),
            );
        }
        w(&mut md, "");
    }
    for note in &report.notes {
        w(&mut md, &format!("- {note}"));
    }
    md
}
