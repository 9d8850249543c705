//! Tests of the manifest and of the build and run steps' shapes.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::steps::{ensured_packages, file_url, os, requirement_names};
use super::*;

// ----- manifest -------------------------------------------------------

pub(super) fn bundle_with(files: &[(&str, &str)]) -> tempfile::TempDir {
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
