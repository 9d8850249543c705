//! connectd refuses to start on forbidden combinations and malformed files,
//! naming the file, the line and the key, and exits 78 (EX_CONFIG).

use std::time::Duration;

use connect_tests::connectd::{connectd_config, connectd_once, connectd_start_refused, free_port};
use connect_tests::*;

/// Runs `connectd --check` on `text`; returns stderr of the refusal.
fn refusal(text: &str) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let out = connectd_once(dir.path(), text);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(78),
        "EX_CONFIG expected:\n{text}\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:", dir.path().join("refused.gcfg").display())),
        "the message names the file: {stderr}"
    );
    stderr
}

const LDAP: &str = "[Authentication]\nProvider = ldap\n[LDAP \"corp\"]\n\
                    ServerAddress = 127.0.0.1:389\nUserSearchBaseDN = ou=people,dc=example,dc=org\n";

#[test]
fn both_role_mappings_on_is_refused() {
    if need_root() {
        return;
    }
    let e = refusal(&format!(
        "{LDAP}UserRoleAttribute = Department\n[Authorization]\nUserRoleGroupMapping = true\n\
         UserRoleMapping = true\n"
    ));
    assert!(e.contains("refused.gcfg:9: "), "{e}");
    assert!(
        e.contains("UserRoleGroupMapping and UserRoleMapping are both true"),
        "{e}"
    );
}

#[test]
fn run_as_current_user_with_password_or_proxy_is_refused() {
    if need_root() {
        return;
    }
    let e = refusal("[Applications]\nRunAsCurrentUser = true\n");
    assert!(e.contains("refused.gcfg:2: "), "{e}");
    assert!(e.contains("Provider = password"), "{e}");
    let e = refusal(
        "[Authentication]\nProvider = proxy\n[ProxyAuth]\nTrustedProxy = 127.0.0.1\n\
         [Applications]\nRunAsCurrentUser = yes\n",
    );
    assert!(e.contains("refused.gcfg:6: "), "{e}");
    assert!(e.contains("Provider = proxy"), "{e}");
}

#[test]
fn administrator_as_default_role_is_refused() {
    if need_root() {
        return;
    }
    let e = refusal("[Authorization]\n\n; new users\nDefaultUserRole = Administrator\n");
    assert!(e.contains("refused.gcfg:4: "), "{e}");
    assert!(
        e.contains("DefaultUserRole = administrator is not allowed"),
        "{e}"
    );
}

#[test]
fn malformed_files_name_the_line() {
    if need_root() {
        return;
    }
    let e = refusal("[Authorization]\nUserRoleMapping = perhaps\n");
    assert!(
        e.contains("refused.gcfg:2: [Authorization] UserRoleMapping = \"perhaps\""),
        "{e}"
    );
    let e = refusal("[Authentication]\nProvider = kerberos\n");
    assert!(
        e.contains("refused.gcfg:2: ") && e.contains("unknown provider"),
        "{e}"
    );
    let e =
        refusal("[Server]\nDataDir = /var/lib/connect\nAddress = \"https://connect.example.org\n");
    assert!(e.contains("refused.gcfg:3"), "{e}");
    let e = refusal("[Server\nDataDir = /x\n");
    assert!(e.contains("refused.gcfg:1"), "{e}");
}

#[test]
fn a_valid_file_passes_and_unknown_keys_only_warn() {
    if need_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let out = connectd_once(
        dir.path(),
        &format!("{LDAP}[Authorization]\nDefaultUserRol = publisher\n[Nameservice]\nUidRange = 2000000-2099999\n"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("unknown configuration key ignored:")
            && stderr.contains("refused.gcfg:7: [Authorization] DefaultUserRol"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("UidRange"),
        "nameserviced's keys are not connectd's to judge: {stderr}"
    );
}

#[test]
fn role_mapping_is_refused_for_pam_and_password() {
    if need_root() {
        return;
    }
    // The guide: "not available for PAM or built-in password authentication".
    let e =
        refusal("[Authentication]\nProvider = pam\n[Authorization]\nUserRoleGroupMapping = true\n");
    assert!(
        e.contains("refused.gcfg:4: ") && e.contains("not available"),
        "{e}"
    );
    let e = refusal("[Authorization]\nUserRoleMapping = true\n");
    assert!(
        e.contains("refused.gcfg:2: ") && e.contains("Provider = password"),
        "{e}"
    );
}

#[test]
fn a_real_start_refuses_with_78_and_serves_nothing() {
    if need_root() {
        return;
    }
    // Not `--check`: the start a service manager makes. Each file is
    // otherwise startable (its own DataDir and port), so only the refusal
    // can stop it; a start that goes on is caught by the deadline.
    let cases = [
        (
            "[Applications]\nRunAsCurrentUser = true\n",
            ":2: ",
            "Provider = password",
        ),
        (
            "[Authorization]\nDefaultUserRole = administrator\n",
            ":2: ",
            "DefaultUserRole = administrator is not allowed",
        ),
        (
            "[Authorization]\nUserRoleMapping = perhaps\n",
            ":2: [Authorization] UserRoleMapping = \"perhaps\"",
            "",
        ),
    ];
    for (refused, at, says) in cases {
        let dir = tempfile::tempdir().expect("dir");
        let port = free_port();
        // The refused section comes first so that its line numbers hold.
        let text = format!("{refused}{}", connectd_config(dir.path(), port, ""));
        let out = connectd_start_refused(dir.path(), &text, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(78),
            "EX_CONFIG on a real start:\n{text}\n{stderr}"
        );
        let file = dir.path().join("refused.gcfg");
        assert!(
            stderr.contains("refusing to start")
                && stderr.contains(&format!("{}{at}", file.display()))
                && stderr.contains(says),
            "the message names the file, the line and the key:\n{stderr}"
        );
        assert!(
            !dir.path().join("data").exists(),
            "a refused start creates no DataDir"
        );
    }
}
