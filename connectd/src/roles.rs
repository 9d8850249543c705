//! Roles, and automatic role mapping exactly as Connect documents it.
//!
//! The rules (from the role-mapping guide, one by one):
//! - three roles; with group mapping, a viewer's groups are compared with
//!   `ViewerRoleMapping`, `PublisherRoleMapping` and `AdministratorRoleMapping`;
//!   with attribute mapping, the provider's role attribute values are; with the
//!   attribute alone (no mapping switched on), its value *is* the role and must
//!   be `viewer`, `publisher` or `administrator`;
//! - several matches give the most privileged role, or the least with
//!   `UserRoleMappingRestrictive`;
//! - no match gives a new user `DefaultUserRole` and leaves a returning user's
//!   role alone;
//! - it runs at every login, so a change in the directory changes the role;
//! - it is not available for PAM or password logins.
//!
//! [`decide`] is pure: it returns the role and the log lines, word for word
//! as the guide lists them, and the login code decides whether to log them
//! (`Logging = true` in the provider's section).

use std::fmt;
use std::str::FromStr;

/// A Connect role. The order is privilege: viewer < publisher < administrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Publisher,
    Administrator,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Publisher => "publisher",
            Role::Administrator => "administrator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of the three roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRole;

impl FromStr for Role {
    type Err = UnknownRole;

    /// Exactly the three lower-case names the guide allows for a role given
    /// directly by an attribute; anything else is not a role.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "publisher" => Ok(Role::Publisher),
            "administrator" => Ok(Role::Administrator),
            _ => Err(UnknownRole),
        }
    }
}

/// How roles come from the identity provider, as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Mapping {
    /// Roles are managed in Connect (administrators change them).
    #[default]
    Off,
    /// `UserRoleGroupMapping = true`: the viewer's groups are mapped.
    Groups(RoleTable),
    /// `UserRoleMapping = true`: the role attribute's values are mapped.
    Attribute(RoleTable),
    /// A role attribute without a mapping: its value is the role.
    Direct,
}

impl Mapping {
    /// While a mapping is on, the identity provider owns roles: the API
    /// refuses to change them, since the next login would undo the change.
    pub fn is_automatic(&self) -> bool {
        !matches!(self, Mapping::Off)
    }
}

/// The `*RoleMapping` lists of `[Authorization]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleTable {
    pub viewer: Vec<String>,
    pub publisher: Vec<String>,
    pub administrator: Vec<String>,
    /// `UserRoleMappingRestrictive`: the least privileged match wins.
    pub restrictive: bool,
}

impl RoleTable {
    /// Every role `value` is listed under (a value may be listed twice).
    /// Matching is exact, as the guide's examples are written.
    fn roles_of<'a>(&'a self, value: &'a str) -> impl Iterator<Item = Role> + 'a {
        [
            (Role::Viewer, &self.viewer),
            (Role::Publisher, &self.publisher),
            (Role::Administrator, &self.administrator),
        ]
        .into_iter()
        .filter(move |(_, names)| names.iter().any(|n| n == value))
        .map(|(role, _)| role)
    }
}

/// What the provider said about the viewer, for mapping.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// Group names from the provider.
    pub groups: &'a [String],
    /// Values of the provider's role attribute (LDAP attributes, SAML
    /// attributes and OAuth2 claims may carry several).
    pub role_values: &'a [String],
    /// LDAP logs group matches with its own sentence.
    pub is_ldap: bool,
}

/// The result of one login's role computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The role the user has after this login.
    pub role: Role,
    /// The guide's log lines for this decision, in order.
    pub messages: Vec<String>,
}

/// Computes the role for a login.
///
/// `current` is the returning user's role (`None` for a new user);
/// `fallback` is what a new user gets without a match: `DefaultUserRole`,
/// or administrator for the first user ever. `default_role` is the
/// configured `DefaultUserRole`, which the "no match" lines name.
pub fn decide(
    mapping: &Mapping,
    evidence: Evidence<'_>,
    current: Option<Role>,
    fallback: Role,
    default_role: Role,
) -> Decision {
    let unchanged = current.unwrap_or(fallback);
    let retains =
        format!("Retains the current role or applies the default ({default_role}) for new users");
    match mapping {
        Mapping::Off => Decision {
            role: unchanged,
            messages: Vec::new(),
        },
        Mapping::Groups(table) => match best_match(table, evidence.groups, table.restrictive) {
            Some((value, role)) => {
                let mut messages = Vec::new();
                if evidence.is_ldap {
                    messages.push(format!("Matched at least one group as role '{role}'"));
                }
                match current {
                    Some(previous) if previous != role => messages.push(format!(
                        "Matched '{value}' as new role ({role}), replacing ({previous})"
                    )),
                    _ if !evidence.is_ldap => {
                        messages.push(format!("Matched '{value}' as role ({role})"))
                    }
                    _ => {}
                }
                Decision { role, messages }
            }
            None => Decision {
                role: unchanged,
                messages: vec![format!(
                    "No mapping matches the values: '{}'. {retains}",
                    evidence.groups.join(", ")
                )],
            },
        },
        Mapping::Attribute(table) => {
            match best_match(table, evidence.role_values, table.restrictive) {
                Some((value, role)) => matched(value, role, current),
                None => Decision {
                    role: unchanged,
                    messages: vec![format!(
                        "No mapping matches the value '{}'. {retains}",
                        evidence.role_values.join(", ")
                    )],
                },
            }
        }
        Mapping::Direct => {
            // Several values (multi-valued attributes): the most privileged
            // valid one, as with group matches.
            let best = evidence
                .role_values
                .iter()
                .filter_map(|v| v.parse::<Role>().ok().map(|r| (v.as_str(), r)))
                .fold(None, |best: Option<(&str, Role)>, (v, r)| match best {
                    Some((_, b)) if b >= r => best,
                    _ => Some((v, r)),
                });
            match best {
                Some((value, role)) => matched(value, role, current),
                None => Decision {
                    role: unchanged,
                    messages: vec![format!(
                        "Given role '{}' is not a valid role. {retains}",
                        evidence.role_values.join(", ")
                    )],
                },
            }
        }
    }
}

/// The line for a mapped value (any provider's attribute, or a non-LDAP
/// provider's group).
fn matched(value: &str, role: Role, current: Option<Role>) -> Decision {
    let message = match current {
        Some(previous) if previous != role => {
            format!("Matched '{value}' as new role ({role}), replacing ({previous})")
        }
        _ => format!("Matched '{value}' as role ({role})"),
    };
    Decision {
        role,
        messages: vec![message],
    }
}

/// The winning role among every value's matches, with the first value that
/// gave it (for the log line).
fn best_match<'a>(
    table: &'a RoleTable,
    values: &'a [String],
    restrictive: bool,
) -> Option<(&'a str, Role)> {
    let mut best: Option<(&str, Role)> = None;
    for value in values {
        for role in table.roles_of(value) {
            let better = match best {
                None => true,
                Some((_, b)) if restrictive => role < b,
                Some((_, b)) => role > b,
            };
            if better {
                best = Some((value.as_str(), role));
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(v: &[&str], p: &[&str], a: &[&str], restrictive: bool) -> RoleTable {
        let own = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        RoleTable {
            viewer: own(v),
            publisher: own(p),
            administrator: own(a),
            restrictive,
        }
    }

    fn strings(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    /// The guide's "Groups to Roles" table.
    fn guide_groups(restrictive: bool) -> Mapping {
        Mapping::Groups(table(
            &[],
            &["Data-Science"],
            &["Data-Science-Leaders", "IT-Administrators"],
            restrictive,
        ))
    }

    fn groups_decision(
        mapping: &Mapping,
        groups: &[&str],
        is_ldap: bool,
        current: Option<Role>,
    ) -> Decision {
        let groups = strings(groups);
        decide(
            mapping,
            Evidence {
                groups: &groups,
                role_values: &[],
                is_ldap,
            },
            current,
            Role::Viewer,
            Role::Viewer,
        )
    }

    fn attribute_decision(mapping: &Mapping, values: &[&str], current: Option<Role>) -> Decision {
        let values = strings(values);
        decide(
            mapping,
            Evidence {
                groups: &[],
                role_values: &values,
                is_ldap: true,
            },
            current,
            Role::Viewer,
            Role::Viewer,
        )
    }

    #[test]
    fn every_row_of_the_group_table() {
        let m = guide_groups(false);
        for (group, role) in [
            ("IT-Administrators", Role::Administrator),
            ("Data-Science-Leaders", Role::Administrator),
            ("Data-Science", Role::Publisher),
            ("Sales", Role::Viewer),
        ] {
            assert_eq!(
                groups_decision(&m, &[group], true, None).role,
                role,
                "{group}"
            );
        }
    }

    #[test]
    fn ldap_group_match_uses_its_own_sentence() {
        let d = groups_decision(&guide_groups(false), &["Data-Science"], true, None);
        assert_eq!(
            d.messages,
            ["Matched at least one group as role 'publisher'"]
        );
        let same = groups_decision(
            &guide_groups(false),
            &["Data-Science"],
            true,
            Some(Role::Publisher),
        );
        assert_eq!(
            same.messages,
            ["Matched at least one group as role 'publisher'"]
        );
    }

    #[test]
    fn non_ldap_group_match_names_the_value() {
        let d = groups_decision(
            &guide_groups(false),
            &["Sales", "Data-Science"],
            false,
            None,
        );
        assert_eq!(d.role, Role::Publisher);
        assert_eq!(d.messages, ["Matched 'Data-Science' as role (publisher)"]);
    }

    #[test]
    fn a_changed_role_says_what_it_replaces() {
        let d = groups_decision(
            &guide_groups(false),
            &["IT-Administrators"],
            true,
            Some(Role::Viewer),
        );
        assert_eq!(d.role, Role::Administrator);
        assert_eq!(
            d.messages,
            [
                "Matched at least one group as role 'administrator'",
                "Matched 'IT-Administrators' as new role (administrator), replacing (viewer)",
            ]
        );
        let a = attribute_decision(
            &Mapping::Attribute(table(&["HR"], &["Engineering"], &["IT"], false)),
            &["Engineering"],
            Some(Role::Administrator),
        );
        assert_eq!(a.role, Role::Publisher);
        assert_eq!(
            a.messages,
            ["Matched 'Engineering' as new role (publisher), replacing (administrator)"]
        );
    }

    #[test]
    fn most_privileged_wins_unless_restrictive() {
        let both = ["Data-Science", "Data-Science-Leaders"];
        let d = groups_decision(&guide_groups(false), &both, true, None);
        assert_eq!(d.role, Role::Administrator);
        let r = groups_decision(&guide_groups(true), &both, true, None);
        assert_eq!(r.role, Role::Publisher);
        assert_eq!(
            r.messages,
            ["Matched at least one group as role 'publisher'"]
        );
    }

    #[test]
    fn no_group_match_keeps_a_returning_users_role_and_defaults_a_new_one() {
        let m = guide_groups(false);
        let new = groups_decision(&m, &["Sales", "Marketing"], true, None);
        assert_eq!(new.role, Role::Viewer);
        assert_eq!(
            new.messages,
            [
                "No mapping matches the values: 'Sales, Marketing'. Retains the current role or \
              applies the default (viewer) for new users"
            ]
        );
        let returning = groups_decision(&m, &["Sales"], true, Some(Role::Publisher));
        assert_eq!(returning.role, Role::Publisher);
        let groups = strings(&["Sales"]);
        let publisher_default = decide(
            &m,
            Evidence {
                groups: &groups,
                role_values: &[],
                is_ldap: true,
            },
            None,
            Role::Publisher,
            Role::Publisher,
        );
        assert_eq!(publisher_default.role, Role::Publisher);
        assert!(publisher_default.messages[0]
            .ends_with("applies the default (publisher) for new users"));
    }

    #[test]
    fn every_row_of_the_attribute_table() {
        let m = Mapping::Attribute(table(&[], &["Engineering"], &["IT"], false));
        for (department, role) in [
            ("IT", Role::Administrator),
            ("Engineering", Role::Publisher),
            ("HR", Role::Viewer),
            ("Marketing", Role::Viewer),
        ] {
            assert_eq!(attribute_decision(&m, &[department], None).role, role);
        }
        assert_eq!(
            attribute_decision(&m, &["IT"], None).messages,
            ["Matched 'IT' as role (administrator)"]
        );
        assert_eq!(
            attribute_decision(&m, &["HR"], None).messages,
            [
                "No mapping matches the value 'HR'. Retains the current role or applies the \
              default (viewer) for new users"
            ]
        );
    }

    #[test]
    fn direct_attribute_takes_only_the_three_role_names() {
        let d = attribute_decision(&Mapping::Direct, &["publisher"], None);
        assert_eq!(d.role, Role::Publisher);
        assert_eq!(d.messages, ["Matched 'publisher' as role (publisher)"]);
        for bad in ["Publisher", "admin", "root", ""] {
            let d = attribute_decision(&Mapping::Direct, &[bad], Some(Role::Publisher));
            assert_eq!(d.role, Role::Publisher, "{bad:?} keeps the current role");
            assert_eq!(
                d.messages,
                [format!(
                    "Given role '{bad}' is not a valid role. Retains the current role or \
                     applies the default (viewer) for new users"
                )]
            );
        }
        let up = attribute_decision(&Mapping::Direct, &["administrator"], Some(Role::Viewer));
        assert_eq!(
            up.messages,
            ["Matched 'administrator' as new role (administrator), replacing (viewer)"]
        );
    }

    #[test]
    fn first_user_fallback_applies_only_without_a_match() {
        let m = guide_groups(false);
        let groups = strings(&["Sales"]);
        let ev = Evidence {
            groups: &groups,
            role_values: &[],
            is_ldap: true,
        };
        assert_eq!(
            decide(&m, ev, None, Role::Administrator, Role::Viewer).role,
            Role::Administrator
        );
        let groups = strings(&["Data-Science"]);
        let ev = Evidence {
            groups: &groups,
            ..ev
        };
        assert_eq!(
            decide(&m, ev, None, Role::Administrator, Role::Viewer).role,
            Role::Publisher
        );
    }

    #[test]
    fn mapping_off_changes_nothing_and_says_nothing() {
        let groups = strings(&["IT-Administrators"]);
        let d = decide(
            &Mapping::Off,
            Evidence {
                groups: &groups,
                role_values: &[],
                is_ldap: true,
            },
            Some(Role::Viewer),
            Role::Viewer,
            Role::Viewer,
        );
        assert_eq!(
            d,
            Decision {
                role: Role::Viewer,
                messages: vec![]
            }
        );
    }
}
