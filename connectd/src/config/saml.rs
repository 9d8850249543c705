//! `[SAML]`: SAML 2.0 sign-in settings, with Connect's key names, and the
//! reader's checks of them. What can be wrong in the file is refused here,
//! at start-up; what can be wrong with the IdP's metadata is checked when
//! the provider first reads it (also at start-up). Imports only config's
//! reader.

use std::path::PathBuf;
use std::time::Duration;

use connect_gcfg::Key;

use super::oauth2::is_loopback_http;
use super::{ProviderKind, Reader, SettingsError};

/// Where the IdP's metadata comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataSource {
    Url(url::Url),
    File(PathBuf),
}

impl std::fmt::Display for MetadataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetadataSource::Url(url) => write!(f, "{url}"),
            MetadataSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// `SSOInitiated`: who may start a sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoInitiated {
    /// Only connectd (an AuthnRequest, answered with its InResponseTo).
    Sp,
    /// Only the IdP (unsolicited responses, from its app portal).
    Idp,
    Both,
}

impl SsoInitiated {
    pub fn allows_sp(self) -> bool {
        matches!(self, SsoInitiated::Sp | SsoInitiated::Both)
    }

    pub fn allows_idp(self) -> bool {
        matches!(self, SsoInitiated::Idp | SsoInitiated::Both)
    }
}

/// Which attribute carries what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamlAttributes {
    /// `None`: the subject's NameID (Connect's default).
    pub unique_id: Option<String>,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub groups: String,
}

/// `IdPAttributeProfile`: the attribute names an IdP sends by default, so
/// that an administrator sets only what differs.
pub fn attribute_profile(name: &str) -> Option<SamlAttributes> {
    let names = |u: &str, f: &str, l: &str, e: &str, g: &str| SamlAttributes {
        unique_id: None,
        username: u.into(),
        first_name: f.into(),
        last_name: l.into(),
        email: e.into(),
        groups: g.into(),
    };
    const CLAIMS: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/";
    Some(match name.to_ascii_lowercase().as_str() {
        "default" => names("Username", "FirstName", "LastName", "Email", "Groups"),
        // Entra ID's claim URIs; its NameID is often the UPN, which can be
        // reassigned, so the object id is the identity.
        "azure" => SamlAttributes {
            unique_id: Some("http://schemas.microsoft.com/identity/claims/objectidentifier".into()),
            username: format!("{CLAIMS}name"),
            first_name: format!("{CLAIMS}givenname"),
            last_name: format!("{CLAIMS}surname"),
            email: format!("{CLAIMS}emailaddress"),
            groups: "http://schemas.microsoft.com/ws/2008/06/identity/claims/groups".into(),
        },
        "okta" => names("username", "firstName", "lastName", "email", "groups"),
        "onelogin" => names(
            "User.Username",
            "User.FirstName",
            "User.LastName",
            "User.email",
            "memberOf",
        ),
        "jumpcloud" => names("username", "firstname", "lastname", "email", "memberOf"),
        _ => return None,
    })
}

#[derive(Clone)]
pub struct SamlSettings {
    /// `IdPMetaDataURL` (or the older `IdPMetaData`).
    pub metadata: MetadataSource,
    /// `MetadataRefreshInterval`: how often the metadata is read again
    /// (the last good copy is kept when that fails).
    pub metadata_refresh: Duration,
    /// `TLSCACertificate`: PEM certificates trusted for an https metadata
    /// URL, beside the system's.
    pub ca_certificate: Option<PathBuf>,
    pub attributes: SamlAttributes,
    pub role_attribute: Option<String>,
    pub groups_auto_provision: bool,
    pub sso_initiated: SsoInitiated,
    /// `SPCertificateFile` and `SPPrivateKeyFile`: when set, AuthnRequests
    /// are signed and the certificate is in connectd's SP metadata.
    pub sp_certificate: Option<PathBuf>,
    pub sp_private_key: Option<PathBuf>,
    pub logging: bool,
}

impl std::fmt::Debug for SamlSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamlSettings")
            .field("metadata", &self.metadata)
            .field("attributes", &self.attributes)
            .field("sso_initiated", &self.sso_initiated)
            .finish_non_exhaustive()
    }
}

/// Attributes people or an IdP's administrators change; an account keyed
/// by one would change hands with the value.
const CHANGEABLE_ATTRIBUTES: &[&str] = &["username", "email", "mail", "upn", "name", "uid"];

impl Reader<'_> {
    pub(super) fn saml(
        &self,
        provider: ProviderKind,
        run_as_current_user: bool,
        address: Option<&str>,
    ) -> Result<Option<SamlSettings>, SettingsError> {
        if provider != ProviderKind::Saml {
            return Ok(None);
        }
        let key = |k: &'static str| Key::new("SAML", k);
        let metadata_key = if self.string(key("IdPMetaDataURL")).is_some() {
            key("IdPMetaDataURL")
        } else {
            key("IdPMetaData")
        };
        let metadata_text = self.string(metadata_key).ok_or_else(|| {
            self.refuse(
                Some(Key::new("Authentication", "Provider")),
                "[Authentication] Provider = saml needs [SAML] IdPMetaDataURL: the URL (or the \
                 path of a file) of the identity provider's SAML metadata"
                    .into(),
            )
        })?;
        let allow_loopback_http = self.bool_or(key("AllowInsecureLoopbackMetadata"), false)?;
        let metadata = self.metadata_source(metadata_key, &metadata_text, allow_loopback_http)?;
        match address.map(url::Url::parse) {
            Some(Ok(url)) if url.scheme() == "https" || is_loopback_http(&url) => {}
            Some(Ok(url)) if url.scheme() == "http" => {
                return Err(self.refuse(
                    Some(Key::new("Server", "Address")),
                    format!(
                        "[Server] Address = {url}: SAML sign-in needs an https address (the \
                         assertion that signs a viewer in travels through the browser to \
                         it); plain http is allowed only on 127.0.0.1, ::1 or localhost"
                    ),
                ))
            }
            _ => {
                return Err(self.refuse(
                    Some(Key::new("Server", "Address")),
                    "[Authentication] Provider = saml needs [Server] Address, the URL viewers \
                     use (e.g. https://connect.example.com): it names this server to the IdP \
                     (entity ID <Address>/__login__, assertion consumer \
                     <Address>/__login__/callback)"
                        .into(),
                ))
            }
        }
        let profile_key = key("IdPAttributeProfile");
        let profile_name = self.string_or(profile_key, "default");
        let mut attributes = attribute_profile(&profile_name).ok_or_else(|| {
            self.refuse(
                Some(profile_key),
                format!(
                    "[SAML] IdPAttributeProfile = {profile_name:?}: unknown; use default, \
                     azure, okta, onelogin or jumpcloud"
                ),
            )
        })?;
        let set = |name: &'static str, field: &mut String| {
            if let Some(value) = self.string(key(name)) {
                *field = value;
            }
        };
        set("UsernameAttribute", &mut attributes.username);
        set("FirstNameAttribute", &mut attributes.first_name);
        set("LastNameAttribute", &mut attributes.last_name);
        set("EmailAttribute", &mut attributes.email);
        set("GroupsAttribute", &mut attributes.groups);
        if let Some(unique) = self.string(key("UniqueIdAttribute")) {
            // Connect's spelling of "the subject's NameID".
            attributes.unique_id = (!unique.eq_ignore_ascii_case("NameID")).then_some(unique);
        }
        if let Some(unique) = &attributes.unique_id {
            if run_as_current_user
                && (unique == &attributes.username
                    || CHANGEABLE_ATTRIBUTES.contains(&unique.to_ascii_lowercase().as_str()))
            {
                return Err(self.refuse(
                    Some(key("UniqueIdAttribute")),
                    format!(
                        "[SAML] UniqueIdAttribute = {unique}: with [Applications] \
                         RunAsCurrentUser = true each person's Unix account and files are \
                         keyed by it, and {unique} can change or pass to someone else. Use an \
                         attribute that never changes (a persistent NameID, the default, or \
                         an object id)"
                    ),
                ));
            }
        }
        let sso_key = key("SSOInitiated");
        let sso_initiated = match self.string_or(sso_key, "SP").to_ascii_lowercase().as_str() {
            "sp" => SsoInitiated::Sp,
            "idp" => SsoInitiated::Idp,
            "idpandsp" | "spandidp" => SsoInitiated::Both,
            other => {
                return Err(self.refuse(
                    Some(sso_key),
                    format!("[SAML] SSOInitiated = {other:?}: use SP, IdP or IdPAndSP"),
                ))
            }
        };
        let refresh_key = key("MetadataRefreshInterval");
        let metadata_refresh = self
            .config
            .duration(refresh_key)?
            .unwrap_or(Duration::from_secs(3600));
        if metadata_refresh < Duration::from_secs(1) {
            return Err(self.refuse(
                Some(refresh_key),
                "[SAML] MetadataRefreshInterval must be at least 1s".into(),
            ));
        }
        let sp_certificate = self.string(key("SPCertificateFile")).map(PathBuf::from);
        let sp_private_key = self.string(key("SPPrivateKeyFile")).map(PathBuf::from);
        if sp_certificate.is_some() != sp_private_key.is_some() {
            return Err(self.refuse(
                Some(key("SPCertificateFile")),
                "[SAML] SPCertificateFile and SPPrivateKeyFile go together: set both (to sign \
                 this server's requests) or neither"
                    .into(),
            ));
        }
        Ok(Some(SamlSettings {
            metadata,
            metadata_refresh,
            ca_certificate: self.string(key("TLSCACertificate")).map(PathBuf::from),
            attributes,
            role_attribute: self.string(key("RoleAttribute")),
            groups_auto_provision: self.bool_or(key("GroupsAutoProvision"), true)?,
            sso_initiated,
            sp_certificate,
            sp_private_key,
            logging: self.bool_or(key("Logging"), false)?,
        }))
    }

    fn metadata_source(
        &self,
        metadata_key: Key<'_>,
        text: &str,
        allow_loopback_http: bool,
    ) -> Result<MetadataSource, SettingsError> {
        let refuse = |why: String| {
            self.refuse(
                Some(metadata_key),
                format!("[SAML] IdPMetaDataURL = {text:?}: {why}"),
            )
        };
        if text.starts_with('/') {
            return Ok(MetadataSource::File(PathBuf::from(text)));
        }
        let url = url::Url::parse(text).map_err(|e| {
            refuse(format!(
                "neither an absolute file path nor a URL ({e}); e.g. \
                 https://idp.example.com/metadata or /etc/rstudio-connect/idp-metadata.xml"
            ))
        })?;
        match url.scheme() {
            "https" => Ok(MetadataSource::Url(url)),
            "file" => url
                .to_file_path()
                .map(MetadataSource::File)
                .map_err(|()| refuse("is not a local file URL".into())),
            "http" if allow_loopback_http && is_loopback_http(&url) => Ok(MetadataSource::Url(url)),
            "http" if allow_loopback_http => Err(refuse(
                "plain http is allowed only to 127.0.0.1, ::1 or localhost".into(),
            )),
            "http" => Err(refuse(
                "must be https: the metadata holds the certificates every sign-in is checked \
                 against, and anyone on the way could swap them. For an IdP on this host over \
                 http, set [SAML] AllowInsecureLoopbackMetadata = true"
                    .into(),
            )),
            other => Err(refuse(format!("unsupported scheme {other:?}"))),
        }
    }
}
