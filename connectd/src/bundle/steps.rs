//! The commands that build each app mode's environment and run its
//! processes, as [`Step`]s: what to run, with which arguments and
//! environment. Running them (user, sandbox, logs) is the caller's job.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::*;

/// The interpreters and tools the build and the apps use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtimes {
    /// Creates each app's virtual environment, which keeps pointing at it:
    /// it must be readable and executable by the apps' users.
    pub python: PathBuf,
    pub node: PathBuf,
    /// npm's entry script; run with [`Runtimes::node`], so that it works
    /// whatever PATH the build has.
    pub npm: PathBuf,
    /// Writable by the build: pip's and npm's download caches go below it.
    pub cache_dir: PathBuf,
}

impl Default for Runtimes {
    fn default() -> Self {
        Runtimes {
            python: PathBuf::from("/usr/bin/python3"),
            node: PathBuf::from("/usr/bin/node"),
            npm: PathBuf::from("/usr/bin/npm"),
            cache_dir: PathBuf::from("/var/cache/connectd"),
        }
    }
}

/// One command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Only what this step adds; the caller supplies PATH, HOME, LANG, TMPDIR...
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    /// What the step does, for logs and build output ("install the Python
    /// packages").
    pub description: String,
}

impl Step {
    /// The command line, quoted for a POSIX shell, for logs. Arguments longer
    /// than 200 bytes (the runners' source) are shortened.
    pub fn command_line(&self) -> String {
        let mut words = vec![shell_quote(self.program.as_os_str())];
        for arg in &self.args {
            if arg.len() > 200 {
                words.push(format!("<{} bytes>", arg.len()));
            } else {
                words.push(shell_quote(arg));
            }
        }
        words.join(" ")
    }

    /// A [`std::process::Command`] with the step's program, arguments, added
    /// environment and working directory (nothing else is changed).
    pub fn to_command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd);
        command
    }
}

fn shell_quote(word: &OsStr) -> String {
    let s = word.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn require_absolute(what: &'static str, path: &Path) -> Result<(), BundleError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(BundleError::RelativePath {
            what,
            path: path.to_owned(),
        })
    }
}

pub(super) fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_owned()
}

fn env_pair(key: &str, value: impl AsRef<OsStr>) -> (OsString, OsString) {
    (os(key), os(value))
}

/// Writes pairs of (path, contents) given as arguments.
const PYTHON_WRITE_FILES: &str = r#"import sys
for i in range(1, len(sys.argv) - 1, 2):
    with open(sys.argv[i], "w", encoding="utf-8") as f:
        f.write(sys.argv[i + 1])
"#;

/// Same, in JavaScript (`node -e` puts the arguments from argv[1]).
const NODE_WRITE_FILES: &str = r#"const fs = require("fs");
for (let i = 1; i + 1 < process.argv.length; i += 2) {
  fs.writeFileSync(process.argv[i], process.argv[i + 1]);
}
"#;

/// Copies package.json without its "scripts", then the lockfile if given.
/// npm would run the package's own install/prepare scripts in env_dir, where
/// the files they use are not (they stay in the read-only bundle).
const NODE_COPY_PACKAGE: &str = r#"const fs = require("fs");
const [src, dst, lockSrc, lockDst] = process.argv.slice(1);
const pkg = JSON.parse(fs.readFileSync(src, "utf8"));
delete pkg.scripts;
fs.writeFileSync(dst, JSON.stringify(pkg, null, 2) + "\n");
if (lockSrc) fs.copyFileSync(lockSrc, lockDst);
"#;

/// Normalized names of the requirements a requirements file lists directly
/// (`Flask>=2` -> `flask`); options and includes are skipped.
pub(super) fn requirement_names(text: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for line in text.lines() {
        let line = line.trim_start();
        let line = match line.find(" #").or_else(|| line.find("\t#")) {
            Some(i) => &line[..i],
            None => line,
        };
        if line.starts_with('#') || line.starts_with('-') {
            continue;
        }
        let end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
            .unwrap_or(line.len());
        let name = &line[..end];
        if name.is_empty() {
            continue;
        }
        // PEP 503: case and runs of - _ . do not matter.
        let mut normalized = String::new();
        for c in name.chars() {
            if "-_.".contains(c) {
                if !normalized.ends_with('-') {
                    normalized.push('-');
                }
            } else {
                normalized.push(c.to_ascii_lowercase());
            }
        }
        names.insert(normalized);
    }
    names
}

/// Packages the run command needs besides the publisher's requirements.
pub(super) fn ensured_packages(mode: AppMode, named: &HashSet<String>) -> Vec<&'static str> {
    let mut extra = Vec::new();
    match mode {
        AppMode::PythonFastapi | AppMode::PythonShiny => {
            if !named.contains("uvicorn") {
                extra.push("uvicorn");
            }
            // uvicorn serves WebSockets only with one of these (Shiny needs them).
            if !named.contains("websockets") && !named.contains("wsproto") {
                extra.push("websockets");
            }
        }
        AppMode::PythonStreamlit if !named.contains("streamlit") => extra.push("streamlit"),
        _ => {}
    }
    extra
}

/// Steps that build the environment in `env_dir` (empty, writable by the
/// build) from the bundle in `bundle_dir` (read-only to the build). Run in
/// order; each must exit 0. Static content needs none.
///
/// - Python: `<python> -m venv <env_dir>/venv` (without pip when nothing is to
///   be installed), the runner file (python-api, streamlit), then one `pip
///   install -r <requirements>` plus what the run command needs and the
///   requirements do not name (uvicorn and websockets for ASGI modes,
///   streamlit). Env: PIP_CACHE_DIR=<cache_dir>/pip. cwd: the bundle, so
///   that relative paths in the requirements resolve.
/// - Node.js with a package.json: copy package.json (without "scripts") and
///   the lockfile into env_dir, `npm ci` (with a lockfile) or `npm install`,
///   `--omit=dev`, in env_dir, with npm_config_cache=<cache_dir>/npm; then
///   the ES module resolve hook. Without package.json: no steps.
///
/// The steps read the bundle (the requirements file here, now) and need the
/// network for PyPI and npm; they must run with a PATH that has the usual
/// tools (pip may compile packages, npm runs dependencies' install scripts).
pub fn build_steps(
    m: &Manifest,
    bundle_dir: &Path,
    env_dir: &Path,
    rt: &Runtimes,
) -> Result<Vec<Step>, BundleError> {
    require_absolute("the bundle directory", bundle_dir)?;
    require_absolute("the environment directory", env_dir)?;
    require_absolute("the cache directory", &rt.cache_dir)?;
    match m.app_mode {
        AppMode::Static => Ok(Vec::new()),
        AppMode::Nodejs => Ok(node_build_steps(m, bundle_dir, env_dir, rt)),
        AppMode::PythonApi
        | AppMode::PythonFastapi
        | AppMode::PythonShiny
        | AppMode::PythonStreamlit => python_build_steps(m, bundle_dir, env_dir, rt),
    }
}

fn python_build_steps(
    m: &Manifest,
    bundle_dir: &Path,
    env_dir: &Path,
    rt: &Runtimes,
) -> Result<Vec<Step>, BundleError> {
    let venv = env_dir.join("venv");
    let venv_python = venv.join("bin/python");
    let requirements = m.python_requirements.as_deref().map(|r| bundle_dir.join(r));
    let named = match &requirements {
        Some(path) => {
            let text = fs::read(path).map_err(|source| BundleError::Io {
                action: "cannot read",
                path: path.clone(),
                source,
            })?;
            requirement_names(&String::from_utf8_lossy(&text))
        }
        None => HashSet::new(),
    };
    let extra = ensured_packages(m.app_mode, &named);
    let install = requirements.is_some() || !extra.is_empty();

    let mut steps = Vec::new();
    let mut venv_args = vec![os("-m"), os("venv")];
    if !install {
        // ensurepip takes seconds; a stdlib-only WSGI app needs no pip.
        venv_args.push(os("--without-pip"));
    }
    venv_args.push(os(&venv));
    steps.push(Step {
        program: rt.python.clone(),
        args: venv_args,
        env: Vec::new(),
        cwd: env_dir.to_owned(),
        description: format!(
            "create the Python virtual environment with {}",
            rt.python.display()
        ),
    });

    let runner = match m.app_mode {
        AppMode::PythonApi => Some((WSGI_RUNNER_FILE, WSGI_RUNNER, "the WSGI server")),
        AppMode::PythonStreamlit => Some((
            STREAMLIT_RUNNER_FILE,
            STREAMLIT_RUNNER,
            "the Streamlit launcher",
        )),
        _ => None,
    };
    if let Some((file, source, what)) = runner {
        steps.push(Step {
            program: venv_python.clone(),
            args: vec![
                os("-c"),
                os(PYTHON_WRITE_FILES),
                os(env_dir.join(file)),
                os(source),
            ],
            env: Vec::new(),
            cwd: env_dir.to_owned(),
            description: format!("install {what} ({file})"),
        });
    }

    if install {
        let mut args = vec![
            os("-m"),
            os("pip"),
            os("install"),
            os("--no-input"),
            os("--disable-pip-version-check"),
            os("--progress-bar"),
            os("off"),
        ];
        let mut what = Vec::new();
        if let (Some(path), Some(name)) = (&requirements, &m.python_requirements) {
            args.push(os("-r"));
            args.push(os(path));
            what.push(name.clone());
        }
        // One pip run: the resolver sees the publisher's pins and ours together.
        for package in &extra {
            args.push(os(package));
            what.push((*package).to_owned());
        }
        steps.push(Step {
            program: venv_python,
            args,
            env: vec![
                env_pair("PIP_CACHE_DIR", rt.cache_dir.join("pip")),
                env_pair("PIP_NO_INPUT", "1"),
                env_pair("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
            ],
            cwd: bundle_dir.to_owned(),
            description: format!("install the Python packages ({})", what.join(", ")),
        });
    }
    Ok(steps)
}

fn node_build_steps(m: &Manifest, bundle_dir: &Path, env_dir: &Path, rt: &Runtimes) -> Vec<Step> {
    if !m.package_json {
        return Vec::new();
    }
    let mut copy_args = vec![
        os("-e"),
        os(NODE_COPY_PACKAGE),
        os(bundle_dir.join("package.json")),
        os(env_dir.join("package.json")),
    ];
    let mut copied = "package.json".to_owned();
    if let Some(lock) = &m.npm_lockfile {
        copy_args.push(os(bundle_dir.join(lock)));
        copy_args.push(os(env_dir.join(lock)));
        copied = format!("package.json and {lock}");
    }
    let npm_command = if m.npm_lockfile.is_some() {
        "ci"
    } else {
        "install"
    };
    vec![
        Step {
            program: rt.node.clone(),
            args: copy_args,
            env: Vec::new(),
            cwd: env_dir.to_owned(),
            description: format!("copy {copied} (without \"scripts\") to the environment"),
        },
        Step {
            program: rt.node.clone(),
            args: vec![
                os(&rt.npm),
                os(npm_command),
                os("--omit=dev"),
                os("--no-audit"),
                os("--no-fund"),
            ],
            env: vec![
                env_pair("npm_config_cache", rt.cache_dir.join("npm")),
                env_pair("npm_config_update_notifier", "false"),
            ],
            cwd: env_dir.to_owned(),
            description: format!("install the npm packages (npm {npm_command})"),
        },
        Step {
            program: rt.node.clone(),
            args: vec![
                os("-e"),
                os(NODE_WRITE_FILES),
                os(env_dir.join(NODE_ESM_REGISTER_FILE)),
                os(NODE_ESM_REGISTER),
                os(env_dir.join(NODE_ESM_HOOKS_FILE)),
                os(NODE_ESM_HOOKS),
            ],
            env: Vec::new(),
            cwd: env_dir.to_owned(),
            description: "install the ES module resolver for node_modules".to_owned(),
        },
    ]
}

/// `path` as a file: URL (for `node --import`, which takes URLs, not paths).
pub(super) fn file_url(path: &Path) -> OsString {
    let mut url = String::from("file://");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            url.push(byte as char);
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    OsString::from(url)
}

/// Where [`run_step`]'s process listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen<'a> {
    /// A Unix socket (the local launcher's).
    Unix(&'a Path),
    /// A TCP address (a pod's, say). Every mode can: the Python runners and
    /// uvicorn bind it; a Node.js app gets its port in `PORT` and, as
    /// `server.listen(process.env.PORT)` does, listens on every address of
    /// its machine (or pod) on that port.
    Tcp(SocketAddr),
}

impl Listen<'_> {
    /// `--socket PATH` or `--bind HOST:PORT`, as both runners take them.
    fn runner_args(self) -> [OsString; 2] {
        match self {
            Listen::Unix(socket) => [os("--socket"), os(socket)],
            // SocketAddr shows an IPv6 address in brackets, as they parse it.
            Listen::Tcp(address) => [os("--bind"), os(address.to_string())],
        }
    }
}

/// How to start one process of this app listening at `listen`; cwd =
/// `work_dir` (writable, shared by all this content's processes; the app
/// code stays in `bundle_dir`). None for static content.
///
/// The process reads `bundle_dir`, `env_dir` (and, through the venv, the
/// interpreter [`Runtimes::python`] or [`Runtimes::node`]) and writes
/// `work_dir` and the socket's directory. The socket must not exist or be a
/// stale socket (the Python runners and uvicorn replace a stale socket; Node
/// fails with EADDRINUSE); a TCP port must be free. It listens some time
/// after the start: connect with retries. The caller supplies PATH, HOME
/// (Streamlit writes `~/.streamlit`), LANG and TMPDIR. All paths must be
/// absolute (the process runs in `work_dir`); [`build_steps`] checks that
/// for the same directories.
pub fn run_step(
    m: &Manifest,
    bundle_dir: &Path,
    env_dir: &Path,
    work_dir: &Path,
    listen: Listen<'_>,
    rt: &Runtimes,
) -> Option<Step> {
    let venv_python = env_dir.join("venv/bin/python");
    let python_env = vec![
        env_pair("PYTHONUNBUFFERED", "1"),
        // The bundle is read-only, and the venv shared by all processes.
        env_pair("PYTHONDONTWRITEBYTECODE", "1"),
    ];
    let step = |program: PathBuf, args: Vec<OsString>, env, description: String| Step {
        program,
        args,
        env,
        cwd: work_dir.to_owned(),
        description,
    };
    // Both runners take the same arguments.
    let runner = |file: &str| {
        let mut args = vec![os(env_dir.join(file))];
        args.extend(listen.runner_args());
        args.extend([
            os("--app-dir"),
            os(bundle_dir),
            os("--entrypoint"),
            os(&m.entrypoint),
        ]);
        args
    };
    match m.app_mode {
        AppMode::Static => None,
        AppMode::PythonApi => Some(step(
            venv_python,
            runner(WSGI_RUNNER_FILE),
            python_env,
            format!("serve the WSGI app {}", m.entrypoint),
        )),
        AppMode::PythonFastapi | AppMode::PythonShiny => {
            let mut args = vec![os("-m"), os("uvicorn")];
            match listen {
                Listen::Unix(socket) => args.extend([os("--uds"), os(socket)]),
                // uvicorn takes an IPv6 host without brackets.
                Listen::Tcp(address) => args.extend([
                    os("--host"),
                    os(address.ip().to_string()),
                    os("--port"),
                    os(address.port().to_string()),
                ]),
            }
            args.extend([
                os("--app-dir"),
                os(bundle_dir),
                // Only connectd's proxy can reach the socket, and a Unix
                // socket's peer has no address to match: trust it with
                // X-Forwarded-For/-Proto. On TCP, connectd's address is not
                // known in advance; whoever hands out the address keeps
                // others from reaching it.
                os("--proxy-headers"),
                os("--forwarded-allow-ips"),
                os("*"),
                os(&m.entrypoint),
            ]);
            Some(step(
                venv_python,
                args,
                python_env,
                format!("serve the ASGI app {} with uvicorn", m.entrypoint),
            ))
        }
        AppMode::PythonStreamlit => Some(step(
            venv_python,
            runner(STREAMLIT_RUNNER_FILE),
            python_env,
            format!("run the Streamlit app {}", m.entrypoint),
        )),
        AppMode::Nodejs => {
            let mut args = Vec::new();
            let port = match listen {
                // server.listen(process.env.PORT) listens on a Unix socket
                // when PORT is not a number.
                Listen::Unix(socket) => os(socket),
                Listen::Tcp(address) => os(address.port().to_string()),
            };
            let mut env = vec![env_pair("PORT", port), env_pair("NODE_ENV", "production")];
            if m.package_json {
                // require() finds the packages through NODE_PATH, import
                // through the resolve hook.
                env.push(env_pair("NODE_PATH", env_dir.join("node_modules")));
                args.push(os("--import"));
                args.push(file_url(&env_dir.join(NODE_ESM_REGISTER_FILE)));
            }
            args.push(os(bundle_dir.join(&m.entrypoint)));
            Some(step(
                rt.node.clone(),
                args,
                env,
                format!("run the Node.js app {}", m.entrypoint),
            ))
        }
    }
}
