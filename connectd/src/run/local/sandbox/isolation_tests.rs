//! What a sandboxed process can see and do of other processes and of the
//! kernel: its PID and IPC namespaces, its /proc and /dev, the system-call
//! filter, and the exit status connectd sees through the monitor. Real
//! forks as root, like `tests`; as anyone else they say so and pass.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use super::testing::{sleeping, wait_for_sleep};
use super::tests::{launch, root, run, scratch, shell};
use super::*;

#[tokio::test]
async fn a_sandbox_sees_only_its_own_processes() {
    if !root() {
        return;
    }
    let dir = scratch();
    // `echo` and `cd` are built in: the shell (PID 2) and init (1) only.
    let (status, out) = run(shell(dir.path(), "cd /proc && echo [0-9]*"), dir.path()).await;
    assert!(status.success(), "{status}: {out}");
    assert_eq!(out.trim(), "1 2");
}

#[tokio::test]
async fn two_sandboxes_of_one_uid_cannot_see_signal_or_enter_each_other() {
    if !root() {
        return;
    }
    let dir = scratch();
    let first = scratch();
    let mut running = spawn(launch(first.path(), "/bin/sleep", &["1003.5"])).expect("spawn");
    wait_for_sleep("1003.5").await;
    let victim = sleeping("1003.5")[0];
    // The pid connectd shows for it is the content process's own.
    assert_eq!(content_pid(running.id().expect("monitor")), Some(victim));

    // The same uid (nobody), looking for it every way the review did.
    // (The quotes keep the words the test looks for out of the script's
    // own command line, which the loop prints.)
    let script = format!(
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done; \
         kill -0 {victim} && echo sig''nalled; \
         ls /proc/{victim}/root/ && echo ent''ered; \
         echo do''ne"
    );
    let (_, out) = run(shell(dir.path(), &script), dir.path()).await;
    assert!(out.contains("done"), "{out}");
    assert!(
        !out.contains("1003.5"),
        "saw the other sandbox's process: {out}"
    );
    assert!(!out.contains("signalled"), "{out}");
    assert!(!out.contains("entered"), "{out}");
    terminate(&mut running, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn pid_and_ipc_namespaces_are_the_sandboxes_own() {
    if !root() {
        return;
    }
    let dir = scratch();
    let (status, out) = run(
        shell(dir.path(), "readlink /proc/self/ns/pid /proc/self/ns/ipc"),
        dir.path(),
    )
    .await;
    assert!(status.success(), "{status}: {out}");
    let host = |ns: &str| {
        std::fs::read_link(format!("/proc/self/ns/{ns}"))
            .expect("namespace link")
            .to_string_lossy()
            .into_owned()
    };
    let inside: Vec<&str> = out.lines().collect();
    assert_eq!(inside.len(), 2, "{out}");
    assert!(inside[0].starts_with("pid:["), "{out}");
    assert_ne!(inside[0], host("pid"));
    assert!(inside[1].starts_with("ipc:["), "{out}");
    assert_ne!(inside[1], host("ipc"));
}

#[tokio::test]
async fn dev_holds_only_the_usual_devices_and_proc_sys_is_read_only() {
    if !root() {
        return;
    }
    let dir = scratch();
    let script = "ls -A /dev | tr '\\n' ' '; echo; \
                  echo gone > /dev/null && echo null ok; \
                  head -c 4 /dev/urandom | wc -c; \
                  touch /dev/new 2>/dev/null || echo dev read-only; \
                  echo shm > /dev/shm/x && cat /dev/shm/x; \
                  awk '$5 == \"/proc/sys\" { split($6, o, \",\"); print \"/proc/sys\", o[1] }' \
                      /proc/self/mountinfo";
    let (status, out) = run(shell(dir.path(), script), dir.path()).await;
    assert!(status.success(), "{status}: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().map(|l| l.trim()),
        Some("fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"),
        "{out}"
    );
    for want in ["null ok", "4", "dev read-only", "shm", "/proc/sys ro"] {
        assert!(lines.contains(&want), "no {want:?} in {out}");
    }
}

#[tokio::test]
async fn the_system_call_filter_refuses_tracing_and_new_namespaces() {
    if !root() {
        return;
    }
    let python = Path::new("/usr/bin/python3");
    if !python.exists() {
        eprintln!("no /usr/bin/python3 (scripts/deps.sh installs it): skipped");
        return;
    }
    let dir = scratch();
    // ptrace(PTRACE_TRACEME) needs no privilege: only the filter refuses it.
    let l = launch(
        dir.path(),
        "/usr/bin/python3",
        &[
            "-c",
            "import ctypes, os\n\
             libc = ctypes.CDLL(None, use_errno=True)\n\
             print('ptrace', libc.ptrace(0, 0, 0, 0), ctypes.get_errno())\n\
             print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n\
             pid = os.fork()\n\
             if pid == 0: os._exit(3)\n\
             print('fork', os.waitpid(pid, 0)[1] >> 8)\n",
        ],
    );
    let (status, out) = run(l, dir.path()).await;
    assert!(status.success(), "{status}: {out}");
    let eperm = libc::EPERM;
    assert!(out.contains(&format!("ptrace -1 {eperm}")), "{out}");
    // CLONE_NEWUSER, which an unprivileged process may otherwise use.
    assert!(out.contains(&format!("unshare -1 {eperm}")), "{out}");
    // Plain process creation (clone, or clone3 falling back) still works.
    assert!(out.contains("fork 3"), "{out}");
}

#[tokio::test]
async fn connectd_sees_the_content_process_exit_as_it_did() {
    if !root() {
        return;
    }
    let dir = scratch();
    let (status, out) = run(shell(dir.path(), "exit 7"), dir.path()).await;
    assert_eq!(status.code(), Some(7), "{out}");
    let (status, out) = run(shell(dir.path(), "kill -USR1 $$"), dir.path()).await;
    assert_eq!(status.signal(), Some(libc::SIGUSR1), "{status}: {out}");
    let (status, out) = run(shell(dir.path(), "kill -KILL $$"), dir.path()).await;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}: {out}");
    // No core file of connectd's memory either.
    let (status, _) = run(shell(dir.path(), "kill -SEGV $$"), dir.path()).await;
    assert_eq!(status.signal(), Some(libc::SIGSEGV));
    assert!(!status.core_dumped());
}

#[tokio::test]
async fn killing_the_monitor_takes_the_whole_sandbox_down() {
    if !root() {
        return;
    }
    let dir = scratch();
    let l = shell(dir.path(), "sleep 1004.5 & setsid sleep 1004.75 & wait");
    let mut child = spawn(l).expect("spawn");
    wait_for_sleep("1004.5").await;
    wait_for_sleep("1004.75").await;
    child.start_kill().expect("SIGKILL the monitor");
    child.wait().await.expect("reaped");
    let started = std::time::Instant::now();
    while !(sleeping("1004.5").is_empty() && sleeping("1004.75").is_empty()) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a sleep survived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn init_and_the_content_are_created_inside_a_cgroup_v2_directory() {
    if !root() {
        return;
    }
    // The unified hierarchy: /sys/fs/cgroup, or /sys/fs/cgroup/unified on
    // hybrid hosts (where it has no controllers, which this does not need).
    let Some(unified) = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(Path::new)
        .find(|p| p.join("cgroup.controllers").exists())
    else {
        eprintln!("no cgroup v2 hierarchy here: skipped");
        return;
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    let name = format!("sandbox-test-{}", std::process::id());
    let path = unified.join(own.trim_start_matches('/')).join(&name);
    std::fs::create_dir(&path).expect("a test cgroup");
    let dir = std::fs::File::open(&path).expect("open the cgroup");
    let scratch_dir = scratch();
    let mut l = launch(scratch_dir.path(), "/bin/cat", &["/proc/self/cgroup"]);
    l.cgroup_dir = Some(std::os::fd::AsRawFd::as_raw_fd(&dir));
    let (status, out) = run(l, scratch_dir.path()).await;
    drop(dir);
    let removed = std::fs::remove_dir(&path);
    assert!(status.success(), "{status}: {out}");
    let inside = out
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_owned();
    assert!(inside.ends_with(&format!("/{name}")), "{out}");
    removed.expect("the cgroup is empty once the sandbox has ended");
}
