//! PAM sessions for content processes (`[PAM] UseSession`).
//!
//! Before a viewer's process starts under the viewer's Unix account, a PAM
//! session is opened for that account so that session modules can prepare
//! it (pam_krb5 obtains Kerberos credentials, pam_env sets variables, …).
//! The session's PAM environment is handed to the content process, and the
//! session is closed when the process ends.
//!
//! This talks to libpam through raw FFI (pam-sys) rather than the `pam`
//! crate, because that crate copies the PAM environment into connectd's own
//! process environment: in a multi-threaded server that races with every
//! other thread's `getenv`, and it would leak one viewer's variables into
//! the next viewer's process.
//!
//! Everything here blocks (modules may talk to a KDC, sleep on a failure
//! delay, …): call [`PamSession::open`], [`PamSession::close`] and drop
//! sessions from the blocking pool.
//!
//! The modules run inside connectd's process, as root. Most only touch the
//! PAM handle (pam_env, pam_krb5, pam_unix, pam_exec), but some change the
//! calling process itself, for every viewer at once: pam_limits
//! (setrlimit), pam_loginuid (/proc/self/loginuid), pam_keyinit (session
//! keyring), pam_cap (capabilities, in setcred), pam_group (setgroups, in
//! setcred), pam_systemd (moves the caller into the user's scope). The
//! session services should not use them; Debian's `su` service includes
//! pam_limits, and its common-session includes pam_systemd.
//!
//! pam_setcred runs the service's `auth` stack even when no password is
//! given; a service file without `auth` lines gets those of
//! /etc/pam.d/other, and a missing service file gets all of `other`.
//!
//! Imports nothing else of connectd (libpam, libc and std only): it opens
//! a session for whatever account it is given; which account, and when, is
//! the launcher's business.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr;
use std::sync::atomic::{compiler_fence, Ordering};

use pam_sys::raw;
use pam_sys::{
    PamConversation, PamFlag, PamHandle, PamMessage, PamMessageStyle, PamResponse, PamReturnCode,
};

const PAM_SUCCESS: c_int = PamReturnCode::SUCCESS as c_int;
const PAM_CONV_ERR: c_int = PamReturnCode::CONV_ERR as c_int;
const PAM_BUF_ERR: c_int = PamReturnCode::BUF_ERR as c_int;
const PAM_PROMPT_ECHO_OFF: c_int = PamMessageStyle::PROMPT_ECHO_OFF as c_int;
const PAM_PROMPT_ECHO_ON: c_int = PamMessageStyle::PROMPT_ECHO_ON as c_int;
const PAM_ERROR_MSG: c_int = PamMessageStyle::ERROR_MSG as c_int;
const PAM_TEXT_INFO: c_int = PamMessageStyle::TEXT_INFO as c_int;
/// Linux-PAM never sends more messages than this in one call
/// (`PAM_MAX_NUM_MSG` in `_pam_types.h`); more means a corrupt call.
const PAM_MAX_NUM_MSG: c_int = 32;

/// Where PAM looks for a service's stack (Linux-PAM also reads the vendor
/// directory; Debian leaves it empty).
const PAM_CONFIG_DIRS: [&str; 2] = ["/etc/pam.d", "/usr/lib/pam.d"];

/// The libpam call that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamStep {
    Start,
    Authenticate,
    AcctMgmt,
    EstablishCred,
    OpenSession,
    CloseSession,
    DeleteCred,
    End,
}

impl PamStep {
    /// The libpam function, as an administrator finds it in PAM's logs and
    /// manual pages.
    pub fn function(self) -> &'static str {
        match self {
            PamStep::Start => "pam_start",
            PamStep::Authenticate => "pam_authenticate",
            PamStep::AcctMgmt => "pam_acct_mgmt",
            PamStep::EstablishCred => "pam_setcred(PAM_ESTABLISH_CRED)",
            PamStep::OpenSession => "pam_open_session",
            PamStep::CloseSession => "pam_close_session",
            PamStep::DeleteCred => "pam_setcred(PAM_DELETE_CRED)",
            PamStep::End => "pam_end",
        }
    }
}

impl fmt::Display for PamStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.function())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Refused before PAM was asked (empty names, NUL bytes, a path as the
    /// service name). Never holds the password.
    #[error("cannot open a PAM session: {0}")]
    InvalidArgument(String),
    /// A libpam call failed. `config` names the file PAM read the stack
    /// from, so the administrator knows what to fix.
    #[error(
        "PAM service {service:?} ({config}): {step} failed for user {user:?}: {message} (PAM code {code})"
    )]
    Pam {
        service: String,
        config: String,
        user: String,
        step: PamStep,
        code: i32,
        /// `pam_strerror` text.
        message: String,
    },
}

impl SessionError {
    /// The libpam call that failed, when one did.
    pub fn step(&self) -> Option<PamStep> {
        match self {
            SessionError::Pam { step, .. } => Some(*step),
            SessionError::InvalidArgument(_) => None,
        }
    }

    /// The PAM return code, when libpam returned one.
    pub fn code(&self) -> Option<i32> {
        match self {
            SessionError::Pam { code, .. } => Some(*code),
            SessionError::InvalidArgument(_) => None,
        }
    }
}

/// A copy of the forwarded password that is overwritten before its memory
/// is released, so it does not linger in freed heap pages.
struct Secret(Vec<u8>);

impl Secret {
    fn new(password: &str) -> Self {
        // Exact capacity: growing would leave an unwiped copy behind.
        let mut bytes = Vec::with_capacity(password.len());
        bytes.extend_from_slice(password.as_bytes());
        Secret(bytes)
    }

    fn wipe(&mut self) {
        for byte in self.0.iter_mut() {
            // SAFETY: `byte` is a valid, aligned, exclusive reference. The
            // volatile write keeps the compiler from dropping stores to
            // memory that is about to be freed.
            unsafe { ptr::write_volatile(byte, 0) };
        }
        compiler_fence(Ordering::SeqCst);
        self.0.clear();
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What the conversation function answers with. libpam holds a pointer to
/// it (the `appdata_ptr`) until `pam_end`.
#[derive(Debug)]
struct Conversation {
    service: String,
    user: CString,
    /// `None` once the session is open: nothing asks for it afterwards.
    password: Option<Secret>,
}

/// An open PAM session. Dropping it closes the session
/// (pam_close_session, pam_setcred(PAM_DELETE_CRED), pam_end), which
/// blocks like opening does. It is Send.
pub struct PamSession {
    /// Null once ended.
    handle: *mut PamHandle,
    /// Owned (`Box::into_raw`); freed only after `pam_end`, because libpam
    /// may call the conversation function until then. Kept raw rather than
    /// as a `Box` so that moving the session never invalidates the pointer
    /// libpam holds.
    conversation: *mut Conversation,
    /// Owned like `conversation`. Linux-PAM copies the struct in pam_start,
    /// but the PAM API does not promise that, so it lives as long.
    pam_conv: *mut PamConversation,
    service: String,
    config: String,
    user: String,
    environment: Vec<(String, String)>,
    cred_established: bool,
    session_open: bool,
    /// The last libpam result, which `pam_end` wants to be told.
    last_status: c_int,
}

// SAFETY: the handle and both boxes are owned by this value alone and are
// only touched through `&mut self` or `self`, so never by two threads at
// once. libpam keeps no per-thread state for a handle: it may be used from
// whichever thread owns it, one at a time. Not Sync: `&PamSession` gives
// only the Rust copy of the environment, but there is no need to promise
// more.
unsafe impl Send for PamSession {}

impl fmt::Debug for PamSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PamSession")
            .field("service", &self.service)
            .field("user", &self.user)
            .field("open", &self.session_open)
            .field(
                "environment",
                &self.environment.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl PamSession {
    /// Blocking (PAM modules may take seconds): call it from
    /// spawn_blocking. With `password`, pam_authenticate + pam_acct_mgmt run
    /// first (AuthenticatedSessionService); without, only pam_acct_mgmt
    /// (SessionService; root may open sessions for any account). Then
    /// pam_setcred(PAM_ESTABLISH_CRED) and pam_open_session.
    pub fn open(
        service: &str,
        user: &str,
        password: Option<&str>,
    ) -> Result<PamSession, SessionError> {
        let c_service = checked_cstring("PAM service name", service)?;
        if service.contains('/') {
            // libpam would silently use the part after the last slash.
            return Err(SessionError::InvalidArgument(format!(
                "the PAM service name {service:?} is a path; give a file name in /etc/pam.d"
            )));
        }
        let c_user = checked_cstring("username", user)?;
        let secret = match password {
            Some(p) if p.as_bytes().contains(&0) => {
                return Err(SessionError::InvalidArgument(
                    "the password contains a NUL byte".into(),
                ))
            }
            Some(p) => Some(Secret::new(p)),
            None => None,
        };
        let config = config_description(service);

        let conversation = Box::into_raw(Box::new(Conversation {
            service: service.to_owned(),
            user: c_user.clone(),
            password: secret,
        }));
        let pam_conv = Box::into_raw(Box::new(PamConversation {
            conv: Some(converse),
            data_ptr: conversation.cast(),
        }));
        // From here on, dropping `session` (on any early return) ends the
        // handle if there is one and frees both boxes.
        let mut session = PamSession {
            handle: ptr::null_mut(),
            conversation,
            pam_conv,
            service: service.to_owned(),
            config,
            user: user.to_owned(),
            environment: Vec::new(),
            cred_established: false,
            session_open: false,
            last_status: PAM_SUCCESS,
        };

        let mut handle: *const PamHandle = ptr::null();
        // SAFETY: both strings are NUL-terminated and outlive the call
        // (libpam copies them); `pam_conv` is valid until `session` drops,
        // which is after pam_end.
        let code = unsafe {
            raw::pam_start(
                c_service.as_ptr(),
                c_user.as_ptr(),
                session.pam_conv,
                &mut handle,
            )
        };
        if code != PAM_SUCCESS {
            // libpam frees the handle itself when pam_start fails.
            return Err(session.error(PamStep::Start, code));
        }
        session.handle = handle.cast_mut();

        if password.is_some() {
            // DISALLOW_NULL_AUTHTOK: a forwarded password must never be
            // accepted because the account happens to have none (nullok).
            session.step(PamStep::Authenticate, |h| {
                // SAFETY: `h` is the live handle.
                unsafe { raw::pam_authenticate(h, PamFlag::DISALLOW_NULL_AUTHTOK as c_int) }
            })?;
        }
        session.step(PamStep::AcctMgmt, |h| {
            // SAFETY: `h` is the live handle.
            unsafe { raw::pam_acct_mgmt(h, 0) }
        })?;
        session.step(PamStep::EstablishCred, |h| {
            // SAFETY: `h` is the live handle.
            unsafe { raw::pam_setcred(h, PamFlag::ESTABLISH_CRED as c_int) }
        })?;
        session.cred_established = true;
        session.step(PamStep::OpenSession, |h| {
            // SAFETY: `h` is the live handle.
            unsafe { raw::pam_open_session(h, 0) }
        })?;
        session.session_open = true;

        // Modules have had their chance to ask (pam_krb5 asks during
        // authentication); keep the password no longer than needed.
        // SAFETY: no libpam call is running, so nothing else reads the
        // conversation data now.
        unsafe { (*session.conversation).password = None };

        // SAFETY: the handle is live; take_environment frees what libpam
        // allocated.
        session.environment = unsafe { take_environment(session.handle, &session.service) };
        Ok(session)
    }

    /// The session's environment (pam_getenvlist), to give to the content
    /// process.
    pub fn environment(&self) -> &[(String, String)] {
        &self.environment
    }

    /// Closes now (same as drop) and reports failures.
    pub fn close(mut self) -> Result<(), SessionError> {
        self.finish()
    }

    /// Runs one libpam call and turns its result into an error naming the
    /// step.
    fn step(
        &mut self,
        step: PamStep,
        call: impl FnOnce(*mut PamHandle) -> c_int,
    ) -> Result<(), SessionError> {
        let code = call(self.handle);
        self.last_status = code;
        if code == PAM_SUCCESS {
            Ok(())
        } else {
            Err(self.error(step, code))
        }
    }

    fn error(&self, step: PamStep, code: c_int) -> SessionError {
        SessionError::Pam {
            service: self.service.clone(),
            config: self.config.clone(),
            user: self.user.clone(),
            step,
            code,
            message: strerror(self.handle, code),
        }
    }

    /// Closes what was opened, in reverse order, then ends the handle and
    /// frees the conversation. Every step runs even when an earlier one
    /// fails; the first failure is returned. Idempotent.
    fn finish(&mut self) -> Result<(), SessionError> {
        let mut first_error = None;
        if !self.handle.is_null() {
            if self.session_open {
                self.session_open = false;
                if let Err(e) = self.step(PamStep::CloseSession, |h| {
                    // SAFETY: `h` is the live handle.
                    unsafe { raw::pam_close_session(h, 0) }
                }) {
                    first_error.get_or_insert(e);
                }
            }
            if self.cred_established {
                self.cred_established = false;
                if let Err(e) = self.step(PamStep::DeleteCred, |h| {
                    // SAFETY: `h` is the live handle.
                    unsafe { raw::pam_setcred(h, PamFlag::DELETE_CRED as c_int) }
                }) {
                    first_error.get_or_insert(e);
                }
            }
            let handle = std::mem::replace(&mut self.handle, ptr::null_mut());
            // SAFETY: `handle` is live and is never used again.
            let code = unsafe { raw::pam_end(handle, self.last_status) };
            if code != PAM_SUCCESS {
                // The handle is gone: `error` asks pam_strerror without it.
                first_error.get_or_insert(self.error(PamStep::End, code));
            }
        }
        // Only now, with the handle ended, can the conversation go.
        if !self.pam_conv.is_null() {
            // SAFETY: made by Box::into_raw in `open`, freed only here.
            drop(unsafe { Box::from_raw(self.pam_conv) });
            self.pam_conv = ptr::null_mut();
        }
        if !self.conversation.is_null() {
            // SAFETY: as above; dropping it wipes any password copy.
            drop(unsafe { Box::from_raw(self.conversation) });
            self.conversation = ptr::null_mut();
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for PamSession {
    fn drop(&mut self) {
        let open = self.session_open;
        if let Err(e) = self.finish() {
            // Failures while opening are already reported by `open`; these
            // are the teardown's own.
            if open {
                tracing::warn!(error = %e, "closing PAM session");
            } else {
                tracing::debug!(error = %e, "cleaning up after a failed PAM session");
            }
        }
    }
}

fn checked_cstring(what: &str, value: &str) -> Result<CString, SessionError> {
    if value.is_empty() {
        return Err(SessionError::InvalidArgument(format!(
            "the {what} is empty"
        )));
    }
    CString::new(value).map_err(|_| {
        SessionError::InvalidArgument(format!("the {what} {value:?} contains a NUL byte"))
    })
}

/// Which file PAM reads for `service`: libpam lowercases service names,
/// and a service without a file silently gets /etc/pam.d/other, which on
/// Debian is the common-* stack. Said in errors, and warned about, because
/// a misspelt service name otherwise "works" with a stack nobody chose.
fn config_description(service: &str) -> String {
    let file = service.to_ascii_lowercase();
    let primary = format!("{}/{file}", PAM_CONFIG_DIRS[0]);
    if let Some(found) = PAM_CONFIG_DIRS
        .iter()
        .map(|dir| format!("{dir}/{file}"))
        .find(|path| Path::new(path).exists())
    {
        return found;
    }
    if !Path::new(PAM_CONFIG_DIRS[0]).is_dir() {
        // Without /etc/pam.d, Linux-PAM reads /etc/pam.conf.
        return "/etc/pam.conf".into();
    }
    tracing::warn!(
        service,
        "{primary} does not exist, so PAM uses /etc/pam.d/other for this service"
    );
    format!("/etc/pam.d/other, because {primary} does not exist")
}

fn strerror(handle: *mut PamHandle, code: c_int) -> String {
    // SAFETY: Linux-PAM's pam_strerror accepts any handle, null included,
    // and returns a static string (or null).
    let text = unsafe { raw::pam_strerror(handle, code) };
    if text.is_null() {
        return format!("unknown PAM error {code}");
    }
    // SAFETY: non-null, NUL-terminated, static.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// Splits one `NAME=value` entry of pam_getenvlist.
fn parse_env_entry(entry: &[u8]) -> Option<(String, String)> {
    let eq = entry.iter().position(|&b| b == b'=')?;
    let (name, value) = (&entry[..eq], &entry[eq + 1..]);
    if name.is_empty() {
        return None;
    }
    Some((
        String::from_utf8(name.to_vec()).ok()?,
        String::from_utf8(value.to_vec()).ok()?,
    ))
}

/// pam_getenvlist, copied into Rust strings; frees libpam's copy.
///
/// # Safety
/// `handle` must be a live PAM handle.
unsafe fn take_environment(handle: *mut PamHandle, service: &str) -> Vec<(String, String)> {
    // SAFETY: the caller guarantees a live handle.
    let list = unsafe { raw::pam_getenvlist(handle) };
    if list.is_null() {
        tracing::warn!(
            service,
            "pam_getenvlist failed; the session has no environment"
        );
        return Vec::new();
    }
    let mut environment = Vec::new();
    let mut i = 0;
    loop {
        // SAFETY: the list is NULL-terminated; `i` never passes the NULL.
        let entry = unsafe { *list.add(i) };
        if entry.is_null() {
            break;
        }
        // SAFETY: each entry is a NUL-terminated string libpam allocated.
        let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
        match parse_env_entry(bytes) {
            Some(pair) => environment.push(pair),
            // Not passed on: a process environment needs NAME=value, and
            // connectd's process API takes UTF-8.
            None => tracing::warn!(
                service,
                "ignoring a PAM environment entry that is not UTF-8 NAME=value"
            ),
        }
        // SAFETY: the caller of pam_getenvlist owns and frees each entry.
        unsafe { libc::free(entry.cast_mut().cast()) };
        i += 1;
    }
    // SAFETY: and the array itself.
    unsafe { libc::free(list.cast_mut().cast()) };
    environment
}

/// The conversation function libpam calls. A panic must never unwind into
/// libpam's C frames, so any panic becomes a conversation error.
extern "C" fn converse(
    num_msg: c_int,
    msg: *mut *mut PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: libpam passes the arguments of the conversation contract;
        // `converse_inner` checks what it can (null pointers, counts).
        unsafe { converse_inner(num_msg, msg, resp, appdata) }
    }))
    .unwrap_or(PAM_CONV_ERR)
}

/// # Safety
/// The arguments of a PAM conversation call: `msg` points at `num_msg`
/// message pointers (Linux-PAM layout), `resp` is writable, and `appdata`
/// is the `Conversation` given to pam_start.
unsafe fn converse_inner(
    num_msg: c_int,
    msg: *mut *mut PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    if num_msg <= 0
        || num_msg > PAM_MAX_NUM_MSG
        || msg.is_null()
        || resp.is_null()
        || appdata.is_null()
    {
        return PAM_CONV_ERR;
    }
    // SAFETY: `appdata` is our Conversation, alive until pam_end; only read.
    let conversation = unsafe { &*(appdata as *const Conversation) };
    let count = num_msg as usize;
    // calloc, because libpam frees the array (and each answer) with free();
    // zeroed, so unanswered slots hold a null `resp`.
    // SAFETY: plain allocation.
    let replies = unsafe { libc::calloc(count, size_of::<PamResponse>()) }.cast::<PamResponse>();
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    for i in 0..count {
        // SAFETY: `msg` holds `count` pointers.
        let message = unsafe { *msg.add(i) };
        if message.is_null() {
            // SAFETY: `replies` holds `count` initialised slots.
            unsafe { free_replies(replies, count) };
            return PAM_CONV_ERR;
        }
        // SAFETY: non-null message from libpam.
        let (style, text_ptr) = unsafe { ((*message).msg_style, (*message).msg) };
        let text = if text_ptr.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string from the module.
            unsafe { CStr::from_ptr(text_ptr) }
                .to_string_lossy()
                .into_owned()
        };
        let service = conversation.service.as_str();
        let answer: Option<&[u8]> = match style {
            PAM_PROMPT_ECHO_OFF => match &conversation.password {
                Some(secret) => {
                    tracing::debug!(service, prompt = %text.escape_debug(), "PAM prompt answered with the password");
                    Some(&secret.0)
                }
                None => {
                    // Nothing to answer with; guessing would be worse.
                    tracing::debug!(service, prompt = %text.escape_debug(), "PAM asked for a password, and none was forwarded");
                    // SAFETY: as above.
                    unsafe { free_replies(replies, count) };
                    return PAM_CONV_ERR;
                }
            },
            PAM_PROMPT_ECHO_ON => {
                tracing::debug!(service, prompt = %text.escape_debug(), "PAM prompt answered with the username");
                Some(conversation.user.as_bytes())
            }
            PAM_ERROR_MSG => {
                tracing::warn!(service, message = %text.escape_debug(), "PAM module error message");
                None
            }
            PAM_TEXT_INFO => {
                tracing::debug!(service, message = %text.escape_debug(), "PAM module message");
                None
            }
            other => {
                tracing::warn!(
                    service,
                    style = other,
                    "PAM module used an unsupported conversation message style"
                );
                // SAFETY: as above.
                unsafe { free_replies(replies, count) };
                return PAM_CONV_ERR;
            }
        };
        if let Some(bytes) = answer {
            let copy = malloc_cstring(bytes);
            if copy.is_null() {
                // SAFETY: as above.
                unsafe { free_replies(replies, count) };
                return PAM_BUF_ERR;
            }
            // SAFETY: slot `i` exists.
            unsafe { (*replies.add(i)).resp = copy };
        }
    }
    // SAFETY: `resp` is writable; libpam now owns the replies.
    unsafe { *resp = replies };
    PAM_SUCCESS
}

/// A malloc'd NUL-terminated copy, which libpam frees with free(). Null when
/// out of memory.
fn malloc_cstring(bytes: &[u8]) -> *mut c_char {
    // SAFETY: plain allocation of len + 1 bytes.
    let copy = unsafe { libc::malloc(bytes.len() + 1) }.cast::<u8>();
    if copy.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `copy` has room for the bytes and the terminator, and does
    // not overlap `bytes`.
    unsafe {
        ptr::copy_nonoverlapping(bytes.as_ptr(), copy, bytes.len());
        *copy.add(bytes.len()) = 0;
    }
    copy.cast()
}

/// Frees replies that will not be handed to libpam, wiping each answer
/// first (one may be the password).
///
/// # Safety
/// `replies` is a calloc'd array of `count` slots whose `resp` fields are
/// null or malloc'd strings.
unsafe fn free_replies(replies: *mut PamResponse, count: usize) {
    for i in 0..count {
        // SAFETY: slot `i` exists.
        let text = unsafe { (*replies.add(i)).resp };
        if !text.is_null() {
            // SAFETY: a NUL-terminated malloc'd string we wrote.
            unsafe {
                let len = libc::strlen(text);
                for j in 0..len {
                    ptr::write_volatile(text.add(j), 0);
                }
                libc::free(text.cast());
            }
        }
    }
    // SAFETY: the calloc'd array.
    unsafe { libc::free(replies.cast()) };
}

#[cfg(test)]
mod tests;
