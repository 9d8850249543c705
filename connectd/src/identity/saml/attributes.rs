//! A verified assertion to a person: which attribute (or the NameID) is the
//! identity, the username, the groups and the role values, as `[SAML]`
//! names them. Pure; the assertion given here has been verified already.

use std::collections::BTreeMap;

use samael::schema::Assertion;

use crate::config::SamlSettings;
use crate::identity::{plausible_username, AuthError, ExternalIdentity};
use crate::model::GroupRef;

pub const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

/// Every attribute's values (trimmed, without empty or control-character
/// values, in order, without repeats), found by its Name, or else by its
/// FriendlyName (IdPs differ in which of the two an administrator sees).
/// A Name always wins: a FriendlyName, which is only a label, must not let
/// one attribute stand in for another.
struct Attributes {
    by_name: BTreeMap<String, Vec<String>>,
    by_friendly_name: BTreeMap<String, Vec<String>>,
}

impl Attributes {
    fn of(assertion: &Assertion) -> Self {
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut by_friendly_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for statement in assertion.attribute_statements.iter().flatten() {
            for attribute in &statement.attributes {
                let values = attribute
                    .values
                    .iter()
                    .filter_map(|v| v.value.as_deref())
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && !v.chars().any(char::is_control));
                let add = |map: &mut BTreeMap<String, Vec<String>>, name: &String| {
                    let entry = map.entry(name.clone()).or_default();
                    for value in values.clone() {
                        if !entry.iter().any(|v| v == value) {
                            entry.push(value.to_owned());
                        }
                    }
                };
                if let Some(name) = &attribute.name {
                    add(&mut by_name, name);
                }
                if let Some(name) = &attribute.friendly_name {
                    add(&mut by_friendly_name, name);
                }
            }
        }
        Self {
            by_name,
            by_friendly_name,
        }
    }

    fn get(&self, name: &str) -> Option<&Vec<String>> {
        self.by_name
            .get(name)
            .or_else(|| self.by_friendly_name.get(name))
    }

    fn names(&self) -> String {
        self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// The person this assertion describes, for `provider` (`saml/` and the
/// IdP's entity ID).
pub fn identity(
    settings: &SamlSettings,
    provider: &str,
    assertion: &Assertion,
) -> Result<ExternalIdentity, AuthError> {
    let attrs = Attributes::of(assertion);
    let first = |name: &str| attrs.get(name).and_then(|v| v.first()).cloned();
    let names = || attrs.names();
    let name_id = assertion.subject.as_ref().and_then(|s| s.name_id.as_ref());
    let unique_id = match &settings.attributes.unique_id {
        Some(attribute) => match attrs.get(attribute).map(Vec::as_slice) {
            Some([one]) => one.clone(),
            // Which of several would be the person is anyone's guess.
            Some([_, _, ..]) => {
                return Err(AuthError::Rejected(format!(
                    "the IdP's assertion has several values of {attribute:?} ([SAML] \
                     UniqueIdAttribute), which must name one person"
                )))
            }
            _ => {
                return Err(AuthError::Misconfigured(format!(
                    "the IdP's assertion has no {attribute:?} attribute ([SAML] \
                     UniqueIdAttribute); the attributes it sent are: {}",
                    names()
                )))
            }
        },
        None => {
            let name_id = name_id
                .filter(|n| !n.value.trim().is_empty())
                .ok_or_else(|| {
                    AuthError::Misconfigured(
                        "the IdP's assertion has no NameID, which is the identity unless \
                         [SAML] UniqueIdAttribute names an attribute"
                            .into(),
                    )
                })?;
            if name_id.format.as_deref() == Some(TRANSIENT) {
                return Err(AuthError::Misconfigured(format!(
                    "the IdP sent a transient NameID, which is new at every sign-in and cannot \
                     identify anyone: set [SAML] UniqueIdAttribute to an attribute that never \
                     changes (the attributes it sent are: {}), or have the IdP send a \
                     persistent NameID",
                    names()
                )));
            }
            name_id.value.trim().to_owned()
        }
    };
    if unique_id.chars().any(char::is_control) || unique_id.len() > 255 {
        return Err(AuthError::Rejected(
            "the identity the IdP sent is longer than 255 bytes or holds control characters".into(),
        ));
    }
    let email = first(&settings.attributes.email).unwrap_or_default();
    // As Connect does: the username attribute, else the email address, else
    // the identity itself.
    let username = first(&settings.attributes.username)
        .or_else(|| (!email.is_empty()).then(|| email.clone()))
        .unwrap_or_else(|| unique_id.clone());
    if !plausible_username(&username) {
        return Err(AuthError::Incomplete(
            "Your identity provider sent a username this server cannot use (empty, too long, or \
             with control characters). Ask your administrator."
                .into(),
        ));
    }
    let groups = attrs
        .get(&settings.attributes.groups)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|name| GroupRef {
            unique_id: name.clone(),
            name,
        })
        .collect();
    let role_values = settings
        .role_attribute
        .as_deref()
        .and_then(|name| attrs.get(name).cloned())
        .unwrap_or_default();
    Ok(ExternalIdentity {
        provider: provider.to_owned(),
        unique_id,
        username,
        first_name: first(&settings.attributes.first_name).unwrap_or_default(),
        last_name: first(&settings.attributes.last_name).unwrap_or_default(),
        email,
        groups: Some(groups),
        role_values,
        logging: settings.logging,
        is_ldap: false,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{attribute_profile, MetadataSource, SsoInitiated};

    pub(crate) fn settings() -> SamlSettings {
        SamlSettings {
            metadata: MetadataSource::File("/dev/null".into()),
            metadata_refresh: std::time::Duration::from_secs(3600),
            ca_certificate: None,
            attributes: attribute_profile("default").expect("profile"),
            role_attribute: Some("Role".into()),
            groups_auto_provision: true,
            sso_initiated: SsoInitiated::Sp,
            sp_certificate: None,
            sp_private_key: None,
            logging: true,
        }
    }

    fn assertion(name_id_format: &str, attributes: &[(&str, &[&str])]) -> Assertion {
        let statements: String = attributes
            .iter()
            .map(|(name, values)| {
                let values: String = values
                    .iter()
                    .map(|v| format!("<saml:AttributeValue>{v}</saml:AttributeValue>"))
                    .collect();
                format!("<saml:Attribute Name=\"{name}\">{values}</saml:Attribute>")
            })
            .collect();
        format!(
            r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a" IssueInstant="2026-12-01T00:00:00Z" Version="2.0"><saml:Issuer>https://idp.example/idp</saml:Issuer><saml:Subject><saml:NameID Format="{name_id_format}">u-17</saml:NameID></saml:Subject><saml:AttributeStatement>{statements}</saml:AttributeStatement></saml:Assertion>"#
        )
        .parse()
        .expect("assertion")
    }

    const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";

    #[test]
    fn attributes_become_a_person() {
        let a = assertion(
            PERSISTENT,
            &[
                ("Username", &["alice"]),
                ("Email", &["a@example.org"]),
                ("FirstName", &["Alice"]),
                ("Groups", &["analysts", "staff", "analysts", " "]),
                ("Role", &["publisher"]),
            ],
        );
        let id = identity(&settings(), "saml/https://idp.example/idp", &a).expect("identity");
        assert_eq!(id.unique_id, "u-17", "the NameID by default");
        assert_eq!(id.username, "alice");
        assert_eq!(id.first_name, "Alice");
        let groups: Vec<_> = id
            .groups
            .expect("groups")
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(groups, ["analysts", "staff"]);
        assert_eq!(id.role_values, ["publisher"]);
    }

    #[test]
    fn a_transient_name_id_is_no_identity() {
        let a = assertion(TRANSIENT, &[("Username", &["alice"])]);
        let Err(AuthError::Misconfigured(why)) = identity(&settings(), "saml/x", &a) else {
            panic!("a transient NameID must be refused");
        };
        assert!(why.contains("UniqueIdAttribute"), "{why}");
        let mut s = settings();
        s.attributes.unique_id = Some("ObjectId".into());
        let a = assertion(
            TRANSIENT,
            &[("Username", &["alice"]), ("ObjectId", &["o-1"])],
        );
        assert_eq!(
            identity(&s, "saml/x", &a).expect("identity").unique_id,
            "o-1"
        );
        let a = assertion(TRANSIENT, &[("Username", &["alice"])]);
        assert!(matches!(
            identity(&s, "saml/x", &a),
            Err(AuthError::Misconfigured(_))
        ));
    }

    #[test]
    fn a_friendly_name_never_stands_in_for_a_name() {
        let a: Assertion = r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_a" IssueInstant="2026-12-01T00:00:00Z" Version="2.0"><saml:Issuer>i</saml:Issuer><saml:Subject><saml:NameID>u-17</saml:NameID></saml:Subject><saml:AttributeStatement><saml:Attribute Name="nickname" FriendlyName="Username"><saml:AttributeValue>mallory</saml:AttributeValue></saml:Attribute><saml:Attribute Name="Username"><saml:AttributeValue>alice</saml:AttributeValue></saml:Attribute><saml:Attribute Name="urn:oid:0.9.2342.19200300.100.1.3" FriendlyName="Email"><saml:AttributeValue>a@example.org</saml:AttributeValue></saml:Attribute></saml:AttributeStatement></saml:Assertion>"#
            .parse()
            .expect("assertion");
        let id = identity(&settings(), "saml/x", &a).expect("identity");
        assert_eq!(id.username, "alice", "the Name, not the FriendlyName");
        assert_eq!(
            id.email, "a@example.org",
            "a FriendlyName when no Name matches"
        );
    }

    #[test]
    fn the_username_falls_back_to_email_then_identity() {
        let a = assertion(PERSISTENT, &[("Email", &["a@example.org"])]);
        assert_eq!(
            identity(&settings(), "saml/x", &a).expect("id").username,
            "a@example.org"
        );
        let a = assertion(PERSISTENT, &[]);
        assert_eq!(
            identity(&settings(), "saml/x", &a).expect("id").username,
            "u-17"
        );
    }
}
