//! The identity providers' own sections, `[LDAP "name"]`, `[PAM]` and
//! `[ProxyAuth]`: their settings and the reader's checks of them. The
//! reader itself, and the choice of provider, are config's (mod.rs); this
//! file adds to the reader and imports nothing else of connectd.

use std::path::PathBuf;
use std::time::Duration;

use connect_gcfg::Key;
use ipnet::IpNet;

use super::{ProviderKind, Reader, SettingsError};

#[derive(Debug, Clone)]
pub struct LdapSettings {
    /// The `[LDAP "name"]` subsection; part of every user's identity.
    pub name: String,
    pub server_address: String,
    pub tls: bool,
    pub start_tls: bool,
    pub ca_certificate: Option<PathBuf>,
    pub insecure: bool,
    pub bind_dn: Option<String>,
    pub bind_password: Option<String>,
    pub user_search_base: String,
    pub user_object_class: String,
    pub user_filter_base: Option<String>,
    pub username_attribute: String,
    pub unique_id_attribute: String,
    pub first_name_attribute: String,
    pub last_name_attribute: String,
    pub email_attribute: String,
    pub group_search_base: Option<String>,
    pub group_object_class: String,
    pub group_filter_base: Option<String>,
    pub group_name_attribute: String,
    pub group_unique_id_attribute: String,
    pub group_member_attribute: String,
    pub role_attribute: Option<String>,
    pub timeout: Duration,
    pub logging: bool,
}

#[derive(Debug, Clone)]
pub struct PamSettings {
    pub service: String,
    pub use_session: bool,
    pub session_service: String,
    pub forward_password: bool,
    pub authenticated_session_service: String,
}

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub username_header: String,
    pub unique_id_header: Option<String>,
    pub groups_header: Option<String>,
    pub groups_separator: String,
    pub role_header: Option<String>,
    pub email_header: Option<String>,
    pub first_name_header: Option<String>,
    pub last_name_header: Option<String>,
    /// Peers (the front proxy's addresses) whose identity headers are believed.
    pub trusted: Vec<IpNet>,
    pub logging: bool,
}

impl Reader<'_> {
    pub(super) fn ldap_sections(&self) -> Result<Vec<LdapSettings>, SettingsError> {
        let names = self.config.subsections("LDAP");
        if names.is_empty() {
            return Err(self.refuse(
                Some(Key::new("Authentication", "Provider")),
                "[Authentication] Provider = ldap needs at least one [LDAP \"name\"] section \
                 with ServerAddress and UserSearchBaseDN"
                    .into(),
            ));
        }
        names.iter().map(|name| self.ldap_section(name)).collect()
    }

    fn ldap_section(&self, name: &str) -> Result<LdapSettings, SettingsError> {
        let key = |k: &'static str| Key::sub("LDAP", name, k);
        let header = format!("[LDAP \"{name}\"]");
        let required = |k: &'static str| {
            self.string(key(k)).ok_or_else(|| {
                self.refuse(
                    None,
                    format!("{header} {k} is missing: every LDAP section needs it"),
                )
            })
        };
        let server_address = required("ServerAddress")?;
        let user_search_base = required("UserSearchBaseDN")?;
        let tls = self.bool_or(key("TLS"), false)?;
        let start_tls = self.bool_or(key("StartTLS"), false)?;
        if tls && start_tls {
            return Err(self.refuse(
                Some(key("StartTLS")),
                format!(
                    "{header} TLS and StartTLS are both true: use TLS for ldaps:// (port 636) \
                     or StartTLS for ldap:// (port 389), not both"
                ),
            ));
        }
        let bind_dn = self.string(key("BindDN"));
        let bind_password = self.config.string(key("BindPassword"));
        if bind_dn.is_some() && bind_password.as_deref().unwrap_or("").is_empty() {
            return Err(self.refuse(
                Some(key("BindDN")),
                format!(
                    "{header} BindDN is set without BindPassword: an empty password is an \
                     unauthenticated bind; set BindPassword, or remove BindDN for anonymous \
                     search"
                ),
            ));
        }
        let role_attribute = self
            .string(key("UserRoleAttribute"))
            .or_else(|| self.string(key("UserAttributeRole")));
        Ok(LdapSettings {
            name: name.to_owned(),
            server_address,
            tls,
            start_tls,
            ca_certificate: self.string(key("TLSCACertificate")).map(PathBuf::from),
            insecure: self.bool_or(key("ServerTLSInsecure"), false)?,
            bind_dn,
            bind_password,
            user_search_base,
            user_object_class: self.string_or(key("UserObjectClass"), "person"),
            user_filter_base: self.string(key("UserFilterBase")),
            username_attribute: self.string_or(key("UsernameAttribute"), "uid"),
            unique_id_attribute: self.string_or(key("UniqueIdAttribute"), "entryUUID"),
            first_name_attribute: self.string_or(key("UserFirstNameAttribute"), "givenName"),
            last_name_attribute: self.string_or(key("UserLastNameAttribute"), "sn"),
            email_attribute: self.string_or(key("UserEmailAttribute"), "mail"),
            group_search_base: self.string(key("GroupSearchBaseDN")),
            group_object_class: self.string_or(key("GroupObjectClass"), "groupOfNames"),
            group_filter_base: self.string(key("GroupFilterBase")),
            group_name_attribute: self.string_or(key("GroupNameAttribute"), "cn"),
            group_unique_id_attribute: self.string_or(key("GroupUniqueIdAttribute"), "entryUUID"),
            group_member_attribute: self.string_or(key("GroupMemberAttribute"), "member"),
            role_attribute,
            timeout: self
                .config
                .duration(key("Timeout"))?
                .unwrap_or(Duration::from_secs(10)),
            logging: self.bool_or(key("Logging"), false)?,
        })
    }

    pub(super) fn pam(&self, run_as_current_user: bool) -> Result<PamSettings, SettingsError> {
        let key = |k: &'static str| Key::new("PAM", k);
        let use_session = self.bool_or(key("UseSession"), false)?;
        let forward_password = self.bool_or(key("ForwardPassword"), false)?;
        if forward_password && !(use_session && run_as_current_user) {
            return Err(self.refuse(
                Some(key("ForwardPassword")),
                "[PAM] ForwardPassword = true needs [PAM] UseSession = true and \
                 [Applications] RunAsCurrentUser = true: the password is only forwarded to \
                 the session of the viewer's own process"
                    .into(),
            ));
        }
        Ok(PamSettings {
            service: self.string_or(key("Service"), "connect"),
            use_session,
            session_service: self.string_or(key("SessionService"), "connect-session"),
            forward_password,
            authenticated_session_service: self.string_or(key("AuthenticatedSessionService"), "su"),
        })
    }

    pub(super) fn proxy(&self, provider: ProviderKind) -> Result<ProxySettings, SettingsError> {
        let key = |k: &'static str| Key::new("ProxyAuth", k);
        let trusted_key = key("TrustedProxy");
        let mut trusted = Vec::new();
        for text in self.config.strings(trusted_key) {
            for item in text.split([',', ' ']).filter(|s| !s.is_empty()) {
                let net = item
                    .parse::<IpNet>()
                    .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        self.refuse(
                            Some(trusted_key),
                            format!(
                                "[ProxyAuth] TrustedProxy = {item:?}: not an address or \
                                 network; write e.g. 127.0.0.1 or 10.0.0.0/24"
                            ),
                        )
                    })?;
                trusted.push(net);
            }
        }
        if provider == ProviderKind::Proxy && trusted.is_empty() {
            return Err(self.refuse(
                Some(Key::new("Authentication", "Provider")),
                "[Authentication] Provider = proxy needs [ProxyAuth] TrustedProxy: the \
                 addresses of the front proxy whose identity headers connectd may believe \
                 (e.g. TrustedProxy = 127.0.0.1). Anyone else could claim to be anyone"
                    .into(),
            ));
        }
        Ok(ProxySettings {
            username_header: self.string_or(key("UsernameHeader"), "X-Auth-Username"),
            unique_id_header: self.string(key("UniqueIdHeader")),
            groups_header: self.string(key("GroupsHeader")),
            groups_separator: self.string_or(key("GroupsHeaderSeparator"), ","),
            role_header: self.string(key("RoleHeader")),
            email_header: self.string(key("EmailHeader")),
            first_name_header: self.string(key("FirstNameHeader")),
            last_name_header: self.string(key("LastNameHeader")),
            trusted,
            logging: self.bool_or(key("Logging"), false)?,
        })
    }
}
