//! Tests of unpacking, the manifest and the build and run steps, with
//! real archives, real interpreters and real processes.

use std::cell::Cell;
use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use super::steps::{ensured_packages, file_url, os, requirement_names};
use super::*;
use std::io::{BufRead, BufReader, Cursor};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::time::Instant;
use tar::{EntryType, Header};

// ----- archives -----------------------------------------------------

/// A header with the name and link written as raw bytes: tar::Builder's
/// own setters refuse the malicious names these tests need.
fn header(name: &[u8], kind: EntryType, size: u64, mode: u32, link: &[u8]) -> Header {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str, u32),
    Link(&'a str, &'a str),
    Other(&'a str, EntryType, &'a str),
}

fn tar_bytes(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let result = match e {
            E::File(name, data, mode) => b.append(
                &header(
                    name.as_bytes(),
                    EntryType::Regular,
                    data.len() as u64,
                    *mode,
                    b"",
                ),
                *data,
            ),
            E::Dir(name, mode) => b.append(
                &header(name.as_bytes(), EntryType::Directory, 0, *mode, b""),
                io::empty(),
            ),
            E::Link(name, target) => b.append(
                &header(
                    name.as_bytes(),
                    EntryType::Symlink,
                    0,
                    0o777,
                    target.as_bytes(),
                ),
                io::empty(),
            ),
            E::Other(name, kind, link) => b.append(
                &header(name.as_bytes(), *kind, 0, 0o644, link.as_bytes()),
                io::empty(),
            ),
        };
        result.unwrap();
    }
    b.into_inner().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn unpack_new(archive: &[u8], limits: &Limits) -> (tempfile::TempDir, Result<(), BundleError>) {
    let dir = tempfile::tempdir().unwrap();
    let result = unpack(archive, dir.path(), limits);
    (dir, result)
}

fn refused(entries: &[E<'_>], expect_entry: &str, expect_words: &str) {
    let (_dir, result) = unpack_new(&gz(&tar_bytes(entries)), &Limits::default());
    match result {
        Err(BundleError::Entry { entry, problem }) => {
            assert_eq!(entry, expect_entry);
            assert!(problem.contains(expect_words), "{problem}");
        }
        other => panic!("expected a refusal of {expect_entry:?}, got {other:?}"),
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

// ----- unpack ---------------------------------------------------------

#[test]
fn unpacks_a_good_bundle_and_sanitizes_modes() {
    let archive = gz(&tar_bytes(&[
        E::Dir("./", 0o755),
        E::File("./manifest.json", b"{}", 0o644),
        E::Dir("./static/", 0o777),
        E::File("./static/style.css", b"body{}", 0o666),
        E::File("run.sh", b"#!/bin/sh\n", 0o4775),
        E::File("secret.txt", b"s", 0o600),
        E::File("deep/er/file.txt", b"implied parents", 0o644),
        E::Dir("sticky", 0o1777),
        E::Link("style.css", "static/style.css"),
        E::Link("static/up", "../run.sh"),
        E::Link("static/self", "."),
    ]));
    let (dir, result) = unpack_new(&archive, &Limits::default());
    result.unwrap();
    let d = dir.path();
    assert_eq!(fs::read(d.join("manifest.json")).unwrap(), b"{}");
    assert_eq!(fs::read(d.join("static/style.css")).unwrap(), b"body{}");
    assert_eq!(fs::read(d.join("style.css")).unwrap(), b"body{}");
    assert_eq!(fs::read(d.join("static/up")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(mode_of(&d.join("static")), 0o755);
    assert_eq!(mode_of(&d.join("static/style.css")), 0o644);
    assert_eq!(
        mode_of(&d.join("run.sh")),
        0o755,
        "setuid and group write dropped"
    );
    assert_eq!(
        mode_of(&d.join("secret.txt")),
        0o644,
        "readable by the app's user"
    );
    assert_eq!(mode_of(&d.join("deep")), 0o755);
    assert_eq!(mode_of(&d.join("deep/er")), 0o755);
    assert_eq!(mode_of(&d.join("sticky")), 0o755);
    assert!(fs::symlink_metadata(d.join("style.css"))
        .unwrap()
        .file_type()
        .is_symlink());
    let mtime = fs::metadata(d.join("run.sh")).unwrap().modified().unwrap();
    assert_eq!(
        mtime,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    );
}

#[test]
fn plain_tar_is_accepted_too() {
    let (dir, result) = unpack_new(
        &tar_bytes(&[E::File("a.txt", b"x", 0o644)]),
        &Limits::default(),
    );
    result.unwrap();
    assert_eq!(fs::read(dir.path().join("a.txt")).unwrap(), b"x");
}

#[test]
fn refuses_absolute_paths() {
    refused(
        &[E::File("/etc/evil", b"x", 0o644)],
        "/etc/evil",
        "absolute",
    );
}

#[test]
fn refuses_parent_components() {
    refused(
        &[E::File("a/../../evil", b"x", 0o644)],
        "a/../../evil",
        "\"..\"",
    );
    refused(&[E::Dir("../up", 0o755)], "../up", "\"..\"");
}

#[test]
fn refuses_symlinks_out_of_the_bundle() {
    refused(
        &[E::Link("passwd", "/etc/passwd")],
        "passwd",
        "outside the bundle",
    );
    refused(&[E::Link("a/up", "../../x")], "a/up", "outside the bundle");
    // Lexically inside, but through another link it climbs out: only the
    // final, resolved check can see it.
    refused(
        &[
            E::Dir("c", 0o755),
            E::Link("a/b", "../c"),
            E::Link("x", "a/b/../.."),
        ],
        "x",
        "does not resolve",
    );
    refused(
        &[E::Link("dangling", "nothing")],
        "dangling",
        "does not resolve",
    );
}

#[test]
fn refuses_writing_through_a_symlink() {
    refused(
        &[
            E::Dir("sub", 0o755),
            E::Link("l", "sub"),
            E::File("l/file", b"x", 0o644),
        ],
        "l/file",
        "goes through the symbolic link",
    );
}

#[test]
fn refuses_hard_links_devices_and_fifos() {
    refused(
        &[
            E::File("a", b"x", 0o644),
            E::Other("b", EntryType::Link, "a"),
        ],
        "b",
        "hard links",
    );
    refused(&[E::Other("null", EntryType::Char, "")], "null", "device");
    refused(&[E::Other("sda", EntryType::Block, "")], "sda", "device");
    refused(&[E::Other("pipe", EntryType::Fifo, "")], "pipe", "FIFO");
}

#[test]
fn refuses_duplicates() {
    refused(
        &[E::File("a", b"1", 0o644), E::File("a", b"2", 0o644)],
        "a",
        "twice",
    );
    refused(
        &[E::File("a", b"1", 0o644), E::File("a/b", b"2", 0o644)],
        "a/b",
        "both a file and a directory",
    );
}

#[test]
fn refuses_too_many_files() {
    let limits = Limits {
        max_files: 3,
        ..Limits::default()
    };
    let archive = gz(&tar_bytes(&[
        E::File("1", b"", 0o644),
        E::File("2", b"", 0o644),
        E::File("3", b"", 0o644),
    ]));
    unpack_new(&archive, &limits).1.unwrap();
    // Implied parent directories count too.
    let archive = gz(&tar_bytes(&[E::File("a/b/c/d", b"", 0o644)]));
    match unpack_new(&archive, &limits).1 {
        Err(BundleError::TooManyFiles { limit: 3 }) => {}
        other => panic!("{other:?}"),
    }
}

/// An endless tar stream of files of `size` zero bytes each, counting
/// what is read from it.
struct EndlessTar {
    size: u64,
    next: u64,
    header: Vec<u8>,
    zeros_left: u64,
    produced: Rc<Cell<u64>>,
}

impl Read for EndlessTar {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.header.is_empty() && self.zeros_left == 0 {
            let name = format!("f{}", self.next);
            self.next += 1;
            let h = header(name.as_bytes(), EntryType::Regular, self.size, 0o644, b"");
            self.header = h.as_bytes().to_vec();
            self.zeros_left = self.size.div_ceil(512) * 512;
        }
        let n = if !self.header.is_empty() {
            let n = out.len().min(self.header.len());
            out[..n].copy_from_slice(&self.header[..n]);
            self.header.drain(..n);
            n
        } else {
            let n = out
                .len()
                .min(usize::try_from(self.zeros_left).unwrap_or(usize::MAX));
            out[..n].fill(0);
            self.zeros_left -= n as u64;
            n
        };
        self.produced.set(self.produced.get() + n as u64);
        Ok(n)
    }
}

fn endless(size: u64) -> (EndlessTar, Rc<Cell<u64>>) {
    let produced = Rc::new(Cell::new(0));
    let tar = EndlessTar {
        size,
        next: 0,
        header: Vec::new(),
        zeros_left: 0,
        produced: Rc::clone(&produced),
    };
    (tar, produced)
}

#[test]
fn gzip_bomb_stops_at_the_limit() {
    let limits = Limits {
        max_bytes: 4 << 20,
        ..Limits::default()
    };
    // Files of 512 KiB, gzipped on the fly, forever.
    let (tar, produced) = endless(512 << 10);
    let bomb = flate2::read::GzEncoder::new(tar, flate2::Compression::fast());
    let dir = tempfile::tempdir().unwrap();
    match unpack(bomb, dir.path(), &limits) {
        Err(BundleError::TooLarge { limit }) => assert_eq!(limit, 4 << 20),
        other => panic!("{other:?}"),
    }
    // The encoder reads ahead of what unpack() asks for: allow for it.
    assert!(produced.get() < 16 << 20, "read {} bytes", produced.get());
    let written: u64 = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(written <= 4 << 20);

    // One file declared far bigger than the limit: refused before its
    // contents are read (uncompressed, so that `produced` is exact).
    let (tar, produced) = endless(1 << 40);
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        unpack(tar, dir.path(), &limits),
        Err(BundleError::TooLarge { .. })
    ));
    assert!(produced.get() <= 64 << 10, "read {} bytes", produced.get());
}

#[test]
fn data_of_non_file_entries_is_capped() {
    // A directory that claims a terabyte of data, then endless zeros.
    let mut stream = header(b"d", EntryType::Directory, 1 << 40, 0o755, b"")
        .as_bytes()
        .to_vec();
    stream.extend_from_slice(&[0; 512]);
    let produced = Rc::new(Cell::new(0u64));
    struct Zeros(Rc<Cell<u64>>);
    impl Read for Zeros {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            out.fill(0);
            self.0.set(self.0.get() + out.len() as u64);
            Ok(out.len())
        }
    }
    let input = Cursor::new(stream).chain(Zeros(Rc::clone(&produced)));
    let dir = tempfile::tempdir().unwrap();
    match unpack(input, dir.path(), &Limits::default()) {
        Err(BundleError::Archive { detail }) => assert!(detail.contains("\"d\""), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(produced.get() < 2 << 20, "read {} bytes", produced.get());
}

#[test]
fn destination_must_be_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("x"), "").unwrap();
    let archive = gz(&tar_bytes(&[E::File("a", b"", 0o644)]));
    assert!(matches!(
        unpack(&archive[..], dir.path(), &Limits::default()),
        Err(BundleError::Destination { .. })
    ));
    assert!(matches!(
        unpack(
            &archive[..],
            &dir.path().join("missing"),
            &Limits::default()
        ),
        Err(BundleError::Destination { .. })
    ));
}

#[test]
fn garbage_and_empty_archives_are_refused() {
    for input in [
        &b"this is not an archive at all, not even close"[..],
        &gz(b"junk")[..],
        b"",
    ] {
        let (_dir, result) = unpack_new(input, &Limits::default());
        assert!(
            matches!(result, Err(BundleError::Archive { .. })),
            "{result:?}"
        );
    }
    let (_dir, result) = unpack_new(&gz(&tar_bytes(&[])), &Limits::default());
    let message = result.unwrap_err().to_string();
    assert!(message.contains("no files"), "{message}");
    // A truncated upload.
    let whole = gz(&tar_bytes(&[E::File("a", &[7; 100_000], 0o644)]));
    let (_dir, result) = unpack_new(&whole[..whole.len() / 2], &Limits::default());
    assert!(
        matches!(result, Err(BundleError::Archive { .. })),
        "{result:?}"
    );
}

// ----- manifest -------------------------------------------------------

fn bundle_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

pub(super) fn manifest_json(mode: &str, extra_metadata: &str, rest: &str) -> String {
    format!(
        r#"{{"version": 1, "metadata": {{"appmode": "{mode}"{extra_metadata}}}{rest}, "files": {{}}}}"#
    )
}

fn read(files: &[(&str, &str)]) -> Result<Manifest, BundleError> {
    let dir = bundle_with(files);
    read_manifest(dir.path())
}

#[test]
fn app_mode_names_round_trip() {
    for mode in AppMode::ALL {
        assert_eq!(AppMode::parse(mode.as_str()), Some(mode));
        assert_eq!(mode.is_interactive(), mode != AppMode::Static);
    }
    assert_eq!(
        AppMode::parse("python-fastapi"),
        Some(AppMode::PythonFastapi)
    );
    assert_eq!(AppMode::parse("Static"), None);
}

#[test]
fn every_mode_parses() {
    let m = read(&[
        (
            "manifest.json",
            &manifest_json("static", r#", "primary_html": "home.html""#, ""),
        ),
        ("home.html", "<p>hi</p>"),
    ])
    .unwrap();
    assert_eq!(m.app_mode, AppMode::Static);
    assert_eq!(m.primary_html.as_deref(), Some("home.html"));
    assert_eq!(m.entrypoint, "home.html");

    let python = r#", "python": {"version": "3.11.2", "package_manager": {"name": "pip", "package_file": "reqs/prod.txt"}}"#;
    let m = read(&[
        (
            "manifest.json",
            &manifest_json("python-api", r#", "entrypoint": "app:server""#, python),
        ),
        ("reqs/prod.txt", "flask\n"),
    ])
    .unwrap();
    assert_eq!(
        (m.app_mode, m.entrypoint.as_str()),
        (AppMode::PythonApi, "app:server")
    );
    assert_eq!(m.python_requirements.as_deref(), Some("reqs/prod.txt"));
    assert_eq!(m.python_version.as_deref(), Some("3.11.2"));

    let m = read(&[
        ("manifest.json", &manifest_json("python-fastapi", "", "")),
        ("requirements.txt", "fastapi\n"),
    ])
    .unwrap();
    assert_eq!(
        (m.app_mode, m.entrypoint.as_str()),
        (AppMode::PythonFastapi, "app:app")
    );
    assert_eq!(m.python_requirements.as_deref(), Some("requirements.txt"));

    let m = read(&[
        (
            "manifest.json",
            &manifest_json("python-shiny", r#", "entrypoint": "main.py""#, ""),
        ),
        ("main.py", ""),
    ])
    .unwrap();
    assert_eq!(
        (m.app_mode, m.entrypoint.as_str()),
        (AppMode::PythonShiny, "main:app")
    );
    assert_eq!(m.python_requirements, None);

    let m = read(&[
        ("manifest.json", &manifest_json("python-streamlit", "", "")),
        ("streamlit_app.py", ""),
    ])
    .unwrap();
    assert_eq!(
        (m.app_mode, m.entrypoint.as_str()),
        (AppMode::PythonStreamlit, "streamlit_app.py")
    );

    let m = read(&[
        ("manifest.json", &manifest_json("nodejs", "", "")),
        ("package.json", r#"{"main": "./src/server.js"}"#),
        ("package-lock.json", "{}"),
        ("src/server.js", ""),
    ])
    .unwrap();
    assert_eq!(
        (m.app_mode, m.entrypoint.as_str()),
        (AppMode::Nodejs, "src/server.js")
    );
    assert!(m.package_json);
    assert_eq!(m.npm_lockfile.as_deref(), Some("package-lock.json"));

    let m = read(&[
        (
            "manifest.json",
            &manifest_json("nodejs", r#", "entrypoint": "./app.js""#, ""),
        ),
        ("app.js", ""),
    ])
    .unwrap();
    assert_eq!(m.entrypoint, "app.js");
    assert!(!m.package_json);
}

fn manifest_problem(files: &[(&str, &str)]) -> String {
    match read(files) {
        Ok(m) => panic!("accepted: {m:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn manifest_errors_say_what_to_fix() {
    let p = manifest_problem(&[("app.py", "")]);
    assert!(p.contains("no manifest.json"), "{p}");
    let p = manifest_problem(&[("myapp/manifest.json", "{}"), ("myapp/app.py", "")]);
    assert!(p.contains("-C myapp ."), "{p}");
    let p = manifest_problem(&[("manifest.json", "{\"metadata\": ")]);
    assert!(p.contains("not valid JSON"), "{p}");
    let p = manifest_problem(&[("manifest.json", r#"{"metadata": {"appmode": 3}}"#)]);
    assert!(p.contains("unexpected content"), "{p}");
    let p = manifest_problem(&[("manifest.json", r#"{"version": 1}"#)]);
    assert!(p.contains("\"metadata\" is missing"), "{p}");
    let p = manifest_problem(&[("manifest.json", r#"{"metadata": {}}"#)]);
    assert!(
        p.contains("appmode\" is missing") && p.contains("python-fastapi"),
        "{p}"
    );
    let p = manifest_problem(&[(
        "manifest.json",
        r#"{"version": 2, "metadata": {"appmode": "static"}}"#,
    )]);
    assert!(p.contains("version 1"), "{p}");
    let p = manifest_problem(&[("manifest.json", &manifest_json("python-flask", "", ""))]);
    assert!(
        p.contains("unknown app mode \"python-flask\"") && p.contains("\"python-api\""),
        "{p}"
    );
    for r_mode in ["shiny", "rmd-shiny", "api"] {
        match read(&[("manifest.json", &manifest_json(r_mode, "", ""))]) {
            Err(e @ BundleError::UnsupportedMode { .. }) => {
                let p = e.to_string();
                assert!(p.contains("R content") && p.contains("\"nodejs\""), "{p}");
            }
            other => panic!("{other:?}"),
        }
    }
    let p = manifest_problem(&[("manifest.json", &manifest_json("rmd-static", "", ""))]);
    assert!(p.contains("\"static\""), "{p}");
    let p = manifest_problem(&[("manifest.json", &manifest_json("python-dash", "", ""))]);
    assert!(p.contains("app.server"), "{p}");

    // Entry points.
    for bad in [
        "app:app()",
        "os;rm:x",
        "../evil:app",
        "app:",
        ":app",
        "1app:app",
        "a b:c",
    ] {
        let meta = format!(r#", "entrypoint": "{bad}""#);
        let p = manifest_problem(&[("manifest.json", &manifest_json("python-fastapi", &meta, ""))]);
        assert!(p.contains("module:object"), "{bad}: {p}");
    }
    let p = manifest_problem(&[(
        "manifest.json",
        &manifest_json("python-streamlit", r#", "entrypoint": "dashboard.py""#, ""),
    )]);
    assert!(p.contains("\"dashboard.py\", which is not a file"), "{p}");
    let p = manifest_problem(&[("manifest.json", &manifest_json("python-streamlit", "", ""))]);
    assert!(p.contains("no app.py"), "{p}");
    let p = manifest_problem(&[(
        "manifest.json",
        &manifest_json("nodejs", r#", "entrypoint": "../server.js""#, ""),
    )]);
    assert!(p.contains("inside the bundle"), "{p}");
    let p = manifest_problem(&[(
        "manifest.json",
        &manifest_json("nodejs", r#", "entrypoint": "/etc/passwd""#, ""),
    )]);
    assert!(p.contains("inside the bundle"), "{p}");
    let p = manifest_problem(&[("manifest.json", &manifest_json("nodejs", "", ""))]);
    assert!(p.contains("server.js"), "{p}");
    let p = manifest_problem(&[("manifest.json", &manifest_json("static", "", ""))]);
    assert!(p.contains("no index.html"), "{p}");
    let p = manifest_problem(&[(
        "manifest.json",
        &manifest_json(
            "python-api",
            "",
            r#", "python": {"package_manager": {"name": "pip", "package_file": "requirements.txt"}}"#,
        ),
    )]);
    assert!(
        p.contains("\"requirements.txt\", which is not a file"),
        "{p}"
    );
}

#[test]
fn manifest_files_must_not_lead_out_of_the_bundle() {
    let outside = bundle_with(&[("index.html", "outside")]);
    let dir = bundle_with(&[(
        "manifest.json",
        &manifest_json("static", r#", "primary_html": "index.html""#, ""),
    )]);
    std::os::unix::fs::symlink(
        outside.path().join("index.html"),
        dir.path().join("index.html"),
    )
    .unwrap();
    let p = read_manifest(dir.path()).unwrap_err().to_string();
    assert!(p.contains("not a file in the bundle"), "{p}");
}

// ----- steps ----------------------------------------------------------

#[test]
fn requirement_names_are_normalized() {
    let names = requirement_names(
        "# comment\nFlask>=2.0  # web\nuvicorn[standard]==0.30\n-r other.txt\n--index-url x\n\
             Zope.Interface\nweb_socket-client ; python_version > '3'\n\n",
    );
    let mut names: Vec<_> = names.into_iter().collect();
    names.sort();
    assert_eq!(
        names,
        ["flask", "uvicorn", "web-socket-client", "zope-interface"]
    );
    let named = requirement_names("fastapi\nUvicorn\n");
    assert_eq!(
        ensured_packages(AppMode::PythonFastapi, &named),
        ["websockets"]
    );
    assert_eq!(
        ensured_packages(AppMode::PythonShiny, &HashSet::new()),
        ["uvicorn", "websockets"]
    );
    assert_eq!(
        ensured_packages(AppMode::PythonStreamlit, &HashSet::new()),
        ["streamlit"]
    );
    assert!(ensured_packages(AppMode::PythonApi, &HashSet::new()).is_empty());
}

#[test]
fn steps_have_the_documented_shape() {
    let rt = Runtimes {
        cache_dir: PathBuf::from("/cache"),
        ..Runtimes::default()
    };
    let bundle = bundle_with(&[
        (
            "manifest.json",
            &manifest_json("python-fastapi", r#", "entrypoint": "main:api""#, ""),
        ),
        ("main.py", ""),
        ("requirements.txt", "fastapi\n"),
    ]);
    let m = read_manifest(bundle.path()).unwrap();
    let env = Path::new("/env");
    let steps = build_steps(&m, bundle.path(), env, &rt).unwrap();
    assert_eq!(steps.len(), 2, "{steps:#?}");
    assert_eq!(steps[0].program, Path::new("/usr/bin/python3"));
    assert_eq!(steps[0].args, ["-m", "venv", "/env/venv"]);
    assert_eq!(steps[1].program, Path::new("/env/venv/bin/python"));
    let pip: Vec<_> = steps[1]
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert!(pip.ends_with(&[
        "-r".to_owned(),
        bundle.path().join("requirements.txt").display().to_string(),
        "uvicorn".to_owned(),
        "websockets".to_owned()
    ]));
    assert!(steps[1]
        .env
        .contains(&(os("PIP_CACHE_DIR"), os("/cache/pip"))));

    let run = run_step(
        &m,
        bundle.path(),
        env,
        Path::new("/work"),
        Listen::Unix(Path::new("/s/app.sock")),
        &rt,
    )
    .unwrap();
    assert_eq!(run.cwd, Path::new("/work"));
    assert_eq!(
        run.args[..4],
        [os("-m"), os("uvicorn"), os("--uds"), os("/s/app.sock")]
    );
    assert_eq!(run.args.last(), Some(&os("main:api")));
    assert!(run.env.contains(&(os("PYTHONDONTWRITEBYTECODE"), os("1"))));
    assert!(
        run.command_line().contains("--forwarded-allow-ips '*'"),
        "{}",
        run.command_line()
    );

    let err = build_steps(&m, Path::new("bundle"), env, &rt).unwrap_err();
    assert!(matches!(err, BundleError::RelativePath { .. }));

    let static_m = Manifest {
        app_mode: AppMode::Static,
        entrypoint: "index.html".into(),
        python_requirements: None,
        primary_html: Some("index.html".into()),
        python_version: None,
        package_json: false,
        npm_lockfile: None,
    };
    assert!(build_steps(&static_m, bundle.path(), env, &rt)
        .unwrap()
        .is_empty());
    assert!(run_step(&static_m, bundle.path(), env, env, Listen::Unix(env), &rt).is_none());
}

#[test]
fn file_urls_are_escaped() {
    assert_eq!(
        file_url(Path::new("/a b/c#d%/é.mjs")),
        "file:///a%20b/c%23d%25/%C3%A9.mjs"
    );
}

// ----- end to end -----------------------------------------------------

/// Runs the build steps as they are (no sandbox), failing with their output.
fn build(m: &Manifest, bundle: &Path, env: &Path, rt: &Runtimes) {
    for step in build_steps(m, bundle, env, rt).unwrap() {
        let started = Instant::now();
        // As connectd does: HOME is the build's cache, not anyone's home.
        let out = step
            .to_command()
            .env("HOME", &rt.cache_dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build step \"{}\" failed ({}):\n$ {}\n--- stdout\n{}\n--- stderr\n{}",
            step.description,
            out.status,
            step.command_line(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{} ({:.1?})", step.description, started.elapsed());
    }
}

/// A started app; killed when dropped.
struct App {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
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

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }
}

fn start(m: &Manifest, bundle: &Path, env: &Path, work: &Path, rt: &Runtimes) -> App {
    let socket = work.join("app.sock");
    let step = run_step(m, bundle, env, work, Listen::Unix(&socket), rt).unwrap();
    let log = work.join("app.log");
    let log_file = fs::File::create(&log).unwrap();
    let child = step
        .to_command()
        .env("HOME", work)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let mut app = App { child, socket, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if UnixStream::connect(&app.socket).is_ok() {
            return app;
        }
        if let Ok(Some(status)) = app.child.try_wait() {
            panic!(
                "the app exited ({status}) before listening:\n$ {}\n{}",
                step.command_line(),
                app.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the app did not listen on {} within 60 s:\n{}",
            app.socket.display(),
            app.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(super) struct Response {
    pub(super) status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one HTTP/1.1 response (Content-Length, chunked, or to the end).
pub(super) fn read_response(r: &mut impl BufRead) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap();
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(length) = response.header("content-length") {
        let mut body = vec![0; length.parse().unwrap()];
        r.read_exact(&mut body).unwrap();
        response.body = body;
    } else if response.header("transfer-encoding") == Some("chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            response.body.extend_from_slice(&chunk[..size]);
        }
    } else {
        r.read_to_end(&mut response.body).unwrap();
    }
    response
}

fn get(app: &App, path: &str) -> Response {
    let mut s = app.connect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_response(&mut BufReader::new(s))
}

pub(super) struct Deployed {
    _dirs: tempfile::TempDir,
    pub(super) bundle: PathBuf,
    pub(super) env: PathBuf,
    pub(super) work: PathBuf,
    pub(super) rt: Runtimes,
    pub(super) manifest: Manifest,
}

/// Packs `files` into a .tar.gz, unpacks, reads the manifest and builds:
/// the whole deployment, as connectd does it.
pub(super) fn deploy(files: &[(&str, &str)]) -> Deployed {
    let dirs = tempfile::tempdir().unwrap();
    let (bundle, env, work, cache) = (
        dirs.path().join("bundle"),
        dirs.path().join("env"),
        dirs.path().join("work"),
        dirs.path().join("cache"),
    );
    for d in [&bundle, &env, &work, &cache] {
        fs::create_dir(d).unwrap();
    }
    let entries: Vec<E<'_>> = files
        .iter()
        .map(|(name, text)| E::File(name, text.as_bytes(), 0o644))
        .collect();
    unpack(&gz(&tar_bytes(&entries))[..], &bundle, &Limits::default()).unwrap();
    let manifest = read_manifest(&bundle).unwrap();
    let rt = Runtimes {
        cache_dir: cache,
        ..Runtimes::default()
    };
    build(&manifest, &bundle, &env, &rt);
    Deployed {
        _dirs: dirs,
        bundle,
        env,
        work,
        rt,
        manifest,
    }
}

impl Deployed {
    fn start(&self) -> App {
        start(
            &self.manifest,
            &self.bundle,
            &self.env,
            &self.work,
            &self.rt,
        )
    }
}

const WSGI_APP: &str = r#"
import os

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part %d\n" % i for i in range(3))
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    with open("visits.txt", "a") as f:  # cwd is the shared working directory
        f.write(path + "\n")
    text = "%s %s?%s from %s via %s: %r" % (
        environ["REQUEST_METHOD"], path, environ["QUERY_STRING"],
        environ["REMOTE_ADDR"], environ["wsgi.url_scheme"], body)
    start_response("201 Created", [("Content-Type", "text/plain"), ("X-Cwd", os.getcwd())])
    return [text.encode()]
"#;

#[test]
fn wsgi_app_end_to_end() {
    let d = deploy(&[
        (
            "manifest.json",
            &manifest_json("python-api", r#", "entrypoint": "hello:app""#, ""),
        ),
        ("hello.py", WSGI_APP),
    ]);
    assert!(d.env.join("venv/bin/python").exists());
    assert_eq!(
        fs::read_to_string(d.env.join(WSGI_RUNNER_FILE)).unwrap(),
        WSGI_RUNNER
    );
    let app = d.start();
    assert!(fs::symlink_metadata(&app.socket)
        .unwrap()
        .file_type()
        .is_socket());

    let r = get(&app, "/hello%20world?x=1");
    assert_eq!(r.status, 201, "{}\n{}", r.text(), app.log());
    assert_eq!(
        r.text(),
        "GET /hello world?x=1 from 127.0.0.1 via http: b''"
    );
    assert_eq!(r.header("x-cwd"), Some(d.work.to_str().unwrap()));

    // Keep-alive: a POST with a body, then a chunked response, on one
    // connection; the proxy's forwarding headers are honoured.
    let s = app.connect();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    write!(
        w,
        "POST /submit HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
             X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\
             Content-Length: 11\r\n\r\nhello there"
    )
    .unwrap();
    let r = read_response(&mut reader);
    assert_eq!(r.status, 201);
    assert_eq!(
        r.text(),
        "POST /submit? from 203.0.113.7 via https: b'hello there'"
    );
    write!(w, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let r = read_response(&mut reader);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "part 0\npart 1\npart 2\n");

    assert_eq!(
        fs::read_to_string(d.work.join("visits.txt")).unwrap(),
        "/hello world\n/submit\n"
    );
    let log = app.log();
    assert!(log.contains("\"POST /submit HTTP/1.1\" 201"), "{log}");
    // Nothing written next to the code.
    assert!(!d.bundle.join("__pycache__").exists());
}

#[test]
fn wsgi_app_that_fails_to_import_reports_it() {
    let d = deploy(&[
        ("manifest.json", &manifest_json("python-api", "", "")),
        ("app.py", "import no_such_module\n"),
    ]);
    let step = run_step(
        &d.manifest,
        &d.bundle,
        &d.env,
        &d.work,
        Listen::Unix(&d.work.join("s")),
        &d.rt,
    )
    .unwrap();
    let out = step.to_command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No module named 'no_such_module'"), "{err}");
    assert!(!d.work.join("s").exists());
}

pub(super) const FASTAPI_APP: &str = r#"
from fastapi import FastAPI, Request, WebSocket

app = FastAPI()

@app.get("/")
def root(request: Request):
    return {"hello": "fastapi", "client": request.client.host if request.client else None,
            "scheme": request.url.scheme}

@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        await websocket.send_text("echo: " + text)
"#;

/// Opens a WebSocket (`extra`: more request headers, each ending in CRLF).
fn websocket_open(app: &App, path: &str, extra: &str) -> (UnixStream, BufReader<UnixStream>) {
    let mut s = app.connect();
    write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.contains(" 101 "), "{status}\n{}", app.log());
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
    }
    (s, reader)
}

/// Sends `text` as one masked WebSocket frame and reads one text frame.
fn websocket_echo(app: &App, path: &str, text: &str) -> String {
    let (mut s, mut reader) = websocket_open(app, path, "");
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
    let mut head = [0u8; 2];
    reader.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x81, "a final text frame");
    let mut payload = vec![0; usize::from(head[1] & 0x7f)];
    reader.read_exact(&mut payload).unwrap();
    String::from_utf8(payload).unwrap()
}

#[test]
fn fastapi_app_end_to_end() {
    let d = deploy(&[
        (
            "manifest.json",
            &manifest_json("python-fastapi", r#", "entrypoint": "main:app""#, ""),
        ),
        ("main.py", FASTAPI_APP),
        ("requirements.txt", "fastapi\n"),
    ]);
    let app = d.start();
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
    assert_eq!(websocket_echo(&app, "/ws", "ping"), "echo: ping");
}

const NODE_SERVER: &str = r#"
const http = require('http');
const server = http.createServer(async (req, res) => {
  let extra = '';
  if (process.env.NODE_PATH) {
    const isNumber = require('is-number');
    const esm = await import('./esm.mjs');
    extra = ` cjs:${isNumber('42')} esm:${esm.check('x')}`;
  }
  res.setHeader('Content-Type', 'text/plain');
  res.end(`node ${req.method} ${req.url}${extra}`);
});
server.listen(process.env.PORT, () => console.log('listening on', process.env.PORT));
"#;

const NODE_ESM: &str = r#"
import isNumber from 'is-number';
export function check(value) { return isNumber(value); }
"#;

#[test]
fn node_app_without_packages_end_to_end() {
    let d = deploy(&[
        (
            "manifest.json",
            &manifest_json("nodejs", r#", "entrypoint": "server.js""#, ""),
        ),
        ("server.js", NODE_SERVER),
    ]);
    let app = d.start();
    let r = get(&app, "/hi");
    assert_eq!(r.status, 200, "{}", app.log());
    assert_eq!(r.text(), "node GET /hi");
}

#[test]
fn node_app_with_an_npm_package_end_to_end() {
    let package = r#"{"name": "demo", "version": "1.0.0", "main": "server.js",
            "scripts": {"postinstall": "node setup-that-is-not-in-env-dir.js"},
            "dependencies": {"is-number": "^7.0.0"}}"#;
    let d = deploy(&[
        ("manifest.json", &manifest_json("nodejs", "", "")),
        ("package.json", package),
        ("server.js", NODE_SERVER),
        ("esm.mjs", NODE_ESM),
    ]);
    assert!(d.env.join("node_modules/is-number/package.json").exists());
    assert!(!d.bundle.join("node_modules").exists());
    let app = d.start();
    let r = get(&app, "/pkg");
    assert_eq!(r.status, 200, "{}", app.log());
    assert_eq!(r.text(), "node GET /pkg cjs:true esm:false");
}

/// Also checks that the launcher's Unix socket support still works with
/// the newest Streamlit (it patches a private function: see
/// connect_streamlit.py).
#[test]
fn streamlit_app_end_to_end() {
    let d = deploy(&[
        ("manifest.json", &manifest_json("python-streamlit", "", "")),
        ("app.py", "import streamlit as st\nst.write('hello')\n"),
    ]);
    let app = d.start();
    let r = get(&app, "/_stcore/health");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", app.log());
    let r = get(&app, "/");
    assert!(
        r.text().contains("<title>Streamlit</title>"),
        "{}",
        r.text()
    );
    websocket_open(
        &app,
        "/_stcore/stream",
        "Sec-WebSocket-Protocol: streamlit\r\n",
    );
}
