//! connectd's settings, read from the gcfg file it shares with nameserviced.
//!
//! Section and key names are Connect's. Every refusal names the file, the
//! line and the key, and says what to write instead; the daemon prints it and
//! exits 78 (EX_CONFIG) before it opens a socket or a database.
//!
//! Here: the file's known keys, [`Settings`] and the reader of every
//! section but the identity providers' own; `providers` holds those
//! (`[LDAP "name"]`, `[PAM]`, `[ProxyAuth]`) and adds their readers to the
//! same reader. May import only `roles` (the role mapping's types):
//! config sits below every module that reads settings.

mod limits;
mod oauth2;
mod providers;
mod saml;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use connect_gcfg::{Config, ConfigError, Key};

use crate::roles::{Mapping, Role, RoleTable};

pub use limits::{ResourceLimits, DEFAULT_TASKS_MAX};
pub use oauth2::{is_loopback_http, OAuth2Settings};
pub use providers::{LdapSettings, PamSettings, ProxySettings};
pub use saml::{attribute_profile, MetadataSource, SamlAttributes, SamlSettings, SsoInitiated};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/connect/connect.gcfg";

/// Connect's ceiling for every scheduler timeout, server-wide or per
/// content: 30 days.
pub const MAX_TIMEOUT_SECONDS: u64 = 2_592_000;

/// Keys connectd reads, per section (lower case), for unknown-key warnings.
/// `[Nameservice]` belongs to nameserviced, which checks it itself.
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    ("server", &["datadir", "address"]),
    ("http", &["listen"]),
    ("logging", &["serviceloglevel"]),
    ("authentication", &["provider", "lifetime"]),
    (
        "authorization",
        &[
            "defaultuserrole",
            "publisherscanmanagerunas",
            "userrolegroupmapping",
            "userrolemapping",
            "viewerrolemapping",
            "publisherrolemapping",
            "administratorrolemapping",
            "userrolemappingrestrictive",
        ],
    ),
    (
        "applications",
        &[
            "runas",
            "runascurrentuser",
            "sharedrunasunixgroup",
            "minimumuid",
            "maxbundlesize",
            "maxbundleunpackedsize",
            "maxbundlefilesize",
            "bundleretentionlimit",
        ],
    ),
    ("python", &["enabled", "executable"]),
    ("node", &["enabled", "executable"]),
    (
        "ldap",
        &[
            "serveraddress",
            "tls",
            "starttls",
            "tlscacertificate",
            "servertlsinsecure",
            "binddn",
            "bindpassword",
            "anonymousbind",
            "usersearchbasedn",
            "userobjectclass",
            "userfilterbase",
            "usernameattribute",
            "uniqueidattribute",
            "userfirstnameattribute",
            "userlastnameattribute",
            "useremailattribute",
            "groupsearchbasedn",
            "groupobjectclass",
            "groupfilterbase",
            "groupnameattribute",
            "groupuniqueidattribute",
            "groupmemberattribute",
            "userroleattribute",
            "userattributerole",
            "timeout",
            "logging",
        ],
    ),
    (
        "pam",
        &[
            "service",
            "usesession",
            "sessionservice",
            "forwardpassword",
            "authenticatedsessionservice",
            "logging",
        ],
    ),
    (
        "proxyauth",
        &[
            "usernameheader",
            "uniqueidheader",
            "groupsheader",
            "groupsheaderseparator",
            "roleheader",
            "emailheader",
            "firstnameheader",
            "lastnameheader",
            "trustedproxy",
            "logging",
        ],
    ),
    ("password", &["selfregistration", "minimumlength"]),
    (
        "oauth2",
        &[
            "openidconnectissuer",
            "clientid",
            "clientsecret",
            "clientsecretfile",
            "tlscacertificate",
            "allowinsecureloopbackissuer",
            "customscope",
            "usernameclaim",
            "uniqueidclaim",
            "groupsclaim",
            "groupsseparator",
            "emailclaim",
            "firstnameclaim",
            "lastnameclaim",
            "roleclaim",
            "requireusernameclaim",
            "groupsautoprovision",
            "logging",
        ],
    ),
    (
        "saml",
        &[
            "idpmetadataurl",
            "idpmetadata",
            "allowinsecureloopbackmetadata",
            "metadatarefreshinterval",
            "tlscacertificate",
            "idpattributeprofile",
            "uniqueidattribute",
            "usernameattribute",
            "firstnameattribute",
            "lastnameattribute",
            "emailattribute",
            "groupsattribute",
            "roleattribute",
            "groupsautoprovision",
            "ssoinitiated",
            "spcertificatefile",
            "spprivatekeyfile",
            "logging",
        ],
    ),
    (
        "scheduler",
        &[
            "minprocesses",
            "maxprocesses",
            "maxconnsperprocess",
            "loadfactor",
            "inittimeout",
            "idletimeout",
            "connectiontimeout",
            "readtimeout",
            "minprocesseslimit",
            "maxprocesseslimit",
            "maxtotalprocesses",
            "memorylimit",
            "cpulimit",
            "tasksmax",
            "cgrouproot",
        ],
    ),
    ("nameservice", &[]),
];

/// Why connectd will not start with this file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A combination or value Connect forbids; the message says what to do.
    #[error("{location}{message}")]
    Refused { location: String, message: String },
}

/// Which identity provider signs viewers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Password,
    Ldap,
    Pam,
    Proxy,
    OAuth2,
    Saml,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Password => "password",
            ProviderKind::Ldap => "ldap",
            ProviderKind::Pam => "pam",
            ProviderKind::Proxy => "proxy",
            ProviderKind::OAuth2 => "oauth2",
            ProviderKind::Saml => "saml",
        }
    }

    /// Providers whose users have no Unix account of their own, so the
    /// nameservice provisions one (PAM users already are Unix accounts).
    pub fn needs_provisioning(self) -> bool {
        matches!(
            self,
            ProviderKind::Ldap | ProviderKind::OAuth2 | ProviderKind::Saml
        )
    }
}

/// `[Scheduler]`: how many processes each content item gets and how long
/// they may take; per-content values override the first eight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerSettings {
    pub min_processes: u32,
    pub max_processes: u32,
    pub max_conns_per_process: u32,
    pub load_factor: f64,
    pub init_timeout: Duration,
    pub idle_timeout: Duration,
    pub connection_timeout: Duration,
    pub read_timeout: Duration,
    /// Ceilings for per-content MinProcesses / MaxProcesses (codes 45, 113).
    pub min_processes_limit: u32,
    pub max_processes_limit: u32,
    /// Content processes on the whole server; beyond it viewers are told
    /// the server is busy instead of the machine running out of memory.
    pub max_total_processes: u32,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            min_processes: 0,
            max_processes: 3,
            max_conns_per_process: 20,
            load_factor: 0.5,
            init_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            connection_timeout: Duration::from_secs(3600),
            read_timeout: Duration::from_secs(3600),
            min_processes_limit: 20,
            max_processes_limit: 20,
            max_total_processes: 200,
        }
    }
}

/// Interpreters content is built and run with. They must be readable by
/// every viewer's account (not under /root).
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub python: Option<PathBuf>,
    pub node: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub origin: String,
    pub data_dir: PathBuf,
    /// `Server.Address`: the URL viewers use; `https://` marks cookies Secure.
    pub address: Option<String>,
    pub listen: SocketAddr,
    pub log_level: String,
    pub provider: ProviderKind,
    pub session_lifetime: Duration,
    pub default_role: Role,
    pub publishers_can_manage_run_as: bool,
    pub mapping: Mapping,
    pub run_as: String,
    pub run_as_current_user: bool,
    pub shared_group: Option<String>,
    /// Accounts below this uid (and root, always) never run content, except
    /// the configured `RunAs` account itself.
    pub minimum_uid: u32,
    /// `MaxBundleSize`: the upload, as sent.
    pub max_bundle_size: u64,
    /// `MaxBundleUnpackedSize`: all files of a bundle, unpacked (default 4 x
    /// `MaxBundleSize`, so a small archive cannot fill the disk).
    pub max_bundle_unpacked_size: u64,
    /// `MaxBundleFileSize`: any one file of a bundle (default
    /// `MaxBundleSize`).
    pub max_bundle_file_size: u64,
    /// `BundleRetentionLimit`: bundles kept per content item, the live one
    /// included; older ones are removed after a deployment. 0 keeps all.
    pub bundle_retention_limit: u32,
    pub scheduler: SchedulerSettings,
    /// What each content process may use (memory, CPU, tasks).
    pub limits: ResourceLimits,
    pub runtimes: RuntimeSettings,
    /// The configuration file, hidden from content processes with its
    /// directory when that directory is connectd's own.
    pub config_path: PathBuf,
    pub ldap: Vec<LdapSettings>,
    pub pam: PamSettings,
    pub proxy: ProxySettings,
    /// `[OAuth2]`, read only with `Provider = oauth2`.
    pub oauth2: Option<OAuth2Settings>,
    /// `[SAML]`, read only with `Provider = saml`.
    pub saml: Option<SamlSettings>,
    pub self_registration: bool,
    pub password_min_length: usize,
    pub provision_socket: PathBuf,
    /// `path:line: [Section] Key` of every key connectd does not know.
    pub unknown_keys: Vec<String>,
}

impl Settings {
    /// Whether cookies must carry `Secure` (viewers reach us over TLS).
    pub fn secure_cookies(&self) -> bool {
        self.address
            .as_deref()
            .is_some_and(|a| a.to_ascii_lowercase().starts_with("https://"))
    }

    /// `Logging = true` in the active provider's section.
    pub fn provider_logging(&self, ldap: Option<&LdapSettings>) -> bool {
        match self.provider {
            ProviderKind::Ldap => ldap.is_some_and(|l| l.logging),
            ProviderKind::Proxy => self.proxy.logging,
            ProviderKind::OAuth2 => self.oauth2.as_ref().is_some_and(|o| o.logging),
            ProviderKind::Saml => self.saml.as_ref().is_some_and(|s| s.logging),
            _ => false,
        }
    }

    pub fn from_config(config: &Config) -> Result<Self, SettingsError> {
        Reader { config }.settings()
    }
}

struct Reader<'a> {
    config: &'a Config,
}

impl Reader<'_> {
    fn refuse(&self, key: Option<Key<'_>>, message: String) -> SettingsError {
        let line = key.and_then(|k| self.config.line_of(k));
        let location = match line {
            Some(line) => format!("{}:{line}: ", self.config.origin()),
            None => format!("{}: ", self.config.origin()),
        };
        SettingsError::Refused { location, message }
    }

    fn string(&self, key: Key<'_>) -> Option<String> {
        self.config.string(key).filter(|s| !s.trim().is_empty())
    }

    fn string_or(&self, key: Key<'_>, default: &str) -> String {
        self.string(key).unwrap_or_else(|| default.to_owned())
    }

    fn bool_or(&self, key: Key<'_>, default: bool) -> Result<bool, SettingsError> {
        Ok(self.config.bool(key)?.unwrap_or(default))
    }

    fn settings(&self) -> Result<Settings, SettingsError> {
        let config = self.config;
        let origin = config.origin().to_owned();

        let provider_key = Key::new("Authentication", "Provider");
        let provider = match self
            .string(provider_key)
            .map(|p| p.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("password") => ProviderKind::Password,
            Some("ldap") => ProviderKind::Ldap,
            Some("pam") => ProviderKind::Pam,
            Some("proxy") => ProviderKind::Proxy,
            Some("oauth2") => ProviderKind::OAuth2,
            Some("saml") => ProviderKind::Saml,
            Some(other) => {
                return Err(self.refuse(
                    Some(provider_key),
                    format!(
                        "[Authentication] Provider = {other:?}: unknown provider; use one of \
                         password, ldap, pam, proxy, oauth2, saml"
                    ),
                ))
            }
        };

        let default_key = Key::new("Authorization", "DefaultUserRole");
        let default_role = match self.string(default_key).as_deref() {
            None => Role::Viewer,
            Some(v) => match v.to_ascii_lowercase().parse::<Role>() {
                Ok(Role::Administrator) => {
                    return Err(self.refuse(
                        Some(default_key),
                        "[Authorization] DefaultUserRole = administrator is not allowed: new \
                         users would all be administrators. Use viewer or publisher (the \
                         first user ever becomes administrator by itself)"
                            .into(),
                    ))
                }
                Ok(role) => role,
                Err(_) => {
                    return Err(self.refuse(
                        Some(default_key),
                        format!(
                            "[Authorization] DefaultUserRole = {v:?}: not a role; use viewer \
                             or publisher"
                        ),
                    ))
                }
            },
        };

        let run_as_current_user_key = Key::new("Applications", "RunAsCurrentUser");
        let run_as_current_user = self.bool_or(run_as_current_user_key, false)?;
        if run_as_current_user && matches!(provider, ProviderKind::Password | ProviderKind::Proxy) {
            return Err(self.refuse(
                Some(run_as_current_user_key),
                format!(
                    "[Applications] RunAsCurrentUser = true cannot be used with \
                     [Authentication] Provider = {}: its users have no Unix accounts. Use \
                     ldap, oauth2, saml (with the nameservice) or pam, or turn \
                     RunAsCurrentUser off",
                    provider.as_str()
                ),
            ));
        }

        let ldap = if provider == ProviderKind::Ldap {
            self.ldap_sections()?
        } else {
            Vec::new()
        };
        let proxy = self.proxy(provider)?;
        let address = self.string(Key::new("Server", "Address"));
        let oauth2 = self.oauth2(provider, run_as_current_user, address.as_deref())?;
        let saml = self.saml(provider, run_as_current_user, address.as_deref())?;
        let role_attribute = match provider {
            ProviderKind::Ldap => ldap.iter().find_map(|l| l.role_attribute.clone()),
            ProviderKind::Proxy => proxy.role_header.clone(),
            ProviderKind::OAuth2 => oauth2.as_ref().and_then(|o| o.role_claim.clone()),
            ProviderKind::Saml => saml.as_ref().and_then(|s| s.role_attribute.clone()),
            _ => None,
        };
        let mapping = self.mapping(provider, role_attribute)?;
        let pam = self.pam(run_as_current_user)?;

        let listen_key = Key::new("HTTP", "Listen");
        let listen_text = self.string_or(listen_key, ":3939");
        let listen = parse_listen(&listen_text).ok_or_else(|| {
            self.refuse(
                Some(listen_key),
                format!(
                    "[HTTP] Listen = {listen_text:?}: not an address; write host:port, e.g. \
                     :3939 or 127.0.0.1:3939"
                ),
            )
        })?;

        let min_len_key = Key::new("Password", "MinimumLength");
        let password_min_length = config.u32(min_len_key)?.unwrap_or(8) as usize;
        let max_bundle_size = config
            .u64(Key::new("Applications", "MaxBundleSize"))?
            .unwrap_or(1 << 30);

        let data_dir =
            PathBuf::from(self.string_or(Key::new("Server", "DataDir"), "/var/lib/connect"));
        if !data_dir.is_absolute() {
            return Err(self.refuse(
                Some(Key::new("Server", "DataDir")),
                format!(
                    "[Server] DataDir = {:?}: must be an absolute path",
                    data_dir.display()
                ),
            ));
        }

        Ok(Settings {
            data_dir,
            address,
            listen,
            log_level: self.string_or(Key::new("Logging", "ServiceLogLevel"), "info"),
            provider,
            session_lifetime: config
                .duration(Key::new("Authentication", "Lifetime"))?
                .unwrap_or(Duration::from_secs(30 * 24 * 3600)),
            default_role,
            publishers_can_manage_run_as: self
                .bool_or(Key::new("Authorization", "PublishersCanManageRunAs"), false)?,
            mapping,
            run_as: self.string_or(Key::new("Applications", "RunAs"), "connect"),
            run_as_current_user,
            shared_group: self.string(Key::new("Applications", "SharedRunAsUnixGroup")),
            minimum_uid: config
                .u32(Key::new("Applications", "MinimumUid"))?
                .unwrap_or(1000),
            max_bundle_size,
            max_bundle_unpacked_size: config
                .u64(Key::new("Applications", "MaxBundleUnpackedSize"))?
                .unwrap_or(max_bundle_size.saturating_mul(4)),
            max_bundle_file_size: config
                .u64(Key::new("Applications", "MaxBundleFileSize"))?
                .unwrap_or(max_bundle_size),
            bundle_retention_limit: config
                .u32(Key::new("Applications", "BundleRetentionLimit"))?
                .unwrap_or(10),
            scheduler: self.scheduler()?,
            limits: self.limits()?,
            runtimes: self.runtimes()?,
            config_path: PathBuf::from(config.origin()),
            ldap,
            pam,
            proxy,
            oauth2,
            saml,
            self_registration: self.bool_or(Key::new("Password", "SelfRegistration"), false)?,
            password_min_length,
            provision_socket: self
                .string(Key::new("Nameservice", "ProvisionSocket"))
                .map(PathBuf::from)
                .unwrap_or_else(|| connect_proto::DEFAULT_PROVISION_SOCKET.into()),
            unknown_keys: self.unknown_keys(),
            origin,
        })
    }

    fn scheduler(&self) -> Result<SchedulerSettings, SettingsError> {
        let config = self.config;
        let key = |k: &'static str| Key::new("Scheduler", k);
        let d = SchedulerSettings::default();
        let timeout = |k: &'static str, default: Duration| -> Result<Duration, SettingsError> {
            let value = config.duration(key(k))?.unwrap_or(default);
            if value > Duration::from_secs(MAX_TIMEOUT_SECONDS) {
                return Err(self.refuse(
                    Some(key(k)),
                    format!(
                        "[Scheduler] {k}: at most {} seconds (30 days)",
                        MAX_TIMEOUT_SECONDS
                    ),
                ));
            }
            Ok(value)
        };
        let settings = SchedulerSettings {
            min_processes: config.u32(key("MinProcesses"))?.unwrap_or(d.min_processes),
            max_processes: config.u32(key("MaxProcesses"))?.unwrap_or(d.max_processes),
            max_conns_per_process: config
                .u32(key("MaxConnsPerProcess"))?
                .unwrap_or(d.max_conns_per_process),
            load_factor: config.f64(key("LoadFactor"))?.unwrap_or(d.load_factor),
            init_timeout: timeout("InitTimeout", d.init_timeout)?,
            idle_timeout: timeout("IdleTimeout", d.idle_timeout)?,
            connection_timeout: timeout("ConnectionTimeout", d.connection_timeout)?,
            read_timeout: timeout("ReadTimeout", d.read_timeout)?,
            min_processes_limit: config
                .u32(key("MinProcessesLimit"))?
                .unwrap_or(d.min_processes_limit),
            max_processes_limit: config
                .u32(key("MaxProcessesLimit"))?
                .unwrap_or(d.max_processes_limit),
            max_total_processes: config
                .u32(key("MaxTotalProcesses"))?
                .unwrap_or(d.max_total_processes),
        };
        let refuse = |k: &'static str, why: &str| {
            Err(self.refuse(Some(key(k)), format!("[Scheduler] {k}: {why}")))
        };
        if !(0.0..=1.0).contains(&settings.load_factor) {
            return refuse("LoadFactor", "must be between 0.0 and 1.0");
        }
        if settings.max_processes == 0 {
            return refuse("MaxProcesses", "must be at least 1");
        }
        if settings.max_conns_per_process == 0 {
            return refuse("MaxConnsPerProcess", "must be at least 1");
        }
        if settings.min_processes > settings.max_processes {
            return refuse("MinProcesses", "may not exceed MaxProcesses");
        }
        if settings.max_processes > settings.max_processes_limit {
            return refuse("MaxProcesses", "may not exceed MaxProcessesLimit");
        }
        if settings.min_processes > settings.min_processes_limit {
            return refuse("MinProcesses", "may not exceed MinProcessesLimit");
        }
        if settings.max_total_processes == 0 {
            return refuse("MaxTotalProcesses", "must be at least 1");
        }
        Ok(settings)
    }

    fn runtimes(&self) -> Result<RuntimeSettings, SettingsError> {
        let executable =
            |section: &'static str, default: &str| -> Result<Option<PathBuf>, SettingsError> {
                if !self.bool_or(Key::new(section, "Enabled"), true)? {
                    return Ok(None);
                }
                let key = Key::new(section, "Executable");
                let path = self
                    .config
                    .strings(key)
                    .pop()
                    .unwrap_or_else(|| default.to_owned());
                let path = PathBuf::from(path);
                if !path.is_absolute() {
                    return Err(self.refuse(
                        Some(key),
                        format!(
                            "[{section}] Executable = {:?}: must be an absolute path",
                            path.display()
                        ),
                    ));
                }
                if path.starts_with("/root") {
                    return Err(self.refuse(
                        Some(key),
                        format!(
                            "[{section}] Executable = {:?}: viewers' accounts cannot enter /root; \
                         use an interpreter installed for everyone, e.g. /usr/bin/python3",
                            path.display()
                        ),
                    ));
                }
                Ok(Some(path))
            };
        Ok(RuntimeSettings {
            python: executable("Python", "/usr/bin/python3")?,
            node: executable("Node", "/usr/bin/node")?,
        })
    }

    /// `role_attribute`: the provider's attribute, header or claim whose
    /// values are mapped to roles, if it names one.
    fn mapping(
        &self,
        provider: ProviderKind,
        role_attribute: Option<String>,
    ) -> Result<Mapping, SettingsError> {
        let group_key = Key::new("Authorization", "UserRoleGroupMapping");
        let attribute_key = Key::new("Authorization", "UserRoleMapping");
        let groups = self.bool_or(group_key, false)?;
        let attribute = self.bool_or(attribute_key, false)?;
        if groups && attribute {
            return Err(self.refuse(
                Some(attribute_key),
                "[Authorization] UserRoleGroupMapping and UserRoleMapping are both true: \
                 choose one (groups, or the provider's role attribute)"
                    .into(),
            ));
        }
        if matches!(provider, ProviderKind::Pam | ProviderKind::Password) && (groups || attribute) {
            let key = if groups { group_key } else { attribute_key };
            return Err(self.refuse(
                Some(key),
                format!(
                    "[Authorization] {}: automatic role mapping is not available with \
                     [Authentication] Provider = {}; turn it off and manage roles in Connect",
                    key.name,
                    provider.as_str()
                ),
            ));
        }
        let table = || -> Result<RoleTable, SettingsError> {
            Ok(RoleTable {
                viewer: self
                    .config
                    .strings(Key::new("Authorization", "ViewerRoleMapping")),
                publisher: self
                    .config
                    .strings(Key::new("Authorization", "PublisherRoleMapping")),
                administrator: self
                    .config
                    .strings(Key::new("Authorization", "AdministratorRoleMapping")),
                restrictive: self.bool_or(
                    Key::new("Authorization", "UserRoleMappingRestrictive"),
                    false,
                )?,
            })
        };
        if groups {
            return Ok(Mapping::Groups(table()?));
        }
        if attribute {
            if role_attribute.is_none() {
                let what = match provider {
                    ProviderKind::Ldap => "[LDAP \"...\"] UserRoleAttribute",
                    ProviderKind::Proxy => "[ProxyAuth] RoleHeader",
                    ProviderKind::OAuth2 => "[OAuth2] RoleClaim",
                    _ => "[SAML] RoleAttribute",
                };
                return Err(self.refuse(
                    Some(attribute_key),
                    format!(
                        "[Authorization] UserRoleMapping = true needs {what}: name the \
                         attribute whose values are mapped"
                    ),
                ));
            }
            return Ok(Mapping::Attribute(table()?));
        }
        Ok(if role_attribute.is_some() {
            Mapping::Direct
        } else {
            Mapping::Off
        })
    }

    fn unknown_keys(&self) -> Vec<String> {
        let origin = self.config.origin();
        self.config
            .entries()
            .into_iter()
            .filter_map(|e| {
                let section = e.section.to_ascii_lowercase();
                let header = match &e.subsection {
                    Some(sub) => format!("[{} \"{sub}\"]", e.section),
                    None => format!("[{}]", e.section),
                };
                match KNOWN_KEYS.iter().find(|(s, _)| *s == section) {
                    Some(("nameservice", _)) => None,
                    Some((_, keys)) if keys.contains(&e.name.to_ascii_lowercase().as_str()) => None,
                    Some(_) => Some(format!("{origin}:{}: {header} {}", e.line, e.name)),
                    None => Some(format!(
                        "{origin}:{}: {header} {} (unknown section)",
                        e.line, e.name
                    )),
                }
            })
            .collect()
    }
}

/// `:3939`, `0.0.0.0:3939`, `127.0.0.1:3939`, `[::1]:3939`.
fn parse_listen(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Some(port) = text.strip_prefix(':') {
        return port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::from(([0, 0, 0, 0], p)));
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests;
