//! The real [`Directory`]: an LDAP server reached with `ldap3`.
//!
//! One connection per directory, shared by every request (LDAP multiplexes
//! operations on it by message id), made on first use and again after any
//! failure, trying the `URL`s in order. Every operation, the connection and
//! the bind included, is bounded by `Timeout`, so a hung server costs a
//! lookup at most that long and never blocks a thread. Every value put into
//! a filter is escaped (RFC 4515).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use tokio::sync::Mutex;

use super::{Directory, DirectoryAccount, DirectoryError, DirectoryGroup, GroupKey, UserKey};
use crate::config::directory::{DirectorySettings, Membership};

pub struct LdapDirectory {
    settings: Arc<DirectorySettings>,
    tls: Option<Arc<rustls::ClientConfig>>,
    connection: Mutex<Option<Ldap>>,
}

impl LdapDirectory {
    /// Fails only on settings that cannot work (an unreadable CA file);
    /// the server itself is first reached on first use.
    pub fn new(settings: Arc<DirectorySettings>) -> Result<Self, DirectoryError> {
        let tls = match &settings.ca_certificate {
            Some(path) => Some(tls_config(&settings, path)?),
            None => None,
        };
        Ok(Self {
            settings,
            tls,
            connection: Mutex::new(None),
        })
    }

    fn unavailable(&self, what: &str, e: impl std::fmt::Display) -> DirectoryError {
        DirectoryError::Unavailable(format!("{} {what}: {e}", self.settings.header()))
    }

    async fn handle(&self) -> Result<Ldap, DirectoryError> {
        let mut slot = self.connection.lock().await;
        if let Some(ldap) = slot.as_mut() {
            if !ldap.is_closed() {
                return Ok(ldap.clone());
            }
        }
        *slot = None;
        let mut last = None;
        for url in &self.settings.urls {
            match self.connect(url).await {
                Ok(ldap) => {
                    *slot = Some(ldap.clone());
                    return Ok(ldap);
                }
                Err(e @ DirectoryError::Misconfigured(_)) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| self.unavailable("has no URL", "")))
    }

    async fn connect(&self, url: &str) -> Result<Ldap, DirectoryError> {
        let s = &self.settings;
        let mut conn_settings = LdapConnSettings::new()
            .set_conn_timeout(s.timeout)
            .set_starttls(s.start_tls);
        if let Some(tls) = &self.tls {
            conn_settings = conn_settings.set_config(tls.clone());
        }
        let (conn, mut ldap) =
            tokio::time::timeout(s.timeout, LdapConnAsync::with_settings(conn_settings, url))
                .await
                .map_err(|_| self.unavailable(&format!("cannot reach {url}"), "timed out"))?
                .map_err(|e| self.unavailable(&format!("cannot reach {url}"), e))?;
        ldap3::drive!(conn);
        if let (Some(dn), Some(pw)) = (&s.bind_dn, &s.bind_password) {
            let bound = ldap
                .with_timeout(s.timeout)
                .simple_bind(dn, pw)
                .await
                .map_err(|e| self.unavailable(&format!("bind as {dn} at {url}"), e))?;
            if bound.rc != 0 {
                return Err(DirectoryError::Misconfigured(format!(
                    "{} cannot bind as {dn} at {url} (result {}: {}); check BindDN and the \
                     password",
                    s.header(),
                    bound.rc,
                    bound.text
                )));
            }
        }
        Ok(ldap)
    }

    async fn search(
        &self,
        base: &str,
        filter: &str,
        attributes: Vec<&str>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let mut ldap = self.handle().await?;
        let result = ldap
            .with_timeout(self.settings.timeout)
            .search(base, Scope::Subtree, filter, attributes)
            .await
            .and_then(|r| r.success());
        match result {
            Ok((entries, _)) => Ok(entries.into_iter().map(SearchEntry::construct).collect()),
            Err(e) => {
                // A timed-out or broken connection is not reused.
                *self.connection.lock().await = None;
                Err(self.unavailable("search", e))
            }
        }
    }

    fn user_attributes(&self) -> Vec<&str> {
        let a = &self.settings.attributes;
        vec![
            a.username.as_str(),
            a.uid_number.as_str(),
            a.gid_number.as_str(),
            a.home.as_str(),
            a.shell.as_str(),
            a.gecos.as_str(),
            "cn",
            self.settings.identity_attribute.as_str(),
        ]
    }

    fn group_attributes(&self) -> Vec<&str> {
        let a = &self.settings.attributes;
        vec![
            a.group_name.as_str(),
            a.group_gid_number.as_str(),
            a.member.as_str(),
        ]
    }

    fn one<T>(&self, what: &str, mut found: Vec<T>) -> Result<Option<T>, DirectoryError> {
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => Err(DirectoryError::Ambiguous(format!(
                "{} has {n} entries for {what}; it must be unique, so none is used",
                self.settings.header()
            ))),
        }
    }
}

#[async_trait]
impl Directory for LdapDirectory {
    async fn user(&self, key: UserKey<'_>) -> Result<Option<DirectoryAccount>, DirectoryError> {
        let s = &self.settings;
        let a = &s.attributes;
        let (condition, what) = match key {
            UserKey::Name(n) => (
                format!("({}={})", a.username, ldap_escape(n)),
                format!("{}={n:?}", a.username),
            ),
            UserKey::Uid(uid) => (
                format!("({}={uid})", a.uid_number),
                format!("{}={uid}", a.uid_number),
            ),
            UserKey::Link(v) => (
                format!("({}={})", s.identity_attribute, ldap_escape(v)),
                format!("{}={v:?}", s.identity_attribute),
            ),
        };
        let filter = format!("(&{}{condition})", s.user_filter);
        let entries = self
            .search(&s.user_base, &filter, self.user_attributes())
            .await?;
        let users = entries
            .iter()
            .filter_map(|e| match parse_user(s, e) {
                Ok(u) => Some(u),
                Err(why) => {
                    tracing::warn!(dn = %e.dn, "{} skipped an entry: {why}", s.header());
                    None
                }
            })
            .collect();
        self.one(&what, users)
    }

    async fn group(&self, key: GroupKey<'_>) -> Result<Option<DirectoryGroup>, DirectoryError> {
        let s = &self.settings;
        let a = &s.attributes;
        let (condition, what) = match key {
            GroupKey::Name(n) => (
                format!("({}={})", a.group_name, ldap_escape(n)),
                format!("group {n:?}"),
            ),
            GroupKey::Gid(gid) => (
                format!("({}={gid})", a.group_gid_number),
                format!("gid {gid}"),
            ),
        };
        let filter = format!("(&{}{condition})", s.group_filter);
        let entries = self
            .search(&s.group_base, &filter, self.group_attributes())
            .await?;
        let groups = entries.iter().filter_map(|e| parse_group(s, e)).collect();
        self.one(&what, groups)
    }

    async fn groups_of(
        &self,
        user: &DirectoryAccount,
    ) -> Result<Vec<DirectoryGroup>, DirectoryError> {
        let s = &self.settings;
        let value = match s.membership {
            Membership::MemberUid => &user.name,
            Membership::MemberDn => &user.dn,
        };
        let filter = format!(
            "(&{}({}={}))",
            s.group_filter,
            s.attributes.member,
            ldap_escape(value)
        );
        let entries = self
            .search(&s.group_base, &filter, self.group_attributes())
            .await?;
        Ok(entries.iter().filter_map(|e| parse_group(s, e)).collect())
    }
}

/// The first value of `attr`, whatever case the server spells it in.
fn first<'a>(attrs: &'a HashMap<String, Vec<String>>, attr: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

fn all<'a>(attrs: &'a HashMap<String, Vec<String>>, attr: &str) -> &'a [String] {
    attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .map(|(_, v)| v.as_slice())
        .unwrap_or(&[])
}

fn number(attrs: &HashMap<String, Vec<String>>, attr: &str) -> Result<u32, String> {
    let text = first(attrs, attr).ok_or_else(|| format!("it has no {attr}"))?;
    text.trim()
        .parse::<u32>()
        .map_err(|_| format!("its {attr} {text:?} is not a number from 0 to 4294967295"))
}

fn parse_user(s: &DirectorySettings, e: &SearchEntry) -> Result<DirectoryAccount, String> {
    let a = &s.attributes;
    let name = first(&e.attrs, &a.username)
        .ok_or_else(|| format!("it has no {}", a.username))?
        .to_owned();
    Ok(DirectoryAccount {
        source: s.name.clone(),
        dn: e.dn.clone(),
        uid: number(&e.attrs, &a.uid_number)?,
        gid: number(&e.attrs, &a.gid_number)?,
        home: first(&e.attrs, &a.home)
            .ok_or_else(|| format!("it has no {}", a.home))?
            .to_owned(),
        shell: first(&e.attrs, &a.shell).map(str::to_owned),
        gecos: first(&e.attrs, &a.gecos)
            .or_else(|| first(&e.attrs, "cn"))
            .unwrap_or_default()
            .to_owned(),
        link: first(&e.attrs, &s.identity_attribute).map(str::to_owned),
        name,
    })
}

fn parse_group(s: &DirectorySettings, e: &SearchEntry) -> Option<DirectoryGroup> {
    let a = &s.attributes;
    let parsed = (|| {
        let name = first(&e.attrs, &a.group_name)
            .ok_or_else(|| format!("it has no {}", a.group_name))?
            .to_owned();
        let gid = number(&e.attrs, &a.group_gid_number)?;
        let values = all(&e.attrs, &a.member);
        let members = match s.membership {
            Membership::MemberUid => values.to_vec(),
            Membership::MemberDn => values
                .iter()
                .filter(|dn| under(dn, &s.user_base))
                .filter_map(|dn| name_from_dn(dn, &a.username))
                .collect(),
        };
        Ok::<_, String>(DirectoryGroup {
            source: s.name.clone(),
            dn: e.dn.clone(),
            name,
            gid,
            members,
        })
    })();
    match parsed {
        Ok(g) => Some(g),
        Err(why) => {
            tracing::warn!(dn = %e.dn, "{} skipped a group: {why}", s.header());
            None
        }
    }
}

/// Whether `dn` lies under `base` (compared without case or spaces after
/// commas, as directories normalise them).
fn under(dn: &str, base: &str) -> bool {
    let norm = |s: &str| {
        s.split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let (dn, base) = (norm(dn), norm(base));
    dn.len() > base.len() && dn[dn.len() - base.len()..] == base[..]
}

/// `uid=alice,ou=people,…` → `alice` when the first RDN is the username
/// attribute; members named any other way are not listed (their own
/// lookups still find their groups).
fn name_from_dn(dn: &str, username_attribute: &str) -> Option<String> {
    let rdn = dn.split(',').next()?;
    let (attr, value) = rdn.split_once('=')?;
    if !attr.trim().eq_ignore_ascii_case(username_attribute) || value.contains('\\') {
        return None;
    }
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// A TLS client that trusts exactly the CA in `TLSCACertificate`.
fn tls_config(
    s: &DirectorySettings,
    path: &std::path::Path,
) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    let bad = |what: String| {
        DirectoryError::Misconfigured(format!(
            "{} TLSCACertificate {}: {what}",
            s.header(),
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_dns_give_names_only_for_the_username_rdn() {
        assert_eq!(
            name_from_dn("uid=alice,ou=people,dc=x", "uid").as_deref(),
            Some("alice")
        );
        assert_eq!(
            name_from_dn("UID=bob,ou=people", "uid").as_deref(),
            Some("bob")
        );
        assert_eq!(name_from_dn("cn=Alice A,ou=people", "uid"), None);
        assert_eq!(name_from_dn("uid=a\\2cb,ou=people", "uid"), None);
        assert!(under("uid=a, ou=People,dc=x", "ou=people,dc=x"));
        assert!(!under("uid=a,ou=admins,dc=x", "ou=people,dc=x"));
        assert!(!under("ou=people,dc=x", "ou=people,dc=x"));
    }
}
