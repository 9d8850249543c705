//! Mapping the cache file into a reader's memory.
//!
//! Trust: the file must be a regular file owned by root and writable by
//! nobody else, or it is not used at all (a stray or planted file must not
//! be able to name accounts). The descriptor is closed right after `mmap`,
//! so a reader keeps no file descriptor open in its host process.

use std::ffi::CStr;

use crate::{Invalid, Snapshot, HEADER_SIZE, MAX_FILE_SIZE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// No file (the daemon is not running, or has not published yet).
    Absent,
    /// Not owned by root, writable by others, or not a regular file.
    Untrusted,
    Invalid(Invalid),
    Io(i32),
}

/// Identity of a file on disk, to notice when the path names another file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

fn errno() -> i32 {
    // SAFETY: __errno_location always returns a valid thread-local pointer.
    unsafe { *libc::__errno_location() }
}

/// `stat` of the path, for the cheap "was it replaced?" check.
pub fn file_id(path: &CStr) -> Option<FileId> {
    // SAFETY: st is plain data; path is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    if unsafe { libc::stat(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(FileId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// A read-only shared mapping of one cache file.
pub struct Mapped {
    base: *mut libc::c_void,
    len: usize,
    pub id: FileId,
}

impl Mapped {
    pub fn open(path: &CStr) -> Result<Mapped, OpenError> {
        // SAFETY: path is NUL-terminated; flags are valid.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        if fd < 0 {
            let e = errno();
            return Err(if e == libc::ENOENT {
                OpenError::Absent
            } else {
                OpenError::Io(e)
            });
        }
        let result = Self::map_fd(fd);
        // SAFETY: fd was opened above and is closed exactly once; the
        // mapping, if any, stays valid after close.
        unsafe { libc::close(fd) };
        result
    }

    fn map_fd(fd: libc::c_int) -> Result<Mapped, OpenError> {
        // SAFETY: st is plain data.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open; st is writable.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(OpenError::Io(errno()));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_uid != 0 || st.st_mode & 0o022 != 0 {
            return Err(OpenError::Untrusted);
        }
        let len = usize::try_from(st.st_size).map_err(|_| OpenError::Invalid(Invalid::TooBig))?;
        if len < HEADER_SIZE {
            return Err(OpenError::Invalid(Invalid::TooSmall));
        }
        if len > MAX_FILE_SIZE {
            return Err(OpenError::Invalid(Invalid::TooBig));
        }
        // SAFETY: a fresh read-only shared mapping of an open regular file.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(OpenError::Io(errno()));
        }
        let mapped = Mapped {
            base,
            len,
            id: FileId {
                dev: st.st_dev,
                ino: st.st_ino,
            },
        };
        // Validate once now, so a bad file is dropped at open time.
        mapped.snapshot().map_err(OpenError::Invalid)?;
        Ok(mapped)
    }

    pub fn snapshot(&self) -> Result<Snapshot<'_>, Invalid> {
        // SAFETY: the mapping is `len` bytes, page-aligned, lives as long as
        // `self`, and the daemon only ever writes the counter word in it.
        unsafe { Snapshot::from_raw(self.base as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: base/len came from a successful mmap and are unmapped once.
        unsafe { libc::munmap(self.base, self.len) };
    }
}
