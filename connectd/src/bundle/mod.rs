//! Content bundles: safe unpacking, the manifest, and the commands that build and run each app mode.
//!
//! A publisher uploads a `.tar.gz` (or plain `.tar`) whose root holds
//! `manifest.json` and the app's files, as Posit Connect's publishing tools
//! make it. connectd then:
//!
//! 1. [`unpack`]s it into an empty directory, refusing anything that could
//!    write or point outside it and stopping at [`Limits`];
//! 2. [`read_manifest`]s it, which checks that the files it names exist;
//! 3. runs the [`build_steps`] in order, as the build's user, to fill an
//!    environment directory (`env_dir`: a Python venv, npm packages, runners);
//! 4. starts processes with [`run_step`], each listening on a Unix socket
//!    (or a TCP address, for a launcher whose processes run elsewhere).
//!
//! The functions that describe commands ([`build_steps`], [`run_step`]) only
//! return [`Step`]s; running them (user, sandbox, PATH, HOME, limits, logs) is
//! the caller's business.
//!
//! # What lives where
//!
//! - `bundle_dir`: the unpacked bundle, read-only to the build and the app.
//! - `env_dir/venv`: Python modes: the virtual environment.
//! - `env_dir/connect_wsgi.py`: python-api: the WSGI server ([`WSGI_RUNNER`]).
//! - `env_dir/connect_streamlit.py`: python-streamlit: the launcher
//!   ([`STREAMLIT_RUNNER`]).
//! - `env_dir/package.json`, the lockfile, `env_dir/node_modules`, and
//!   `env_dir/connect_node_register.mjs` + `connect_node_hooks.mjs`: Node.js
//!   apps with a `package.json`.
//!
//! The runners are put in place by build steps (run as the build user, like
//! every other write to `env_dir`), not by connectd itself.
//!
//! `unpack`, `manifest` and `steps` hold one job each; this module keeps
//! the types they share. Imports nothing else of connectd, so the
//! scheduler, deployments and the store may all use it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The WSGI server that runs python-api content (stdlib only; see its docstring).
pub const WSGI_RUNNER: &str = include_str!("runtime/connect_wsgi.py");
/// Starts a Streamlit app on a Unix socket, whatever the Streamlit version,
/// or on a TCP address.
pub const STREAMLIT_RUNNER: &str = include_str!("runtime/connect_streamlit.py");
/// Preloaded with `node --import`: registers [`NODE_ESM_HOOKS`].
pub const NODE_ESM_REGISTER: &str = include_str!("runtime/connect_node_register.mjs");
/// Lets the app's ES modules import the packages in `env_dir/node_modules`.
pub const NODE_ESM_HOOKS: &str = include_str!("runtime/connect_node_hooks.mjs");

/// File names of the runners inside `env_dir`.
pub const WSGI_RUNNER_FILE: &str = "connect_wsgi.py";
pub const STREAMLIT_RUNNER_FILE: &str = "connect_streamlit.py";
pub const NODE_ESM_REGISTER_FILE: &str = "connect_node_register.mjs";
pub const NODE_ESM_HOOKS_FILE: &str = "connect_node_hooks.mjs";

// The runners travel to the build as command-line arguments (see
// `write_files_step`); Linux caps one argument at 128 KiB.
const _: () = assert!(WSGI_RUNNER.len() < 100_000);
const _: () = assert!(STREAMLIT_RUNNER.len() < 100_000);
const _: () = assert!(NODE_ESM_REGISTER.len() < 100_000);
const _: () = assert!(NODE_ESM_HOOKS.len() < 100_000);

/// How a content item is served. The names are Posit Connect's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppMode {
    /// Files served as they are.
    Static,
    /// A WSGI application (Flask, Django, ...), served by [`WSGI_RUNNER`].
    PythonApi,
    /// An ASGI application (FastAPI, Starlette, ...), served by uvicorn.
    PythonFastapi,
    /// A Shiny for Python app (ASGI), served by uvicorn.
    PythonShiny,
    /// A Streamlit script.
    PythonStreamlit,
    /// A Node.js program that listens on `process.env.PORT`.
    Nodejs,
}

impl AppMode {
    /// Every mode this server runs, in the order error messages list them.
    pub const ALL: [AppMode; 6] = [
        AppMode::Static,
        AppMode::PythonApi,
        AppMode::PythonFastapi,
        AppMode::PythonShiny,
        AppMode::PythonStreamlit,
        AppMode::Nodejs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AppMode::Static => "static",
            AppMode::PythonApi => "python-api",
            AppMode::PythonFastapi => "python-fastapi",
            AppMode::PythonShiny => "python-shiny",
            AppMode::PythonStreamlit => "python-streamlit",
            AppMode::Nodejs => "nodejs",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        AppMode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Whether the content runs processes (everything but static files).
    pub fn is_interactive(self) -> bool {
        self != AppMode::Static
    }

    fn is_python(self) -> bool {
        matches!(
            self,
            AppMode::PythonApi
                | AppMode::PythonFastapi
                | AppMode::PythonShiny
                | AppMode::PythonStreamlit
        )
    }
}

impl fmt::Display for AppMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn supported_modes() -> String {
    AppMode::ALL
        .iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What connectd needs from `manifest.json`, checked against the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub app_mode: AppMode,
    /// Python ASGI modes: `module:object`; python-api: `module:object` or
    /// `module` (the runner then looks for `app`, then `application`);
    /// streamlit and nodejs: a file in the bundle; static: the primary HTML
    /// file. File names are relative to the bundle's root, without `..`.
    pub entrypoint: String,
    /// Python modes: the requirements file in the bundle, if any.
    pub python_requirements: Option<String>,
    /// Static: the page served at the content's root (same as `entrypoint`).
    pub primary_html: Option<String>,
    /// Python modes: the version the publisher used (`python.version`), for
    /// information: the build uses [`Runtimes::python`] whatever it says.
    pub python_version: Option<String>,
    /// Node.js: whether the bundle has a `package.json` (then npm installs
    /// its dependencies at build time).
    pub package_json: bool,
    /// Node.js: `package-lock.json` or `npm-shrinkwrap.json` if the bundle
    /// has one (then the build runs `npm ci`, else `npm install`).
    pub npm_lockfile: Option<String>,
}

/// Bounds on what one bundle may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of file contents written.
    pub max_bytes: u64,
    /// Bytes of any one file.
    pub max_file_bytes: u64,
    /// Files, directories and symbolic links created.
    pub max_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 30,
            max_file_bytes: 1 << 30,
            max_files: 100_000,
        }
    }
}

/// Why a bundle cannot be deployed. The messages are meant for the publisher:
/// each says which file, what is wrong and what to do, except [`BundleError::Io`]
/// and [`BundleError::Destination`], which are the server's problems.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The directory to unpack into is missing, not a directory or not empty.
    #[error("cannot unpack the bundle into {}: {problem}", path.display())]
    Destination { path: PathBuf, problem: String },
    /// The upload is not a tar archive (gzipped or not), or it is truncated.
    #[error(
        "the bundle is not a valid .tar.gz archive ({detail}); create it with \
         `tar -czf bundle.tar.gz -C <app directory> .`"
    )]
    Archive { detail: String },
    /// One entry of the archive is refused.
    #[error("bundle entry \"{entry}\": {problem}")]
    Entry { entry: String, problem: String },
    #[error(
        "the bundle unpacks to more than {limit} bytes, this server's limit \
         ([Applications] MaxBundleUnpackedSize); leave out what the app does not need (data files, virtual environments, node_modules, .git)"
    )]
    TooLarge { limit: u64 },
    #[error(
        "bundle entry \"{entry}\" is larger than {limit} bytes, this server's limit for \
         one file ([Applications] MaxBundleFileSize); keep large data out of the bundle"
    )]
    FileTooLarge { entry: String, limit: u64 },
    #[error(
        "the bundle has more than {limit} files and directories, this server's limit; \
         leave out what the app does not need (virtual environments, node_modules, .git)"
    )]
    TooManyFiles { limit: u64 },
    /// manifest.json is missing, not JSON, or says something impossible.
    #[error("manifest.json: {problem}")]
    Manifest { problem: String },
    /// A mode Posit Connect knows but this server does not run.
    #[error(
        "manifest.json: app mode \"{mode}\" is not supported by this server: {hint}. \
         Supported app modes: {}",
        supported_modes()
    )]
    UnsupportedMode { mode: String, hint: String },
    /// The server could not read or write its own files (disk full, permissions).
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A caller passed a relative directory to [`build_steps`] or [`run_step`]:
    /// the steps run in other directories, where it would mean something else.
    #[error("{what} must be an absolute path, not {}", path.display())]
    RelativePath { what: &'static str, path: PathBuf },
}

fn entry_error(entry: &str, problem: impl Into<String>) -> BundleError {
    BundleError::Entry {
        entry: entry.to_owned(),
        problem: problem.into(),
    }
}

fn manifest_error(problem: impl Into<String>) -> BundleError {
    BundleError::Manifest {
        problem: problem.into(),
    }
}

#[cfg(test)]
mod listen_tests;
mod manifest;
#[cfg(test)]
mod run_tests;
mod steps;
#[cfg(test)]
mod tests;
mod unpack;
#[cfg(test)]
mod unpack_tests;

pub use manifest::read_manifest;
pub use steps::{build_steps, run_step, Listen, Runtimes, Step};
pub use unpack::unpack;
