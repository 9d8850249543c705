//! Harness for the end-to-end tests: real binaries, real glibc, and a private
//! mount namespace per command so the host is never changed.
//!
//! Every command that resolves names runs as
//! `unshare --mount --propagation private -- sh -c '<mounts>; exec CMD'`:
//! - a tmpfs over /run (hides the host's nscd and daemons), with the
//!   sandbox's socket directory bind-mounted at /run/connect-nameservice, so
//!   the module uses its real default socket path;
//! - the sandbox's nsswitch.conf over /etc/nsswitch.conf
//!   (`passwd: files connect`, …);
//! - optional extra binds (a test's own /etc/passwd, /etc/subuid, …);
//! - `LD_LIBRARY_PATH` at a directory holding the built module as
//!   `libnss_connect.so.2`, the same file the installer installs.
//!
//! The mounts die with the namespace, so a test that crashes leaves nothing
//! behind but its temporary directory.
//!
//! These tests need root (for `unshare -m`); CI runs them as root.

pub mod browser;
pub mod connectd;
pub mod content;
pub mod oidc;
pub mod saml;
pub mod slapd;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use connect_proto::v1;
use connect_proto::v1::provisioning_client::ProvisioningClient;
use tonic::transport::Channel;

/// The built artifacts every test uses.
pub struct Artifacts {
    /// libnss_connect.so as built for installation (alone, with its own features).
    pub module: PathBuf,
    pub nameserviced: PathBuf,
    pub nameservicectl: PathBuf,
    pub connectd: PathBuf,
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run_checked(cmd: &mut Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(status.success(), "{what} failed: {status}");
}

/// Builds (once per test binary) what the tests run. The NSS module is built
/// by `packaging/build-nss-module.sh`, the script the installer uses, so the
/// tests exercise the very artifact that gets installed. Separate target
/// directories keep these builds off the lock held by the outer `cargo test`.
pub fn artifacts() -> &'static Artifacts {
    static ARTIFACTS: OnceLock<Artifacts> = OnceLock::new();
    ARTIFACTS.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let module_dir = root.join("target/nss");
        run_checked(
            Command::new(root.join("packaging/build-nss-module.sh"))
                .env("CARGO", &cargo)
                .env("NSS_TARGET_DIR", &module_dir),
            "packaging/build-nss-module.sh",
        );
        let e2e = root.join("target/e2e");
        // Benchmarks set CONNECT_E2E_RELEASE=1 to measure optimised daemons.
        let release = std::env::var_os("CONNECT_E2E_RELEASE").is_some();
        let mut build = Command::new(&cargo);
        build
            .current_dir(&root)
            .args([
                "build",
                "--quiet",
                "-p",
                "nameserviced",
                "-p",
                "connectd",
                "--bins",
                "--target-dir",
            ])
            .arg(&e2e);
        if release {
            build.arg("--release");
        }
        run_checked(&mut build, "cargo build -p nameserviced -p connectd");
        let profile = if release { "release" } else { "debug" };
        Artifacts {
            module: module_dir.join("release/libnss_connect.so"),
            nameserviced: e2e.join(profile).join("nameserviced"),
            nameservicectl: e2e.join(profile).join("nameservicectl"),
            connectd: e2e.join(profile).join("connectd"),
        }
    })
}

/// tests/c/nss_harness.c, compiled once per test binary.
pub fn harness_binary() -> &'static Path {
    static HARNESS: OnceLock<PathBuf> = OnceLock::new();
    HARNESS.get_or_init(|| {
        compile_c(
            &workspace_root().join("tests/c/nss_harness.c"),
            "nss_harness",
            &["-O1"],
            &["-ldl"],
        )
    })
}

/// Compiles one C file into `target/e2e/NAME` and returns its path.
///
/// Several copies of the suite (or a benchmark beside it) may compile the
/// same program while another copy runs it: gcc writes its output in
/// place, so a process exec'ing the file mid-write gets EACCES or ETXTBSY.
/// Each compile therefore writes a file of its own and renames it into
/// place, which is atomic: a runner sees the old program or the new one.
/// `flags` go before the source, `libs` (`-l...`) after it, where the
/// linker needs them.
pub fn compile_c(source: &Path, name: &str, flags: &[&str], libs: &[&str]) -> PathBuf {
    let dir = workspace_root().join("target/e2e");
    std::fs::create_dir_all(&dir).expect("mkdir target/e2e");
    let out = dir.join(name);
    let partial = dir.join(format!(".{name}.{}.partial", std::process::id()));
    run_checked(
        Command::new("gcc")
            .args(["-Wall", "-Wextra", "-Werror", "-pthread"])
            .args(flags)
            .arg("-o")
            .arg(&partial)
            .arg(source)
            .args(libs),
        &format!("gcc {}", source.display()),
    );
    std::fs::rename(&partial, &out).expect("move the compiled program into place");
    out
}

/// Accounts and groups that installing the product adds to a host
/// (`packaging/install.sh` creates the service account and its group).
/// Tests never see them, so a host where `scripts/up` ran tests the same
/// as a fresh one.
const INSTALLED_NAMES: &[&str] = &["connect"];

/// A host account file (`/etc/passwd`, `/etc/group`, `/etc/shadow`)
/// without the product's own entries.
fn host_file_without_product(path: &str) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|line| {
            let name = line.split(':').next().unwrap_or_default();
            !INSTALLED_NAMES.contains(&name)
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The host's /etc/passwd as a fresh host would have it: what every
/// sandbox sees, and what a test that adds accounts starts from.
pub fn host_passwd() -> String {
    host_file_without_product("/etc/passwd")
}

/// The host's /etc/group as a fresh host would have it.
pub fn host_group() -> String {
    host_file_without_product("/etc/group")
}

/// The host's /etc/shadow as a fresh host would have it.
pub fn host_shadow() -> String {
    host_file_without_product("/etc/shadow")
}

/// Writes the fresh-host account files into `dir` and returns the
/// (source, target) pairs to mount them.
fn fresh_account_files(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    [
        ("passwd", host_passwd()),
        ("group", host_group()),
        ("shadow", host_shadow()),
    ]
    .into_iter()
    .map(|(name, text)| {
        let source = dir.join(format!("fresh-host.{name}"));
        fs::write(&source, text).expect("write account file");
        if name == "shadow" {
            fs::set_permissions(&source, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        (source, PathBuf::from(format!("/etc/{name}")))
    })
    .collect()
}

/// `program` in a private mount namespace that sees nothing of a copy of
/// the product installed on the host: a tmpfs over /run hides the default
/// sockets and cache file (an installed nameserviced would otherwise answer,
/// and be provisioned into), and a files-only nsswitch.conf (written to
/// `dir`) keeps the host's module out. For processes that need no
/// nameservice of their own; a [`Sandbox`] gives one that does.
pub fn isolated_command(dir: &Path, program: impl AsRef<Path>) -> Command {
    let nsswitch = dir.join("nsswitch.files-only.conf");
    fs::write(
        &nsswitch,
        "passwd: files\ngroup: files\ninitgroups: files\nshadow: files\nhosts: files dns\n",
    )
    .expect("nsswitch.conf");
    let mut script = String::from(
        "set -e; mount -t tmpfs -o mode=755 tmpfs /run; \
         mount --bind \"$ISOLATED_NSSWITCH\" /etc/nsswitch.conf; ",
    );
    let accounts = fresh_account_files(dir);
    for (i, _) in accounts.iter().enumerate() {
        script.push_str(&format!(
            "mount --bind \"$ISOLATED_SRC_{i}\" \"$ISOLATED_DST_{i}\"; "
        ));
    }
    script.push_str("exec \"$@\"");
    let mut cmd = Command::new("unshare");
    for (i, (src, dst)) in accounts.iter().enumerate() {
        cmd.env(format!("ISOLATED_SRC_{i}"), src)
            .env(format!("ISOLATED_DST_{i}"), dst);
    }
    cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(script)
        .arg("isolated")
        .arg(program.as_ref())
        .env("ISOLATED_NSSWITCH", &nsswitch)
        .env_remove("CONNECT_NSS_SOCKET")
        .env_remove("CONNECT_NSS_CACHE")
        .env_remove("CONNECT_NSS_BYPASS");
    cmd
}

/// A private world for one test: configuration, state, sockets and the
/// files mounted into its namespaces.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub run_dir: PathBuf,
    pub lib_dir: PathBuf,
    binds: Vec<(PathBuf, PathBuf)>,
}

/// Settings most tests share: a nameservice-owned shared group and small,
/// collision-free ranges.
pub const SHARED_GROUP: &str = "connect-users";
pub const UID_BASE: u32 = 2_000_000;
pub const GID_BASE: u32 = 3_000_000;

impl Sandbox {
    /// A sandbox whose gcfg holds `extra` after the standard sections
    /// (later values win, so `extra` may override them).
    pub fn new(extra: &str) -> Self {
        let a = artifacts();
        let dir = tempfile::Builder::new()
            .prefix("connect-e2e.")
            .tempdir()
            .expect("temporary directory");
        // Other uids (the unprivileged-caller tests) must reach the sockets.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let run_dir = dir.path().join("run");
        let lib_dir = dir.path().join("lib");
        let state = dir.path().join("state");
        for d in [&run_dir, &lib_dir, &state] {
            fs::create_dir_all(d).expect("mkdir");
        }
        fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::copy(&a.module, lib_dir.join("libnss_connect.so.2")).expect("copy module");
        let nsswitch = dir.path().join("nsswitch.conf");
        fs::write(
            &nsswitch,
            "passwd: files connect\ngroup: files connect\ninitgroups: files connect\n\
             shadow: files\nhosts: files dns\n",
        )
        .expect("nsswitch.conf");
        let config = dir.path().join("connect.gcfg");
        fs::write(
            &config,
            format!(
                "[Applications]\nSharedRunAsUnixGroup = {SHARED_GROUP}\n\
                 [Nameservice]\nUidRange = {UID_BASE}-{}\nGidRange = {GID_BASE}-{}\n\
                 LookupSocket = {}\nProvisionSocket = {}\nCacheFile = {}\n\
                 StateDirectory = {}\n{extra}\n",
                UID_BASE + 99_999,
                GID_BASE + 99_999,
                run_dir.join("lookup.sock").display(),
                run_dir.join("provision.sock").display(),
                run_dir.join("cache").display(),
                state.display(),
            ),
        )
        .expect("connect.gcfg");
        let mut binds = vec![(nsswitch, "/etc/nsswitch.conf".into())];
        binds.extend(fresh_account_files(dir.path()));
        Self {
            binds,
            dir,
            config,
            run_dir,
            lib_dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces the nsswitch.conf this sandbox mounts (e.g. `passwd: connect`
    /// alone, to measure one backend without `files` in front of it).
    pub fn set_nsswitch(&mut self, contents: &str) {
        fs::write(self.path("nsswitch.conf"), contents).expect("nsswitch.conf");
    }

    /// Mounts `contents` (written to the sandbox) over `target` in every
    /// namespace this sandbox makes, the daemon's included.
    pub fn bind_file(&mut self, target: &str, contents: &str) {
        let name = format!("bind{}", target.replace('/', "_"));
        let source = self.path(&name);
        fs::write(&source, contents).expect("write bind source");
        self.binds.push((source, target.into()));
    }

    /// Mounts a directory of the sandbox over `target` (e.g. a copy of
    /// /etc/pam.d with one more service), in every namespace this sandbox makes.
    pub fn bind_dir(&mut self, source: &Path, target: &str) {
        self.binds.push((source.to_owned(), target.into()));
    }

    /// `program args…` inside a fresh private mount namespace.
    pub fn command(&self, program: impl AsRef<Path>, args: &[&str]) -> Command {
        let mut script = String::from(
            "set -e; mount -t tmpfs -o mode=755 tmpfs /run; mkdir -p /run/connect-nameservice; \
             mount --bind \"$SANDBOX_RUN\" /run/connect-nameservice; ",
        );
        for (i, _) in self.binds.iter().enumerate() {
            script.push_str(&format!(
                "mount --bind \"$SANDBOX_SRC_{i}\" \"$SANDBOX_DST_{i}\"; "
            ));
        }
        script.push_str("exec \"$@\"");
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(script)
            .arg("sandbox")
            .arg(program.as_ref())
            .args(args)
            .env("SANDBOX_RUN", &self.run_dir)
            .env("LD_LIBRARY_PATH", &self.lib_dir)
            .env_remove("CONNECT_NSS_SOCKET")
            .env_remove("CONNECT_NSS_CACHE")
            .env_remove("CONNECT_NSS_BYPASS");
        for (i, (src, dst)) in self.binds.iter().enumerate() {
            cmd.env(format!("SANDBOX_SRC_{i}"), src)
                .env(format!("SANDBOX_DST_{i}"), dst);
        }
        cmd
    }

    /// Runs a command in the namespace and returns its output.
    pub fn run(&self, program: impl AsRef<Path>, args: &[&str]) -> Output {
        self.command(program, args)
            .stdin(Stdio::null())
            .output()
            .expect("run command in namespace")
    }

    /// `getent DB KEY…`: (exit code, stdout).
    pub fn getent(&self, args: &[&str]) -> (i32, String) {
        let out = self.run("getent", args);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// The C harness in the namespace; panics with its output unless it
    /// reports success.
    pub fn harness(&self, args: &[&str]) -> String {
        self.harness_with_env(&[], args)
    }

    /// [`Sandbox::harness`] with extra environment variables, e.g.
    /// `CONNECT_NSS_CACHE=off` to make every lookup reach the daemon.
    pub fn harness_with_env(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let out = self
            .command(harness_binary(), args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run the harness in the namespace");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains(&format!("OK {}", args[0])),
            "nss_harness {args:?} failed ({}):\n{text}",
            out.status
        );
        text
    }

    /// The host's users and groups plus connectd's `RunAs` account
    /// `connect` (uid and gid 999), a member of the shared group: what a
    /// server running current-user content has.
    pub fn bind_run_as_account(&mut self) {
        self.bind_file(
            "/etc/passwd",
            &format!(
                "{}connect:x:999:999:Connect:/var/lib/connect:/usr/sbin/nologin\n",
                host_passwd()
            ),
        );
        self.bind_file(
            "/etc/group",
            &format!(
                "{}connect:x:999:\n{SHARED_GROUP}:x:{}:connect\n",
                host_group(),
                crate::content::SHARED_GID
            ),
        );
    }

    /// The uid `getent passwd NAME` gives inside the sandbox; panics when
    /// there is none.
    pub fn uid_of(&self, name: &str) -> u32 {
        let (code, line) = self.getent(&["passwd", name]);
        assert_eq!(code, 0, "getent passwd {name}");
        line.split(':').nth(2).expect("uid").parse().expect("uid")
    }

    /// nameservicectl with this sandbox's config (as root, outside any namespace).
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(&artifacts().nameservicectl)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run nameservicectl")
    }

    /// Starts nameserviced in its own namespace and waits until it answers.
    pub fn start_daemon(&self) -> Daemon {
        self.start_daemon_with(&[])
    }

    /// [`Sandbox::start_daemon`] with `extra` arguments (`--start-over`).
    pub fn start_daemon_with(&self, extra: &[&str]) -> Daemon {
        let log = self.path("nameserviced.log");
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut args = vec!["--config", self.config.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        let mut cmd = self.command(&artifacts().nameserviced, &args);
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup"))
            .stderr(log_file);
        // SAFETY: prctl is async-signal-safe; the daemon dies with the
        // thread that started it (the test), even if the test panics or is killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn nameserviced");
        let mut daemon = Daemon {
            child: Some(child),
            log,
            socket: self.run_dir.join("provision.sock"),
        };
        daemon.wait_ready();
        daemon
    }

    /// Runs `nameserviced --config … EXTRA` to completion in a namespace
    /// (for start-up refusals).
    pub fn daemon_once(&self, extra: &[&str]) -> Output {
        let mut args = vec!["--config", self.config.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        self.run(&artifacts().nameserviced, &args)
    }

    /// A gRPC client on the provisioning socket (the tests run as root).
    pub async fn provisioning(&self) -> ProvisioningClient<Channel> {
        let channel = nameserviced::client::connect(
            &self.run_dir.join("provision.sock"),
            Duration::from_secs(10),
        )
        .await
        .expect("connect to the provisioning socket");
        ProvisioningClient::new(channel)
    }
}

pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "nameserviced exited at start ({status}):\n{}",
                    self.log_text()
                );
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nameserviced did not start in time:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// SIGSTOP, then waits (at most 10 s) until the kernel shows every
    /// thread of the daemon stopped, so nothing it answers afterwards can
    /// have raced the signal.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        let tasks = format!("/proc/{}/task", self.pid());
        let all_stopped = || {
            let Ok(entries) = fs::read_dir(&tasks) else {
                return false;
            };
            entries.flatten().all(|task| {
                // The state is the field after the parenthesised command name.
                let text = fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                let state = text
                    .rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().next());
                state == Some("T")
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if all_stopped() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "nameserviced (pid {}) did not stop within 10 s of SIGSTOP",
            self.pid()
        );
    }

    /// SIGTERM, then waits up to 10 s; returns whether it exited cleanly in
    /// time (a daemon that ignores SIGTERM is killed and counts as a failure).
    pub fn stop(mut self) -> bool {
        self.signal(libc::SIGTERM);
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "nameserviced ignored SIGTERM for 10 s:\n{}",
            self.log_text()
        );
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// SIGKILL, then reaps.
    pub fn kill(mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGCONT first: a test may have stopped it.
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Builds an EnsureUser request.
pub fn ensure(
    provider: &str,
    unique_id: &str,
    username: &str,
    groups: &[&str],
) -> v1::EnsureUserRequest {
    v1::EnsureUserRequest {
        identity: Some(v1::Identity {
            provider: provider.into(),
            unique_id: unique_id.into(),
        }),
        username: username.into(),
        display_name: String::new(),
        groups: groups
            .iter()
            .map(|g| v1::IdpGroup {
                unique_id: format!("cn={g}"),
                name: (*g).into(),
            })
            .collect(),
    }
}

/// Every account the daemon holds.
pub async fn all_accounts(client: &mut ProvisioningClient<Channel>) -> Vec<v1::Account> {
    let mut all = Vec::new();
    let mut after_uid = 0;
    loop {
        let page = client
            .list_accounts(v1::ListAccountsRequest {
                after_uid,
                limit: 1000,
            })
            .await
            .expect("list accounts")
            .into_inner();
        if let Some(last) = page.accounts.last() {
            after_uid = last.uid;
        }
        let done = page.done || page.accounts.is_empty();
        all.extend(page.accounts);
        if done {
            return all;
        }
    }
}

/// A single-threaded runtime for a test body.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Skips (by returning true) when not root: the namespace tests need it.
/// CI runs as root, where this never skips.
pub fn need_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "the end-to-end tests must run as root in CI"
        );
        eprintln!("skipped: needs root for private mount namespaces");
        return true;
    }
    false
}
