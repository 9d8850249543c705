//! `[OAuth2]`: OpenID Connect sign-in settings, with Connect's key names,
//! and the reader's checks of them. Everything that can be wrong in the
//! file is refused here, at start-up, so a sign-in never discovers it.
//! Imports only config's reader.

use std::path::PathBuf;

use connect_gcfg::Key;

use super::{ProviderKind, Reader, SettingsError};

#[derive(Clone)]
pub struct OAuth2Settings {
    /// `OpenIDConnectIssuer`, exactly as the provider names itself (its
    /// discovery document's `issuer` must be this string).
    pub issuer: String,
    pub client_id: String,
    /// From `ClientSecret` or the first line of `ClientSecretFile`.
    pub client_secret: String,
    /// `TLSCACertificate`: PEM certificates trusted for the provider, beside
    /// the system's.
    pub ca_certificate: Option<PathBuf>,
    /// `AllowInsecureLoopbackIssuer`: plain `http://` on 127.0.0.1, ::1 or
    /// localhost (tests, a provider on the same host).
    pub allow_loopback_http: bool,
    /// `CustomScope`, beyond `openid profile email`.
    pub custom_scopes: Vec<String>,
    pub username_claim: String,
    pub unique_id_claim: String,
    pub email_claim: String,
    pub first_name_claim: String,
    pub last_name_claim: String,
    pub groups_claim: String,
    /// `GroupsSeparator`: the groups claim is one string of names.
    pub groups_separator: Option<String>,
    pub role_claim: Option<String>,
    pub require_username_claim: bool,
    /// `GroupsAutoProvision`: groups named in the claim are created; when
    /// false only groups that exist already are joined. Connect defaults to
    /// false because its administrators create groups in its dashboard;
    /// connectd has no way to create them ahead yet, so it defaults to true.
    pub groups_auto_provision: bool,
    pub logging: bool,
}

impl std::fmt::Debug for OAuth2Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Settings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("username_claim", &self.username_claim)
            .field("unique_id_claim", &self.unique_id_claim)
            .finish_non_exhaustive()
    }
}

/// Claims an identity provider lets people (or administrators) change;
/// an account keyed by one of them would change hands with the value.
/// The nameservice keeps at most 128 bytes of an identity's provider,
/// which for OpenID Connect is `oidc/` and the issuer.
pub const MAX_ISSUER_LEN: usize = 120;

const CHANGEABLE_CLAIMS: &[&str] = &[
    "preferred_username",
    "email",
    "name",
    "nickname",
    "given_name",
    "family_name",
    "upn",
    "unique_name",
];

/// Whether `url` is `http://` to a loopback host.
pub fn is_loopback_http(url: &url::Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            None => false,
        }
}

impl Reader<'_> {
    pub(super) fn oauth2(
        &self,
        provider: ProviderKind,
        run_as_current_user: bool,
        address: Option<&str>,
    ) -> Result<Option<OAuth2Settings>, SettingsError> {
        if provider != ProviderKind::OAuth2 {
            return Ok(None);
        }
        let key = |k: &'static str| Key::new("OAuth2", k);
        let issuer = self.string(key("OpenIDConnectIssuer")).ok_or_else(|| {
            self.refuse(
                Some(Key::new("Authentication", "Provider")),
                "[Authentication] Provider = oauth2 needs [OAuth2] OpenIDConnectIssuer: the \
                 provider's issuer URL, e.g. https://login.example.com/realms/main"
                    .into(),
            )
        })?;
        let issuer_url = url::Url::parse(&issuer).map_err(|e| {
            self.refuse(
                Some(key("OpenIDConnectIssuer")),
                format!("[OAuth2] OpenIDConnectIssuer = {issuer:?} is not a URL: {e}"),
            )
        })?;
        if issuer.len() > MAX_ISSUER_LEN {
            return Err(self.refuse(
                Some(key("OpenIDConnectIssuer")),
                format!(
                    "[OAuth2] OpenIDConnectIssuer is {} bytes long; at most {MAX_ISSUER_LEN} \
                     are supported (it is part of every viewer's identity)",
                    issuer.len()
                ),
            ));
        }
        let allow_loopback_http = self.bool_or(key("AllowInsecureLoopbackIssuer"), false)?;
        match issuer_url.scheme() {
            "https" => {}
            "http" if allow_loopback_http && is_loopback_http(&issuer_url) => {}
            "http" if allow_loopback_http => {
                return Err(self.refuse(
                    Some(key("OpenIDConnectIssuer")),
                    format!(
                        "[OAuth2] OpenIDConnectIssuer = {issuer:?}: plain http is allowed only \
                         to 127.0.0.1, ::1 or localhost; use the provider's https URL"
                    ),
                ))
            }
            _ => {
                return Err(self.refuse(
                    Some(key("OpenIDConnectIssuer")),
                    format!(
                        "[OAuth2] OpenIDConnectIssuer = {issuer:?}: must be an https URL \
                         (tokens and secrets travel over it); for a provider on this host \
                         over http, set [OAuth2] AllowInsecureLoopbackIssuer = true"
                    ),
                ))
            }
        }
        let client_id = self.string(key("ClientId")).ok_or_else(|| {
            self.refuse(
                Some(key("OpenIDConnectIssuer")),
                "[OAuth2] ClientId is missing: register connectd at the provider and copy \
                 its client id here"
                    .into(),
            )
        })?;
        let client_secret = self.client_secret()?;
        match address {
            Some(a) if a.starts_with("https://") || a.starts_with("http://") => {}
            _ => {
                return Err(self.refuse(
                    Some(Key::new("Server", "Address")),
                    "[Authentication] Provider = oauth2 needs [Server] Address, the URL viewers \
                     use (e.g. https://connect.example.com): the provider sends them back to \
                     <Address>/__login__/callback, which must be registered there"
                        .into(),
                ))
            }
        }
        let username_claim = self.string_or(key("UsernameClaim"), "preferred_username");
        let unique_id_claim = self.string_or(key("UniqueIdClaim"), "sub");
        if run_as_current_user
            && (unique_id_claim == username_claim
                || CHANGEABLE_CLAIMS.contains(&unique_id_claim.to_ascii_lowercase().as_str()))
        {
            return Err(self.refuse(
                Some(key("UniqueIdClaim")),
                format!(
                    "[OAuth2] UniqueIdClaim = {unique_id_claim}: with [Applications] \
                     RunAsCurrentUser = true each person's Unix account and files are keyed \
                     by this claim, and {unique_id_claim} can change or pass to someone \
                     else. Use a claim that never changes: sub (the default), or oid for \
                     Entra ID"
                ),
            ));
        }
        let ca_certificate = self.string(key("TLSCACertificate")).map(PathBuf::from);
        if let Some(path) = &ca_certificate {
            let refuse = |why: String| {
                self.refuse(
                    Some(key("TLSCACertificate")),
                    format!("[OAuth2] TLSCACertificate = {}: {why}", path.display()),
                )
            };
            let pem = std::fs::read(path).map_err(|e| refuse(format!("cannot be read: {e}")))?;
            let certificates = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| refuse(format!("is not PEM: {e}")))?;
            if certificates.is_empty() {
                return Err(refuse(
                    "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
                ));
            }
        }
        let custom_scopes = self
            .config
            .strings(key("CustomScope"))
            .iter()
            .flat_map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        Ok(Some(OAuth2Settings {
            issuer,
            client_id,
            client_secret,
            ca_certificate,
            allow_loopback_http,
            custom_scopes,
            username_claim,
            unique_id_claim,
            email_claim: self.string_or(key("EmailClaim"), "email"),
            first_name_claim: self.string_or(key("FirstNameClaim"), "given_name"),
            last_name_claim: self.string_or(key("LastNameClaim"), "family_name"),
            groups_claim: self.string_or(key("GroupsClaim"), "groups"),
            groups_separator: self
                .config
                .string(key("GroupsSeparator"))
                .filter(|s| !s.is_empty()),
            role_claim: self.string(key("RoleClaim")),
            require_username_claim: self.bool_or(key("RequireUsernameClaim"), false)?,
            groups_auto_provision: self.bool_or(key("GroupsAutoProvision"), true)?,
            logging: self.bool_or(key("Logging"), false)?,
        }))
    }

    fn client_secret(&self) -> Result<String, SettingsError> {
        let secret_key = Key::new("OAuth2", "ClientSecret");
        let file_key = Key::new("OAuth2", "ClientSecretFile");
        match (self.string(secret_key), self.string(file_key)) {
            (Some(_), Some(_)) => Err(self.refuse(
                Some(file_key),
                "[OAuth2] ClientSecret and ClientSecretFile are both set: keep one (the file \
                 keeps the secret out of this configuration)"
                    .into(),
            )),
            (Some(secret), None) => Ok(secret),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.refuse(
                        Some(file_key),
                        format!("[OAuth2] ClientSecretFile = {path}: cannot be read: {e}"),
                    )
                })?;
                let secret = text.lines().next().unwrap_or("").trim().to_owned();
                if secret.is_empty() {
                    return Err(self.refuse(
                        Some(file_key),
                        format!("[OAuth2] ClientSecretFile = {path}: the file is empty"),
                    ));
                }
                Ok(secret)
            }
            (None, None) => Err(self.refuse(
                Some(Key::new("OAuth2", "ClientId")),
                "[OAuth2] needs ClientSecret or ClientSecretFile: the secret the provider \
                 issued with the client id"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_http;

    #[test]
    fn only_loopback_hosts_count_as_loopback() {
        for yes in [
            "http://127.0.0.1:9000/",
            "http://[::1]/",
            "http://LOCALHOST:1/x",
        ] {
            assert!(is_loopback_http(&url::Url::parse(yes).unwrap()), "{yes}");
        }
        for no in [
            "https://127.0.0.1/",
            "http://10.0.0.1/",
            "http://localhost.example.com/",
            "http://127.0.0.1.nip.io/",
        ] {
            assert!(!is_loopback_http(&url::Url::parse(no).unwrap()), "{no}");
        }
    }
}
