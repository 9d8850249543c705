//! `[Nameservice "name"]` subsections: one directory (RFC 2307) source each,
//! tried in file order.

use std::path::PathBuf;
use std::time::Duration;

use connect_gcfg::{Config, Key};

/// Keys of a `[Nameservice "name"]` subsection (lower case), for
/// unknown-key warnings.
pub const DIRECTORY_KEYS: &[&str] = &[
    "url",
    "starttls",
    "tlscacertificate",
    "binddn",
    "bindpassword",
    "bindpasswordfile",
    "usersearchbasedn",
    "userfilter",
    "groupsearchbasedn",
    "groupfilter",
    "usernameattribute",
    "uidnumberattribute",
    "gidnumberattribute",
    "homedirectoryattribute",
    "loginshellattribute",
    "gecosattribute",
    "groupnameattribute",
    "groupgidnumberattribute",
    "groupmembership",
    "identityprovider",
    "identityattribute",
    "identityvalue",
    "answerlookups",
    "timeout",
    "cachettl",
    "negativecachettl",
];

/// How a group names its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// posixGroup: `memberUid` holds user names.
    MemberUid,
    /// groupOfNames / rfc2307bis: `member` holds user DNs.
    MemberDn,
}

/// Which part of a federated identity is matched against `IdentityAttribute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityValue {
    UniqueId,
    Username,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub username: String,
    pub uid_number: String,
    pub gid_number: String,
    pub home: String,
    pub shell: String,
    pub gecos: String,
    pub group_name: String,
    pub group_gid_number: String,
    pub member: String,
}

#[derive(Debug, Clone)]
pub struct DirectorySettings {
    pub name: String,
    /// `ldap://` or `ldaps://` URLs, tried in order.
    pub urls: Vec<String>,
    pub start_tls: bool,
    pub ca_certificate: Option<PathBuf>,
    pub bind_dn: Option<String>,
    pub bind_password: Option<String>,
    pub user_base: String,
    pub user_filter: String,
    pub group_base: String,
    pub group_filter: String,
    pub attributes: Attributes,
    pub membership: Membership,
    /// Identity providers whose identities this directory may bind, as
    /// connectd names them (`ldap/corp`, `oidc/https://…`); a trailing `*`
    /// matches any suffix.
    pub providers: Vec<String>,
    pub identity_attribute: String,
    pub identity_value: IdentityValue,
    /// False when the host already resolves these accounts (SSSD, nslcd):
    /// then the nameservice only binds identities to them.
    pub answer_lookups: bool,
    /// Per directory operation (connect, bind, search).
    pub timeout: Duration,
    /// How long a fetched entry is fresh; it is refreshed in the background
    /// before, and served past it while the directory is unreachable.
    pub cache_ttl: Duration,
    pub negative_ttl: Duration,
}

impl DirectorySettings {
    /// Whether identities of `provider` may be bound to this directory's accounts.
    pub fn accepts(&self, provider: &str) -> bool {
        self.providers.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => provider.starts_with(prefix),
            None => p == provider,
        })
    }

    pub fn header(&self) -> String {
        format!("[Nameservice \"{}\"]", self.name)
    }
}

/// A filter given in the file must be one parenthesised LDAP filter.
fn balanced_filter(filter: &str) -> bool {
    if !filter.starts_with('(') || !filter.ends_with(')') {
        return false;
    }
    let mut depth = 0i32;
    let mut escaped = false;
    for (i, c) in filter.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 && i + 1 != filter.len() {
                    return false;
                }
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

fn attribute_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

/// Reads every `[Nameservice "name"]` subsection, or says which key is
/// wrong (the caller adds the file's name).
pub fn directories(config: &Config) -> Result<Vec<DirectorySettings>, String> {
    let mut out = Vec::new();
    for name in config.subsections("Nameservice") {
        let key = |k: &'static str| Key::sub("Nameservice", &name, k);
        let header = format!("[Nameservice \"{name}\"]");
        let bad = |message: String| format!("{header} {message}");
        let text = |k: &'static str, default: &str| {
            config
                .string(key(k))
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let urls = config.strings(key("URL"));
        if urls.is_empty() {
            return Err(bad(
                "URL is missing: name the directory, e.g. URL = ldaps://ldap.example.org".into(),
            ));
        }
        for url in &urls {
            if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
                return Err(bad(format!(
                    "URL = {url:?}: must start with ldap:// or ldaps://"
                )));
            }
        }
        let start_tls = config.bool(key("StartTLS")).map_err(|e| e.to_string())?;
        let start_tls = start_tls.unwrap_or(false);
        if start_tls && urls.iter().any(|u| u.starts_with("ldaps://")) {
            return Err(bad(
                "StartTLS = true with an ldaps:// URL: use one or the other".into(),
            ));
        }
        let bind_dn = config.string(key("BindDN")).filter(|v| !v.is_empty());
        let password_file = config
            .string(key("BindPasswordFile"))
            .filter(|v| !v.is_empty());
        let mut bind_password = config.string(key("BindPassword")).filter(|v| !v.is_empty());
        if let Some(path) = &password_file {
            if bind_password.is_some() {
                return Err(bad(
                    "has both BindPassword and BindPasswordFile: keep one".into()
                ));
            }
            let read = std::fs::read_to_string(path)
                .map_err(|e| bad(format!("BindPasswordFile {path}: cannot read it: {e}")))?;
            bind_password = Some(read.trim_end_matches(['\r', '\n']).to_owned());
        }
        if bind_password.is_some() != bind_dn.is_some() {
            return Err(bad(
                "needs BindDN and a password together (BindPassword or BindPasswordFile), or \
                 neither for anonymous searches"
                    .into(),
            ));
        }
        let user_base = config
            .string(key("UserSearchBaseDN"))
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad("UserSearchBaseDN is missing".into()))?;
        let group_base = text("GroupSearchBaseDN", &user_base);
        let membership = match text("GroupMembership", "memberUid")
            .to_ascii_lowercase()
            .as_str()
        {
            "memberuid" => Membership::MemberUid,
            "member" => Membership::MemberDn,
            other => {
                return Err(bad(format!(
                    "GroupMembership = {other:?}: use memberUid (posixGroup) or member \
                     (groupOfNames, rfc2307bis)"
                )))
            }
        };
        let user_filter = text("UserFilter", "(objectClass=posixAccount)");
        let group_filter = text(
            "GroupFilter",
            match membership {
                Membership::MemberUid => "(objectClass=posixGroup)",
                Membership::MemberDn => "(&(objectClass=groupOfNames)(gidNumber=*))",
            },
        );
        for (k, f) in [("UserFilter", &user_filter), ("GroupFilter", &group_filter)] {
            if !balanced_filter(f) {
                return Err(bad(format!(
                    "{k} = {f:?}: must be one LDAP filter in parentheses"
                )));
            }
        }
        let attributes = Attributes {
            username: text("UsernameAttribute", "uid"),
            uid_number: text("UidNumberAttribute", "uidNumber"),
            gid_number: text("GidNumberAttribute", "gidNumber"),
            home: text("HomeDirectoryAttribute", "homeDirectory"),
            shell: text("LoginShellAttribute", "loginShell"),
            gecos: text("GecosAttribute", "gecos"),
            group_name: text("GroupNameAttribute", "cn"),
            group_gid_number: text("GroupGidNumberAttribute", "gidNumber"),
            member: match membership {
                Membership::MemberUid => "memberUid".into(),
                Membership::MemberDn => "member".into(),
            },
        };
        let identity_attribute = text("IdentityAttribute", "entryUUID");
        for (k, a) in [
            ("UsernameAttribute", &attributes.username),
            ("UidNumberAttribute", &attributes.uid_number),
            ("GidNumberAttribute", &attributes.gid_number),
            ("HomeDirectoryAttribute", &attributes.home),
            ("LoginShellAttribute", &attributes.shell),
            ("GecosAttribute", &attributes.gecos),
            ("GroupNameAttribute", &attributes.group_name),
            ("GroupGidNumberAttribute", &attributes.group_gid_number),
            ("IdentityAttribute", &identity_attribute),
        ] {
            if !attribute_name_ok(a) {
                return Err(bad(format!("{k} = {a:?} is not an attribute name")));
            }
        }
        let identity_value = match text("IdentityValue", "unique-id")
            .to_ascii_lowercase()
            .as_str()
        {
            "unique-id" | "uniqueid" => IdentityValue::UniqueId,
            "username" => IdentityValue::Username,
            other => {
                return Err(bad(format!(
                    "IdentityValue = {other:?}: use unique-id (the identity provider's stable \
                     id) or username"
                )))
            }
        };
        let providers = config.strings(key("IdentityProvider"));
        if providers.is_empty() {
            return Err(bad(
                "IdentityProvider is missing: name the identity providers whose users this \
                 directory's accounts belong to, as connectd names them (e.g. IdentityProvider \
                 = ldap/corp); a directory never claims identities it was not given"
                    .into(),
            ));
        }
        if providers.iter().any(|p| p == "*") {
            return Err(bad(
                "IdentityProvider = *: name the providers (a prefix such as oidc/* is fine)".into(),
            ));
        }
        let duration = |k: &'static str, default: Duration| -> Result<Duration, String> {
            Ok(config
                .duration(key(k))
                .map_err(|e| e.to_string())?
                .unwrap_or(default))
        };
        let timeout = duration("Timeout", Duration::from_secs(3))?;
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(bad(format!(
                "Timeout = {timeout:?}: use between 1ms and 60s"
            )));
        }
        let cache_ttl = duration("CacheTtl", Duration::from_secs(15 * 60))?;
        if cache_ttl < Duration::from_secs(1) {
            return Err(bad("CacheTtl must be at least 1s".into()));
        }
        out.push(DirectorySettings {
            urls,
            start_tls,
            ca_certificate: config
                .string(key("TLSCACertificate"))
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            bind_dn,
            bind_password,
            user_base,
            user_filter,
            group_base,
            group_filter,
            attributes,
            membership,
            providers,
            identity_attribute,
            identity_value,
            answer_lookups: config
                .bool(key("AnswerLookups"))
                .map_err(|e| e.to_string())?
                .unwrap_or(true),
            timeout,
            cache_ttl,
            negative_ttl: duration("NegativeCacheTtl", Duration::from_secs(60))?,
            name,
        });
    }
    Ok(out)
}

/// `[Nameservice "name"]` keys nobody reads, with their lines.
pub fn unknown_keys(config: &Config) -> Vec<String> {
    config
        .entries()
        .into_iter()
        .filter(|e| e.section.eq_ignore_ascii_case("Nameservice"))
        .filter_map(|e| {
            let sub = e.subsection.as_ref()?;
            (!DIRECTORY_KEYS.contains(&e.name.to_ascii_lowercase().as_str())).then(|| {
                format!(
                    "{}:{}: [Nameservice \"{sub}\"] {}",
                    config.origin(),
                    e.line,
                    e.name
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<DirectorySettings>, String> {
        directories(&Config::parse(text, "t.gcfg").unwrap())
    }

    const MINIMAL: &str = "[Nameservice \"corp\"]\nURL = ldap://127.0.0.1:389\n\
        UserSearchBaseDN = ou=people,dc=example,dc=org\nIdentityProvider = ldap/corp\n";

    #[test]
    fn defaults_are_rfc2307() {
        let d = &parse(MINIMAL).unwrap()[0];
        assert_eq!(d.name, "corp");
        assert_eq!(d.attributes.uid_number, "uidNumber");
        assert_eq!(d.attributes.member, "memberUid");
        assert_eq!(d.user_filter, "(objectClass=posixAccount)");
        assert_eq!(d.group_base, "ou=people,dc=example,dc=org");
        assert_eq!(d.identity_attribute, "entryUUID");
        assert!(d.answer_lookups);
        assert!(d.accepts("ldap/corp"));
        assert!(!d.accepts("ldap/corp2"));
    }

    #[test]
    fn provider_prefixes_match_only_their_prefix() {
        let d = &parse(&MINIMAL.replace("ldap/corp", "oidc/*")).unwrap()[0];
        assert!(d.accepts("oidc/https://idp"));
        assert!(!d.accepts("saml/x"));
    }

    #[test]
    fn refuses_what_cannot_work_naming_the_key() {
        for (change, key) in [
            (("ldap://127.0.0.1:389", "http://x"), "URL"),
            (
                ("IdentityProvider = ldap/corp", "IdentityProvider = *"),
                "IdentityProvider",
            ),
            (("IdentityProvider = ldap/corp", ""), "IdentityProvider"),
            (("UserSearchBaseDN", "X"), "UserSearchBaseDN"),
        ] {
            let err = parse(&MINIMAL.replace(change.0, change.1)).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
        for filter in ["uid=*", "(uid=*))(x=*", "(a=1)(b=2)", "((a=1)"] {
            let err = parse(&format!("{MINIMAL}UserFilter = {filter}\n")).unwrap_err();
            assert!(err.contains("UserFilter"), "{filter}: {err}");
        }
        let err = parse(&format!("{MINIMAL}UidNumberAttribute = uid)(x\n")).unwrap_err();
        assert!(err.contains("UidNumberAttribute"), "{err}");
        let err = parse(&format!("{MINIMAL}BindDN = cn=reader\n")).unwrap_err();
        assert!(err.contains("BindDN"), "{err}");
    }

    #[test]
    fn reads_the_password_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let d = &parse(&format!(
            "{MINIMAL}BindDN = cn=reader\nBindPasswordFile = {}\n",
            file.display()
        ))
        .unwrap()[0];
        assert_eq!(d.bind_password.as_deref(), Some("s3cret"));
    }

    #[test]
    fn unknown_keys_are_named_with_their_section() {
        let config = Config::parse(&format!("{MINIMAL}Bogus = 1\n"), "t.gcfg").unwrap();
        assert_eq!(
            unknown_keys(&config),
            vec!["t.gcfg:5: [Nameservice \"corp\"] Bogus".to_owned()]
        );
    }
}
