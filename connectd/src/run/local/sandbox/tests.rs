//! The sandbox through real forks, mounts and account switches (as root;
//! as anyone else they say so and pass), and the pure parts alone: mount
//! ordering, `/proc/self/fd` paths, process states.

use super::child::{open_dir_nofollow, ProcFdPath};
use super::mounts::{resolve, Mount};
use super::testing::{sleeping, wait_for_sleep};
use super::*;
use std::ffi::CStr;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;
/// An extra supplementary group ("users" on Debian; any number works).
const EXTRA_GROUP: u32 = 100;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Mounts, namespaces and set*id need root; as anyone else the tests
/// say so and pass without checking anything.
pub(super) fn root() -> bool {
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("sandbox tests need root: skipped");
    }
    root
}

/// A directory under /tmp that nobody may traverse.
pub(super) fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("sandbox-test-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    chmod(dir.path(), 0o755);
    dir
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mkdir(path: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir_all(path).expect("mkdir");
    chmod(path, mode);
    path.to_path_buf()
}

pub(super) fn launch(dir: &Path, program: &str, args: &[&str]) -> Launch {
    Launch {
        program: PathBuf::from(program),
        args: args.iter().map(OsString::from).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: PathBuf::from("/"),
        identity: Identity {
            uid: NOBODY,
            gid: NOBODY,
            groups: vec![NOBODY],
        },
        umask: 0o022,
        isolation: Isolation::default(),
        log: std::fs::File::create(dir.join("log")).expect("log"),
        cgroups: Vec::new(),
        cgroup_dir: None,
    }
}

pub(super) fn shell(dir: &Path, script: &str) -> Launch {
    launch(dir, "/bin/sh", &["-c", script])
}

/// Runs to the end; the exit status and the log.
pub(super) async fn run(launch: Launch, dir: &Path) -> (std::process::ExitStatus, String) {
    let mut child = spawn(launch).expect("spawn");
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("the process ended in time")
        .expect("wait");
    let log = std::fs::read_to_string(dir.join("log")).expect("read log");
    (status, log)
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// The host's mount table: no mount the test made may be left in it.
fn assert_host_untouched(paths: &[&Path]) {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    for line in table.lines() {
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        for path in paths {
            assert!(
                !Path::new(point).starts_with(path),
                "the host has a mount on {point}: {line}"
            );
        }
    }
}

fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[tokio::test]
async fn runs_as_the_given_identity_without_privileges() {
    if !root() {
        return;
    }
    let dir = scratch();
    let mut l = launch(dir.path(), "/bin/cat", &["/proc/self/status"]);
    l.identity.groups = vec![EXTRA_GROUP, NOBODY];
    let (status, out) = run(l, dir.path()).await;
    assert!(status.success(), "{status}: {out}");
    assert_eq!(status_field(&out, "Uid:"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(&out, "Gid:"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(&out, "Groups:"), "100 65534");
    assert_eq!(status_field(&out, "NoNewPrivs:"), "1");
    assert_eq!(status_field(&out, "CapPrm:"), "0000000000000000");
    assert_eq!(status_field(&out, "CapEff:"), "0000000000000000");
    // PID 2 of its own namespace (init is 1), in a process group and
    // session led from outside it (by the monitor terminate() signals).
    assert_eq!(status_field(&out, "Pid:"), "2");
    assert_eq!(status_field(&out, "NSsid:"), "0");
    // Under the two system-call filters.
    assert_eq!(status_field(&out, "Seccomp:"), "2");
    assert_eq!(status_field(&out, "Seccomp_filters:"), "2");
}

#[tokio::test]
async fn setuid_programs_cannot_regain_root() {
    if !root() {
        return;
    }
    let dir = scratch();
    // A setuid-root copy of id(1), on a file system that honours setuid.
    let id = dir.path().join("suid-id");
    std::fs::copy("/usr/bin/id", &id).expect("copy id");
    chmod(&id, 0o4755);
    // Control: outside the sandbox, as nobody, it does run as root; so
    // the check below can fail.
    let control = std::process::Command::new(&id)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("control run");
    let control = String::from_utf8_lossy(&control.stdout);
    assert!(control.contains("euid=0"), "control: {control}");

    let l = launch(dir.path(), id.to_str().expect("utf-8"), &[]);
    let (status, out) = run(l, dir.path()).await;
    assert!(status.success(), "{status}: {out}");
    assert!(out.starts_with("uid=65534"), "{out}");
    assert!(!out.contains("euid=0"), "regained root: {out}");

    // su fails too (it would need root to switch).
    let l = launch(dir.path(), "/bin/su", &["-c", "/usr/bin/id -u", "root"]);
    let (status, out) = run(l, dir.path()).await;
    assert!(!status.success(), "su succeeded: {out}");
    assert!(!lines(&out).contains(&"0"), "{out}");
}

#[tokio::test]
async fn hidden_directories_are_empty_and_exposed_ones_show_through() {
    if !root() {
        return;
    }
    let dir = scratch();
    let top = mkdir(&dir.path().join("data"), 0o755);
    std::fs::write(top.join("secret"), "s3cret").expect("secret");
    // World-writable on the host: only the mount can make writes fail.
    let public = mkdir(&top.join("apps/a/bundle"), 0o777);
    std::fs::write(public.join("app.txt"), "hello").expect("app");
    let work = mkdir(&top.join("apps/a/work"), 0o777);
    mkdir(&top.join("apps/b"), 0o777);
    let t = top.display();
    let script = format!(
        "ls -A {t}; echo --; ls -A {t}/apps; ls -A {t}/apps/a; echo --; cat {t}/apps/a/bundle/app.txt; echo; \
         cat {t}/secret 2>/dev/null || echo no-secret; \
         touch {t}/apps/a/bundle/new 2>/dev/null && echo bundle-writable || echo bundle-readonly; \
         touch {t}/apps/a/work/new 2>/dev/null && echo work-writable || echo work-readonly; \
         mkdir {t}/extra 2>/dev/null && echo hide-writable || echo hide-readonly; \
         stat -c '%a %u' {t} {t}/apps; echo ==; cat /proc/self/mountinfo"
    );
    let mut l = shell(dir.path(), &script);
    l.isolation = Isolation {
        hide: vec![top.clone()],
        // Listed children first: the order given must not matter.
        expose: vec![
            Bind {
                path: work.clone(),
                writable: true,
            },
            Bind {
                path: public.clone(),
                writable: false,
            },
        ],
        private_tmp: false,
    };
    let (status, out) = run(l, dir.path()).await;
    assert!(status.success(), "{status}: {out}");
    let (out, mountinfo) = out.split_once("==\n").expect("separator");
    assert_eq!(
        lines(out),
        [
            "apps",
            "--",
            "a",
            "bundle",
            "work",
            "--",
            "hello",
            "no-secret",
            "bundle-readonly",
            "work-writable",
            "hide-readonly",
            "755 0",
            "755 0",
        ],
        "{out}"
    );
    // Per-mount options inside the namespace, not just permissions.
    let options = |point: &Path| -> Vec<String> {
        let point = point.to_str().expect("utf-8");
        let line = mountinfo
            .lines()
            .rfind(|l| l.split(' ').nth(4) == Some(point))
            .unwrap_or_else(|| panic!("no mount on {point}: {mountinfo}"));
        let fields: Vec<&str> = line.split(' ').collect();
        let fstype = fields
            .iter()
            .skip_while(|f| **f != "-")
            .nth(1)
            .expect("type");
        let mut options: Vec<String> = fields[5].split(',').map(str::to_owned).collect();
        options.insert(0, (*fstype).to_owned());
        options
    };
    let has = |point: &Path, wanted: &[&str]| {
        let got = options(point);
        for w in wanted {
            assert!(
                got.iter().any(|o| o == w),
                "{}: {got:?} lacks {w}",
                point.display()
            );
        }
    };
    has(&top, &["tmpfs", "ro", "nosuid", "nodev", "noexec"]);
    has(&public, &["ro", "nosuid", "nodev"]);
    has(&work, &["rw"]);
    // The writable one wrote through to the host, the read-only one not.
    assert_eq!(
        std::fs::metadata(work.join("new")).expect("written").uid(),
        NOBODY
    );
    assert!(!public.join("new").exists());
    assert!(top.join("secret").exists());
    assert_host_untouched(&[dir.path()]);
}

#[tokio::test]
async fn nested_and_overlapping_paths_are_ordered() {
    if !root() {
        return;
    }
    let dir = scratch();
    let d = dir.path();
    // Hidden inside an exposed directory: stays hidden.
    let outer = mkdir(&d.join("outer"), 0o755);
    let shown = mkdir(&outer.join("shown"), 0o755);
    std::fs::write(shown.join("visible"), "").expect("visible");
    let inner = mkdir(&shown.join("inner"), 0o755);
    std::fs::write(inner.join("private"), "").expect("private");
    // Hidden twice, nested, with an exposed grandchild.
    let nested = mkdir(&d.join("nested"), 0o755);
    let deep = mkdir(&nested.join("x/y"), 0o755);
    std::fs::write(deep.join("z"), "").expect("z");
    std::fs::write(nested.join("x/other"), "").expect("other");
    // Hidden and exposed at once: exposed wins.
    let same = mkdir(&d.join("same"), 0o755);
    std::fs::write(same.join("kept"), "").expect("kept");
    // Reached through a symlink: resolved before hiding.
    std::os::unix::fs::symlink(&same, d.join("link")).expect("symlink");

    let script = format!(
        "ls -A {o}/shown; echo --; ls -A {o}/shown/inner; echo --; ls -A {n} {n}/x {n}/x/y; \
         echo --; ls -A {s}",
        o = outer.display(),
        n = nested.display(),
        s = same.display()
    );
    let mut l = shell(d, &script);
    l.isolation = Isolation {
        hide: vec![
            inner.clone(),
            nested.join("x"),
            nested.clone(),
            outer.clone(),
            d.join("link"),
            d.join("does-not-exist"),
        ],
        expose: vec![
            Bind {
                path: deep.clone(),
                writable: false,
            },
            Bind {
                path: shown.clone(),
                writable: false,
            },
            Bind {
                path: same.clone(),
                writable: false,
            },
        ],
        private_tmp: false,
    };
    let (status, out) = run(l, d).await;
    assert!(status.success(), "{status}: {out}");
    let n = nested.display().to_string();
    assert_eq!(
        lines(&out),
        [
            "inner".to_owned(),
            "visible".into(),
            "--".into(),
            "--".into(),
            format!("{n}:"),
            "x".into(),
            String::new(),
            format!("{n}/x:"),
            "y".into(),
            String::new(),
            format!("{n}/x/y:"),
            "z".into(),
            "--".into(),
            "kept".into(),
        ],
        "{out}"
    );
    assert!(inner.join("private").exists());
    assert_host_untouched(&[d]);
}

#[tokio::test]
async fn private_tmp_hides_the_hosts_and_keeps_exposed_paths_under_it() {
    if !root() {
        return;
    }
    let marker = tempfile::Builder::new()
        .prefix("sandbox-marker-")
        .tempfile_in("/tmp")
        .expect("marker");
    let var_marker = tempfile::Builder::new()
        .prefix("sandbox-marker-")
        .tempfile_in("/var/tmp")
        .expect("marker");
    let dir = scratch(); // under /tmp: exposed under the private /tmp
    let shared = mkdir(&dir.path().join("shared"), 0o755);
    std::fs::write(shared.join("file"), "from host").expect("file");
    let own = format!("sandbox-own-{}", std::process::id());
    let script = format!(
        "test -e {m} && echo marker-visible; test -e {v} && echo var-marker-visible; \
         echo x > /tmp/{own} && echo tmp-writable; stat -c %a /tmp /var/tmp; \
         cat {s}/file; echo; ls -A /var/tmp | wc -l",
        m = marker.path().display(),
        v = var_marker.path().display(),
        s = shared.display(),
    );
    let mut l = shell(dir.path(), &script);
    l.isolation = Isolation {
        hide: vec![],
        expose: vec![Bind {
            path: shared.clone(),
            writable: false,
        }],
        private_tmp: true,
    };
    let (status, out) = run(l, dir.path()).await;
    assert!(status.success(), "{status}: {out}");
    assert_eq!(
        lines(&out),
        ["tmp-writable", "1777", "1777", "from host", "0"],
        "{out}"
    );
    // The host is as it was.
    assert!(marker.path().exists());
    assert!(var_marker.path().exists());
    assert!(!Path::new("/tmp").join(&own).exists());
    assert_host_untouched(&[Path::new("/tmp"), Path::new("/var/tmp")]);
}

#[tokio::test]
async fn umask_and_working_directory_are_applied() {
    if !root() {
        return;
    }
    let dir = scratch();
    let work = mkdir(&dir.path().join("work"), 0o755);
    std::os::unix::fs::chown(&work, Some(NOBODY), Some(NOBODY)).expect("chown");
    let mut l = shell(dir.path(), "/bin/pwd -P; touch file; mkdir sub");
    l.cwd = work.clone();
    l.umask = 0o027;
    let (status, out) = run(l, dir.path()).await;
    assert!(status.success(), "{status}: {out}");
    assert_eq!(lines(&out), [work.to_str().expect("utf-8")]);
    let file = std::fs::metadata(work.join("file")).expect("file");
    assert_eq!(file.mode() & 0o777, 0o640);
    assert_eq!(file.uid(), NOBODY);
    let sub = std::fs::metadata(work.join("sub")).expect("sub");
    assert_eq!(sub.mode() & 0o777, 0o750);
}

#[tokio::test]
async fn the_environment_is_exactly_the_one_given() {
    if !root() {
        return;
    }
    // Something connectd's environment has that must not leak.
    assert!(std::env::var_os("PATH").is_some());
    let dir = scratch();
    let mut l = launch(dir.path(), "/usr/bin/env", &[]);
    l.env = vec![
        ("ZED".into(), "last".into()),
        ("GREETING".into(), "hello world".into()),
        ("EMPTY".into(), "".into()),
    ];
    let (status, out) = run(l, dir.path()).await;
    assert!(status.success(), "{status}: {out}");
    let mut got = lines(&out);
    got.sort_unstable();
    assert_eq!(got, ["EMPTY=", "GREETING=hello world", "ZED=last"]);
}

#[tokio::test]
async fn root_is_refused_before_anything_runs() {
    if !root() {
        return;
    }
    let dir = scratch();
    let marker = dir.path().join("ran");
    type Change = fn(&mut Identity);
    let cases: [(&str, Change); 3] = [
        ("uid", |i| i.uid = 0),
        ("gid", |i| i.gid = 0),
        ("supplementary group", |i| i.groups.push(0)),
    ];
    for (what, change) in cases {
        let mut l = launch(
            dir.path(),
            "/usr/bin/touch",
            &[marker.to_str().expect("utf-8")],
        );
        change(&mut l.identity);
        match spawn(l) {
            Err(e @ LaunchError::Root { what: w, .. }) => {
                assert_eq!(w, what);
                assert!(e.to_string().contains("root"), "{e}");
            }
            other => panic!("{what} 0 not refused: {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!marker.exists(), "something ran");
}

#[tokio::test]
async fn bad_settings_are_refused_before_the_fork() {
    if !root() {
        return;
    }
    let dir = scratch();
    let d = dir.path();
    let check = |l: Launch, want: &str| match spawn(l) {
        Err(e) => assert!(e.to_string().contains(want), "{e} lacks {want:?}"),
        Ok(_) => panic!("launched; expected {want:?}"),
    };
    check(launch(d, "sh", &[]), "program sh is not absolute");
    let mut l = launch(d, "/bin/true", &[]);
    l.cwd = PathBuf::from("relative");
    check(l, "working directory relative is not absolute");
    let mut l = launch(d, "/bin/true", &[]);
    l.cwd = PathBuf::from(OsString::from_vec(b"/a\0b".to_vec()));
    check(l, "contains a NUL byte");
    let mut l = launch(d, "/bin/true", &["a\0b"]);
    l.args = vec![OsString::from_vec(b"a\0b".to_vec())];
    check(l, "argument 0");
    let mut l = launch(d, "/bin/true", &[]);
    l.env.push(("A=B".into(), "c".into()));
    check(l, "'=' in its name");
    let mut l = launch(d, "/bin/true", &[]);
    l.isolation.hide.push(PathBuf::from("tmp"));
    check(l, "hide path tmp is not absolute");
    let mut l = launch(d, "/bin/true", &[]);
    l.isolation.hide.push(PathBuf::from("/proc"));
    check(l, "/proc and /dev are the sandbox's own");
    let mut l = launch(d, "/bin/true", &[]);
    l.isolation.expose.push(Bind {
        path: PathBuf::from("/dev/shm"),
        writable: true,
    });
    check(l, "expose path /dev/shm cannot be exposed");
    let mut l = launch(d, "/bin/true", &[]);
    l.isolation.expose.push(Bind {
        path: d.join("missing"),
        writable: false,
    });
    check(l, "expose path");
    let mut l = launch(d, "/bin/true", &[]);
    l.isolation.hide.push(PathBuf::from("/tmp"));
    l.isolation.private_tmp = true;
    check(l, "/tmp is both hidden and given a private tmpfs");
    let mut l = launch(d, "/bin/true", &[]);
    l.isolation.expose = vec![
        Bind {
            path: d.to_path_buf(),
            writable: false,
        },
        Bind {
            path: d.to_path_buf(),
            writable: true,
        },
    ];
    check(l, "exposed twice");
    let mut l = launch(d, "/bin/true", &[]);
    l.umask = 0o1022;
    check(l, "umask");
}

#[tokio::test]
async fn a_missing_program_is_a_clear_error() {
    if !root() {
        return;
    }
    let dir = scratch();
    let err = spawn(launch(dir.path(), "/nonexistent/program", &[])).expect_err("nothing to run");
    let LaunchError::Spawn { ref source, .. } = err else {
        panic!("{err:?}");
    };
    assert_eq!(source.kind(), io::ErrorKind::NotFound);
    let text = err.to_string();
    assert!(text.contains("/nonexistent/program"), "{text}");
    assert!(text.contains("uid 65534"), "{text}");
}

#[tokio::test]
async fn a_failing_sandbox_step_is_named() {
    if !root() {
        return;
    }
    let dir = scratch();
    let closed = mkdir(&dir.path().join("closed"), 0o700);
    let mut l = launch(dir.path(), "/bin/true", &[]);
    l.cwd = closed.clone();
    let err = spawn(l).expect_err("cwd not searchable by nobody");
    let LaunchError::Sandbox {
        ref step,
        ref source,
        ..
    } = err
    else {
        panic!("{err:?}");
    };
    assert!(step.contains("working directory"), "{step}");
    assert!(step.contains(closed.to_str().expect("utf-8")), "{step}");
    assert_eq!(source.raw_os_error(), Some(libc::EACCES));
    // The same directory hidden: ENOENT inside the sandbox.
    let mut l = launch(dir.path(), "/bin/true", &[]);
    l.cwd = closed.join("sub");
    mkdir(&closed.join("sub"), 0o755);
    chmod(&closed, 0o755);
    l.isolation.hide.push(closed.clone());
    let err = spawn(l).expect_err("cwd hidden");
    assert!(
        matches!(&err, LaunchError::Sandbox { source, .. } if source.raw_os_error() == Some(libc::ENOENT)),
        "{err:?}"
    );
    assert_host_untouched(&[dir.path()]);
}

#[tokio::test]
async fn terminate_kills_everything_when_sigterm_is_ignored_even_outside_the_group() {
    if !root() {
        return;
    }
    let dir = scratch();
    // One sleep in the shell's group, one in a session of its own: a
    // signal to the group alone would miss the second.
    let l = shell(
        dir.path(),
        "trap '' TERM; sleep 1001.25 & setsid sleep 1001.5 & wait",
    );
    let mut child = spawn(l).expect("spawn");
    wait_for_sleep("1001.25").await;
    wait_for_sleep("1001.5").await;

    let grace = Duration::from_millis(600);
    let started = Instant::now();
    tokio::time::timeout(TIMEOUT, terminate(&mut child, grace))
        .await
        .expect("terminate returned");
    let took = started.elapsed();
    assert!(took >= grace, "SIGKILL before the grace ended: {took:?}");
    assert!(took < grace + Duration::from_secs(2), "{took:?}");
    // The monitor is reaped, by SIGKILL.
    assert!(child.id().is_none());
    let status = child.try_wait().expect("status").expect("reaped");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // Nothing of the sandbox is left once terminate has returned.
    let started = Instant::now();
    while !(sleeping("1001.25").is_empty() && sleeping("1001.5").is_empty()) {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a sleep survived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sigterm_reaches_a_process_that_left_the_group() {
    if !root() {
        return;
    }
    let dir = scratch();
    // The inner shell is in a session of its own, where a signal to the
    // content's process group cannot reach; it ends on SIGTERM.
    let l = shell(
        dir.path(),
        "trap 'echo outer got TERM' TERM; \
         setsid sh -c \"trap 'echo inner got TERM; exit 0' TERM; sleep 1002.5 & wait\"; \
         echo inner ended $?",
    );
    let mut child = spawn(l).expect("spawn");
    wait_for_sleep("1002.5").await;
    let started = Instant::now();
    terminate(&mut child, Duration::from_secs(10)).await;
    let took = started.elapsed();
    let log = std::fs::read_to_string(dir.path().join("log")).expect("log");
    assert!(log.contains("inner got TERM"), "{log}");
    assert!(log.contains("inner ended 0"), "{log}");
    assert!(
        took < Duration::from_secs(5),
        "waited for SIGKILL: {took:?}"
    );
    assert!(sleeping("1002.5").is_empty());
}

#[tokio::test]
async fn terminate_returns_as_soon_as_the_group_is_gone() {
    if !root() {
        return;
    }
    let dir = scratch();
    let mut child = spawn(launch(dir.path(), "/bin/sleep", &["100"])).expect("spawn");
    let started = Instant::now();
    terminate(&mut child, Duration::from_secs(20)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let status = child.try_wait().expect("status").expect("reaped");
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    // Already reaped: a second call has nothing to do.
    terminate(&mut child, Duration::from_secs(20)).await;
}

#[test]
fn mounts_are_ordered_parents_first() {
    let dir = scratch();
    let d = dir.path();
    let a = mkdir(&d.join("a"), 0o755);
    let ab = mkdir(&a.join("b"), 0o755);
    let abc = mkdir(&ab.join("c/d"), 0o755);
    let other = mkdir(&d.join("other"), 0o755);
    let ordered = resolve(&Isolation {
        hide: vec![ab.clone(), a.clone(), abc.clone()],
        expose: vec![
            Bind {
                path: abc.clone(),
                writable: true,
            },
            Bind {
                path: other.clone(),
                writable: false,
            },
            Bind {
                path: ab.clone(),
                writable: false,
            },
        ],
        private_tmp: false,
    })
    .expect("resolve");
    let got: Vec<_> = ordered
        .iter()
        .map(|o| (o.path.clone(), o.mount.clone(), o.mkdirs.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (a.clone(), Mount::Hide, vec![ab.clone()]),
            (ab.clone(), Mount::Expose { writable: false }, vec![]),
            // a/b/c/d: its hide is dropped, as it is exposed whole.
            (abc.clone(), Mount::Expose { writable: true }, vec![]),
            (other.clone(), Mount::Expose { writable: false }, vec![]),
        ]
    );
}

#[test]
fn mount_points_are_opened_without_following_symlinks() {
    let dir = scratch();
    let real = mkdir(&dir.path().join("real"), 0o755);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("cstring");
    let fd = open_dir_nofollow(&c(&real)).expect("a real directory opens");
    // SAFETY: just opened, closed once.
    unsafe { libc::close(fd) };
    let err = open_dir_nofollow(&c(&link)).expect_err("a symlink is refused");
    assert!(
        matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)),
        "{err}"
    );
    let err = open_dir_nofollow(&c(&link.join("."))).expect_err("also mid-path");
    assert!(
        matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)),
        "{err}"
    );
}

#[test]
fn proc_fd_paths_are_spelled_out() {
    for fd in [0, 7, 42, 1234567, i32::MAX] {
        let p = ProcFdPath::new(fd).expect("path");
        // SAFETY: ProcFdPath is NUL-terminated.
        let text = unsafe { CStr::from_ptr(p.as_ptr()) };
        assert_eq!(text.to_str().expect("ascii"), format!("/proc/self/fd/{fd}"));
    }
    assert!(ProcFdPath::new(-1).is_err());
}
