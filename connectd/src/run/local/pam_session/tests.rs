//! The conversation function called directly, then the real PAM stack as
//! root in private mount namespaces, with a module that records every
//! libpam step, pam_unix for forwarded passwords, and /etc/pam.d/other.

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
fn ask(conv: &Conversation, messages: &[(c_int, &str)]) -> (c_int, Option<Vec<Option<String>>>) {
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
