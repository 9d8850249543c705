//! libnss_connect.so.2: the glibc NSS module of the Connect nameservice.
//!
//! This file is only the edge glibc sees: C signatures, the caller's buffer,
//! status codes and errno. The lookups themselves are in
//! `connect-nss-client`.
//!
//! The `libnss` crate supplies the C record layouts (`CPasswd`, `CGroup`),
//! the buffer writer (`CBuffer`) and the status mapping (`Response`). Its
//! export macros are not used, because the functions they generate leave
//! `*errnop` unset on failures, unwrap a mutex (a panic across the C boundary
//! aborts the host program) and place `gr_mem` after the strings without
//! aligning it. The exports below fix each of those:
//! - every non-success sets `*errnop` (ENOENT for NOTFOUND/UNAVAIL, ERANGE
//!   with TRYAGAIN only for a short buffer);
//! - every entry point runs inside `catch_unwind`, and a panic becomes UNAVAIL;
//! - records with a NUL byte are treated as a broken answer (UNAVAIL), and
//!   strings are copied into the buffer without libnss' `CString` step;
//! - `gr_mem` is pointer-aligned in the caller's buffer;
//! - `_nss_connect_initgroups_dyn` is written here with glibc's exact types.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

use connect_nss_client as client;
use libc::{c_char, c_int, c_long, gid_t, size_t, uid_t};
use libnss::group::CGroup;
use libnss::interop::{CBuffer, NssStatus, Response, ToC};
use libnss::passwd::{CPasswd, Passwd};

const SUCCESS: c_int = NssStatus::Success as c_int;
const NOTFOUND: c_int = NssStatus::NotFound as c_int;
const UNAVAIL: c_int = NssStatus::Unavail as c_int;
const TRYAGAIN: c_int = NssStatus::TryAgain as c_int;

/// What a lookup produced, before it is written for glibc.
enum Outcome<R> {
    Found(R),
    NotFound,
    Unavailable,
}

impl<R> From<client::Answer<R>> for Outcome<R> {
    fn from(answer: client::Answer<R>) -> Self {
        match answer {
            Ok(Some(r)) => Outcome::Found(r),
            Ok(None) => Outcome::NotFound,
            Err(_) => Outcome::Unavailable,
        }
    }
}

/// # Safety
/// `errnop` must be null or valid for writes.
unsafe fn set_errno(errnop: *mut c_int, value: c_int) {
    if !errnop.is_null() {
        *errnop = value;
    }
}

/// Writes an outcome into glibc's result and buffer.
///
/// # Safety
/// `result` must point to a `C` and `buf` to `buflen` writable bytes (glibc
/// guarantees both); `errnop` null or writable.
unsafe fn deliver<R: ToC<C> + Needed, C>(
    outcome: Outcome<R>,
    result: *mut C,
    buf: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    match outcome {
        Outcome::Found(record) => {
            if result.is_null() || buf.is_null() {
                set_errno(errnop, libc::EINVAL);
                return UNAVAIL;
            }
            // libnss zeroes the whole span it is given before writing; give
            // it only what the record needs (glibc's buffers are often 16 KiB).
            let needed = record.needed();
            if needed > buflen {
                set_errno(errnop, libc::ERANGE);
                return TRYAGAIN;
            }
            // Sets *errnop to 0 on success, ERANGE with TRYAGAIN when the
            // buffer is too small (glibc then retries with a bigger one).
            let mut scratch: c_int = 0;
            let status = Response::Success(record).to_c(result, buf, needed, &mut scratch);
            let status = status as c_int;
            if status != SUCCESS {
                // Only a short buffer leads here; never leave errno unset.
                set_errno(errnop, if scratch == 0 { libc::ERANGE } else { scratch });
                return if scratch == libc::ERANGE || scratch == 0 {
                    TRYAGAIN
                } else {
                    UNAVAIL
                };
            }
            SUCCESS
        }
        Outcome::NotFound => {
            set_errno(errnop, libc::ENOENT);
            NOTFOUND
        }
        Outcome::Unavailable => {
            set_errno(errnop, libc::ENOENT);
            UNAVAIL
        }
    }
}

/// Runs an entry point's body so that no panic can reach the host program.
fn guarded(errnop: *mut c_int, body: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(status) => status,
        Err(_) => {
            // SAFETY: errnop comes from glibc (or is null, which set_errno checks).
            unsafe { set_errno(errnop, libc::EAGAIN) };
            UNAVAIL
        }
    }
}

/// Bytes a record takes in the caller's buffer, alignment padding included
/// (an upper bound: the buffer's start may need up to `align - 1` bytes).
trait Needed {
    fn needed(&self) -> usize;
}

impl Needed for Passwd {
    fn needed(&self) -> usize {
        [
            &self.name,
            &self.passwd,
            &self.gecos,
            &self.dir,
            &self.shell,
        ]
        .iter()
        .map(|s| s.len() + 1)
        .sum()
    }
}

impl Needed for AlignedGroup {
    fn needed(&self) -> usize {
        let pointer = std::mem::size_of::<*mut c_char>();
        (pointer - 1)
            + (self.members.len() + 1) * pointer
            + self.members.iter().map(|m| m.len() + 1).sum::<usize>()
            + self.name.len()
            + 1
            + 2
    }
}

fn has_nul(fields: &[&str]) -> bool {
    fields.iter().any(|f| f.contains('\0'))
}

fn passwd(user: client::PosixUser) -> Outcome<PasswdRecord> {
    if has_nul(&[&user.name, &user.gecos, &user.home, &user.shell]) {
        return Outcome::Unavailable;
    }
    Outcome::Found(PasswdRecord(Passwd {
        name: user.name,
        passwd: "x".to_owned(),
        uid: user.uid,
        gid: user.gid,
        gecos: user.gecos,
        dir: user.home,
        shell: user.shell,
    }))
}

/// Copies `s` and a NUL into the caller's buffer. libnss' own `write_str`
/// builds a `CString` per field (an allocation, a copy and a strlen, and a
/// panic on an interior NUL); records here are checked for NUL bytes first,
/// so a plain copy into reserved space is enough.
///
/// # Safety
/// `buffer` must describe writable memory (glibc's buffer).
unsafe fn put_str(buffer: &mut CBuffer, s: &str) -> std::io::Result<*mut c_char> {
    let at = buffer.reserve((s.len() + 1) as isize)?;
    std::ptr::copy_nonoverlapping(s.as_ptr(), at.cast::<u8>(), s.len());
    *at.add(s.len()) = 0;
    Ok(at)
}

/// A passwd record written with [`put_str`].
struct PasswdRecord(Passwd);

impl ToC<CPasswd> for PasswdRecord {
    unsafe fn to_c(&self, result: *mut CPasswd, buffer: &mut CBuffer) -> std::io::Result<()> {
        let p = &self.0;
        (*result).name = put_str(buffer, &p.name)?;
        (*result).passwd = put_str(buffer, &p.passwd)?;
        (*result).uid = p.uid as uid_t;
        (*result).gid = p.gid as gid_t;
        (*result).gecos = put_str(buffer, &p.gecos)?;
        (*result).dir = put_str(buffer, &p.dir)?;
        (*result).shell = put_str(buffer, &p.shell)?;
        Ok(())
    }
}

impl Needed for PasswdRecord {
    fn needed(&self) -> usize {
        self.0.needed()
    }
}

/// A group record that lays out the caller's buffer with `gr_mem` first and
/// pointer-aligned, then the strings (libnss' own `Group` writes the pointer
/// array wherever the strings happened to end).
struct AlignedGroup {
    name: String,
    gid: u32,
    members: Vec<String>,
}

impl ToC<CGroup> for AlignedGroup {
    unsafe fn to_c(&self, result: *mut CGroup, buffer: &mut CBuffer) -> std::io::Result<()> {
        let align = std::mem::align_of::<*mut c_char>();
        let start = buffer.reserve(0)? as usize;
        let padding = (align - start % align) % align;
        buffer.reserve(padding as isize)?;
        let slots = self.members.len() + 1;
        let array = buffer.reserve((slots * std::mem::size_of::<*mut c_char>()) as isize)?
            as *mut *mut c_char;
        for (i, member) in self.members.iter().enumerate() {
            *array.add(i) = put_str(buffer, member)?;
        }
        *array.add(self.members.len()) = std::ptr::null_mut();
        (*result).name = put_str(buffer, &self.name)?;
        (*result).passwd = put_str(buffer, "x")?;
        (*result).gid = self.gid as gid_t;
        (*result).members = array;
        Ok(())
    }
}

fn group(group: client::PosixGroup) -> Outcome<AlignedGroup> {
    if group.name.contains('\0') || group.members.iter().any(|m| m.contains('\0')) {
        return Outcome::Unavailable;
    }
    Outcome::Found(AlignedGroup {
        name: group.name,
        gid: group.gid,
        members: group.members,
    })
}

fn found_map<T, R>(answer: client::Answer<T>, f: impl FnOnce(T) -> Outcome<R>) -> Outcome<R> {
    match Outcome::from(answer) {
        Outcome::Found(t) => f(t),
        Outcome::NotFound => Outcome::NotFound,
        Outcome::Unavailable => Outcome::Unavailable,
    }
}

/// A name from glibc as UTF-8; anything else cannot be a nameservice name.
///
/// # Safety
/// `name` must be null or a NUL-terminated string.
unsafe fn name_arg<'a>(name: *const c_char) -> Option<&'a str> {
    if name.is_null() {
        return None;
    }
    CStr::from_ptr(name).to_str().ok()
}

// ---------------------------------------------------------------------------
// passwd
// ---------------------------------------------------------------------------

/// # Safety
/// Called by glibc with its documented arguments.
#[no_mangle]
pub unsafe extern "C" fn _nss_connect_getpwnam_r(
    name: *const c_char,
    result: *mut CPasswd,
    buf: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    guarded(errnop, || {
        let outcome = match name_arg(name) {
            Some(name) => found_map(client::user_by_name(name), passwd),
            None => Outcome::NotFound,
        };
        deliver(outcome, result, buf, buflen, errnop)
    })
}

/// # Safety
/// Called by glibc with its documented arguments.
#[no_mangle]
pub unsafe extern "C" fn _nss_connect_getpwuid_r(
    uid: uid_t,
    result: *mut CPasswd,
    buf: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    guarded(errnop, || {
        deliver(
            found_map(client::user_by_uid(uid), passwd),
            result,
            buf,
            buflen,
            errnop,
        )
    })
}

// ---------------------------------------------------------------------------
// group
// ---------------------------------------------------------------------------

/// # Safety
/// Called by glibc with its documented arguments.
#[no_mangle]
pub unsafe extern "C" fn _nss_connect_getgrnam_r(
    name: *const c_char,
    result: *mut CGroup,
    buf: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    guarded(errnop, || {
        let outcome = match name_arg(name) {
            Some(name) => found_map(client::group_by_name(name), group),
            None => Outcome::NotFound,
        };
        deliver(outcome, result, buf, buflen, errnop)
    })
}

/// # Safety
/// Called by glibc with its documented arguments.
#[no_mangle]
pub unsafe extern "C" fn _nss_connect_getgrgid_r(
    gid: gid_t,
    result: *mut CGroup,
    buf: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    guarded(errnop, || {
        deliver(
            found_map(client::group_by_gid(gid), group),
            result,
            buf,
            buflen,
            errnop,
        )
    })
}

// ---------------------------------------------------------------------------
// Enumeration: one position per process, as glibc expects, behind a mutex.
// The whole list is fetched at set*ent (paged over one connection) and
// handed out one entry at a time; a short buffer does not advance.
// ---------------------------------------------------------------------------

struct Enumeration<T> {
    entries: Option<Vec<T>>,
    next: usize,
}

impl<T> Enumeration<T> {
    const fn new() -> Self {
        Self {
            entries: None,
            next: 0,
        }
    }

    /// end*ent: forget the list and the position.
    fn close(&mut self) -> c_int {
        self.entries = None;
        self.next = 0;
        SUCCESS
    }
}

static USERS: Mutex<Enumeration<client::PosixUser>> = Mutex::new(Enumeration::new());
static GROUPS: Mutex<Enumeration<client::PosixGroup>> = Mutex::new(Enumeration::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic was caught while it was held; the
    // position is still a plain index.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn open<T>(
    state: &mut Enumeration<T>,
    fetch: impl FnOnce() -> Result<Vec<T>, client::Unavailable>,
) -> c_int {
    state.next = 0;
    match fetch() {
        Ok(entries) => {
            state.entries = Some(entries);
            SUCCESS
        }
        Err(_) => {
            state.entries = None;
            UNAVAIL
        }
    }
}

/// # Safety
/// `result`, `buf`, `errnop` as for the `_r` lookups.
unsafe fn next_entry<T: Clone, R: ToC<C> + Needed, C>(
    state: &Mutex<Enumeration<T>>,
    fetch: impl FnOnce() -> Result<Vec<T>, client::Unavailable>,
    convert: impl FnOnce(T) -> Outcome<R>,
    result: *mut C,
    buf: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    let mut state = lock(state);
    if state.entries.is_none() && open(&mut state, fetch) != SUCCESS {
        set_errno(errnop, libc::ENOENT);
        return UNAVAIL;
    }
    let index = state.next;
    let Some(entry) = state.entries.as_ref().and_then(|e| e.get(index)).cloned() else {
        set_errno(errnop, libc::ENOENT);
        return NOTFOUND;
    };
    let status = deliver(convert(entry), result, buf, buflen, errnop);
    // A short buffer (TRYAGAIN) keeps the position so the retry gets the same entry.
    if status != TRYAGAIN {
        state.next += 1;
    }
    status
}

#[no_mangle]
pub extern "C" fn _nss_connect_setpwent(_stayopen: c_int) -> c_int {
    guarded(std::ptr::null_mut(), || {
        open(&mut lock(&USERS), client::all_users)
    })
}

#[no_mangle]
pub extern "C" fn _nss_connect_endpwent() -> c_int {
    guarded(std::ptr::null_mut(), || lock(&USERS).close())
}

/// # Safety
/// Called by glibc with its documented arguments.
#[no_mangle]
pub unsafe extern "C" fn _nss_connect_getpwent_r(
    result: *mut CPasswd,
    buf: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    guarded(errnop, || {
        next_entry(
            &USERS,
            client::all_users,
            passwd,
            result,
            buf,
            buflen,
            errnop,
        )
    })
}

#[no_mangle]
pub extern "C" fn _nss_connect_setgrent(_stayopen: c_int) -> c_int {
    guarded(std::ptr::null_mut(), || {
        open(&mut lock(&GROUPS), client::all_groups)
    })
}

#[no_mangle]
pub extern "C" fn _nss_connect_endgrent() -> c_int {
    guarded(std::ptr::null_mut(), || lock(&GROUPS).close())
}

/// # Safety
/// Called by glibc with its documented arguments.
#[no_mangle]
pub unsafe extern "C" fn _nss_connect_getgrent_r(
    result: *mut CGroup,
    buf: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    guarded(errnop, || {
        next_entry(
            &GROUPS,
            client::all_groups,
            group,
            result,
            buf,
            buflen,
            errnop,
        )
    })
}

// ---------------------------------------------------------------------------
// initgroups
// ---------------------------------------------------------------------------

/// Adds the user's nameservice groups to glibc's growing array.
///
/// glibc's contract: append at `(*groupsp)[*start]`, skip `group` (the
/// primary gid, already there), grow the array by doubling (never beyond
/// `limit` when `limit > 0`) and stop quietly when `limit` is reached.
///
/// # Safety
/// Called by glibc with its documented arguments: `*groupsp` is a
/// malloc'ed array of `*size` gids, of which `*start` are used.
#[no_mangle]
pub unsafe extern "C" fn _nss_connect_initgroups_dyn(
    user: *const c_char,
    group: gid_t,
    start: *mut c_long,
    size: *mut c_long,
    groupsp: *mut *mut gid_t,
    limit: c_long,
    errnop: *mut c_int,
) -> c_int {
    guarded(errnop, || {
        if start.is_null() || size.is_null() || groupsp.is_null() {
            set_errno(errnop, libc::EINVAL);
            return UNAVAIL;
        }
        let gids = match name_arg(user).map(client::supplementary_groups) {
            None | Some(Ok(None)) => {
                set_errno(errnop, libc::ENOENT);
                return NOTFOUND;
            }
            Some(Err(_)) => {
                set_errno(errnop, libc::ENOENT);
                return UNAVAIL;
            }
            Some(Ok(Some(gids))) => gids,
        };
        for gid in gids {
            if gid == group {
                continue;
            }
            let used = (*start).max(0) as usize;
            if !(*groupsp).is_null() && std::slice::from_raw_parts(*groupsp, used).contains(&gid) {
                continue;
            }
            if *start >= *size {
                if limit > 0 && *size >= limit {
                    // The caller asked for no more than `limit` groups.
                    break;
                }
                let mut new_size = (*size).max(1).saturating_mul(2);
                if limit > 0 {
                    new_size = new_size.min(limit);
                }
                let bytes = (new_size as usize).saturating_mul(std::mem::size_of::<gid_t>());
                let grown = libc::realloc((*groupsp).cast(), bytes) as *mut gid_t;
                if grown.is_null() {
                    set_errno(errnop, libc::ENOMEM);
                    return TRYAGAIN;
                }
                *groupsp = grown;
                *size = new_size;
            }
            *(*groupsp).add(*start as usize) = gid;
            *start += 1;
        }
        SUCCESS
    })
}
