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
//! 4. starts processes with [`run_step`], each listening on a Unix socket.
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

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// The WSGI server that runs python-api content (stdlib only; see its docstring).
pub const WSGI_RUNNER: &str = include_str!("runtime/connect_wsgi.py");
/// Starts a Streamlit app on a Unix socket, whatever the Streamlit version.
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
    /// Files, directories and symbolic links created.
    pub max_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 1 << 30,
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
        "the bundle unpacks to more than {limit} bytes, this server's limit; leave out \
         what the app does not need (data files, virtual environments, node_modules, .git)"
    )]
    TooLarge { limit: u64 },
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

// ---------------------------------------------------------------------------
// Unpacking
// ---------------------------------------------------------------------------

/// Archive bytes the tar parser may read beyond file contents before the next
/// entry: headers, long names, PAX records, padding, data of entries that
/// carry none. Bounds the memory the parser spends on long names, and the
/// work a bundle of empty entries with bogus sizes can cause.
const METADATA_WINDOW: u64 = 1 << 20;

/// Archive bytes allowed per entry on top of file contents, for the overall
/// cap on what is decompressed (header, PAX records and padding; generous).
const PER_ENTRY_OVERHEAD: u64 = 4096;

/// Which cap on the decompressed stream was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamLimit {
    None,
    Total,
    Metadata,
}

/// The decompressed archive, with two caps: a total (so a gzip bomb stops
/// however its bytes are spent), and a window that [`Unpacker`] refills per
/// entry (so metadata cannot grow without bound between two entries).
/// Exceeding either is an I/O error for the tar parser; `hit` tells which.
struct CappedStream<R> {
    inner: R,
    total_left: u64,
    window_left: Rc<Cell<u64>>,
    hit: Rc<Cell<StreamLimit>>,
}

impl<R: Read> Read for CappedStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let window = self.window_left.get();
        let allowed = self.total_left.min(window);
        if allowed == 0 {
            let which = if self.total_left == 0 {
                StreamLimit::Total
            } else {
                StreamLimit::Metadata
            };
            self.hit.set(which);
            return Err(io::Error::other("bundle size limit reached"));
        }
        let want = usize::try_from(allowed).map_or(buf.len(), |a| a.min(buf.len()));
        let got = self.inner.read(&mut buf[..want])?;
        let got64 = got as u64;
        self.total_left -= got64;
        self.window_left.set(window - got64);
        Ok(got)
    }
}

/// Unpacks a bundle (tar, gzipped or not) into `dest`, which must exist and
/// be empty.
///
/// Refused, naming the entry: absolute paths, `..`, hard links, devices and
/// FIFOs, sparse files, entries written through a symbolic link, duplicate
/// entries, and symbolic links that are absolute or do not resolve to a file
/// or directory inside the bundle. Relative symbolic links within the bundle
/// are kept (repositories and Python/Node trees use them); they are checked
/// lexically when met and again, fully resolved, once everything is unpacked.
///
/// Permissions are normalized so that any user can read the bundle and nobody
/// but its owner can change it: directories 0755, files 0755 if the archive
/// marks them executable by anyone, else 0644 (no setuid, setgid or sticky
/// bits). Ownership is the caller's; file modification times are kept.
///
/// Stops as soon as the file contents written exceed `limits.max_bytes`, or
/// the entries created (files, directories — including implied parent
/// directories — and links) exceed `limits.max_files`; decompression is capped
/// too, so a gzip bomb stops at about the limit.
///
/// On error `dest` holds whatever was unpacked so far: remove it.
pub fn unpack(archive: impl Read, dest: &Path, limits: &Limits) -> Result<(), BundleError> {
    check_empty_dir(dest)?;
    let root = fs::canonicalize(dest).map_err(|source| BundleError::Io {
        action: "cannot resolve",
        path: dest.to_owned(),
        source,
    })?;

    let mut input = BufReader::new(archive);
    // Both forms are accepted: gzip announces itself with its magic number.
    let gzipped = input
        .fill_buf()
        .map_err(|e| BundleError::Archive {
            detail: format!("cannot read the upload: {e}"),
        })?
        .starts_with(&[0x1f, 0x8b]);
    let decoded: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    };

    let window = Rc::new(Cell::new(METADATA_WINDOW));
    let hit = Rc::new(Cell::new(StreamLimit::None));
    let total = limits
        .max_bytes
        .saturating_add(
            limits
                .max_files
                .saturating_add(2)
                .saturating_mul(PER_ENTRY_OVERHEAD),
        )
        .saturating_add(METADATA_WINDOW);
    let stream = CappedStream {
        inner: decoded,
        total_left: total,
        window_left: Rc::clone(&window),
        hit: Rc::clone(&hit),
    };
    let mut archive = tar::Archive::new(stream);
    let mut unpacker = Unpacker {
        root,
        limits: *limits,
        bytes: 0,
        created: 0,
        dirs: HashSet::new(),
        links: Vec::new(),
        link_paths: HashSet::new(),
        window,
        hit,
        last_entry: None,
    };

    let entries = archive.entries().map_err(|e| unpacker.stream_error(e))?;
    let mut count = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| unpacker.stream_error(e))?;
        unpacker.entry(&mut entry)?;
        count += 1;
    }
    if count == 0 {
        return Err(BundleError::Archive {
            detail: "it holds no files".to_owned(),
        });
    }
    unpacker.check_links()
}

fn check_empty_dir(dest: &Path) -> Result<(), BundleError> {
    let problem = |problem: String| BundleError::Destination {
        path: dest.to_owned(),
        problem,
    };
    let mut listing = fs::read_dir(dest).map_err(|e| problem(e.to_string()))?;
    match listing.next() {
        None => Ok(()),
        Some(Ok(first)) => Err(problem(format!(
            "it is not empty (it holds {:?})",
            first.file_name()
        ))),
        Some(Err(e)) => Err(problem(e.to_string())),
    }
}

struct Unpacker {
    /// `dest`, canonicalized (for the final check of links).
    root: PathBuf,
    limits: Limits,
    bytes: u64,
    created: u64,
    /// Directories created, relative to the root.
    dirs: HashSet<PathBuf>,
    /// Symbolic links created: (path relative to the root, entry name).
    links: Vec<(PathBuf, String)>,
    link_paths: HashSet<PathBuf>,
    window: Rc<Cell<u64>>,
    hit: Rc<Cell<StreamLimit>>,
    last_entry: Option<String>,
}

/// Why an entry's path is refused.
fn clean_path(raw: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err("\"..\" is not allowed in paths: every file must be inside the bundle")
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(
                    "absolute paths are not allowed: archive the app's files relative to its \
                     directory (`tar -czf bundle.tar.gz -C <app directory> .`)",
                )
            }
        }
    }
    Ok(out)
}

impl Unpacker {
    /// Maps an error from the tar parser, which also carries our caps.
    fn stream_error(&self, e: io::Error) -> BundleError {
        let after = match &self.last_entry {
            Some(name) => format!(" after entry \"{name}\""),
            None => String::new(),
        };
        match self.hit.get() {
            StreamLimit::Total => BundleError::TooLarge {
                limit: self.limits.max_bytes,
            },
            StreamLimit::Metadata => BundleError::Archive {
                detail: format!(
                    "more than {METADATA_WINDOW} bytes of headers or of data of non-file \
                     entries{after}"
                ),
            },
            StreamLimit::None => BundleError::Archive {
                detail: format!("{e}{after}"),
            },
        }
    }

    fn count_one(&mut self) -> Result<(), BundleError> {
        if self.created >= self.limits.max_files {
            return Err(BundleError::TooManyFiles {
                limit: self.limits.max_files,
            });
        }
        self.created += 1;
        Ok(())
    }

    fn io_error(&self, action: &'static str, rel: &Path, source: io::Error) -> BundleError {
        BundleError::Io {
            action,
            path: self.root.join(rel),
            source,
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), BundleError> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        self.last_entry = Some(name.clone());
        let kind = entry.header().entry_type();
        // What the parser may read from here to the next entry: this entry's
        // contents only if we are going to write them, plus the metadata window.
        let regular = kind.is_file() || kind == tar::EntryType::Continuous;
        let contents = if regular { entry.size() } else { 0 };
        self.window
            .set(contents.saturating_add(512).saturating_add(METADATA_WINDOW));

        // PAX global headers only carry defaults for the entries after them,
        // which the parser applies itself.
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let rel = clean_path(Path::new(OsStr::from_bytes(&raw)))
            .map_err(|problem| entry_error(&name, problem))?;
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                // "./": the root itself.
                return Ok(());
            }
            return Err(entry_error(&name, "the entry has no file name"));
        }
        // Nothing may be written through a link: it could lead anywhere.
        for ancestor in rel.ancestors().skip(1) {
            if self.link_paths.contains(ancestor) {
                return Err(entry_error(
                    &name,
                    format!(
                        "its path goes through the symbolic link \"{}\"; archive the files \
                         under their real directory",
                        ancestor.display()
                    ),
                ));
            }
        }

        if regular {
            self.file(entry, &rel, &name)
        } else if kind.is_dir() {
            self.dir(&rel, &name)
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .unwrap_or_default();
            self.symlink(&rel, &name, &target)
        } else if kind.is_hard_link() {
            Err(entry_error(
                &name,
                "hard links are not allowed; archive a copy of the file instead \
                 (GNU tar: --hard-dereference)",
            ))
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let what = if kind.is_fifo() {
                "a named pipe (FIFO)"
            } else {
                "a device file"
            };
            Err(entry_error(
                &name,
                format!(
                    "it is {what}; a bundle may only hold regular files, directories and \
                     symbolic links within the bundle"
                ),
            ))
        } else if kind.is_gnu_sparse() {
            Err(entry_error(
                &name,
                "sparse files are not supported; create the archive without --sparse",
            ))
        } else {
            Err(entry_error(
                &name,
                format!(
                    "unsupported tar entry type {:?}; a bundle may only hold regular files, \
                     directories and symbolic links",
                    kind.as_byte() as char
                ),
            ))
        }
    }

    /// Creates `rel` and its missing parents, each counted against the limit.
    fn ensure_dir(&mut self, rel: &Path, name: &str) -> Result<(), BundleError> {
        let missing: Vec<PathBuf> = rel
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .take_while(|a| !self.dirs.contains(*a))
            .map(Path::to_path_buf)
            .collect();
        for dir in missing.into_iter().rev() {
            if self.link_paths.contains(&dir) {
                return Err(entry_error(
                    name,
                    format!("\"{}\" is a symbolic link, not a directory", dir.display()),
                ));
            }
            self.count_one()?;
            let full = self.root.join(&dir);
            match fs::DirBuilder::new().mode(0o755).create(&full) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(entry_error(
                        name,
                        format!(
                            "\"{}\" is both a file and a directory in the archive",
                            dir.display()
                        ),
                    ));
                }
                Err(e) => return Err(self.create_error(name, &dir, e)),
            }
            // The umask may have taken bits away; readers need them all.
            fs::set_permissions(&full, fs::Permissions::from_mode(0o755))
                .map_err(|e| self.io_error("cannot set permissions of", &dir, e))?;
            self.dirs.insert(dir);
        }
        Ok(())
    }

    /// An error creating something: the publisher's if the name is the
    /// problem, else the server's.
    fn create_error(&self, name: &str, rel: &Path, e: io::Error) -> BundleError {
        match e.raw_os_error() {
            Some(libc::ENAMETOOLONG) => entry_error(name, "the path is too long"),
            Some(libc::ENOTDIR) => entry_error(
                name,
                "a parent of this path is a file in the archive, not a directory",
            ),
            _ => self.io_error("cannot create", rel, e),
        }
    }

    fn dir(&mut self, rel: &Path, name: &str) -> Result<(), BundleError> {
        if self.dirs.contains(rel) {
            // Listed again (or implied by an earlier file): nothing to do.
            return Ok(());
        }
        self.ensure_dir(rel, name)
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        name: &str,
    ) -> Result<(), BundleError> {
        if let Some(parent) = rel.parent() {
            self.ensure_dir(parent, name)?;
        }
        if self.dirs.contains(rel) || self.link_paths.contains(rel) {
            return Err(entry_error(name, "the archive holds this path twice"));
        }
        let declared = entry.size();
        if declared > self.limits.max_bytes - self.bytes {
            // Known before reading a byte: the common way a too-big bundle ends.
            return Err(BundleError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        self.count_one()?;
        let header_mode = entry.header().mode().unwrap_or(0o644);
        let mode = if header_mode & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        let full = self.root.join(rel);
        let mut file = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&full)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(entry_error(name, "the archive holds this path twice"));
            }
            Err(e) => return Err(self.create_error(name, rel, e)),
        };

        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(match self.hit.get() {
                        StreamLimit::None => BundleError::Archive {
                            detail: format!("cannot read entry \"{name}\": {e}"),
                        },
                        _ => self.stream_error(e),
                    })
                }
            };
            // Counted as written, not as declared: the header could lie.
            self.bytes += n as u64;
            if self.bytes > self.limits.max_bytes {
                return Err(BundleError::TooLarge {
                    limit: self.limits.max_bytes,
                });
            }
            file.write_all(&buf[..n])
                .map_err(|e| self.io_error("cannot write", rel, e))?;
        }
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| self.io_error("cannot set permissions of", rel, e))?;
        if let Ok(mtime) = entry.header().mtime() {
            // Kept for static content's Last-Modified; not worth failing over.
            let _ = file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));
        }
        Ok(())
    }

    fn symlink(&mut self, rel: &Path, name: &str, target: &[u8]) -> Result<(), BundleError> {
        let target = Path::new(OsStr::from_bytes(target));
        let shown = target.display();
        if target.as_os_str().is_empty() {
            return Err(entry_error(name, "a symbolic link without a target"));
        }
        if !link_stays_inside(rel, target) {
            return Err(entry_error(
                name,
                format!(
                    "symbolic link to \"{shown}\", which is outside the bundle; only relative \
                     links to files in the bundle are allowed: archive a copy of the file \
                     instead (tar -h)"
                ),
            ));
        }
        if let Some(parent) = rel.parent() {
            self.ensure_dir(parent, name)?;
        }
        if self.dirs.contains(rel) || self.link_paths.contains(rel) {
            return Err(entry_error(name, "the archive holds this path twice"));
        }
        self.count_one()?;
        match std::os::unix::fs::symlink(target, self.root.join(rel)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(entry_error(name, "the archive holds this path twice"));
            }
            Err(e) => return Err(self.create_error(name, rel, e)),
        }
        self.link_paths.insert(rel.to_owned());
        self.links.push((rel.to_owned(), name.to_owned()));
        Ok(())
    }

    /// Each link, fully resolved now that every entry is in place, must land
    /// inside the bundle: the lexical check alone misses links through links
    /// (`a -> b/..` where `b` is itself a link).
    fn check_links(&self) -> Result<(), BundleError> {
        for (rel, name) in &self.links {
            let inside = match fs::canonicalize(self.root.join(rel)) {
                Ok(resolved) => resolved.starts_with(&self.root),
                Err(_) => false,
            };
            if !inside {
                let target = fs::read_link(self.root.join(rel))
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                return Err(entry_error(
                    name,
                    format!(
                        "symbolic link to \"{target}\", which does not resolve to a file or \
                         directory in the bundle; remove the link or include its target"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether `target`, relative to the directory holding the link `link`,
/// names a path inside the root without climbing out of it (lexically).
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    let mut depth = link.parent().map_or(0, |p| p.components().count());
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------
// The manifest
// ---------------------------------------------------------------------------

/// manifest.json may list every file with its checksum: allow big ones, but
/// not a memory exhaustion.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

#[derive(Deserialize)]
struct RawManifest {
    version: Option<serde_json::Value>,
    metadata: Option<RawMetadata>,
    python: Option<RawPython>,
}

#[derive(Deserialize)]
struct RawMetadata {
    appmode: Option<String>,
    entrypoint: Option<String>,
    primary_html: Option<String>,
}

#[derive(Deserialize)]
struct RawPython {
    version: Option<String>,
    package_manager: Option<RawPackageManager>,
}

#[derive(Deserialize)]
struct RawPackageManager {
    package_file: Option<String>,
}

/// Posit Connect's modes that this server does not run, with what to do.
fn unsupported_mode_hint(mode: &str) -> Option<&'static str> {
    let hint = match mode {
        "shiny" | "rmd-shiny" | "api" => {
            "it is R content (Shiny, R Markdown or Plumber), and this server runs no R"
        }
        "rmd-static" | "quarto-static" | "jupyter-static" => {
            "documents are not rendered here; render it where you write it and publish \
             the output with app mode \"static\""
        }
        "quarto-shiny" => "interactive Quarto documents are not supported",
        "python-dash" => {
            "a Dash app is a Flask app: publish it with app mode \"python-api\" and \
             entrypoint \"<module>:app.server\""
        }
        "python-bokeh" | "python-panel" | "python-gradio" | "jupyter-voila" => {
            "this kind of Python app is not supported yet"
        }
        "tensorflow-saved-model" => "TensorFlow models are not supported",
        _ => return None,
    };
    Some(hint)
}

/// Reads and checks `bundle_dir/manifest.json`: the app mode, the entry point
/// (files it names must exist in the bundle), the Python requirements file
/// and, for Node.js, whether there is a package.json and a lockfile.
///
/// Defaults when the manifest leaves them out: Python modes `app:app`
/// (`module` alone means `module:app`, except for python-api, whose runner
/// then tries `app`, then `application`; `module.py` is taken for `module`),
/// streamlit
/// `app.py` or `streamlit_app.py`, nodejs package.json's `main` or the first
/// of `server.js`, `app.js`, `index.js`, `main.js`, static `primary_html`, then
/// `metadata.entrypoint`, then `index.html`. The requirements file is
/// `python.package_manager.package_file`, else `requirements.txt` if present.
pub fn read_manifest(bundle_dir: &Path) -> Result<Manifest, BundleError> {
    let path = bundle_dir.join("manifest.json");
    let text = match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(manifest_error(match nested_manifest(bundle_dir) {
                // The usual mistake: archiving the directory, not its contents.
                Some(dir) => format!(
                    "the bundle has no manifest.json at its root, but \"{dir}/\" has one: \
                     archive the directory's contents, not the directory \
                     (`tar -czf bundle.tar.gz -C {dir} .`)"
                ),
                None => "the bundle has no manifest.json at its root; create one with \
                         rsconnect-python (`rsconnect write-manifest ...`) or write it by \
                         hand, e.g. {\"version\": 1, \"metadata\": {\"appmode\": \
                         \"python-api\", \"entrypoint\": \"app:app\"}}"
                    .to_owned(),
            }));
        }
        Err(source) => {
            return Err(BundleError::Io {
                action: "cannot read",
                path,
                source,
            })
        }
        Ok(meta) if !meta.is_file() => {
            return Err(manifest_error("manifest.json must be a regular file"))
        }
        Ok(meta) if meta.len() > MAX_MANIFEST_BYTES => {
            return Err(manifest_error(format!(
                "the file is {} bytes; the limit is {MAX_MANIFEST_BYTES}",
                meta.len()
            )))
        }
        Ok(_) => fs::read(&path).map_err(|source| BundleError::Io {
            action: "cannot read",
            path: path.clone(),
            source,
        })?,
    };
    let raw: RawManifest = serde_json::from_slice(&text).map_err(|e| {
        manifest_error(if e.is_syntax() || e.is_eof() {
            format!("not valid JSON: {e}")
        } else {
            format!("unexpected content: {e}")
        })
    })?;

    match &raw.version {
        None => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => {
            return Err(manifest_error(format!(
                "\"version\" is {v}; this server reads version 1 manifests"
            )))
        }
    }
    let metadata = raw.metadata.ok_or_else(|| {
        manifest_error(format!(
            "\"metadata\" is missing; it must at least give \"appmode\" (one of {})",
            supported_modes()
        ))
    })?;
    let mode_name = metadata.appmode.as_deref().ok_or_else(|| {
        manifest_error(format!(
            "\"metadata.appmode\" is missing; set it to one of {}",
            supported_modes()
        ))
    })?;
    let app_mode = match AppMode::parse(mode_name) {
        Some(mode) => mode,
        None => {
            return Err(match unsupported_mode_hint(mode_name) {
                Some(hint) => BundleError::UnsupportedMode {
                    mode: mode_name.to_owned(),
                    hint: hint.to_owned(),
                },
                None => manifest_error(format!(
                    "unknown app mode \"{mode_name}\" in \"metadata.appmode\"; use one of {}",
                    supported_modes()
                )),
            })
        }
    };
    let given = metadata
        .entrypoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());

    let mut manifest = Manifest {
        app_mode,
        entrypoint: String::new(),
        python_requirements: None,
        primary_html: None,
        python_version: None,
        package_json: false,
        npm_lockfile: None,
    };
    match app_mode {
        AppMode::Static => {
            let page = match metadata.primary_html.as_deref().or(given) {
                Some(page) => bundle_file(bundle_dir, page, "metadata.primary_html")?,
                None => bundle_file(bundle_dir, "index.html", "metadata.primary_html").map_err(
                    |_| {
                        manifest_error(
                            "\"metadata.primary_html\" is missing and the bundle has no \
                             index.html; set it to the page to show first",
                        )
                    },
                )?,
            };
            manifest.entrypoint = page.clone();
            manifest.primary_html = Some(page);
        }
        AppMode::PythonApi | AppMode::PythonFastapi | AppMode::PythonShiny => {
            manifest.entrypoint = python_entrypoint(bundle_dir, app_mode, given)?;
        }
        AppMode::PythonStreamlit => {
            manifest.entrypoint = match given {
                Some(file) => bundle_file(bundle_dir, file, "metadata.entrypoint")?,
                None => first_existing(bundle_dir, &["app.py", "streamlit_app.py"]).ok_or_else(
                    || {
                        manifest_error(
                            "\"metadata.entrypoint\" is missing and the bundle has no app.py \
                             or streamlit_app.py; set it to your Streamlit script",
                        )
                    },
                )?,
            };
        }
        AppMode::Nodejs => {
            manifest.package_json = is_file(&bundle_dir.join("package.json"));
            manifest.npm_lockfile = ["package-lock.json", "npm-shrinkwrap.json"]
                .into_iter()
                .find(|f| is_file(&bundle_dir.join(f)))
                .map(str::to_owned);
            if manifest.npm_lockfile.is_some() && !manifest.package_json {
                return Err(manifest_error(format!(
                    "the bundle has {} but no package.json; include package.json",
                    manifest.npm_lockfile.as_deref().unwrap_or_default()
                )));
            }
            manifest.entrypoint = match given {
                Some(file) => bundle_file(bundle_dir, file, "metadata.entrypoint")?,
                None => node_default_entrypoint(bundle_dir, manifest.package_json)?,
            };
        }
    }
    if app_mode.is_python() {
        let python = raw.python;
        manifest.python_version = python.as_ref().and_then(|p| p.version.clone());
        let package_file = python
            .and_then(|p| p.package_manager)
            .and_then(|pm| pm.package_file)
            .filter(|f| !f.trim().is_empty());
        manifest.python_requirements = match package_file {
            Some(file) => Some(bundle_file(
                bundle_dir,
                file.trim(),
                "python.package_manager.package_file",
            )?),
            None => first_existing(bundle_dir, &["requirements.txt"]),
        };
    }
    Ok(manifest)
}

/// The only top-level directory, if it holds a manifest.json.
fn nested_manifest(bundle_dir: &Path) -> Option<String> {
    let mut children = fs::read_dir(bundle_dir).ok()?;
    let only = children.next()?.ok()?;
    if children.next().is_some() || !is_file(&only.path().join("manifest.json")) {
        return None;
    }
    Some(only.file_name().to_string_lossy().into_owned())
}

fn is_file(path: &Path) -> bool {
    fs::metadata(path).map(|m| m.is_file()).unwrap_or(false)
}

fn first_existing(bundle_dir: &Path, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|n| bundle_file(bundle_dir, n, "").is_ok())
        .map(|n| (*n).to_owned())
}

/// Checks that `name` (from the manifest's `field`) is a regular file inside
/// the bundle, and returns it normalized (no `./`, no doubled slashes).
fn bundle_file(bundle_dir: &Path, name: &str, field: &str) -> Result<String, BundleError> {
    let rel = match clean_path(Path::new(name)) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel,
        _ => {
            return Err(manifest_error(format!(
                "\"{field}\" is \"{name}\"; it must name a file inside the bundle, relative \
                 to its root and without \"..\""
            )))
        }
    };
    let missing = || {
        manifest_error(format!(
            "\"{field}\" names \"{name}\", which is not a file in the bundle; check the \
             name, or add the file to the bundle"
        ))
    };
    let full = bundle_dir.join(&rel);
    if !is_file(&full) {
        return Err(missing());
    }
    // A symbolic link in the bundle could lead out of it; unpack() refuses
    // such links, but this function may be handed any directory.
    match (fs::canonicalize(&full), fs::canonicalize(bundle_dir)) {
        (Ok(file), Ok(root)) if file.starts_with(&root) => {}
        _ => return Err(missing()),
    }
    // `name` was a &str and clean_path only drops parts of it.
    Ok(rel.to_string_lossy().into_owned())
}

/// A dotted Python name: `pkg.module` or `app.server`.
fn is_dotted_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let mut chars = part.chars();
            matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
                && chars.all(|c| c == '_' || c.is_alphanumeric())
        })
}

fn python_entrypoint(
    bundle_dir: &Path,
    mode: AppMode,
    given: Option<&str>,
) -> Result<String, BundleError> {
    let Some(given) = given else {
        return Ok("app:app".to_owned());
    };
    let (mut module, object) = match given.split_once(':') {
        Some((module, object)) => (module.to_owned(), Some(object)),
        None => (given.to_owned(), None),
    };
    // Publishers often name the file; take "app.py" (if it exists) for "app".
    if object.is_none() && module.ends_with(".py") {
        if let Ok(file) = bundle_file(bundle_dir, &module, "metadata.entrypoint") {
            module = file.trim_end_matches(".py").replace('/', ".");
        }
    }
    let object_ok = object.is_none_or(is_dotted_identifier);
    if !is_dotted_identifier(&module) || !object_ok {
        return Err(manifest_error(format!(
            "\"metadata.entrypoint\" is \"{given}\"; for app mode \"{mode}\" it must be \
             \"module:object\", e.g. \"app:app\" for the object `app` in app.py (module \
             and object are Python names, with dots for packages and attributes)"
        )));
    }
    Ok(match (object, mode) {
        (Some(object), _) => format!("{module}:{object}"),
        // The WSGI runner looks for `app`, then `application` (Django's name).
        (None, AppMode::PythonApi) => module,
        (None, _) => format!("{module}:app"),
    })
}

fn node_default_entrypoint(bundle_dir: &Path, package_json: bool) -> Result<String, BundleError> {
    if package_json {
        let path = bundle_dir.join("package.json");
        let text = fs::read(&path).map_err(|source| BundleError::Io {
            action: "cannot read",
            path,
            source,
        })?;
        let package: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
            manifest_error(format!(
                "package.json (read for the entry point) is not valid JSON: {e}"
            ))
        })?;
        if let Some(main) = package.get("main").and_then(|m| m.as_str()) {
            return bundle_file(bundle_dir, main, "package.json's \"main\"");
        }
    }
    first_existing(bundle_dir, &["server.js", "app.js", "index.js", "main.js"]).ok_or_else(|| {
        manifest_error(
            "\"metadata.entrypoint\" is missing, package.json names no \"main\" and the \
             bundle has no server.js, app.js, index.js or main.js; set it to the file that \
             starts the server",
        )
    })
}

// ---------------------------------------------------------------------------
// Build and run commands
// ---------------------------------------------------------------------------

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

fn os(s: impl AsRef<OsStr>) -> OsString {
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
fn requirement_names(text: &str) -> HashSet<String> {
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
fn ensured_packages(mode: AppMode, named: &HashSet<String>) -> Vec<&'static str> {
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
fn file_url(path: &Path) -> OsString {
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

/// How to start one process of this app listening on the Unix socket
/// `socket`; cwd = `work_dir` (writable, shared by all this content's
/// processes; the app code stays in `bundle_dir`). None for static content.
///
/// The process reads `bundle_dir`, `env_dir` (and, through the venv, the
/// interpreter [`Runtimes::python`] or [`Runtimes::node`]) and writes
/// `work_dir` and the socket's directory. The socket must not exist or be a
/// stale socket (the Python runners and uvicorn replace a stale socket; Node
/// fails with EADDRINUSE). It appears some time after the start: connect
/// with retries. The caller supplies PATH, HOME (Streamlit writes
/// `~/.streamlit`), LANG and TMPDIR. All paths must be absolute (the process
/// runs in `work_dir`); [`build_steps`] checks that for the same directories.
pub fn run_step(
    m: &Manifest,
    bundle_dir: &Path,
    env_dir: &Path,
    work_dir: &Path,
    socket: &Path,
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
    match m.app_mode {
        AppMode::Static => None,
        AppMode::PythonApi => Some(step(
            venv_python,
            vec![
                os(env_dir.join(WSGI_RUNNER_FILE)),
                os("--socket"),
                os(socket),
                os("--app-dir"),
                os(bundle_dir),
                os("--entrypoint"),
                os(&m.entrypoint),
            ],
            python_env,
            format!("serve the WSGI app {}", m.entrypoint),
        )),
        AppMode::PythonFastapi | AppMode::PythonShiny => Some(step(
            venv_python,
            vec![
                os("-m"),
                os("uvicorn"),
                os("--uds"),
                os(socket),
                os("--app-dir"),
                os(bundle_dir),
                // Only connectd's proxy can reach the socket, and a Unix
                // socket's peer has no address to match: trust it with
                // X-Forwarded-For/-Proto.
                os("--proxy-headers"),
                os("--forwarded-allow-ips"),
                os("*"),
                os(&m.entrypoint),
            ],
            python_env,
            format!("serve the ASGI app {} with uvicorn", m.entrypoint),
        )),
        AppMode::PythonStreamlit => Some(step(
            venv_python,
            vec![
                os(env_dir.join(STREAMLIT_RUNNER_FILE)),
                os("--socket"),
                os(socket),
                os("--app-dir"),
                os(bundle_dir),
                os("--entrypoint"),
                os(&m.entrypoint),
            ],
            python_env,
            format!("run the Streamlit app {}", m.entrypoint),
        )),
        AppMode::Nodejs => {
            let mut args = Vec::new();
            let mut env = vec![
                // server.listen(process.env.PORT) listens on a Unix socket
                // when PORT is not a number.
                env_pair("PORT", socket),
                env_pair("NODE_ENV", "production"),
            ];
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

#[cfg(test)]
mod tests {
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

    fn manifest_json(mode: &str, extra_metadata: &str, rest: &str) -> String {
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
            let p =
                manifest_problem(&[("manifest.json", &manifest_json("python-fastapi", &meta, ""))]);
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
            Path::new("/s/app.sock"),
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
        assert!(run_step(&static_m, bundle.path(), env, env, env, &rt).is_none());
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
        let step = run_step(m, bundle, env, work, &socket, rt).unwrap();
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

    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    /// Reads one HTTP/1.1 response (Content-Length, chunked, or to the end).
    fn read_response(r: &mut impl BufRead) -> Response {
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

    struct Deployed {
        _dirs: tempfile::TempDir,
        bundle: PathBuf,
        env: PathBuf,
        work: PathBuf,
        rt: Runtimes,
        manifest: Manifest,
    }

    /// Packs `files` into a .tar.gz, unpacks, reads the manifest and builds:
    /// the whole deployment, as connectd does it.
    fn deploy(files: &[(&str, &str)]) -> Deployed {
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
            &d.work.join("s"),
            &d.rt,
        )
        .unwrap();
        let out = step.to_command().output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("No module named 'no_such_module'"), "{err}");
        assert!(!d.work.join("s").exists());
    }

    const FASTAPI_APP: &str = r#"
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
}
