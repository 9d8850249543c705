//! Unpacking a bundle: into an empty directory only, refusing any entry that
//! could write or point outside it (traversal, absolute paths, links out,
//! devices), and stopping at [`Limits`] (entries, bytes, the ratio of
//! unpacked to packed size).

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use super::*;

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
/// Stops as soon as the file contents written exceed `limits.max_bytes` (or
/// one file's exceed `limits.max_file_bytes`), or
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
pub(super) fn clean_path(raw: &Path) -> Result<PathBuf, &'static str> {
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
        let file_limit = self.limits.max_file_bytes;
        let too_big = || BundleError::FileTooLarge {
            entry: name.to_owned(),
            limit: file_limit,
        };
        if declared > file_limit {
            return Err(too_big());
        }
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
        let mut written = 0u64;
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
            written += n as u64;
            if written > file_limit {
                return Err(too_big());
            }
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
