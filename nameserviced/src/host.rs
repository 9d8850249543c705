//! Accounts the host resolves itself, through any NSS source (files, SSSD,
//! nslcd, extrausers…) except this nameservice.
//!
//! The daemon sets `CONNECT_NSS_BYPASS` before its first thread starts, so
//! libnss_connect, if nsswitch.conf lists it, answers UNAVAIL at once and
//! glibc moves on to the next source: a lookup made here can never come
//! back to the daemon. [`NssHost`] refuses to look anything up when the
//! variable is missing rather than risk that loop.
//!
//! May import nothing else of the crate.

use std::ffi::{CStr, CString};

/// An account as `getpwnam(3)` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// The seam to the host's account database; [`NssHost`] is the real one.
pub trait HostAccounts: Send + Sync {
    fn user_by_name(&self, name: &str) -> Result<Option<HostUser>, String>;
    fn user_by_uid(&self, uid: u32) -> Result<Option<HostUser>, String>;
    fn group_name(&self, gid: u32) -> Result<Option<String>, String>;
}

/// glibc's NSS, with libnss_connect bypassed.
pub struct NssHost;

/// Largest buffer tried for one record (a group with very many members).
const MAX_BUFFER: usize = 1 << 22;

fn bypassed() -> Result<(), String> {
    if std::env::var_os(connect_proto::NSS_BYPASS_ENV).is_some() {
        Ok(())
    } else {
        Err(format!(
            "host account lookups need {} set on the daemon (so that they never reach this \
             nameservice); nameserviced sets it at start",
            connect_proto::NSS_BYPASS_ENV
        ))
    }
}

fn text(p: *const libc::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: glibc filled the record with NUL-terminated strings that live
    // in our buffer until it is dropped, after this copy.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Calls a reentrant `get*_r` function with a growing buffer.
fn with_buffer<T>(
    mut call: impl FnMut(&mut [libc::c_char]) -> (libc::c_int, Option<T>),
) -> Result<Option<T>, String> {
    let mut size = 1024;
    loop {
        let mut buffer = vec![0 as libc::c_char; size];
        let (rc, found) = call(&mut buffer);
        match rc {
            0 => return Ok(found),
            libc::ERANGE if size < MAX_BUFFER => size *= 4,
            // Not found is reported as 0 with no result, or by these.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            rc => {
                return Err(format!(
                    "the host's account lookup failed: {}",
                    std::io::Error::from_raw_os_error(rc)
                ))
            }
        }
    }
}

fn user(
    lookup: impl Fn(*mut libc::passwd, &mut [libc::c_char], *mut *mut libc::passwd) -> libc::c_int,
) -> Result<Option<HostUser>, String> {
    with_buffer(|buffer| {
        // SAFETY: a zeroed passwd is valid; glibc fills it.
        let mut record: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = lookup(&mut record, buffer, &mut result);
        if rc != 0 || result.is_null() {
            return (rc, None);
        }
        (
            0,
            Some(HostUser {
                name: text(record.pw_name),
                uid: record.pw_uid,
                gid: record.pw_gid,
                gecos: text(record.pw_gecos),
                home: text(record.pw_dir),
                shell: text(record.pw_shell),
            }),
        )
    })
}

impl HostAccounts for NssHost {
    fn user_by_name(&self, name: &str) -> Result<Option<HostUser>, String> {
        bypassed()?;
        let Ok(c_name) = CString::new(name) else {
            return Ok(None);
        };
        user(|record, buffer, result| {
            // SAFETY: every pointer is valid for the call; the buffer's
            // length is passed with it.
            unsafe {
                libc::getpwnam_r(
                    c_name.as_ptr(),
                    record,
                    buffer.as_mut_ptr(),
                    buffer.len(),
                    result,
                )
            }
        })
    }

    fn user_by_uid(&self, uid: u32) -> Result<Option<HostUser>, String> {
        bypassed()?;
        user(|record, buffer, result| {
            // SAFETY: as above.
            unsafe { libc::getpwuid_r(uid, record, buffer.as_mut_ptr(), buffer.len(), result) }
        })
    }

    fn group_name(&self, gid: u32) -> Result<Option<String>, String> {
        bypassed()?;
        with_buffer(|buffer| {
            // SAFETY: as above.
            let mut record: libc::group = unsafe { std::mem::zeroed() };
            let mut result: *mut libc::group = std::ptr::null_mut();
            let rc = unsafe {
                libc::getgrgid_r(
                    gid,
                    &mut record,
                    buffer.as_mut_ptr(),
                    buffer.len(),
                    &mut result,
                )
            };
            if rc != 0 || result.is_null() {
                return (rc, None);
            }
            (0, Some(text(record.gr_name)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_look_up_without_the_bypass() {
        // The test binary never sets it; the daemon always does.
        assert!(std::env::var_os(connect_proto::NSS_BYPASS_ENV).is_none());
        let err = NssHost.user_by_name("root").unwrap_err();
        assert!(err.contains(connect_proto::NSS_BYPASS_ENV), "{err}");
        assert!(NssHost.user_by_uid(0).is_err());
    }
}
