//! The benchmark harness: `sudo cargo run --release -p connect-tests --bin connect-bench`.
//!
//! Everything runs on this machine, in private mount namespaces (the host is
//! never changed), through real glibc:
//! - lookups through `getpwnam_r` & co. by `bench/c/nss_bench.c`, for the
//!   fast path, the daemon path, unknown names, initgroups, enumeration,
//!   first lookup in a fresh process, a stopped and a hung daemon, with 1, 2
//!   and 4 threads and processes;
//! - directory (RFC 2307) accounts from a real slapd, answering and hung;
//! - the peers in the same run: `files` (user at line 1 and line 10,000 of a
//!   10,000-entry passwd), nscd and SSSD's memory cache (bench/peers/);
//! - the daemon: gRPC lookups/s with 1-64 clients, provisioning rate, and
//!   resident memory with 100,000 accounts.
//!
//! Each scenario runs `--runs` times (default 3); the table shows medians.
//! `--smoke` is the short run the test suite uses so the harness cannot rot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connect_tests::*;
use serde_json::Value;

mod directory;

struct Opts {
    smoke: bool,
    runs: usize,
    peers: bool,
    users: usize,
    rss_accounts: usize,
    iterations: usize,
    out: Option<PathBuf>,
    /// Run only these parts (nss, grpc, failure, directory, peers, memory);
    /// empty = all.
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
            peers: true,
            users: 10_000,
            rss_accounts: 100_000,
            iterations: 100_000,
            out: None,
            only: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--smoke" => {
                    o.smoke = true;
                    o.runs = 1;
                    o.users = 200;
                    o.rss_accounts = 500;
                    o.iterations = 500;
                }
                "--runs" => o.runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(3).max(1),
                "--no-peers" => o.peers = false,
                "--out" => o.out = args.next().map(PathBuf::from),
                "--only" => o.only.extend(
                    args.next()
                        .unwrap_or_default()
                        .split(',')
                        .map(str::to_owned),
                ),
                "-h" | "--help" => {
                    println!(
                        "connect-bench [--smoke] [--runs N] [--no-peers] [--out results.jsonl]"
                    );
                    std::process::exit(0);
                }
                other => {
                    eprintln!("connect-bench: unknown argument {other:?}");
                    std::process::exit(2);
                }
            }
        }
        o
    }
}

/// One measured row: medians over runs.
#[derive(Default, Clone)]
struct Row {
    group: String,
    label: String,
    p50: f64,
    p99: f64,
    p999: f64,
    ops: f64,
    note: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Bench {
    opts: Opts,
    nss_bench: PathBuf,
    rows: Vec<Row>,
    raw: Vec<Value>,
}

/// Compiles `bench/c/NAME.c` into target/e2e/NAME.
fn compile(name: &str) -> PathBuf {
    compile_c(
        &workspace_root().join("bench/c").join(format!("{name}.c")),
        name,
        &["-O2"],
        &[],
    )
}

impl Bench {
    /// Runs nss_bench `runs` times in `make_cmd`'s namespace; records the medians.
    fn nss(
        &mut self,
        group: &str,
        label: &str,
        make_cmd: impl FnMut(&[String]) -> Command,
        args: &[&str],
    ) {
        if let Err(e) = self.try_nss(group, label, make_cmd, args) {
            panic!("{label}: {e}");
        }
    }

    /// [`Bench::nss`] that returns what went wrong instead of panicking:
    /// the first line says why (a peer script's own one-line reason when it
    /// gave up), the rest is the evidence (output of the run).
    fn try_nss(
        &mut self,
        group: &str,
        label: &str,
        mut make_cmd: impl FnMut(&[String]) -> Command,
        args: &[&str],
    ) -> Result<(), String> {
        let mut full: Vec<String> = vec!["--label".into(), label.into()];
        full.extend(args.iter().map(|s| s.to_string()));
        if !args.contains(&"--iterations") {
            full.extend(["--iterations".into(), self.opts.iterations.to_string()]);
        }
        let mut samples = Vec::new();
        for _ in 0..self.opts.runs {
            let mut cmd = make_cmd(&full);
            let out = cmd
                .output()
                .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let Some(json) = text
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l).ok())
            else {
                return Err(format!(
                    "{} ({}; nss_bench printed no result)\n{text}\n{stderr}",
                    last_line(&stderr).unwrap_or("no output on stderr"),
                    out.status
                ));
            };
            if json["failures"].as_u64() != Some(0) {
                return Err(format!("lookups failed: {json}\n{stderr}"));
            }
            samples.push(json);
        }
        let get = |k: &str| median(samples.iter().filter_map(|j| j[k].as_f64()).collect());
        let entries = samples
            .last()
            .and_then(|j| j["entries"].as_u64())
            .unwrap_or(0);
        let row = Row {
            group: group.into(),
            label: label.into(),
            p50: get("p50_us"),
            p99: get("p99_us"),
            p999: get("p999_us"),
            ops: get("ops_per_s"),
            note: if entries > 0 {
                format!("{entries} entries")
            } else {
                String::new()
            },
        };
        println!(
            "{:<12} {:<44} p50 {:>9.3} µs  p99 {:>9.3} µs  p99.9 {:>9.3} µs  {:>10.0}/s {}",
            row.group, row.label, row.p50, row.p99, row.p999, row.ops, row.note
        );
        self.rows.push(row);
        self.raw.extend(samples);
        Ok(())
    }

    fn row(&mut self, group: &str, label: &str, p50: f64, p99: f64, ops: f64, note: String) {
        println!(
            "{group:<12} {label:<44} p50 {p50:>9.3} µs  p99 {p99:>9.3} µs  {ops:>10.0}/s {note}"
        );
        self.rows.push(Row {
            group: group.into(),
            label: label.into(),
            p50,
            p99,
            p999: f64::NAN,
            ops,
            note,
        });
    }
}

fn in_sandbox<'a>(
    sandbox: &'a Sandbox,
    program: &'a Path,
    env: &'a [(&'a str, &'a str)],
) -> impl FnMut(&[String]) -> Command + 'a {
    move |args| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = sandbox.command(program, &args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }
}

/// Provisions `count` identities with `clients` concurrent callers; returns accounts/s.
fn provision_many(sandbox: &Sandbox, prefix: &str, count: usize, clients: usize) -> f64 {
    block_on(async {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let mut client = sandbox.provisioning().await;
            let next = next.clone();
            let prefix = prefix.to_owned();
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i > count {
                        return;
                    }
                    let name = format!("{prefix}{i:05}");
                    let team = format!("team-{:02}", i % 20);
                    client
                        .ensure_user(ensure("bench", &name, &name, &[&team]))
                        .await
                        .expect("provision");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        count as f64 / started.elapsed().as_secs_f64()
    })
}

/// gRPC GetUserByName from `clients` concurrent connections for `duration`.
fn grpc_lookups(
    sandbox: &Sandbox,
    prefix: &str,
    users: usize,
    clients: usize,
    duration: Duration,
) -> (f64, f64, f64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let socket = sandbox.run_dir.join("lookup.sock");
        let mut tasks = Vec::new();
        let started = Instant::now();
        for c in 0..clients {
            let socket = socket.clone();
            let prefix = prefix.to_owned();
            tasks.push(tokio::spawn(async move {
                let channel = nameserviced::client::connect(&socket, Duration::from_secs(5))
                    .await
                    .expect("connect");
                let mut client = v1::lookup_client::LookupClient::new(channel);
                let mut latencies = Vec::new();
                let mut i = c * 7919;
                while started.elapsed() < duration {
                    let name = format!("{prefix}{:05}", 1 + i % users);
                    i += 1;
                    let t = Instant::now();
                    let reply = client
                        .get_user_by_name(v1::UserByNameRequest { name })
                        .await
                        .expect("lookup");
                    assert!(reply.into_inner().user.is_some());
                    latencies.push(t.elapsed().as_secs_f64() * 1e6);
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        let ops = all.len() as f64 / started.elapsed().as_secs_f64();
        all.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        (pct(0.5), pct(0.99), ops)
    })
}

fn rss_kib(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn wait_for_snapshot(sandbox: &Sandbox, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(bytes) = std::fs::read(sandbox.run_dir.join("cache")) {
            let mut copy = connect_memcache::AlignedCopy::new(&bytes);
            if copy
                .snapshot()
                .is_ok_and(|s| matches!(s.user_by_name(name), connect_memcache::Answer::Hit(_)))
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no snapshot holding {name} within 60 s");
}

const MODULE_ALONE: &str = "passwd: connect\ngroup: connect\ninitgroups: connect\n";
const PRODUCTION: &str = "passwd: files connect\ngroup: files connect\ninitgroups: files connect\n";

fn main() {
    let opts = Opts::parse();
    if need_root() {
        std::process::exit(1);
    }
    if !opts.smoke {
        // SAFETY: single-threaded here.
        unsafe { std::env::set_var("CONNECT_E2E_RELEASE", "1") };
    }
    let mut bench = Bench {
        nss_bench: compile("nss_bench"),
        opts,
        rows: Vec::new(),
        raw: Vec::new(),
    };
    let nb = bench.nss_bench.clone();
    let users = bench.opts.users;
    let last_key = format!("{}", users.min(1000));

    // --- The daemon and its accounts -----------------------------------
    let mut sandbox = Sandbox::new("[Nameservice]\nCacheSize = 200000\n");
    let daemon = sandbox.start_daemon();
    let rate = provision_many(&sandbox, "user", users, 16);
    bench.row(
        "daemon",
        &format!("provision {users} new identities (16 clients)"),
        f64::NAN,
        f64::NAN,
        rate,
        "accounts/s".into(),
    );
    let groups: Vec<String> = (0..50).map(|g| format!("many-{g:02}")).collect();
    let group_refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    block_on(async {
        sandbox
            .provisioning()
            .await
            .ensure_user(ensure("bench", "many", "many", &group_refs))
            .await
            .expect("many")
    });
    wait_for_snapshot(&sandbox, "many");
    let shared_gid = GID_BASE.to_string();

    // --- Lookups through glibc ------------------------------------------
    if bench.opts.wants("nss") {
        sandbox.set_nsswitch(MODULE_ALONE);
        let hit = [
            "--op",
            "getpwnam",
            "--keys",
            "user%05d",
            "--start",
            "1",
            "--count",
            last_key.as_str(),
        ];
        for t in ["1", "2", "4"] {
            let args: Vec<&str> = hit.iter().copied().chain(["--threads", t]).collect();
            bench.nss(
                "fast path",
                &format!("getpwnam hit, {t} thread(s)"),
                in_sandbox(&sandbox, &nb, &[]),
                &args,
            );
        }
        for p in ["2", "4"] {
            let args: Vec<&str> = hit.iter().copied().chain(["--processes", p]).collect();
            bench.nss(
                "fast path",
                &format!("getpwnam hit, {p} processes"),
                in_sandbox(&sandbox, &nb, &[]),
                &args,
            );
        }
        let uid_start = UID_BASE.to_string();
        bench.nss(
            "fast path",
            "getpwuid hit",
            in_sandbox(&sandbox, &nb, &[]),
            &[
                "--op", "getpwuid", "--start", &uid_start, "--count", &last_key,
            ],
        );
        bench.nss(
            "fast path",
            "getgrnam hit (group of ~500 members)",
            in_sandbox(&sandbox, &nb, &[]),
            &["--op", "getgrnam", "--keys", "team-%02d", "--count", "20"],
        );
        bench.nss(
            "fast path",
            "getgrouplist, user with 50 groups",
            in_sandbox(&sandbox, &nb, &[]),
            &[
                "--op",
                "getgrouplist",
                "--keys",
                "many",
                "--gid",
                &shared_gid,
            ],
        );

        let daemon_env: &[(&str, &str)] = &[("CONNECT_NSS_CACHE", "off")];
        let miss_iters = (bench.opts.iterations / 5).max(200).to_string();
        for t in ["1", "2", "4"] {
            let args: Vec<&str> = hit
                .iter()
                .copied()
                .chain(["--threads", t, "--iterations", &miss_iters])
                .collect();
            bench.nss(
                "daemon path",
                &format!("getpwnam via gRPC, {t} thread(s)"),
                in_sandbox(&sandbox, &nb, daemon_env),
                &args,
            );
        }
        for p in ["2", "4"] {
            let args: Vec<&str> = hit
                .iter()
                .copied()
                .chain(["--processes", p, "--iterations", &miss_iters])
                .collect();
            bench.nss(
                "daemon path",
                &format!("getpwnam via gRPC, {p} processes"),
                in_sandbox(&sandbox, &nb, daemon_env),
                &args,
            );
        }
        bench.nss(
            "daemon path",
            "getgrouplist via gRPC, 50 groups",
            in_sandbox(&sandbox, &nb, daemon_env),
            &[
                "--op",
                "getgrouplist",
                "--keys",
                "many",
                "--gid",
                &shared_gid,
                "--iterations",
                &miss_iters,
            ],
        );
        bench.nss(
            "daemon path",
            "unknown name (never cached in the file)",
            in_sandbox(&sandbox, &nb, &[]),
            &[
                "--op",
                "getpwnam",
                "--keys",
                "nosuch%05d",
                "--count",
                "1000",
                "--expect",
                "notfound",
                "--iterations",
                &miss_iters,
            ],
        );
        let enum_iters = if bench.opts.smoke { "3" } else { "20" };
        bench.nss(
            "fast path",
            &format!("enumerate all {} users (getpwent)", users + 1),
            in_sandbox(&sandbox, &nb, &[]),
            &["--op", "enumerate", "--iterations", enum_iters],
        );
        bench.nss(
            "daemon path",
            &format!("enumerate all {} users (getpwent)", users + 1),
            in_sandbox(&sandbox, &nb, daemon_env),
            &["--op", "enumerate", "--iterations", enum_iters],
        );
        let first_iters = if bench.opts.smoke { "5" } else { "200" };
        bench.nss(
            "fast path",
            "first lookup in a fresh process",
            in_sandbox(&sandbox, &nb, &[]),
            &[
                "--op",
                "first",
                "--keys",
                "user00001",
                "--iterations",
                first_iters,
            ],
        );

        sandbox.set_nsswitch(PRODUCTION);
        bench.nss(
            "production",
            "getpwnam hit behind files (files connect)",
            in_sandbox(&sandbox, &nb, &[]),
            &hit,
        );
    }

    // --- The floor under any round trip ----------------------------------
    if bench.opts.wants("grpc") {
        let pingpong = compile("pingpong");
        let rounds = (bench.opts.iterations / 5).max(200).to_string();
        bench.nss(
            "floor",
            "Unix socket ping-pong, 2 processes, no protocol",
            |_: &[String]| {
                let mut c = Command::new(&pingpong);
                c.arg(&rounds);
                c
            },
            &[],
        );
    }

    // --- gRPC throughput --------------------------------------------------
    let secs = if bench.opts.smoke { 0.3 } else { 3.0 };
    let grpc_clients: &[usize] = if bench.opts.wants("grpc") {
        &[1, 4, 16, 64]
    } else {
        &[]
    };
    for &clients in grpc_clients {
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        let mut opss = Vec::new();
        for _ in 0..bench.opts.runs {
            let (p50, p99, ops) = grpc_lookups(
                &sandbox,
                "user",
                users,
                clients,
                Duration::from_secs_f64(secs),
            );
            p50s.push(p50);
            p99s.push(p99);
            opss.push(ops);
        }
        bench.row(
            "daemon",
            &format!("gRPC GetUserByName, {clients} client(s)"),
            median(p50s),
            median(p99s),
            median(opss),
            "lookups/s".into(),
        );
    }

    // --- Daemon hung, then stopped -----------------------------------------
    if bench.opts.wants("failure") {
        let miss_iters = (bench.opts.iterations / 5).max(200).to_string();
        let hit = [
            "--op",
            "getpwnam",
            "--keys",
            "user%05d",
            "--start",
            "1",
            "--count",
            last_key.as_str(),
        ];
        sandbox.set_nsswitch(MODULE_ALONE);
        daemon.signal(libc::SIGSTOP);
        bench.nss(
            "hung daemon",
            "getpwnam hit (served from the file)",
            in_sandbox(&sandbox, &nb, &[]),
            &hit,
        );
        let hung_iters = if bench.opts.smoke { "50" } else { "2000" };
        bench.nss(
            "hung daemon",
            "unknown name: 1 timeout, then fail fast",
            in_sandbox(&sandbox, &nb, &[]),
            &[
                "--op",
                "getpwnam",
                "--keys",
                "ghost%d",
                "--count",
                "100",
                "--expect",
                "notfound",
                "--warmup",
                "1",
                "--iterations",
                hung_iters,
            ],
        );
        daemon.signal(libc::SIGCONT);
        assert!(daemon.stop(), "daemon stops cleanly");
        bench.nss(
            "stopped daemon",
            "getpwnam of a nameservice user",
            in_sandbox(&sandbox, &nb, &[]),
            &[
                "--op",
                "getpwnam",
                "--keys",
                "user%05d",
                "--start",
                "1",
                "--count",
                "100",
                "--expect",
                "notfound",
                "--iterations",
                &miss_iters,
            ],
        );
    } else {
        drop(daemon);
    }

    // --- Directory accounts (a real slapd, answering and hung) ----------
    if bench.opts.wants("directory") {
        directory::directory(&mut bench);
    }

    // --- Peers ----------------------------------------------------------
    if bench.opts.wants("peers") {
        peers(&mut bench);
    }

    // --- Memory with many accounts --------------------------------------
    if bench.opts.wants("memory") {
        let n = bench.opts.rss_accounts;
        let big = Sandbox::new("");
        let daemon = big.start_daemon();
        let started = Instant::now();
        let rate = provision_many(&big, "u", n, 16);
        wait_for_snapshot(&big, &format!("u{n:05}"));
        // Warm the lookup cache the way a busy machine would.
        let _ = grpc_lookups(&big, "u", n.min(10_000), 4, Duration::from_secs_f64(secs));
        let (rss, hwm) = rss_kib(daemon.pid());
        bench.row(
            "daemon",
            &format!("provision {n} identities (16 clients)"),
            f64::NAN,
            f64::NAN,
            rate,
            format!("accounts/s, {:.0} s", started.elapsed().as_secs_f64()),
        );
        bench.row(
            "daemon",
            &format!("resident memory with {n} accounts"),
            f64::NAN,
            f64::NAN,
            f64::NAN,
            format!(
                "RSS {:.1} MiB, peak {:.1} MiB",
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0
            ),
        );
        let cache_bytes = std::fs::metadata(big.run_dir.join("cache"))
            .map(|m| m.len())
            .unwrap_or(0);
        large_group(&mut bench, &big, daemon, n);
        bench.row(
            "daemon",
            &format!("cache file with {n} accounts"),
            f64::NAN,
            f64::NAN,
            f64::NAN,
            format!("{:.1} MiB", cache_bytes as f64 / 1048576.0),
        );
    }

    print_table(&bench.rows);
    if let Some(out) = &bench.opts.out {
        let text: String = bench.raw.iter().map(|v| format!("{v}\n")).collect();
        std::fs::write(out, text).expect("write results");
    }
}

/// `getgrnam` of the shared group that every one of `n` accounts is in,
/// listing its members and (after a restart with `SharedGroupMembers =
/// false`) not, on both paths.
fn large_group(bench: &mut Bench, big: &Sandbox, daemon: Daemon, n: usize) {
    let nb = bench.nss_bench.clone();
    let iterations = if bench.opts.smoke { "5" } else { "50" };
    let args = [
        "--op",
        "getgrnam",
        "--keys",
        SHARED_GROUP,
        "--iterations",
        iterations,
    ];
    let daemon_env: &[(&str, &str)] = &[("CONNECT_NSS_CACHE", "off")];
    for (path, env) in [("fast path", &[][..]), ("daemon path", daemon_env)] {
        bench.nss(
            path,
            &format!("getgrnam shared group, {n} members"),
            in_sandbox(big, &nb, env),
            &args,
        );
    }
    assert!(daemon.stop(), "daemon stops cleanly");
    let mut config = std::fs::read_to_string(&big.config).expect("read config");
    config.push_str("\n[Nameservice]\nSharedGroupMembers = false\n");
    std::fs::write(&big.config, config).expect("write config");
    let daemon = big.start_daemon();
    wait_for_snapshot(big, &format!("u{n:05}"));
    for (path, env) in [("fast path", &[][..]), ("daemon path", daemon_env)] {
        bench.nss(
            path,
            &format!("getgrnam shared group, {n} accounts, no member list"),
            in_sandbox(big, &nb, env),
            &args,
        );
    }
    drop(daemon);
}

/// `files`, nscd and SSSD in the same run, on a 10,000-entry passwd.
fn peers(bench: &mut Bench) {
    let nb = bench.nss_bench.clone();
    let entries = if bench.opts.smoke { 200 } else { 10_000 };
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/bash\n");
    let mut group = String::from("root:x:0:\n");
    for i in 1..entries {
        passwd.push_str(&format!(
            "user{i:05}:x:{}:20000:User {i}:/home/user{i:05}:/bin/bash\n",
            20000 + i
        ));
    }
    group.push_str("bench:x:20000:\n");
    let last = format!("user{:05}", entries - 1);
    let mut files = Sandbox::new("");
    files.bind_file("/etc/passwd", &passwd);
    files.bind_file("/etc/group", &group);
    files.set_nsswitch("passwd: files\ngroup: files\ninitgroups: files\n");
    bench.nss(
        "peer: files",
        "getpwnam, user at line 1 (root)",
        in_sandbox(&files, &nb, &[]),
        &["--op", "getpwnam", "--keys", "root"],
    );
    bench.nss(
        "peer: files",
        &format!("getpwnam, user at line {entries}"),
        in_sandbox(&files, &nb, &[]),
        &[
            "--op",
            "getpwnam",
            "--keys",
            &last,
            "--iterations",
            &(bench.opts.iterations / 10).max(100).to_string(),
        ],
    );
    if !bench.opts.peers {
        return;
    }
    const NSCD: (&str, &str) = ("peer: nscd", "getpwnam hit (shared memory)");
    const SSSD: (&str, &str) = ("peer: SSSD", "getpwnam hit (memory cache)");
    let root = workspace_root();
    if let Err(why) = install_peers(&root) {
        for (group, label) in [NSCD, SSSD] {
            not_measured(bench, group, label, &why);
        }
        return;
    }
    // Every key is warmed first (nss_bench's warm-up of 1,000 >= --count).
    let count = 1000.min(entries - 1).to_string();
    let hit = [
        "--op", "getpwnam", "--keys", "user%05d", "--start", "1", "--count", &count,
    ];
    let nscd = root.join("bench/peers/with-nscd.sh");
    if let Err(e) = bench.try_nss(NSCD.0, NSCD.1, wrapped(&files, &nscd, &nb), &hit) {
        eprintln!("{}: {e}", NSCD.0);
        not_measured(bench, NSCD.0, NSCD.1, e.lines().next().unwrap_or_default());
    }
    let mut sss = Sandbox::new("");
    sss.bind_file("/etc/passwd", &passwd);
    sss.bind_file("/etc/group", &group);
    // sssd-files(5): sss before files; files still answers root, which SSSD never does.
    sss.set_nsswitch("passwd: sss files\ngroup: sss files\ninitgroups: sss files\n");
    let sssd = root.join("bench/peers/with-sssd.sh");
    if let Err(e) = bench.try_nss(SSSD.0, SSSD.1, wrapped(&sss, &sssd, &nb), &hit) {
        eprintln!("{}: {e}", SSSD.0);
        not_measured(bench, SSSD.0, SSSD.1, e.lines().next().unwrap_or_default());
    }
}

/// bench/peers/install.sh (a no-op once the packages are there); on failure
/// the one line that says why (install.sh ends every failure with one).
fn install_peers(root: &Path) -> Result<(), String> {
    let script = root.join("bench/peers/install.sh");
    let out = Command::new(&script)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stdout}{stderr}");
    if out.status.success() {
        return Ok(());
    }
    Err(last_line(&stderr)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("bench/peers/install.sh failed ({})", out.status)))
}

/// A peer row that could not be measured: no figures, and why in the note.
fn not_measured(bench: &mut Bench, group: &str, label: &str, why: &str) {
    eprintln!("connect-bench: {group} not measured: {why}");
    bench.row(
        group,
        label,
        f64::NAN,
        f64::NAN,
        f64::NAN,
        format!("NOT MEASURED: {}", why.replace('|', "/")),
    );
}

/// The last non-empty line of a command's output.
fn last_line(text: &str) -> Option<&str> {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// nss_bench run under a peer's set-up script (`with-nscd.sh nss_bench ARGS…`).
fn wrapped<'a>(
    sandbox: &'a Sandbox,
    script: &'a Path,
    nss_bench: &'a Path,
) -> impl FnMut(&[String]) -> Command + 'a {
    move |args| {
        let mut a: Vec<&str> = vec![nss_bench.to_str().unwrap_or_default()];
        a.extend(args.iter().map(String::as_str));
        sandbox.command(script, &a)
    }
}

fn print_table(rows: &[Row]) {
    let fmt = |v: f64| {
        if v.is_nan() {
            "".to_owned()
        } else if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    println!("\n| group | scenario | p50 µs | p99 µs | p99.9 µs | per s | note |");
    println!("|---|---|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.group,
            r.label,
            fmt(r.p50),
            fmt(r.p99),
            fmt(r.p999),
            fmt(r.ops),
            r.note
        );
    }
}
