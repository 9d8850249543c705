//! Environments are built at deployment as `Applications.RunAs` and never
//! as a viewer, and every viewer's process uses them read-only: for content
//! that runs as each viewer, a Python virtual environment with a package
//! from the bundle's requirements.txt is built, and every file in it
//! belongs to RunAs (`connect`, uid 999), before and after a viewer's
//! process ran on it; connectd records the build under RunAs; the viewer's
//! process runs on that environment and cannot write to it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use connect_tests::content::*;
use connect_tests::*;
use serde_json::json;

/// uid of `Applications.RunAs` (`connect`) in `pam_world`.
const RUN_AS_UID: u32 = 999;

const MARKER_WHEEL: &str = "connect_env_marker-1.0-py3-none-any.whl";

/// A pure-Python wheel with one module, made here so that the build needs
/// no package index: pip installs it from the bundle.
fn marker_wheel(dir: &Path) -> Vec<u8> {
    let path = dir.join(MARKER_WHEEL);
    let script = r#"
import sys, zipfile
info = "connect_env_marker-1.0.dist-info/"
files = {
    "connect_env_marker.py": "MARK = 'built as RunAs'\n",
    info + "METADATA": "Metadata-Version: 2.1\nName: connect-env-marker\nVersion: 1.0\n",
    info + "WHEEL": "Wheel-Version: 1.0\nGenerator: connect-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = "".join(f"{name},,\n" for name in files) + info + "RECORD,,\n"
with zipfile.ZipFile(sys.argv[1], "w") as wheel:
    for name, text in files.items():
        wheel.writestr(name, text)
    wheel.writestr(info + "RECORD", record)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "make the wheel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read(&path).expect("read the wheel")
}

/// Every file, directory and link under `root` with its owner's uid.
fn owners(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path).expect("stat");
        if meta.is_dir() {
            for entry in fs::read_dir(&path).expect("read_dir") {
                pending.push(entry.expect("entry").path());
            }
        }
        found.push((path, meta.uid()));
    }
    found
}

fn assert_all_run_as(env: &Path, when: &str) {
    let files = owners(env);
    assert!(files.len() > 10, "a virtual environment: {files:?}");
    let others: Vec<_> = files.iter().filter(|(_, uid)| *uid != RUN_AS_UID).collect();
    assert!(
        others.is_empty(),
        "{when}: files of the environment not owned by RunAs: {others:?}"
    );
}

#[test]
fn environments_are_built_as_run_as_never_as_the_viewer() {
    if need_root() {
        return;
    }
    let sandbox = pam_world(&[]);
    let server = connect_tests::connectd::Connectd::start_in(&sandbox, &pam_config(""));
    let admin = sign_in(&server, "admin1");
    let viewer = sign_in(&server, "view1");
    let app = server.create_content(
        &admin,
        json!({"name": "with-packages", "access_type": "logged_in",
               "run_as_current_user": true}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    let manifest = json!({
        "version": 1,
        "metadata": {"appmode": "python-api", "entrypoint": "app:app"},
        "python": {"package_manager": {"name": "pip", "package_file": "requirements.txt"}},
    })
    .to_string();
    let wheel = marker_wheel(&sandbox.path(""));
    let requirements = format!("./{MARKER_WHEEL}\n");
    server.deploy(
        &admin,
        &guid,
        &bundle_bytes(&[
            ("manifest.json", manifest.as_bytes()),
            ("requirements.txt", requirements.as_bytes()),
            (MARKER_WHEEL, &wheel),
            ("app.py", PROBE_APP.as_bytes()),
        ]),
    );

    // One environment, with the bundle's package in it, all RunAs's.
    let envs = sandbox.path("data").join("apps").join(&guid).join("envs");
    let entries: Vec<PathBuf> = fs::read_dir(&envs)
        .expect("envs")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let env = entries[0].clone();
    let files = owners(&env);
    assert!(
        files
            .iter()
            .any(|(p, _)| p.ends_with("site-packages/connect_env_marker.py")),
        "pip installed the requirement: {files:?}"
    );
    assert_all_run_as(&env, "after the build");

    // connectd recorded the build under RunAs.
    let jobs = server
        .get_with_cookie(&format!("/__api__/v1/content/{guid}/jobs"), &admin)
        .json();
    let builds: Vec<&serde_json::Value> = jobs
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|j| j["kind"] == "build")
        .collect();
    assert_eq!(builds.len(), 1, "{jobs}");
    assert_eq!(builds[0]["uid"], RUN_AS_UID, "{}", builds[0]);
    assert_eq!(builds[0]["unix_account"], "connect", "{}", builds[0]);

    // The viewer's own process runs on that environment, read-only.
    let r = server.open(&guid, "whoami", Some(&viewer));
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());
    let who = r.json();
    assert_eq!(who["uid"], 1503, "runs as the viewer: {who}");
    let prefix = who["prefix"].as_str().expect("prefix").to_owned();
    assert_eq!(
        Path::new(&prefix),
        env.join("venv"),
        "the viewer's Python is the built environment's"
    );
    let r = server.open(
        &guid,
        &format!("write?name={prefix}/written-by-the-viewer"),
        Some(&viewer),
    );
    assert_eq!(r.status, 403, "the environment is read-only: {}", r.body);
    let errno = r.json()["errno"].as_i64();
    assert!(
        errno == Some(libc::EROFS as i64) || errno == Some(libc::EACCES as i64),
        "{}",
        r.body
    );
    assert_all_run_as(&env, "after the viewer's process ran");
}
