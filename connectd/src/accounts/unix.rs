//! Unix accounts, resolved only through ordinary libc calls (`getpwnam_r`,
//! `getgrnam_r`, `getgrouplist`), so that local, nameservice-provisioned and
//! directory-mapped accounts all look the same to connectd.

use std::ffi::{CStr, CString};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("the name contains a NUL byte")]
    BadName,
    #[error("the account database could not be read: {0}")]
    System(std::io::Error),
}

/// Grows the buffer on ERANGE, up to 1 MiB (far beyond any real entry).
const MAX_BUFFER: usize = 1 << 20;

/// What a nonzero return of `getpwnam_r`/`getgrnam_r` means. When the last
/// source in nsswitch.conf is unavailable (SSSD or our own nameservice not
/// running) glibc passes its `ENOENT` back as the return value, and
/// getpwnam_r(3) lists `ENOENT` among the ways of saying "not found": `id`
/// and `getent` report such a name as unknown, and so must connectd.
/// Every other code is a real failure to read the account database.
fn lookup_failure(rc: libc::c_int) -> Option<LookupError> {
    (rc != libc::ENOENT).then(|| LookupError::System(std::io::Error::from_raw_os_error(rc)))
}

fn text(p: *const libc::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: glibc filled `p` with a NUL-terminated string in our buffer.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// `getpwnam_r`: `Ok(None)` when no source knows the name.
pub fn lookup_user(name: &str) -> Result<Option<Account>, LookupError> {
    let cname = CString::new(name).map_err(|_| LookupError::BadName)?;
    let mut size = 1024;
    loop {
        let mut buffer = vec![0 as libc::c_char; size];
        // SAFETY: passwd is plain data; zeroed is a valid initial value.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and the buffer length is exact.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && size < MAX_BUFFER {
            size *= 4;
            continue;
        }
        if rc != 0 {
            return lookup_failure(rc).map_or(Ok(None), Err);
        }
        if result.is_null() {
            return Ok(None);
        }
        return Ok(Some(Account {
            name: text(entry.pw_name),
            uid: entry.pw_uid,
            gid: entry.pw_gid,
            gecos: text(entry.pw_gecos),
            home: text(entry.pw_dir),
            shell: text(entry.pw_shell),
        }));
    }
}

/// `getgrnam_r`: the gid of a group, `Ok(None)` when unknown.
pub fn lookup_group_gid(name: &str) -> Result<Option<u32>, LookupError> {
    let cname = CString::new(name).map_err(|_| LookupError::BadName)?;
    let mut size = 4096;
    loop {
        let mut buffer = vec![0 as libc::c_char; size];
        // SAFETY: group is plain data; zeroed is a valid initial value.
        let mut entry: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and the buffer length is exact.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && size < MAX_BUFFER {
            size *= 4;
            continue;
        }
        if rc != 0 {
            return lookup_failure(rc).map_or(Ok(None), Err);
        }
        return Ok((!result.is_null()).then_some(entry.gr_gid));
    }
}

/// `getgrgid_r`: the name of a group, `Ok(None)` when no source knows it.
pub fn group_name(gid: u32) -> Result<Option<String>, LookupError> {
    let mut size = 4096;
    loop {
        let mut buffer = vec![0 as libc::c_char; size];
        // SAFETY: group is plain data; zeroed is a valid initial value.
        let mut entry: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and the buffer length is exact.
        let rc = unsafe {
            libc::getgrgid_r(
                gid,
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && size < MAX_BUFFER {
            size *= 4;
            continue;
        }
        if rc != 0 {
            return lookup_failure(rc).map_or(Ok(None), Err);
        }
        return Ok((!result.is_null()).then(|| text(entry.gr_name)));
    }
}

/// `getgrouplist`: every gid the account belongs to, its primary gid first.
pub fn group_list(account: &Account) -> Result<Vec<u32>, LookupError> {
    let cname = CString::new(account.name.as_str()).map_err(|_| LookupError::BadName)?;
    let mut capacity: libc::c_int = 32;
    loop {
        let mut groups = vec![0 as libc::gid_t; capacity as usize];
        let mut count = capacity;
        // SAFETY: `groups` holds `count` entries; glibc writes at most that many.
        let rc = unsafe {
            libc::getgrouplist(cname.as_ptr(), account.gid, groups.as_mut_ptr(), &mut count)
        };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return Ok(groups);
        }
        // -1: too small; `count` now says how many are needed.
        if count <= capacity || capacity >= 65536 {
            return Err(LookupError::System(std::io::Error::other(
                "getgrouplist could not list the groups",
            )));
        }
        capacity = count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_and_nobody_else_is_invented() {
        let root = lookup_user("root").expect("lookup").expect("root exists");
        assert_eq!(root.uid, 0);
        assert_eq!(root.gid, 0);
        assert!(lookup_user("no-such-user-connectd-test")
            .expect("lookup")
            .is_none());
        assert!(matches!(lookup_user("a\0b"), Err(LookupError::BadName)));
        assert_eq!(lookup_group_gid("root").expect("lookup"), Some(0));
        assert_eq!(group_name(0).expect("lookup").as_deref(), Some("root"));
        assert_eq!(group_name(u32::MAX - 7).expect("lookup"), None);
        let groups = group_list(&root).expect("groups");
        assert!(groups.contains(&0));
    }

    /// A host whose nsswitch.conf names SSSD or this nameservice while it is
    /// down answers an unknown name with `ENOENT`: not found, not a failure.
    #[test]
    fn an_unavailable_last_source_means_not_found() {
        assert!(lookup_failure(libc::ENOENT).is_none());
        for rc in [libc::EIO, libc::EMFILE, libc::EAGAIN, libc::EINTR] {
            let failure = lookup_failure(rc).expect("a real failure");
            assert!(
                matches!(&failure, LookupError::System(e) if e.raw_os_error() == Some(rc)),
                "{failure}"
            );
        }
    }
}
