//! Verified claims to a person: which claim is the identity, the username,
//! the groups and the role values, as `[OAuth2]` names them. Pure; the
//! claims given here have been verified already.

use serde_json::{Map, Value};

use crate::config::OAuth2Settings;
use crate::identity::{plausible_username, AuthError, ExternalIdentity};
use crate::model::GroupRef;

/// A claim as text: strings as they are, numbers written out (some
/// providers send numeric ids), anything else absent.
fn text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A claim that may be a list (groups, roles): each string of an array, or
/// a single string split at `separator` when one is configured.
fn list(claims: &Map<String, Value>, name: &str, separator: Option<&str>) -> Vec<String> {
    let values: Vec<String> = match claims.get(name) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Some(Value::String(s)) => match separator {
            Some(sep) => s.split(sep).map(str::to_owned).collect(),
            None => vec![s.clone()],
        },
        _ => Vec::new(),
    };
    let mut values: Vec<String> = values
        .into_iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty() && !v.chars().any(char::is_control))
        .collect();
    values.sort();
    values.dedup();
    values
}

/// Entra ID leaves out the groups of a person in too many of them and
/// points at Graph instead (`_claim_names`); their groups are then
/// unknown, which is not the same as "none".
fn groups_overage(claims: &Map<String, Value>, groups_claim: &str) -> bool {
    claims
        .get("_claim_names")
        .and_then(Value::as_object)
        .is_some_and(|names| names.contains_key(groups_claim))
}

/// The person these claims describe, for provider `provider` (`oidc/` and
/// the issuer).
pub fn identity(
    settings: &OAuth2Settings,
    provider: &str,
    claims: &Map<String, Value>,
) -> Result<ExternalIdentity, AuthError> {
    let unique_id = text(claims, &settings.unique_id_claim).ok_or_else(|| {
        AuthError::Misconfigured(format!(
            "the identity provider's claims have no {:?} ([OAuth2] UniqueIdClaim); the claims \
             it sent are: {}",
            settings.unique_id_claim,
            claim_names(claims)
        ))
    })?;
    let email = text(claims, &settings.email_claim).unwrap_or_default();
    let username = match text(claims, &settings.username_claim) {
        Some(name) => name,
        None if settings.require_username_claim => {
            return Err(AuthError::Incomplete(format!(
                "Your identity provider did not send your username (the {:?} claim), which \
                 this server requires. Ask your administrator to add it at the provider.",
                settings.username_claim
            )))
        }
        // As Connect does: the email address, else the unique id; but not
        // an address the provider says it has not verified (anyone could
        // have typed it).
        None if !email.is_empty() && claims.get("email_verified") != Some(&Value::Bool(false)) => {
            email.clone()
        }
        None => unique_id.clone(),
    };
    if !plausible_username(&username) {
        return Err(AuthError::Incomplete(
            "Your identity provider sent a username this server cannot use (empty, too long, or \
             with control characters). Ask your administrator."
                .into(),
        ));
    }
    let groups = if groups_overage(claims, &settings.groups_claim) {
        tracing::warn!(
            user = %username,
            "the identity provider left out the {:?} claim for a person in many groups \
             (a groups overage); their groups are left as they were",
            settings.groups_claim
        );
        None
    } else {
        let names = list(
            claims,
            &settings.groups_claim,
            settings.groups_separator.as_deref(),
        );
        Some(
            names
                .into_iter()
                .map(|name| GroupRef {
                    unique_id: name.clone(),
                    name,
                })
                .collect(),
        )
    };
    let role_values = settings
        .role_claim
        .as_deref()
        .map(|claim| list(claims, claim, settings.groups_separator.as_deref()))
        .unwrap_or_default();
    Ok(ExternalIdentity {
        provider: provider.to_owned(),
        unique_id,
        username,
        first_name: text(claims, &settings.first_name_claim).unwrap_or_default(),
        last_name: text(claims, &settings.last_name_claim).unwrap_or_default(),
        email,
        groups,
        role_values,
        logging: settings.logging,
        is_ldap: false,
    })
}

fn claim_names(claims: &Map<String, Value>) -> String {
    let mut names: Vec<&str> = claims.keys().map(String::as_str).collect();
    names.sort_unstable();
    names.join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn settings() -> OAuth2Settings {
        OAuth2Settings {
            issuer: "https://idp.example".into(),
            client_id: "connect".into(),
            client_secret: "s".into(),
            ca_certificate: None,
            allow_loopback_http: false,
            custom_scopes: vec![],
            username_claim: "preferred_username".into(),
            unique_id_claim: "sub".into(),
            email_claim: "email".into(),
            first_name_claim: "given_name".into(),
            last_name_claim: "family_name".into(),
            groups_claim: "groups".into(),
            groups_separator: None,
            role_claim: Some("role".into()),
            require_username_claim: false,
            groups_auto_provision: true,
            logging: true,
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().expect("object").clone()
    }

    #[test]
    fn claims_become_a_person() {
        let c = claims(json!({
            "sub": "u-17", "preferred_username": "alice", "email": "a@example.org",
            "given_name": "Alice", "family_name": "Liddell",
            "groups": ["analysts", "staff", "analysts", ""], "role": ["publisher"]
        }));
        let id = identity(&settings(), "oidc/https://idp.example", &c).expect("identity");
        assert_eq!(id.unique_id, "u-17");
        assert_eq!(id.username, "alice");
        assert_eq!(
            (id.first_name.as_str(), id.last_name.as_str()),
            ("Alice", "Liddell")
        );
        let groups: Vec<_> = id
            .groups
            .expect("groups")
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(groups, ["analysts", "staff"]);
        assert_eq!(id.role_values, ["publisher"]);
        assert!(!id.is_ldap);
    }

    #[test]
    fn a_groups_string_is_split_only_with_a_separator() {
        let c = claims(json!({"sub": "1", "groups": "a;b", "role": "admin"}));
        let one = identity(&settings(), "p", &c).expect("identity");
        assert_eq!(one.groups.expect("groups").len(), 1);
        let mut s = settings();
        s.groups_separator = Some(";".into());
        let two = identity(&s, "p", &c).expect("identity");
        let names: Vec<_> = two
            .groups
            .expect("groups")
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(two.role_values, ["admin"]);
    }

    #[test]
    fn a_missing_username_falls_back_or_is_refused() {
        let c = claims(json!({"sub": 42, "email": "bob@example.org"}));
        let id = identity(&settings(), "p", &c).expect("identity");
        assert_eq!(
            (id.unique_id.as_str(), id.username.as_str()),
            ("42", "bob@example.org")
        );
        let unverified =
            claims(json!({"sub": "s-2", "email": "ceo@example.org", "email_verified": false}));
        assert_eq!(
            identity(&settings(), "p", &unverified)
                .expect("id")
                .username,
            "s-2"
        );
        let bare = claims(json!({"sub": "s-1"}));
        assert_eq!(
            identity(&settings(), "p", &bare).expect("id").username,
            "s-1"
        );
        let mut s = settings();
        s.require_username_claim = true;
        assert!(matches!(
            identity(&s, "p", &c),
            Err(AuthError::Incomplete(_))
        ));
    }

    #[test]
    fn no_unique_id_is_a_configuration_error() {
        let c = claims(json!({"preferred_username": "alice"}));
        let Err(AuthError::Misconfigured(why)) = identity(&settings(), "p", &c) else {
            panic!("expected a configuration error");
        };
        assert!(
            why.contains("UniqueIdClaim") && why.contains("preferred_username"),
            "{why}"
        );
    }

    #[test]
    fn an_overage_leaves_groups_unknown_and_absent_groups_mean_none() {
        let over = claims(json!({"sub": "1", "_claim_names": {"groups": "src1"}}));
        assert_eq!(identity(&settings(), "p", &over).expect("id").groups, None);
        let none = claims(json!({"sub": "1"}));
        assert_eq!(
            identity(&settings(), "p", &none).expect("id").groups,
            Some(vec![])
        );
    }

    #[test]
    fn control_characters_never_reach_names() {
        let c = claims(
            json!({"sub": "1", "preferred_username": "eve\nroot", "groups": ["ok", "x\u{7}"]}),
        );
        assert!(matches!(
            identity(&settings(), "p", &c),
            Err(AuthError::Incomplete(_))
        ));
    }
}
