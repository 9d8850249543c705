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
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::process::Command;

    // ----- the conversation function, called directly (no PAM stack) -----

    fn conversation(password: Option<&str>) -> Box<Conversation> {
        Box::new(Conversation {
            service: "test".into(),
            user: CString::new("alice").expect("no NUL"),
            password: password.map(Secret::new),
        })
    }

    /// Calls `converse` like libpam does, returning the code and the
    /// answers (None for an empty slot). Frees what it gets back.
    fn ask(
        conv: &Conversation,
        messages: &[(c_int, &str)],
    ) -> (c_int, Option<Vec<Option<String>>>) {
        let texts: Vec<CString> = messages
            .iter()
            .map(|(_, t)| CString::new(*t).expect("no NUL"))
            .collect();
        let mut structs: Vec<PamMessage> = messages
            .iter()
            .zip(&texts)
            .map(|((style, _), text)| PamMessage {
                msg_style: *style,
                msg: text.as_ptr(),
            })
            .collect();
        let mut pointers: Vec<*mut PamMessage> =
            structs.iter_mut().map(|m| m as *mut PamMessage).collect();
        let mut resp: *mut PamResponse = ptr::null_mut();
        let code = converse(
            messages.len() as c_int,
            pointers.as_mut_ptr(),
            &mut resp,
            conv as *const Conversation as *mut c_void,
        );
        if resp.is_null() {
            return (code, None);
        }
        let mut answers = Vec::new();
        for i in 0..messages.len() {
            // SAFETY: converse returned `messages.len()` slots.
            let text = unsafe { (*resp.add(i)).resp };
            if text.is_null() {
                answers.push(None);
            } else {
                // SAFETY: a malloc'd NUL-terminated string, ours to free.
                answers.push(Some(
                    unsafe { CStr::from_ptr(text) }
                        .to_string_lossy()
                        .into_owned(),
                ));
                unsafe { libc::free(text.cast()) };
            }
        }
        // SAFETY: the calloc'd array, ours to free.
        unsafe { libc::free(resp.cast()) };
        (code, Some(answers))
    }

    #[test]
    fn conversation_answers_each_message_style() {
        let conv = conversation(Some("s3cret"));
        let (code, answers) = ask(
            &conv,
            &[
                (PAM_TEXT_INFO, "Welcome"),
                (PAM_PROMPT_ECHO_ON, "login: "),
                (PAM_PROMPT_ECHO_OFF, "Password: "),
                (PAM_ERROR_MSG, "Your password expires soon"),
            ],
        );
        assert_eq!(code, PAM_SUCCESS);
        assert_eq!(
            answers.expect("replies"),
            vec![None, Some("alice".into()), Some("s3cret".into()), None]
        );
    }

    #[test]
    fn conversation_without_password_refuses_password_prompts() {
        let conv = conversation(None);
        let (code, answers) = ask(&conv, &[(PAM_PROMPT_ECHO_OFF, "Password: ")]);
        assert_eq!(code, PAM_CONV_ERR);
        assert!(answers.is_none(), "no replies handed back on failure");
        // A username prompt alone still works without a password.
        let (code, answers) = ask(&conv, &[(PAM_PROMPT_ECHO_ON, "login: ")]);
        assert_eq!(code, PAM_SUCCESS);
        assert_eq!(answers.expect("replies"), vec![Some("alice".into())]);
    }

    #[test]
    fn conversation_rejects_malformed_calls() {
        let conv = conversation(Some("pw"));
        let (code, answers) = ask(&conv, &[]);
        assert_eq!(code, PAM_CONV_ERR, "zero messages");
        assert!(answers.is_none());
        let (code, answers) = ask(&conv, &[(7, "binary prompt")]);
        assert_eq!(code, PAM_CONV_ERR, "PAM_BINARY_PROMPT is unsupported");
        assert!(answers.is_none());
        let mut resp: *mut PamResponse = ptr::null_mut();
        let code = converse(1, ptr::null_mut(), &mut resp, ptr::null_mut());
        assert_eq!(code, PAM_CONV_ERR, "null pointers");
        assert!(resp.is_null());
    }

    #[test]
    fn secret_is_overwritten_when_wiped() {
        let mut secret = Secret::new("hunter2");
        let (data, len) = (secret.0.as_ptr(), secret.0.len());
        secret.wipe();
        assert!(secret.0.is_empty());
        assert_eq!(secret.0.as_ptr(), data, "same allocation, still owned");
        // SAFETY: the allocation is still owned by `secret` (capacity kept)
        // and its first `len` bytes were initialised.
        let bytes = unsafe { std::slice::from_raw_parts(data, len) };
        assert_eq!(bytes, &[0u8; 7]);
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }

    #[test]
    fn environment_entries_are_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_env_entry(b"KRB5CCNAME=FILE:/tmp/krb5cc_1"),
            Some(("KRB5CCNAME".into(), "FILE:/tmp/krb5cc_1".into()))
        );
        assert_eq!(parse_env_entry(b"A=b=c"), Some(("A".into(), "b=c".into())));
        assert_eq!(
            parse_env_entry(b"EMPTY="),
            Some(("EMPTY".into(), String::new()))
        );
        assert_eq!(parse_env_entry(b"NOEQUALS"), None);
        assert_eq!(parse_env_entry(b"=value"), None);
        assert_eq!(parse_env_entry(b"BAD=\xff"), None);
    }

    #[test]
    fn unusable_arguments_are_refused_before_pam() {
        for (service, user, password, expect) in [
            ("", "alice", None, "PAM service name is empty"),
            ("a\0b", "alice", None, "contains a NUL byte"),
            ("../../tmp/x", "alice", None, "is a path"),
            ("login", "", None, "username is empty"),
            ("login", "al\0ice", None, "username"),
            (
                "login",
                "alice",
                Some("se\0cret"),
                "password contains a NUL byte",
            ),
        ] {
            let err = PamSession::open(service, user, password).expect_err(expect);
            assert!(matches!(err, SessionError::InvalidArgument(_)), "{err:?}");
            let text = err.to_string();
            assert!(text.contains(expect), "{text}");
            assert!(!text.contains("cret"), "never the password: {text}");
            assert_eq!(err.step(), None);
        }
    }

    #[test]
    fn errors_name_the_service_file_step_and_reason() {
        let err = SessionError::Pam {
            service: "rstudio-connect".into(),
            config: "/etc/pam.d/rstudio-connect".into(),
            user: "alice".into(),
            step: PamStep::AcctMgmt,
            code: 7,
            message: "Authentication failure".into(),
        };
        assert_eq!(
            err.to_string(),
            "PAM service \"rstudio-connect\" (/etc/pam.d/rstudio-connect): pam_acct_mgmt \
             failed for user \"alice\": Authentication failure (PAM code 7)"
        );
        assert_eq!(err.step(), Some(PamStep::AcctMgmt));
        assert_eq!(err.code(), Some(7));
    }

    #[test]
    fn sessions_are_send() {
        fn assert_send<T: Send>() {}
        assert_send::<PamSession>();
    }

    // ----- the real PAM stack, inside private mount namespaces -----
    //
    // Each test below runs twice: the parent (the normal test run) writes a
    // sandbox directory with a copy of /etc/pam.d plus the test's service
    // file, then re-runs this test binary, filtered to the same test, under
    // `unshare --mount --propagation private` with the copies bind-mounted
    // over the host's. The child sees the CHILD_ENV variable, talks to PAM
    // and asserts; the parent checks its exit status, what the session
    // recorder wrote, and that the host's files were never changed.

    const CHILD_ENV: &str = "CONNECTD_PAM_SESSION_TEST";
    const DIR_ENV: &str = "CONNECTD_PAM_SESSION_DIR";
    const SERVICE_ENV: &str = "CONNECTD_PAM_SESSION_SERVICE";
    /// Written by a child that got to the end, so a filter that matched no
    /// test (exit 0, nothing run) cannot pass for success.
    const DONE_FILE: &str = "child-done";

    /// In the re-executed child: the sandbox directory and service name.
    fn child_context(test: &str) -> Option<(PathBuf, String)> {
        if std::env::var(CHILD_ENV).ok()? != test {
            return None;
        }
        let dir = PathBuf::from(std::env::var(DIR_ENV).expect("sandbox dir"));
        let service = std::env::var(SERVICE_ENV).expect("service");
        Some((dir, service))
    }

    fn child_done(dir: &Path) {
        fs::write(dir.join(DONE_FILE), "ok").expect("write done marker");
    }

    /// Skips (by returning true) when not root: private mount namespaces
    /// need it. CI runs as root, where this never skips.
    fn need_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "the PAM session tests must run as root in CI"
            );
            eprintln!("skipped: needs root for private mount namespaces");
            return true;
        }
        false
    }

    struct Sandbox {
        dir: tempfile::TempDir,
        service: String,
        binds: Vec<(PathBuf, &'static str)>,
    }

    impl Sandbox {
        /// A copy of the host's /etc/pam.d, to be bound over it.
        fn new(tag: &str) -> Self {
            let dir = tempfile::Builder::new()
                .prefix("connectd-pam-session-")
                .tempdir()
                .expect("tempdir");
            let pam_dir = dir.path().join("pam.d");
            fs::create_dir(&pam_dir).expect("mkdir pam.d");
            for entry in fs::read_dir("/etc/pam.d").expect("/etc/pam.d") {
                let entry = entry.expect("entry");
                fs::copy(entry.path(), pam_dir.join(entry.file_name())).expect("copy pam.d");
            }
            let service = format!("connect-test-session-{}-{tag}", std::process::id());
            assert!(
                !Path::new("/etc/pam.d").join(&service).exists(),
                "the host has a file named like the test service"
            );
            Sandbox {
                dir,
                service,
                binds: vec![(pam_dir, "/etc/pam.d")],
            }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn write_pam_file(&self, name: &str, stack: &str) {
            fs::write(self.path("pam.d").join(name), stack).expect("write PAM file");
        }

        /// A script for `pam_exec.so` lines that appends
        /// "<PAM_TYPE> <PAM_USER> <PAM_SERVICE>" to `records.log`.
        fn recorder(&self) -> PathBuf {
            let script = self.path("record.sh");
            fs::write(
                &script,
                format!(
                    "#!/bin/sh\necho \"$PAM_TYPE $PAM_USER $PAM_SERVICE\" >> {}\n",
                    self.path("records.log").display()
                ),
            )
            .expect("write recorder");
            fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
            script
        }

        fn records(&self) -> Vec<String> {
            fs::read_to_string(self.path("records.log"))
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect()
        }

        /// Copies of /etc/passwd and /etc/shadow with one more account.
        fn add_account(&mut self, name: &str, password: &str) {
            let passwd = fs::read_to_string("/etc/passwd").expect("passwd");
            let shadow = fs::read_to_string("/etc/shadow").expect("shadow");
            assert!(
                !passwd.lines().any(|l| l.starts_with(&format!("{name}:"))),
                "the host already has an account {name}"
            );
            let used: Vec<u32> = passwd
                .lines()
                .filter_map(|l| l.split(':').nth(2)?.parse().ok())
                .collect();
            let uid = (50_000..).find(|u| !used.contains(u)).expect("a free uid");
            let hash = Command::new("openssl")
                .args(["passwd", "-6", "-salt", "connectsessiontest", password])
                .output()
                .expect("openssl passwd");
            assert!(hash.status.success());
            let hash = String::from_utf8(hash.stdout).expect("utf-8");
            let passwd_copy = self.path("passwd");
            let shadow_copy = self.path("shadow");
            fs::write(
                &passwd_copy,
                format!("{passwd}{name}:x:{uid}:{uid}:PAM Session Test:/nonexistent:/bin/sh\n"),
            )
            .expect("write passwd");
            fs::write(
                &shadow_copy,
                format!("{shadow}{name}:{}:19000:0:99999:7:::\n", hash.trim()),
            )
            .expect("write shadow");
            fs::set_permissions(&shadow_copy, fs::Permissions::from_mode(0o640)).expect("chmod");
            self.binds.push((passwd_copy, "/etc/passwd"));
            self.binds.push((shadow_copy, "/etc/shadow"));
        }

        /// Runs `test` again in a private mount namespace with the binds,
        /// and fails unless it ran to the end.
        fn run_child(&self, test: &str) {
            let module = module_path!()
                .split_once("::")
                .map_or(module_path!(), |(_, rest)| rest);
            let filter = format!("{module}::{test}");
            let mut cmd = Command::new("unshare");
            cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
                .arg(
                    "set -e\n\
                     while [ \"$1\" != -- ]; do mount --bind \"$1\" \"$2\"; shift 2; done\n\
                     shift\n\
                     exec \"$@\"",
                )
                .arg("sh");
            for (source, target) in &self.binds {
                cmd.arg(source).arg(target);
            }
            cmd.arg("--")
                .arg(std::env::current_exe().expect("test binary"))
                .args(["--exact", &filter, "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, test)
                .env(DIR_ENV, self.dir.path())
                .env(SERVICE_ENV, &self.service);
            let out = cmd.output().expect("run unshare");
            assert!(
                out.status.success(),
                "child {filter} failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                self.path(DONE_FILE).exists(),
                "child {filter} did not run the test:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
            self.assert_host_untouched();
        }

        fn assert_host_untouched(&self) {
            let leaked: Vec<_> = fs::read_dir("/etc/pam.d")
                .expect("/etc/pam.d")
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| name.starts_with(&self.service))
                .collect();
            assert!(
                leaked.is_empty(),
                "test services leaked into the host's /etc/pam.d: {leaked:?}"
            );
            let passwd = fs::read_to_string("/etc/passwd").expect("passwd");
            assert!(
                !passwd.contains("PAM Session Test"),
                "the test account leaked into the host's /etc/passwd"
            );
        }
    }

    fn pam_error(result: Result<PamSession, SessionError>) -> SessionError {
        match result {
            Ok(session) => panic!("expected a PAM error, got {session:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn session_environment_reaches_the_caller_and_close_is_called() {
        const TEST: &str = "session_environment_reaches_the_caller_and_close_is_called";
        if let Some((dir, service)) = child_context(TEST) {
            assert!(std::env::var_os("KRB5CCNAME").is_none(), "precondition");
            let session = PamSession::open(&service, "root", None).expect("open");
            let env = session.environment();
            assert!(
                env.contains(&("KRB5CCNAME".into(), "FILE:/tmp/krb5cc_test".into())),
                "{env:?}"
            );
            assert!(
                env.contains(&("CONNECT_TEST_VALUE".into(), "a=b".into())),
                "{env:?}"
            );
            assert!(
                std::env::var_os("KRB5CCNAME").is_none(),
                "the PAM environment must not leak into connectd's own"
            );
            let records = fs::read_to_string(dir.join("records.log")).expect("records");
            assert_eq!(records, format!("open_session root {service}\n"));
            session.close().expect("close");

            // Dropping closes too, also on another thread than the opener.
            let opener = service.clone();
            let session = std::thread::spawn(move || PamSession::open(&opener, "root", None))
                .join()
                .expect("opener thread")
                .expect("open again");
            drop(session);
            child_done(&dir);
            return;
        }
        if need_root() {
            return;
        }
        let sandbox = Sandbox::new("env");
        let envfile = sandbox.path("environment");
        fs::write(
            &envfile,
            "KRB5CCNAME=FILE:/tmp/krb5cc_test\nCONNECT_TEST_VALUE=a=b\n",
        )
        .expect("envfile");
        let conffile = sandbox.path("pam_env.conf");
        fs::write(&conffile, "").expect("conffile");
        sandbox.write_pam_file(
            &sandbox.service,
            &format!(
                "auth required pam_permit.so\n\
                 account required pam_permit.so\n\
                 session required pam_env.so readenv=1 envfile={} conffile={} user_readenv=0\n\
                 session required pam_exec.so {}\n",
                envfile.display(),
                conffile.display(),
                sandbox.recorder().display()
            ),
        );
        sandbox.run_child(TEST);
        let s = &sandbox.service;
        assert_eq!(
            sandbox.records(),
            [
                format!("open_session root {s}"),
                format!("close_session root {s}"),
                format!("open_session root {s}"),
                format!("close_session root {s}"),
            ]
        );
    }

    #[test]
    fn denied_account_fails_in_acct_mgmt_and_opens_nothing() {
        const TEST: &str = "denied_account_fails_in_acct_mgmt_and_opens_nothing";
        if let Some((dir, service)) = child_context(TEST) {
            for password in [None, Some("anything")] {
                let err = pam_error(PamSession::open(&service, "root", password));
                assert_eq!(err.step(), Some(PamStep::AcctMgmt), "{err}");
                assert_eq!(err.code(), Some(PamReturnCode::AUTH_ERR as i32), "{err}");
                let text = err.to_string();
                for part in [
                    "pam_acct_mgmt",
                    &format!("/etc/pam.d/{service}"),
                    "\"root\"",
                    "Authentication failure",
                ] {
                    assert!(text.contains(part), "{part:?} missing from {text}");
                }
                assert!(!text.contains("anything"), "never the password: {text}");
            }
            child_done(&dir);
            return;
        }
        if need_root() {
            return;
        }
        let sandbox = Sandbox::new("deny");
        sandbox.write_pam_file(
            &sandbox.service,
            &format!(
                "auth required pam_permit.so\n\
                 account required pam_deny.so\n\
                 session required pam_exec.so {}\n",
                sandbox.recorder().display()
            ),
        );
        sandbox.run_child(TEST);
        assert_eq!(sandbox.records(), Vec::<String>::new(), "no session opened");
    }

    /// A PAM module that appends "<call> <flags>" to the file named by its
    /// first argument, so tests see every libpam step, its order and flags
    /// (pam_exec ignores pam_setcred, so it cannot show credentials).
    const RECORDING_MODULE: &str = r#"
#include <stdio.h>
#include <security/pam_modules.h>

static int record(const char *call, int flags, int argc, const char **argv)
{
    FILE *f;
    if (argc < 1)
        return PAM_SERVICE_ERR;
    f = fopen(argv[0], "a");
    if (f == NULL)
        return PAM_SYSTEM_ERR;
    fprintf(f, "%s 0x%x\n", call, (unsigned) (flags & ~PAM_SILENT));
    fclose(f);
    return PAM_SUCCESS;
}

int pam_sm_authenticate(pam_handle_t *h, int flags, int argc, const char **argv)
{ (void) h; return record("authenticate", flags, argc, argv); }
int pam_sm_setcred(pam_handle_t *h, int flags, int argc, const char **argv)
{ (void) h; return record("setcred", flags, argc, argv); }
int pam_sm_acct_mgmt(pam_handle_t *h, int flags, int argc, const char **argv)
{ (void) h; return record("acct_mgmt", flags, argc, argv); }
int pam_sm_open_session(pam_handle_t *h, int flags, int argc, const char **argv)
{ (void) h; return record("open_session", flags, argc, argv); }
int pam_sm_close_session(pam_handle_t *h, int flags, int argc, const char **argv)
{ (void) h; return record("close_session", flags, argc, argv); }
"#;

    /// Builds RECORDING_MODULE into the sandbox with the C compiler (the
    /// end-to-end tests need one too).
    fn build_recording_module(sandbox: &Sandbox) -> PathBuf {
        let source = sandbox.path("pam_record.c");
        let module = sandbox.path("pam_record.so");
        fs::write(&source, RECORDING_MODULE).expect("write module source");
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-Wall", "-Werror", "-o"])
            .arg(&module)
            .arg(&source)
            .output()
            .expect("run cc (a C compiler is needed for this test)");
        assert!(
            out.status.success(),
            "cc failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        module
    }

    #[test]
    fn pam_steps_run_in_order_with_the_right_flags() {
        const TEST: &str = "pam_steps_run_in_order_with_the_right_flags";
        if let Some((dir, service)) = child_context(TEST) {
            let calls = dir.join("calls.log");
            let take_calls = || {
                let text = fs::read_to_string(&calls).unwrap_or_default();
                fs::write(&calls, "").expect("reset calls");
                text.lines().map(str::to_owned).collect::<Vec<_>>()
            };

            let session = PamSession::open(&service, "root", Some("pw")).expect("open");
            assert_eq!(
                take_calls(),
                [
                    "authenticate 0x1", // PAM_DISALLOW_NULL_AUTHTOK
                    "acct_mgmt 0x0",
                    "setcred 0x2", // PAM_ESTABLISH_CRED
                    "open_session 0x0",
                ]
            );
            session.close().expect("close");
            assert_eq!(
                take_calls(),
                ["close_session 0x0", "setcred 0x4"], // PAM_DELETE_CRED
            );

            drop(PamSession::open(&service, "root", None).expect("open without password"));
            assert_eq!(
                take_calls(),
                [
                    "acct_mgmt 0x0",
                    "setcred 0x2",
                    "open_session 0x0",
                    "close_session 0x0",
                    "setcred 0x4",
                ],
                "no authentication without a password; dropping closes"
            );

            // open_session fails after the recorder ran: the credentials
            // are deleted, but a session that never opened is not closed.
            let failing = format!("{service}-opendeny");
            let err = pam_error(PamSession::open(&failing, "root", None));
            assert_eq!(err.step(), Some(PamStep::OpenSession), "{err}");
            assert!(err.to_string().contains("pam_open_session"), "{err}");
            assert_eq!(
                take_calls(),
                [
                    "acct_mgmt 0x0",
                    "setcred 0x2",
                    "open_session 0x0",
                    "setcred 0x4"
                ]
            );

            // pam_acct_mgmt refuses: nothing after it runs.
            let denied = format!("{service}-acctdeny");
            let err = pam_error(PamSession::open(&denied, "root", Some("pw")));
            assert_eq!(err.step(), Some(PamStep::AcctMgmt), "{err}");
            assert_eq!(take_calls(), ["authenticate 0x1", "acct_mgmt 0x0"]);
            child_done(&dir);
            return;
        }
        if need_root() {
            return;
        }
        let sandbox = Sandbox::new("order");
        let module = build_recording_module(&sandbox);
        let record = format!(
            "{} {}",
            module.display(),
            sandbox.path("calls.log").display()
        );
        let all = format!(
            "auth required {record}\n\
             account required {record}\n\
             session required {record}\n"
        );
        sandbox.write_pam_file(&sandbox.service, &all);
        sandbox.write_pam_file(
            &format!("{}-opendeny", sandbox.service),
            &format!("{all}session required pam_deny.so\n"),
        );
        sandbox.write_pam_file(
            &format!("{}-acctdeny", sandbox.service),
            &format!("{all}account required pam_deny.so\n"),
        );
        sandbox.run_child(TEST);
    }

    const TEST_USER: &str = "connect-pamsess";
    const TEST_PASSWORD: &str = "correct horse battery";

    #[test]
    fn forwarded_password_is_checked_by_pam_unix() {
        const TEST: &str = "forwarded_password_is_checked_by_pam_unix";
        if let Some((dir, service)) = child_context(TEST) {
            let session =
                PamSession::open(&service, TEST_USER, Some(TEST_PASSWORD)).expect("right password");
            // SAFETY: the conversation lives until the session ends; no
            // libpam call is running.
            let holds = unsafe { (*session.conversation).password.is_some() };
            assert!(
                !holds,
                "the password copy is dropped once the session is open"
            );
            session.close().expect("close");

            let err = pam_error(PamSession::open(
                &service,
                TEST_USER,
                Some("wrong password"),
            ));
            assert_eq!(err.step(), Some(PamStep::Authenticate), "{err}");
            assert_eq!(err.code(), Some(PamReturnCode::AUTH_ERR as i32), "{err}");
            let text = err.to_string();
            assert!(text.contains("pam_authenticate"), "{text}");
            assert!(
                !text.contains("wrong password"),
                "never the password: {text}"
            );

            // Without a password only the account stack runs (the
            // SessionService case): the auth stack is never asked.
            PamSession::open(&service, TEST_USER, None)
                .expect("no password")
                .close()
                .expect("close");

            // An account pam_unix does not know fails even with a
            // password.
            let err = pam_error(PamSession::open(
                &service,
                "connect-no-such-user",
                Some(TEST_PASSWORD),
            ));
            assert_eq!(err.step(), Some(PamStep::Authenticate), "{err}");
            child_done(&dir);
            return;
        }
        if need_root() {
            return;
        }
        let mut sandbox = Sandbox::new("unix");
        sandbox.add_account(TEST_USER, TEST_PASSWORD);
        sandbox.write_pam_file(
            &sandbox.service,
            &format!(
                "auth required pam_unix.so nodelay\n\
                 account required pam_unix.so\n\
                 session required pam_exec.so {}\n",
                sandbox.recorder().display()
            ),
        );
        sandbox.run_child(TEST);
        let s = &sandbox.service;
        assert_eq!(
            sandbox.records(),
            [
                format!("open_session {TEST_USER} {s}"),
                format!("close_session {TEST_USER} {s}"),
                format!("open_session {TEST_USER} {s}"),
                format!("close_session {TEST_USER} {s}"),
            ],
            "one session per successful open; the wrong password opened none"
        );
    }

    #[test]
    fn missing_service_file_falls_back_to_other() {
        const TEST: &str = "missing_service_file_falls_back_to_other";
        if let Some((dir, service)) = child_context(TEST) {
            assert!(!Path::new("/etc/pam.d").join(&service).exists());
            PamSession::open(&service, "root", None)
                .expect("other lets root in")
                .close()
                .expect("close");
            let err = pam_error(PamSession::open(&service, "nobody", None));
            assert_eq!(err.step(), Some(PamStep::AcctMgmt), "{err}");
            let text = err.to_string();
            assert!(
                text.contains(&format!(
                    "/etc/pam.d/other, because /etc/pam.d/{service} does not exist"
                )),
                "{text}"
            );
            child_done(&dir);
            return;
        }
        if need_root() {
            return;
        }
        // A known `other`, so the test proves which file PAM fell back to.
        let sandbox = Sandbox::new("fallback");
        let host_other = fs::read("/etc/pam.d/other").expect("host other");
        sandbox.write_pam_file(
            "other",
            &format!(
                "auth required pam_permit.so\n\
                 account required pam_succeed_if.so user = root\n\
                 session required pam_exec.so {}\n",
                sandbox.recorder().display()
            ),
        );
        sandbox.run_child(TEST);
        let s = &sandbox.service;
        assert_eq!(
            sandbox.records(),
            [
                format!("open_session root {s}"),
                format!("close_session root {s}"),
            ]
        );
        assert_eq!(
            fs::read("/etc/pam.d/other").expect("host other"),
            host_other,
            "the host's /etc/pam.d/other is unchanged"
        );
    }

    #[test]
    fn missing_service_file_with_debians_other() {
        const TEST: &str = "missing_service_file_with_debians_other";
        if let Some((dir, service)) = child_context(TEST) {
            // Debian's /etc/pam.d/other is the common-* stack, not a
            // deny-all: pam_unix's account check passes for a real
            // account, and common-session opens (pam_systemd is optional).
            PamSession::open(&service, "root", None)
                .expect("Debian's other opens sessions for existing accounts")
                .close()
                .expect("close");
            // pam_unix does not know this account; common-account then
            // reaches its pam_deny.
            let err = pam_error(PamSession::open(&service, "connect-no-such-user", None));
            assert_eq!(err.step(), Some(PamStep::AcctMgmt), "{err}");
            child_done(&dir);
            return;
        }
        if need_root() {
            return;
        }
        let other = fs::read_to_string("/etc/pam.d/other").expect("/etc/pam.d/other");
        assert!(
            other.contains("@include common-account") && other.contains("@include common-session"),
            "this test describes Debian's /etc/pam.d/other, which includes the common-* files:\n{other}"
        );
        let sandbox = Sandbox::new("debian");
        sandbox.run_child(TEST);
    }
}
