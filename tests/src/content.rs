//! Content for end-to-end tests: bundles built in memory, deployed through
//! connectd's API, and a small stdlib WSGI app that reports who it runs as
//! and reads and writes files on request, so tests can check Unix
//! permissions from inside real content processes.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::connectd::{Connectd, HttpRequest, HttpResponse};

/// A WSGI app (stdlib only) whose routes let a test look inside the
/// process: `/whoami`, `/read?path=`, `/write?name=&mode=&text=`,
/// `/sleep?seconds=`, `/hold?name=&seconds=`, `/crash`, `/headers`.
///
/// It never changes its own umask: `/whoami` reads it from /proc, so what
/// it reports, and the modes of the files it writes, are what connectd set.
/// `/hold` is how a test knows a request is in flight: it writes
/// `<name>.held` (its pid and uid, as JSON) into the working directory,
/// then answers once the test creates `<name>.release` there, or after
/// `seconds` (default 10) with `"released": false`, so that no answer
/// outlasts the test client's read timeout; see [`wait_until_held`].
pub const PROBE_APP: &str = r#"
import json, os, sys, time, urllib.parse

def current_umask():
    # Read, never set: os.umask() would change what later writes get.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return oct(int(line.split()[1], 8))
    return None

def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    def reply(status, body):
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(data)))])
        return [data]
    if path == "/whoami":
        return reply("200 OK", {
            "pid": os.getpid(), "pidns": os.readlink("/proc/self/ns/pid"),
            "uid": os.getuid(), "euid": os.geteuid(),
            "gid": os.getgid(), "groups": sorted(os.getgroups()),
            "cwd": os.getcwd(), "umask": current_umask(), "prefix": sys.prefix,
            "env": {k: os.environ.get(k) for k in
                    ["HOME", "USER", "LOGNAME", "CONNECT_SERVER", "CONNECT_CONTENT_GUID",
                     "KRB5CCNAME", "CONNECT_PAM_SERVICE"]},
        })
    if path == "/read":
        try:
            with open(query["path"]) as f:
                return reply("200 OK", {"text": f.read()})
        except OSError as e:
            return reply("403 Forbidden", {"error": e.strerror, "errno": e.errno})
    if path == "/list":
        try:
            return reply("200 OK", {"entries": sorted(os.listdir(query["path"]))})
        except OSError as e:
            return reply("403 Forbidden", {"error": e.strerror, "errno": e.errno})
    if path == "/write":
        # An absolute name writes outside the working directory.
        name = os.path.join(os.getcwd(), query["name"])
        try:
            with open(name, "w") as f:
                f.write(query.get("text", ""))
            if "mode" in query:
                os.chmod(name, int(query["mode"], 8))
            st = os.stat(name)
        except OSError as e:
            return reply("403 Forbidden", {"error": e.strerror, "errno": e.errno})
        return reply("200 OK", {"mode": oct(st.st_mode & 0o7777), "gid": st.st_gid})
    if path == "/connect":
        import socket
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(query["path"])
            return reply("200 OK", {"connected": True})
        except OSError as e:
            return reply("403 Forbidden", {"error": e.strerror, "errno": e.errno})
        finally:
            s.close()
    if path == "/sleep":
        time.sleep(float(query.get("seconds", "1")))
        return reply("200 OK", {"slept": True})
    if path == "/hold":
        base = os.path.join(os.getcwd(), query["name"])
        with open(base + ".held.tmp", "w") as f:
            json.dump({"pid": os.getpid(), "pidns": os.readlink("/proc/self/ns/pid"),
                       "uid": os.getuid()}, f)
        os.rename(base + ".held.tmp", base + ".held")
        deadline = time.monotonic() + float(query.get("seconds", "10"))
        while not os.path.exists(base + ".release"):
            if time.monotonic() > deadline:
                return reply("200 OK", {"released": False, "pid": os.getpid(),
                                        "pidns": os.readlink("/proc/self/ns/pid")})
            time.sleep(0.02)
        return reply("200 OK", {"released": True, "pid": os.getpid(),
                                "pidns": os.readlink("/proc/self/ns/pid")})
    if path == "/headers":
        return reply("200 OK", {k: v for k, v in environ.items() if k.startswith("HTTP_")})
    if path == "/spawn":
        import subprocess
        child = subprocess.Popen(["sleep", "1000"])
        return reply("200 OK", {"child": child.pid,
                                "pidns": os.readlink("/proc/self/ns/pid")})
    if path == "/hog":
        # Every page written, so that it counts against a memory limit.
        hoard = b"x" * (int(query.get("mib", "64")) << 20)
        return reply("200 OK", {"held": len(hoard)})
    if path == "/crash":
        os._exit(3)
    return reply("200 OK", {"hello": "from the probe", "path": path})
"#;

/// A gzip-compressed tar of `files` (name, contents), as publishers upload.
pub fn bundle(files: &[(&str, &str)]) -> Vec<u8> {
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_bytes())).collect();
    bundle_bytes(&files)
}

/// [`bundle`] for files that are not text (a wheel, an image).
pub fn bundle_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut archive = tar::Builder::new(encoder);
    for (name, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive
            .append_data(&mut header, name, *contents)
            .expect("append to bundle");
    }
    archive
        .into_inner()
        .and_then(|gz| gz.finish())
        .expect("finish bundle")
}

/// The probe app as a `python-api` bundle.
pub fn probe_bundle() -> Vec<u8> {
    let manifest = json!({
        "version": 1,
        "metadata": {"appmode": "python-api", "entrypoint": "app:app"},
        "python": {"version": "3.11"},
    })
    .to_string();
    bundle(&[("manifest.json", &manifest), ("app.py", PROBE_APP)])
}

/// A static bundle with one page.
pub fn static_bundle(text: &str) -> Vec<u8> {
    let manifest = json!({
        "version": 1,
        "metadata": {"appmode": "static", "primary_html": "index.html"},
    })
    .to_string();
    bundle(&[("manifest.json", &manifest), ("index.html", text)])
}

impl Connectd {
    /// A request with a session cookie and an optional raw body.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> HttpResponse {
        let mut headers = vec![("Content-Type", content_type.to_owned())];
        if let Some(cookie) = cookie {
            headers.push(("Cookie", cookie.to_owned()));
        }
        self.request(&HttpRequest {
            method,
            path,
            headers,
            body,
            source: None,
        })
    }

    /// Creates content and returns its JSON; panics with the answer if
    /// connectd refuses.
    pub fn create_content(&self, cookie: &str, fields: Value) -> Value {
        let r = self.json("POST", "/__api__/v1/content", cookie, &fields);
        assert_eq!(
            r.status,
            200,
            "create content: {}\n{}",
            r.body,
            self.log_text()
        );
        r.json()
    }

    /// Uploads and deploys `bundle`, waits for the task, returns its output.
    pub fn deploy(&self, cookie: &str, guid: &str, bundle: &[u8]) -> Vec<String> {
        let r = self.send(
            "POST",
            &format!("/__api__/v1/content/{guid}/bundles"),
            Some(cookie),
            "application/gzip",
            bundle,
        );
        assert_eq!(r.status, 200, "upload: {}", r.body);
        let bundle_id = r.json()["id"].as_str().expect("bundle id").to_owned();
        let r = self.json(
            "POST",
            &format!("/__api__/v1/content/{guid}/deploy"),
            cookie,
            &json!({ "bundle_id": bundle_id }),
        );
        assert_eq!(r.status, 200, "deploy: {}", r.body);
        let task = r.json()["task_id"].as_str().expect("task id").to_owned();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let r = self.get_with_cookie(&format!("/__api__/v1/tasks/{task}?wait=5"), cookie);
            assert_eq!(r.status, 200, "task: {}", r.body);
            let t = r.json();
            if t["finished"] == true {
                let output: Vec<String> = t["output"]
                    .as_array()
                    .expect("output")
                    .iter()
                    .map(|l| l.as_str().unwrap_or_default().to_owned())
                    .collect();
                assert_eq!(
                    t["code"],
                    0,
                    "deployment failed: {}\n{}\n{}",
                    t["error"],
                    output.join("\n"),
                    self.log_text()
                );
                return output;
            }
            assert!(Instant::now() < deadline, "deployment took too long: {t}");
        }
    }

    /// `GET /content/{guid}/{path}` as the holder of `cookie` (or anonymous).
    pub fn open(&self, guid: &str, path: &str, cookie: Option<&str>) -> HttpResponse {
        let full = format!("/content/{guid}/{}", path.trim_start_matches('/'));
        let mut headers = Vec::new();
        if let Some(cookie) = cookie {
            headers.push(("Cookie", cookie.to_owned()));
        }
        self.request(&HttpRequest {
            method: "GET",
            path: &full,
            headers,
            body: b"",
            source: None,
        })
    }
}

/// The working directory every process of content `guid` shares, as the
/// test (outside the content's sandbox) sees it.
pub fn work_dir(sandbox: &crate::Sandbox, guid: &str) -> PathBuf {
    sandbox.path("data").join("apps").join(guid).join("work")
}

/// A request the probe holds (`/hold`): the process that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub pid: u64,
    pub uid: u32,
}

/// Waits until a probe process holds the request `name` (its
/// `<name>.held` file appears in `work`), and says which process; after
/// `within`, fails with `context()` (say, connectd's log) instead of
/// hanging.
pub fn wait_until_held(
    work: &Path,
    name: &str,
    within: Duration,
    context: impl Fn() -> String,
) -> Held {
    let deadline = Instant::now() + within;
    loop {
        if let Some(held) = read_held(work, name) {
            return held;
        }
        assert!(
            Instant::now() < deadline,
            "no process held the request {name:?} within {within:?}:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Which process holds the request `name`, if one does yet (the probe
/// renames the file into place, so it is never read half-written).
pub fn read_held(work: &Path, name: &str) -> Option<Held> {
    let file = work.join(format!("{name}.held"));
    let text = fs::read_to_string(&file).ok()?;
    let held: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text:?}", file.display()));
    Some(Held {
        pid: host_pid(&held).expect("the holding process, on the host"),
        uid: held["uid"].as_u64().expect("held uid") as u32,
    })
}

/// Lets the probe answer the held request `name`.
pub fn release_held(work: &Path, name: &str) {
    fs::write(work.join(format!("{name}.release")), "").expect("release a held request");
}

/// Releases held requests when dropped, also when an assertion fails
/// while they are held: threads that hold them then end, and the failure
/// is reported instead of the test waiting for them forever.
pub struct ReleaseOnDrop {
    work: PathBuf,
    names: Vec<String>,
}

impl ReleaseOnDrop {
    pub fn new(work: &Path, names: impl IntoIterator<Item = String>) -> Self {
        Self {
            work: work.to_owned(),
            names: names.into_iter().collect(),
        }
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        for name in &self.names {
            // Never panics: it may run while the test is unwinding.
            let _ = fs::write(self.work.join(format!("{name}.release")), "");
        }
    }
}

/// The host pid of the process an answer of the probe describes: it says
/// its pid and PID namespace as it sees them (`pid`, or `child` for the
/// process it spawned, and `pidns`), and each content process has a PID
/// namespace of its own, so the host's pid is found by looking for that
/// namespace and that pid inside it. `None` once it has ended.
pub fn host_pid(answer: &Value) -> Option<u64> {
    host_pid_of(answer, "pid")
}

/// [`host_pid`] of the process the probe's `/spawn` started.
pub fn host_child_pid(answer: &Value) -> Option<u64> {
    host_pid_of(answer, "child")
}

fn host_pid_of(answer: &Value, field: &str) -> Option<u64> {
    let inner = answer[field].as_u64()?;
    let namespace = answer["pidns"].as_str()?;
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u64 = entry.file_name().to_str()?.parse().ok()?;
        let link = fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
        if link.to_str() != Some(namespace) {
            return None;
        }
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let innermost = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))?
            .split_whitespace()
            .last()?
            .parse::<u64>()
            .ok()?;
        (innermost == inner).then_some(pid)
    })
}

/// The uid a process runs under, from /proc (the kernel's word, not the app's).
pub fn proc_uid(pid: u64) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
}

/// Whether a process is alive: present and not a zombie (here PID 1 may
/// never reap orphans).
pub fn alive(pid: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// The password every account of [`pam_world`] has.
pub const PASSWORD: &str = "content test pw";

/// Local accounts of [`pam_world`]: (name, uid, primary gid, member of the
/// shared group `connect-users` (gid 1600)).
pub const ACCOUNTS: &[(&str, u32, u32, bool)] = &[
    ("connect", 999, 999, true),
    ("admin1", 1501, 1500, true),
    ("pub1", 1502, 1500, true),
    ("view1", 1503, 1500, true),
    ("svcdata", 1650, 1650, true),
    ("outsider", 1700, 1700, false),
    ("sysacct", 500, 500, true),
    // A member of root's group (gid 0) besides the shared group.
    ("rootgrp", 1660, 1500, true),
];

/// The shared group's gid in [`pam_world`].
pub const SHARED_GID: u32 = 1600;

/// Viewers `v01`..`vNN` (uids 1801..) for scheduler tests, all members.
pub fn numbered_viewers(count: usize) -> Vec<(String, u32)> {
    (1..=count)
        .map(|i| (format!("v{i:02}"), 1800 + i as u32))
        .collect()
}

fn sha512_crypt(password: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args(["passwd", "-6", "-salt", "contenttestsalt", password])
        .output()
        .expect("openssl passwd");
    assert!(out.status.success(), "openssl passwd failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A sandbox whose /etc/passwd, /etc/shadow, /etc/group and /etc/pam.d
/// (bind-mounted copies, never the host's) hold [`ACCOUNTS`], `viewers`,
/// and a `connect` PAM service using pam_unix; root gets [`PASSWORD`] too,
/// so that a test can sign in as root and be refused.
pub fn pam_world(viewers: &[(String, u32)]) -> crate::Sandbox {
    let mut sandbox = crate::Sandbox::new("");
    let hash = sha512_crypt(PASSWORD);
    let mut passwd = crate::host_passwd();
    let host_shadow = crate::host_shadow();
    let mut shadow: String = host_shadow
        .lines()
        .filter(|l| !l.starts_with("root:"))
        .map(|l| format!("{l}\n"))
        .collect();
    shadow.push_str(&format!("root:{hash}:19000:0:99999:7:::\n"));
    let mut group: String = crate::host_group()
        .lines()
        .map(|l| match l.strip_prefix("root:x:0:") {
            Some("") => "root:x:0:rootgrp\n".to_owned(),
            Some(members) => format!("root:x:0:{members},rootgrp\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let mut members = vec!["root".to_owned()];
    let all = ACCOUNTS
        .iter()
        .map(|(n, u, g, m)| (n.to_string(), *u, *g, *m))
        .chain(viewers.iter().map(|(n, u)| (n.clone(), *u, 1500, true)));
    for (name, uid, gid, member) in all {
        passwd.push_str(&format!(
            "{name}:x:{uid}:{gid}:{name} Test,,,:/home/{name}:/bin/sh\n"
        ));
        shadow.push_str(&format!("{name}:{hash}:19000:0:99999:7:::\n"));
        if member {
            members.push(name);
        }
    }
    group.push_str(&format!(
        "connect:x:999:\nstaff1500:x:1500:\nsvcdata:x:1650:\noutsider:x:1700:\n\
         sysacct:x:500:\nconnect-users:x:{SHARED_GID}:{}\n",
        members.join(",")
    ));
    sandbox.bind_file("/etc/passwd", &passwd);
    sandbox.bind_file("/etc/shadow", &shadow);
    sandbox.bind_file("/etc/group", &group);
    let pam_dir = sandbox.path("pam.d");
    fs::create_dir_all(&pam_dir).expect("mkdir");
    for entry in fs::read_dir("/etc/pam.d").expect("/etc/pam.d") {
        let entry = entry.expect("entry");
        fs::copy(entry.path(), pam_dir.join(entry.file_name())).expect("copy pam.d");
    }
    fs::write(
        pam_dir.join("connect"),
        "auth required pam_unix.so nodelay\naccount required pam_unix.so\n\
         session required pam_permit.so\n",
    )
    .expect("pam service");
    sandbox.bind_dir(&pam_dir, "/etc/pam.d");
    sandbox
}

/// connectd configuration for [`pam_world`]: PAM sign-in, current-user
/// execution permitted, `connect` as RunAs; `extra` is appended.
pub fn pam_config(extra: &str) -> String {
    format!(
        "[Authentication]\nProvider = pam\n[PAM]\nService = connect\n\
         [Applications]\nRunAsCurrentUser = true\nRunAs = connect\n\
         SharedRunAsUnixGroup = connect-users\n{extra}\n"
    )
}

/// Signs in and returns the session cookie.
pub fn sign_in(server: &Connectd, name: &str) -> String {
    let r = server.login(name, PASSWORD);
    assert_eq!(
        r.status,
        200,
        "sign-in of {name}: {}\n{}",
        r.body,
        server.log_text()
    );
    r.session_cookie()
}
