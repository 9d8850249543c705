//! LDAP sign-in: search for the viewer as the service account, read their
//! groups, then bind as them with their password.
//!
//! Every value that goes into a filter is escaped (RFC 4515), so a username
//! such as `*)(uid=*` matches nobody. An empty password is refused before
//! any bind: LDAP treats it as an unauthenticated bind, which "succeeds".

use std::sync::Arc;

use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};

use async_trait::async_trait;

use super::{AccountSource, AuthError, ExternalIdentity, IdentityProvider, SignInMethod, Verified};
use crate::config::{LdapSettings, ProviderKind};
use crate::model::GroupRef;

/// LDAP result code for a failed bind (RFC 4511).
const INVALID_CREDENTIALS: u32 = 49;

/// Every `[LDAP "..."]` section, tried in file order.
pub struct LdapProvider {
    directories: Vec<LdapSettings>,
}

impl LdapProvider {
    pub fn new(directories: Vec<LdapSettings>) -> Self {
        Self { directories }
    }
}

#[async_trait]
impl IdentityProvider for LdapProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ldap
    }

    fn method(&self) -> SignInMethod {
        SignInMethod::Password
    }

    fn accounts(&self) -> AccountSource {
        AccountSource::Provisioned
    }

    /// The first directory that knows the user decides. One that is down
    /// does not stop the others, but if nobody found the user and one was
    /// down, the answer is "unavailable", not "wrong password".
    async fn with_password(&self, username: &str, password: &str) -> Result<Verified, AuthError> {
        let mut unavailable = None;
        for directory in &self.directories {
            match authenticate(directory, username, password).await {
                Ok(Some(identity)) => return Ok(Verified::External(identity)),
                Ok(None) => {}
                Err(AuthError::Unavailable(detail)) => {
                    tracing::warn!("{detail}");
                    unavailable = Some(detail);
                }
                Err(e) => return Err(e),
            }
        }
        Err(match unavailable {
            Some(detail) => AuthError::Unavailable(detail),
            None => AuthError::InvalidCredentials,
        })
    }
}

/// Tries one directory. `Ok(None)` means the user is not in it (the next
/// `[LDAP "..."]` section may know them).
pub async fn authenticate(
    settings: &LdapSettings,
    username: &str,
    password: &str,
) -> Result<Option<ExternalIdentity>, AuthError> {
    if password.is_empty() {
        return Err(AuthError::InvalidCredentials);
    }
    let mut ldap = connect(settings).await?;
    let result = sign_in(&mut ldap, settings, username, password).await;
    let _ = ldap.unbind().await;
    result
}

async fn connect(settings: &LdapSettings) -> Result<Ldap, AuthError> {
    let scheme = if settings.tls { "ldaps" } else { "ldap" };
    let url = format!("{scheme}://{}", settings.server_address);
    let mut conn_settings = LdapConnSettings::new()
        .set_conn_timeout(settings.timeout)
        .set_starttls(settings.start_tls)
        .set_no_tls_verify(settings.insecure);
    if let Some(ca) = &settings.ca_certificate {
        conn_settings = conn_settings.set_config(tls_config(ca)?);
    }
    let (conn, ldap) = LdapConnAsync::with_settings(conn_settings, &url)
        .await
        .map_err(|e| {
            AuthError::Unavailable(format!(
                "[LDAP \"{}\"] cannot reach {url}: {e}",
                settings.name
            ))
        })?;
    ldap3::drive!(conn);
    Ok(ldap)
}

/// A TLS client that trusts exactly the CA in `TLSCACertificate`.
fn tls_config(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, AuthError> {
    let misconfigured = |what: String| AuthError::Misconfigured(what);
    let pem = std::fs::read(path).map_err(|e| {
        misconfigured(format!(
            "cannot read TLSCACertificate {}: {e}",
            path.display()
        ))
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert =
            cert.map_err(|e| misconfigured(format!("TLSCACertificate {}: {e}", path.display())))?;
        roots
            .add(cert)
            .map_err(|e| misconfigured(format!("TLSCACertificate {}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(misconfigured(format!(
            "TLSCACertificate {} holds no PEM certificate",
            path.display()
        )));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| misconfigured(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

fn unavailable(settings: &LdapSettings, what: &str, e: LdapError) -> AuthError {
    AuthError::Unavailable(format!("[LDAP \"{}\"] {what}: {e}", settings.name))
}

async fn sign_in(
    ldap: &mut Ldap,
    settings: &LdapSettings,
    username: &str,
    password: &str,
) -> Result<Option<ExternalIdentity>, AuthError> {
    let timeout = settings.timeout;
    if let (Some(dn), Some(pw)) = (&settings.bind_dn, &settings.bind_password) {
        let bound = ldap
            .with_timeout(timeout)
            .simple_bind(dn, pw)
            .await
            .map_err(|e| unavailable(settings, "service bind", e))?;
        if bound.rc != 0 {
            return Err(AuthError::Misconfigured(format!(
                "[LDAP \"{}\"] the service account {dn} cannot bind (result {}: {}); check \
                 BindDN and BindPassword",
                settings.name, bound.rc, bound.text
            )));
        }
    }

    let filter = format!(
        "(&(objectClass={})({}={}){})",
        settings.user_object_class,
        settings.username_attribute,
        ldap_escape(username),
        settings.user_filter_base.as_deref().unwrap_or("")
    );
    let mut attributes = vec![
        settings.username_attribute.as_str(),
        settings.unique_id_attribute.as_str(),
        settings.first_name_attribute.as_str(),
        settings.last_name_attribute.as_str(),
        settings.email_attribute.as_str(),
    ];
    if let Some(role) = &settings.role_attribute {
        attributes.push(role);
    }
    let (entries, _) = ldap
        .with_timeout(timeout)
        .search(
            &settings.user_search_base,
            Scope::Subtree,
            &filter,
            attributes,
        )
        .await
        .and_then(|r| r.success())
        .map_err(|e| unavailable(settings, "user search", e))?;
    let entry = match entries.len() {
        0 => return Ok(None),
        1 => SearchEntry::construct(
            entries
                .into_iter()
                .next()
                .ok_or(AuthError::InvalidCredentials)?,
        ),
        n => {
            return Err(AuthError::Misconfigured(format!(
                "[LDAP \"{}\"] {n} entries match {filter}; UsernameAttribute must be unique",
                settings.name
            )))
        }
    };

    let unique_id = first_value(&entry, &settings.unique_id_attribute).ok_or_else(|| {
        AuthError::Misconfigured(format!(
            "[LDAP \"{}\"] {} has no {} (UniqueIdAttribute); name an attribute every user \
             entry has, such as entryUUID or objectGUID",
            settings.name, entry.dn, settings.unique_id_attribute
        ))
    })?;
    let directory_username =
        first_value(&entry, &settings.username_attribute).unwrap_or_else(|| username.to_owned());
    let groups = match &settings.group_search_base {
        Some(base) => {
            Some(search_groups(ldap, settings, base, &entry.dn, &directory_username).await?)
        }
        None => None,
    };

    // Last, the user's own bind: after it the connection has the user's
    // rights, which may not include reading groups.
    let bound = ldap
        .with_timeout(timeout)
        .simple_bind(&entry.dn, password)
        .await
        .map_err(|e| unavailable(settings, "user bind", e))?;
    match bound.rc {
        0 => {}
        INVALID_CREDENTIALS => return Err(AuthError::InvalidCredentials),
        rc => {
            return Err(AuthError::Unavailable(format!(
                "[LDAP \"{}\"] bind as {} failed with result {rc}: {}",
                settings.name, entry.dn, bound.text
            )))
        }
    }

    let role_values = settings
        .role_attribute
        .as_deref()
        .map(|a| all_values(&entry, a))
        .unwrap_or_default();
    Ok(Some(ExternalIdentity {
        provider: format!("ldap/{}", settings.name),
        unique_id,
        username: directory_username,
        first_name: first_value(&entry, &settings.first_name_attribute).unwrap_or_default(),
        last_name: first_value(&entry, &settings.last_name_attribute).unwrap_or_default(),
        email: first_value(&entry, &settings.email_attribute).unwrap_or_default(),
        groups,
        role_values,
        logging: settings.logging,
        is_ldap: true,
    }))
}

async fn search_groups(
    ldap: &mut Ldap,
    settings: &LdapSettings,
    base: &str,
    user_dn: &str,
    username: &str,
) -> Result<Vec<GroupRef>, AuthError> {
    // posixGroup lists usernames in memberUid; groupOfNames and
    // groupOfUniqueNames list DNs.
    let member = if settings
        .group_member_attribute
        .eq_ignore_ascii_case("memberUid")
    {
        username
    } else {
        user_dn
    };
    let filter = format!(
        "(&(objectClass={})({}={}){})",
        settings.group_object_class,
        settings.group_member_attribute,
        ldap_escape(member),
        settings.group_filter_base.as_deref().unwrap_or("")
    );
    let (entries, _) = ldap
        .with_timeout(settings.timeout)
        .search(
            base,
            Scope::Subtree,
            &filter,
            vec![
                settings.group_name_attribute.as_str(),
                settings.group_unique_id_attribute.as_str(),
            ],
        )
        .await
        .and_then(|r| r.success())
        .map_err(|e| unavailable(settings, "group search", e))?;
    let mut groups: Vec<GroupRef> = entries
        .into_iter()
        .map(SearchEntry::construct)
        .filter_map(|e| {
            let name = first_value(&e, &settings.group_name_attribute)?;
            let unique_id =
                first_value(&e, &settings.group_unique_id_attribute).unwrap_or(e.dn.clone());
            Some(GroupRef { unique_id, name })
        })
        .collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(groups)
}

/// Attribute names are case-insensitive in LDAP; servers may answer with a
/// different spelling than the one asked for.
fn all_values(entry: &SearchEntry, attribute: &str) -> Vec<String> {
    if let Some(values) = entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attribute))
        .map(|(_, v)| v)
    {
        return values.clone();
    }
    // Binary values (objectGUID) come separately; hex keeps them printable.
    entry
        .bin_attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attribute))
        .map(|(_, values)| {
            values
                .iter()
                .map(|v| v.iter().map(|b| format!("{b:02x}")).collect())
                .collect()
        })
        .unwrap_or_default()
}

fn first_value(entry: &SearchEntry, attribute: &str) -> Option<String> {
    all_values(entry, attribute).into_iter().next()
}
