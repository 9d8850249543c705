//! `[PAM] UseSession`: a PAM session is opened for the viewer's account
//! before their process starts (the real PAM stack: pam_env, pam_exec,
//! pam_unix), its environment reaches the process, and it is closed when
//! the process ends. With `ForwardPassword`, the password from sign-in opens
//! the `AuthenticatedSessionService` instead (how Kerberos credentials are
//! obtained).

use std::fs;
use std::time::{Duration, Instant};

use connect_tests::connectd::Connectd;
use connect_tests::content::*;
use connect_tests::*;
use serde_json::json;

fn session_world() -> (Sandbox, std::path::PathBuf) {
    let sandbox = pam_world(&[]);
    let record = sandbox.path("pam-sessions.log");
    let pam_dir = sandbox.path("pam.d");
    // PAM's configuration syntax has no quoting: the recorder is a script.
    let recorder = sandbox.path("record-pam.sh");
    fs::write(
        &recorder,
        format!(
            "#!/bin/sh\necho \"$PAM_TYPE $PAM_USER $1\" >> {}\n",
            record.display()
        ),
    )
    .expect("recorder");
    fs::set_permissions(
        &recorder,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    for (service, name, auth) in [
        ("connect-session", "plain", ""),
        (
            "connect-auth-session",
            "authenticated",
            "auth required pam_unix.so nodelay\n",
        ),
    ] {
        let env_conf = sandbox.path(&format!("{service}.env.conf"));
        fs::write(
            &env_conf,
            format!(
                "KRB5CCNAME DEFAULT=FILE:/tmp/krb5cc_@{{PAM_USER}}\n\
                 CONNECT_PAM_SERVICE DEFAULT={name}\n"
            ),
        )
        .expect("pam_env conf");
        fs::write(
            pam_dir.join(service),
            format!(
                "{auth}account required pam_unix.so\n\
                 session required pam_env.so readenv=0 user_readenv=0 conffile={}\n\
                 session optional pam_exec.so quiet {} {name}\n",
                env_conf.display(),
                recorder.display()
            ),
        )
        .expect("pam service");
    }
    (sandbox, record)
}

fn wait_for_line(path: &std::path::Path, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {line:?} in the PAM record:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn viewers_processes_run_inside_a_pam_session() {
    if need_root() {
        return;
    }
    let (sandbox, record) = session_world();
    let server = Connectd::start_in(
        &sandbox,
        &pam_config("[PAM]\nUseSession = true\nSessionService = connect-session\n"),
    );
    let admin = sign_in(&server, "admin1");
    let viewer = sign_in(&server, "view1");
    let app = server.create_content(
        &admin,
        json!({"name": "kerberized", "access_type": "all", "run_as_current_user": true,
               "idle_timeout": 1}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    server.deploy(&admin, &guid, &probe_bundle());

    let who = server.open(&guid, "whoami", Some(&viewer));
    assert_eq!(who.status, 200, "{}\n{}", who.body, server.log_text());
    let who = who.json();
    assert_eq!(who["env"]["KRB5CCNAME"], "FILE:/tmp/krb5cc_view1", "{who}");
    assert_eq!(who["env"]["CONNECT_PAM_SERVICE"], "plain", "{who}");
    assert_eq!(
        who["env"]["USER"], "view1",
        "PAM never replaces the identity"
    );
    wait_for_line(&record, "open_session view1 plain");
    // Anonymous viewers run as RunAs, without a viewer's session.
    let anonymous = server.open(&guid, "whoami", None).json();
    assert_eq!(anonymous["uid"], 999);
    assert_eq!(anonymous["env"]["KRB5CCNAME"], serde_json::Value::Null);
    // The session closes when the (idle) process is reaped.
    let text = wait_for_line(&record, "close_session view1 plain");
    assert!(!text.contains("connect"), "no session for RunAs: {text}");
}

#[test]
fn forwarded_passwords_open_the_authenticated_session_service() {
    if need_root() {
        return;
    }
    let (sandbox, record) = session_world();
    let server = Connectd::start_in(
        &sandbox,
        &pam_config(
            "[PAM]\nUseSession = true\nSessionService = connect-session\n\
             ForwardPassword = true\nAuthenticatedSessionService = connect-auth-session\n",
        ),
    );
    let admin = sign_in(&server, "admin1");
    let viewer = sign_in(&server, "view1");
    let app = server.create_content(
        &admin,
        json!({"name": "kerberized", "access_type": "logged_in", "run_as_current_user": true}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    server.deploy(&admin, &guid, &probe_bundle());
    let who = server.open(&guid, "whoami", Some(&viewer));
    assert_eq!(who.status, 200, "{}\n{}", who.body, server.log_text());
    assert_eq!(who.json()["env"]["CONNECT_PAM_SERVICE"], "authenticated");
    wait_for_line(&record, "open_session view1 authenticated");
    assert!(
        !server.log_text().contains(PASSWORD),
        "the password is never logged"
    );
}
