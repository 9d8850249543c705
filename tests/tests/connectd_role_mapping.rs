//! Automatic role mapping against a real slapd, one test per rule of the
//! role-mapping guide (../shared/spec/seed-role-mapping.txt): every row of
//! both tables, the direct attribute, and every paragraph of "When and How
//! Are Roles Determined" and "Logging and Troubleshooting". Each test checks
//! the role connectd stored and the exact log line.

use connect_tests::connectd::Connectd;
use connect_tests::slapd::Slapd;
use connect_tests::*;
use serde_json::json;

/// The guide's "Groups to Roles" configuration.
const GROUPS: &str = "[Authorization]\nUserRoleGroupMapping = true\n\
                      PublisherRoleMapping = Data-Science\n\
                      AdministratorRoleMapping = Data-Science-Leaders\n\
                      AdministratorRoleMapping = IT-Administrators\n";

/// The guide's "Mapping From an Attribute" configuration (its `[LDAP]` key
/// is spelled `UserAttributeRole`, as the guide writes it).
const ATTRIBUTE: &str = "[Authorization]\nUserRoleMapping = true\n\
                         PublisherRoleMapping = Engineering\nAdministratorRoleMapping = IT\n";

struct World {
    slapd: Slapd,
    server: Connectd,
    _dir: tempfile::TempDir,
}

impl World {
    /// slapd with the guide's groups, and connectd with `ldap_extra` in the
    /// `[LDAP "corp"]` section (Logging on unless it says otherwise) and
    /// `authorization` after it. A first user signs in before the test's
    /// own, so the first-user rule never colours what a test sees.
    fn new(ldap_extra: &str, authorization: &str) -> World {
        let slapd = Slapd::start();
        for group in [
            "IT-Administrators",
            "Data-Science-Leaders",
            "Data-Science",
            "Sales",
            "Marketing",
        ] {
            slapd.add_group(group, &[]);
        }
        slapd.add_user("first", "first pw", "First", "User", "", &[]);
        let dir = tempfile::tempdir().expect("dir");
        let logging = if ldap_extra.contains("Logging") {
            ""
        } else {
            "Logging = true\n"
        };
        let config = format!(
            "[Authentication]\nProvider = ldap\n[LDAP \"corp\"]\nServerAddress = {}\n\
             BindDN = {}\nBindPassword = {}\nUserSearchBaseDN = {}\nGroupSearchBaseDN = {}\n\
             {logging}{ldap_extra}\n{authorization}",
            slapd.host_port(),
            slapd.reader_dn(),
            slapd.reader_password(),
            slapd.people_dn(),
            slapd.groups_dn(),
        );
        let server = Connectd::start(dir.path(), &config);
        let first = server.login("first", "first pw");
        assert_eq!(first.status, 200, "{}\n{}", first.body, server.log_text());
        World {
            slapd,
            server,
            _dir: dir,
        }
    }

    /// A directory user in `groups` with extra attributes.
    fn user(&self, uid: &str, groups: &[&str], attrs: &[(&str, &[&str])]) {
        self.slapd
            .add_user(uid, &format!("{uid} pw"), uid, "Test", "", attrs);
        for group in groups {
            self.slapd.add_member(group, uid);
        }
    }

    /// Signs `uid` in and returns the stored role.
    fn sign_in(&self, uid: &str) -> String {
        let r = self.server.login(uid, &format!("{uid} pw"));
        assert_eq!(r.status, 200, "{}\n{}", r.body, self.server.log_text());
        r.json()["user_role"]
            .as_str()
            .expect("user_role")
            .to_owned()
    }

    /// Asserts that exactly `expected` was logged for `uid`, once per call
    /// to sign_in that produced it.
    fn assert_logged(&self, uid: &str, expected: &str, times: usize) {
        let lines: Vec<_> = self
            .server
            .log_lines_with(expected)
            .into_iter()
            .filter(|l| l.contains(&format!("user={uid}")))
            .collect();
        assert_eq!(
            lines.len(),
            times,
            "expected {times} × {expected:?} for {uid}; log:\n{}",
            self.server.log_text()
        );
    }

    /// Log lines about `uid` that come from role mapping at all.
    fn mapping_lines(&self, uid: &str) -> Vec<String> {
        self.server
            .log_text()
            .lines()
            .filter(|l| l.contains(&format!("user={uid}")))
            .filter(|l| {
                ["Matched ", "No mapping matches", "is not a valid role"]
                    .iter()
                    .any(|m| l.contains(m))
            })
            .map(str::to_owned)
            .collect()
    }
}

const RETAINS_VIEWER: &str =
    "Retains the current role or applies the default (viewer) for new users";

// ---- Groups to Roles: every row of the table ----

#[test]
fn group_row_it_administrators_is_administrator() {
    if need_root() {
        return;
    }
    let w = World::new("", GROUPS);
    w.user("ita", &["IT-Administrators"], &[]);
    assert_eq!(w.sign_in("ita"), "administrator");
    w.assert_logged(
        "ita",
        "Matched at least one group as role 'administrator'",
        1,
    );
}

#[test]
fn group_row_data_science_leaders_is_administrator() {
    if need_root() {
        return;
    }
    let w = World::new("", GROUPS);
    w.user("dsl", &["Data-Science-Leaders"], &[]);
    assert_eq!(w.sign_in("dsl"), "administrator");
    w.assert_logged(
        "dsl",
        "Matched at least one group as role 'administrator'",
        1,
    );
}

#[test]
fn group_row_data_science_is_publisher() {
    if need_root() {
        return;
    }
    let w = World::new("", GROUPS);
    w.user("ds", &["Data-Science"], &[]);
    assert_eq!(w.sign_in("ds"), "publisher");
    w.assert_logged("ds", "Matched at least one group as role 'publisher'", 1);
}

#[test]
fn group_row_sales_is_viewer_without_being_listed() {
    if need_root() {
        return;
    }
    // "you don't have to include groups that are getting the viewer role":
    // Sales is not in the configuration and gets DefaultUserRole.
    let w = World::new("", GROUPS);
    w.user("sal", &["Sales"], &[]);
    assert_eq!(w.sign_in("sal"), "viewer");
    w.assert_logged(
        "sal",
        &format!("No mapping matches the values: 'Sales'. {RETAINS_VIEWER}"),
        1,
    );
}

#[test]
fn group_listed_under_viewer_role_mapping_matches_as_viewer() {
    if need_root() {
        return;
    }
    let w = World::new("", &format!("{GROUPS}ViewerRoleMapping = Sales\n"));
    w.user("sal", &["Sales"], &[]);
    assert_eq!(w.sign_in("sal"), "viewer");
    w.assert_logged("sal", "Matched at least one group as role 'viewer'", 1);
}

// ---- Mapping From an Attribute: every row of the table ----

fn attribute_row(department: &str, role: &str, line: &str) {
    let w = World::new("UserAttributeRole = Department\n", ATTRIBUTE);
    w.user("emp", &[], &[("Department", &[department])]);
    assert_eq!(w.sign_in("emp"), role, "Department = {department}");
    w.assert_logged("emp", line, 1);
}

#[test]
fn attribute_row_it_is_administrator() {
    if need_root() {
        return;
    }
    attribute_row(
        "IT",
        "administrator",
        "Matched 'IT' as role (administrator)",
    );
}

#[test]
fn attribute_row_engineering_is_publisher() {
    if need_root() {
        return;
    }
    attribute_row(
        "Engineering",
        "publisher",
        "Matched 'Engineering' as role (publisher)",
    );
}

#[test]
fn attribute_row_hr_is_viewer() {
    if need_root() {
        return;
    }
    attribute_row(
        "HR",
        "viewer",
        &format!("No mapping matches the value 'HR'. {RETAINS_VIEWER}"),
    );
}

#[test]
fn attribute_row_marketing_is_viewer() {
    if need_root() {
        return;
    }
    attribute_row(
        "Marketing",
        "viewer",
        &format!("No mapping matches the value 'Marketing'. {RETAINS_VIEWER}"),
    );
}

// ---- Using an Attribute Directly (No Mapping) ----

#[test]
fn direct_attribute_gives_the_role_it_names() {
    if need_root() {
        return;
    }
    // The Connect name of the key, LDAP.UserRoleAttribute.
    let w = World::new("UserRoleAttribute = RSC-Role\n", "");
    w.user("pub", &[], &[("RSC-Role", &["publisher"])]);
    assert_eq!(w.sign_in("pub"), "publisher");
    w.assert_logged("pub", "Matched 'publisher' as role (publisher)", 1);
    w.user("adm", &[], &[("RSC-Role", &["administrator"])]);
    assert_eq!(w.sign_in("adm"), "administrator");
    w.assert_logged("adm", "Matched 'administrator' as role (administrator)", 1);
}

#[test]
fn direct_attribute_with_an_invalid_value_retains_or_defaults() {
    if need_root() {
        return;
    }
    // The guide's spelling, UserAttributeRole.
    let w = World::new("UserAttributeRole = RSC-Role\n", "");
    w.user("odd", &[], &[("RSC-Role", &["superuser"])]);
    assert_eq!(w.sign_in("odd"), "viewer", "a new user gets the default");
    w.assert_logged(
        "odd",
        &format!("Given role 'superuser' is not a valid role. {RETAINS_VIEWER}"),
        1,
    );
    // A returning user keeps their role when the value turns invalid.
    w.slapd
        .set_user_attribute("odd", "RSC-Role", &["publisher"]);
    assert_eq!(w.sign_in("odd"), "publisher");
    w.slapd
        .set_user_attribute("odd", "RSC-Role", &["Publisher"]);
    assert_eq!(
        w.sign_in("odd"),
        "publisher",
        "values are exactly the three names"
    );
    w.assert_logged(
        "odd",
        &format!("Given role 'Publisher' is not a valid role. {RETAINS_VIEWER}"),
        1,
    );
}

// ---- When and How Are Roles Determined ----

#[test]
fn roles_are_checked_at_every_login() {
    if need_root() {
        return;
    }
    let w = World::new("", GROUPS);
    w.user("mover", &["Data-Science"], &[]);
    assert_eq!(w.sign_in("mover"), "publisher");
    w.slapd.remove_member("Data-Science", "mover");
    w.slapd.add_member("Data-Science-Leaders", "mover");
    assert_eq!(w.sign_in("mover"), "administrator");
    w.assert_logged(
        "mover",
        "Matched 'Data-Science-Leaders' as new role (administrator), replacing (publisher)",
        1,
    );
    // Downwards too: the directory is the truth.
    w.slapd.remove_member("Data-Science-Leaders", "mover");
    w.slapd.add_member("Data-Science", "mover");
    assert_eq!(w.sign_in("mover"), "publisher");
    w.assert_logged(
        "mover",
        "Matched 'Data-Science' as new role (publisher), replacing (administrator)",
        1,
    );
}

#[test]
fn attribute_changes_are_picked_up_at_the_next_login() {
    if need_root() {
        return;
    }
    let w = World::new("UserAttributeRole = Department\n", ATTRIBUTE);
    w.user("eng", &[], &[("Department", &["Engineering"])]);
    assert_eq!(w.sign_in("eng"), "publisher");
    w.slapd.set_user_attribute("eng", "Department", &["IT"]);
    assert_eq!(w.sign_in("eng"), "administrator");
    w.assert_logged(
        "eng",
        "Matched 'IT' as new role (administrator), replacing (publisher)",
        1,
    );
}

#[test]
fn a_new_user_without_a_match_gets_the_default_user_role() {
    if need_root() {
        return;
    }
    let w = World::new("", &format!("{GROUPS}DefaultUserRole = publisher\n"));
    w.user("newbie", &["Marketing"], &[]);
    assert_eq!(w.sign_in("newbie"), "publisher");
    w.assert_logged(
        "newbie",
        "No mapping matches the values: 'Marketing'. Retains the current role or applies the \
         default (publisher) for new users",
        1,
    );
}

#[test]
fn a_returning_user_without_a_match_keeps_their_role() {
    if need_root() {
        return;
    }
    let w = World::new("", GROUPS);
    w.user("keeper", &["Data-Science"], &[]);
    assert_eq!(w.sign_in("keeper"), "publisher");
    w.slapd.remove_member("Data-Science", "keeper");
    w.slapd.add_member("Sales", "keeper");
    assert_eq!(
        w.sign_in("keeper"),
        "publisher",
        "not reassigned to the default"
    );
    w.assert_logged(
        "keeper",
        &format!("No mapping matches the values: 'Sales'. {RETAINS_VIEWER}"),
        1,
    );
}

#[test]
fn members_of_several_groups_get_the_most_privileged_role() {
    if need_root() {
        return;
    }
    let w = World::new("", GROUPS);
    w.user("both", &["Data-Science", "Data-Science-Leaders"], &[]);
    assert_eq!(w.sign_in("both"), "administrator");
    w.assert_logged(
        "both",
        "Matched at least one group as role 'administrator'",
        1,
    );
}

#[test]
fn restrictive_mapping_gives_the_least_privileged_role() {
    if need_root() {
        return;
    }
    let w = World::new("", &format!("{GROUPS}UserRoleMappingRestrictive = true\n"));
    w.user("both", &["Data-Science", "Data-Science-Leaders"], &[]);
    assert_eq!(w.sign_in("both"), "publisher");
    w.assert_logged("both", "Matched at least one group as role 'publisher'", 1);
}

// ---- Logging and Troubleshooting ----

#[test]
fn without_logging_the_mapping_still_applies_but_says_nothing() {
    if need_root() {
        return;
    }
    let w = World::new("Logging = false\n", GROUPS);
    w.user("quiet", &["Data-Science"], &[]);
    assert_eq!(w.sign_in("quiet"), "publisher");
    assert!(
        w.mapping_lines("quiet").is_empty(),
        "{:?}",
        w.mapping_lines("quiet")
    );
}

#[test]
fn administrators_cannot_change_roles_while_mapping_is_on() {
    if need_root() {
        return;
    }
    let w = World::new("", GROUPS);
    w.user("boss", &["IT-Administrators"], &[]);
    w.user("ds", &["Data-Science"], &[]);
    let r = w.server.login("boss", "boss pw");
    let cookie = r.session_cookie();
    let ds = w.server.login("ds", "ds pw").json();
    let r = w.server.json(
        "PUT",
        &format!("/__api__/v1/users/{}", ds["guid"].as_str().expect("guid")),
        &cookie,
        &json!({"user_role": "administrator"}),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["code"], 23);
    assert!(r.body.contains("automatic role mapping"), "{}", r.body);
}
