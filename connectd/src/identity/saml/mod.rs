//! SAML 2.0 sign-in (`[Authentication] Provider = saml`): connectd is a
//! service provider with entity ID `<Address>/__login__`, sends
//! AuthnRequests with the HTTP-Redirect binding (signed when `[SAML]
//! SPPrivateKeyFile` is set), and takes responses with the HTTP-POST binding
//! at `<Address>/__login__/callback`. Its metadata, for the IdP to import,
//! is at `<Address>/__login__/metadata`.
//!
//! Signatures are checked by `samael` with libxmlsec1, against the IdP
//! metadata's certificates only, and only what a signature covers is used
//! (the rest of the document is cut away before it is read). Around that:
//!
//! - [`metadata`]: the IdP's metadata, refreshed, the last good copy kept;
//! - [`outline`]: the response's shape before verification (one assertion,
//!   no DOCTYPE) and the IdP's status when it reports a failure;
//! - [`replay`]: assertion IDs already used;
//! - [`attributes`]: a verified assertion to a person.
//!
//! May import `config`, `store`, `logging` and its parent `identity`.

mod attributes;
mod metadata;
mod outline;
mod replay;

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use chrono::Utc;
use samael::crypto::{AllowedSignatureAlgorithm, CertificateDer};
use samael::metadata::{EntityDescriptor, IndexedEndpoint, SpSsoDescriptor, HTTP_POST_BINDING};
use samael::schema::Assertion;
use samael::service_provider::ServiceProvider;
use samael::traits::ToXml;

use self::metadata::{IdpMetadata, MetadataCache};
use self::replay::{ReplayCache, Seen};
use super::flow::PendingFlows;
use super::{
    AccountSource, AuthError, Callback, ExternalIdentity, IdentityProvider, Redirect, Returned,
    SignInMethod,
};
use crate::config::{ProviderKind, SamlSettings};
use crate::logging::error_chain;
use crate::store::Store;

/// How far the IdP's clock may differ from ours.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(120);

/// How old a response may be when it arrives (it is posted by the browser
/// the moment the IdP makes it).
const MAX_ISSUE_DELAY: chrono::Duration = chrono::Duration::seconds(180);

/// Signature algorithms accepted: RSA and ECDSA with SHA-2, never SHA-1.
const ALGORITHMS: [AllowedSignatureAlgorithm; 6] = [
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// What `begin` keeps for `finish`.
struct PendingRequest {
    request_id: String,
    return_to: String,
}

pub struct SamlProvider {
    settings: SamlSettings,
    /// `saml/` and the IdP's entity ID: the provider half of every identity.
    provider_name: String,
    entity_id: String,
    acs_url: String,
    metadata: Arc<MetadataCache>,
    flows: PendingFlows<PendingRequest>,
    replay: ReplayCache,
    store: Arc<dyn Store>,
    sp_key: Option<openssl::pkey::PKey<openssl::pkey::Private>>,
    sp_certificate: Option<CertificateDer>,
    sp_metadata: String,
}

impl SamlProvider {
    /// Reads the IdP's metadata (connectd does not start without it) and
    /// the SP key, and starts refreshing the metadata. `address` is
    /// `[Server] Address`, which the settings require.
    pub async fn new(
        settings: SamlSettings,
        address: &str,
        store: Arc<dyn Store>,
    ) -> Result<Self, String> {
        let address = address.trim_end_matches('/');
        let entity_id = format!("{address}/__login__");
        let acs_url = format!("{address}/__login__/callback");
        let (sp_key, sp_certificate) = sp_key_pair(&settings)?;
        let metadata = MetadataCache::load(&settings).await?;
        metadata.spawn_refresh();
        let idp = metadata.current();
        if settings.sso_initiated.allows_sp() && idp.sso_url.is_none() {
            return Err(format!(
                "[SAML] IdPMetaDataURL = {}: the IdP's metadata names no SingleSignOnService \
                 with the HTTP-Redirect binding, so connectd cannot send viewers there; set \
                 [SAML] SSOInitiated = IdP to accept only sign-ins started at the IdP",
                settings.metadata
            ));
        }
        let sp_metadata = sp_metadata(&entity_id, &acs_url, sp_certificate.as_ref())?;
        Ok(Self {
            provider_name: format!("saml/{}", idp.entity_id),
            entity_id,
            acs_url,
            metadata,
            flows: PendingFlows::default(),
            replay: ReplayCache::default(),
            store,
            sp_key,
            sp_certificate,
            sp_metadata,
            settings,
        })
    }

    fn service_provider(&self, idp: &IdpMetadata, allow_idp_initiated: bool) -> ServiceProvider {
        ServiceProvider {
            entity_id: Some(self.entity_id.clone()),
            key: self.sp_key.clone(),
            certificate: self.sp_certificate.clone(),
            metadata_url: Some(format!("{}/metadata", self.entity_id)),
            acs_url: Some(self.acs_url.clone()),
            slo_url: None,
            idp_metadata: idp.descriptor.clone(),
            allow_idp_initiated,
            max_issue_delay: MAX_ISSUE_DELAY,
            max_clock_skew: CLOCK_SKEW,
            allowed_signature_algorithms: Some(ALGORITHMS.to_vec()),
            ..ServiceProvider::default()
        }
    }

    /// Verifies `xml` with samael (signature, issuer, audience, recipient,
    /// destination, times, and the request it answers when `request_id` is
    /// given), off the async threads: libxmlsec1 works synchronously.
    async fn verify(
        &self,
        xml: String,
        request_id: Option<String>,
    ) -> Result<Assertion, AuthError> {
        let idp = self.metadata.current();
        let sp = self.service_provider(&idp, request_id.is_none());
        let checked = tokio::task::spawn_blocking(move || {
            let ids: Vec<&str> = request_id.iter().map(String::as_str).collect();
            sp.parse_xml_response(&xml, request_id.as_ref().map(|_| ids.as_slice()))
                .map_err(|e| describe(&e))
        })
        .await
        .map_err(|e| AuthError::Internal(format!("the SAML verification task failed: {e}")))?;
        let assertion = checked.map_err(AuthError::Rejected)?;
        // samael checks the audience only when the assertion names one; the
        // Web SSO profile requires it, and an assertion for anyone would be
        // good at every service provider of this IdP.
        let has_audience = assertion
            .conditions
            .as_ref()
            .and_then(|c| c.audience_restrictions.as_ref())
            .is_some_and(|r| r.iter().any(|r| !r.audience.is_empty()));
        if !has_audience {
            return Err(AuthError::Rejected(
                "the assertion names no audience (AudienceRestriction); it would be good at \
                 any service provider of this IdP"
                    .into(),
            ));
        }
        Ok(assertion)
    }

    /// Remembers the assertion's ID for as long as samael would accept it
    /// (until `MAX_ISSUE_DELAY` after its IssueInstant); a second use is a
    /// replay. An assertion issued in the future is refused: it would be
    /// remembered, and accepted, for longer than that.
    fn first_use(&self, assertion: &Assertion) -> Result<(), AuthError> {
        let now = Utc::now();
        if assertion.issue_instant > now + CLOCK_SKEW {
            return Err(AuthError::Rejected(format!(
                "the assertion was issued in the future ({}, now {now}); is the IdP's clock or \
                 this server's wrong?",
                assertion.issue_instant
            )));
        }
        let expires = assertion.issue_instant + MAX_ISSUE_DELAY + CLOCK_SKEW;
        match self.replay.check(&assertion.id, expires, now) {
            Seen::First => Ok(()),
            Seen::Again => Err(AuthError::Rejected(format!(
                "the assertion {:?} was used already: a replayed response",
                assertion.id.escape_debug().to_string()
            ))),
            Seen::Full => Err(AuthError::Unavailable(
                "too many SAML sign-ins in the last minutes to remember them all; try again \
                 shortly"
                    .into(),
            )),
        }
    }

    fn log_attributes(&self, identity: &ExternalIdentity, assertion: &Assertion) {
        if !self.settings.logging {
            return;
        }
        let attributes: Vec<String> = assertion
            .attribute_statements
            .iter()
            .flatten()
            .flat_map(|s| &s.attributes)
            .map(|a| {
                let values: Vec<&str> =
                    a.values.iter().filter_map(|v| v.value.as_deref()).collect();
                format!("{}={values:?}", a.name.as_deref().unwrap_or("?"))
            })
            .collect();
        tracing::info!(
            user = %identity.username,
            "SAML assertion {} from {}: {}",
            assertion.id.escape_debug(),
            self.provider_name,
            attributes.join(" ").escape_debug()
        );
    }
}

/// samael's error, with what an administrator needs to act on it.
fn describe(e: &samael::service_provider::Error) -> String {
    use samael::service_provider::Error as E;
    match e {
        E::FailedToValidateSignature => "the response's signature is missing or not by the \
            IdP's signing certificate in its metadata (or covers nothing that is used)"
            .into(),
        other => format!("the response was refused: {}", error_chain(other)),
    }
}

fn sp_key_pair(
    settings: &SamlSettings,
) -> Result<
    (
        Option<openssl::pkey::PKey<openssl::pkey::Private>>,
        Option<CertificateDer>,
    ),
    String,
> {
    let (Some(cert_path), Some(key_path)) = (&settings.sp_certificate, &settings.sp_private_key)
    else {
        return Ok((None, None));
    };
    let read = |path: &std::path::Path, key: &str| {
        std::fs::read(path).map_err(|e| format!("[SAML] {key} = {}: {e}", path.display()))
    };
    let key = openssl::pkey::PKey::private_key_from_pem(&read(key_path, "SPPrivateKeyFile")?)
        .map_err(|e| {
            format!(
                "[SAML] SPPrivateKeyFile = {}: not a PEM private key: {e}",
                key_path.display()
            )
        })?;
    let cert =
        openssl::x509::X509::from_pem(&read(cert_path, "SPCertificateFile")?).map_err(|e| {
            format!(
                "[SAML] SPCertificateFile = {}: not a PEM certificate: {e}",
                cert_path.display()
            )
        })?;
    let matches = cert
        .public_key()
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(format!(
            "[SAML] SPCertificateFile = {} is not the certificate of SPPrivateKeyFile = {}",
            cert_path.display(),
            key_path.display()
        ));
    }
    let der = cert
        .to_der()
        .map_err(|e| format!("[SAML] SPCertificateFile: {e}"))?;
    Ok((Some(key), Some(CertificateDer::from(der))))
}

/// connectd's SP metadata: its entity ID, its one assertion consumer
/// (HTTP-POST), whether it signs its requests, and that it wants signed
/// assertions. No single logout endpoint: connectd has none.
fn sp_metadata(
    entity_id: &str,
    acs_url: &str,
    certificate: Option<&CertificateDer>,
) -> Result<String, String> {
    let key_descriptors = certificate.map(|cert| {
        vec![samael::metadata::KeyDescriptor {
            key_use: Some("signing".into()),
            key_info: samael::key_info::KeyInfo {
                id: None,
                x509_data: Some(samael::key_info::X509Data {
                    certificates: vec![
                        base64::engine::general_purpose::STANDARD.encode(cert.der_data())
                    ],
                }),
            },
            encryption_methods: None,
        }]
    });
    let descriptor = EntityDescriptor {
        entity_id: Some(entity_id.to_owned()),
        sp_sso_descriptors: Some(vec![SpSsoDescriptor {
            protocol_support_enumeration: Some("urn:oasis:names:tc:SAML:2.0:protocol".into()),
            key_descriptors,
            authn_requests_signed: Some(certificate.is_some()),
            want_assertions_signed: Some(true),
            assertion_consumer_services: vec![IndexedEndpoint {
                binding: HTTP_POST_BINDING.into(),
                location: acs_url.to_owned(),
                response_location: None,
                index: 0,
                is_default: Some(true),
            }],
            ..SpSsoDescriptor::default()
        }]),
        ..EntityDescriptor::default()
    };
    descriptor
        .to_string()
        .map_err(|e| format!("cannot write this server's SAML metadata: {e:?}"))
}

/// The callback's form, each parameter at most once.
fn form_parameters(callback: &Callback<'_>) -> Result<(String, Option<String>), AuthError> {
    let Some(form) = callback.form else {
        return Err(AuthError::Flow(
            "the IdP sent the viewer back without a SAMLResponse form (connectd takes \
             responses with the HTTP-POST binding only)"
                .into(),
        ));
    };
    let mut response = None;
    let mut relay_state = None;
    for (name, value) in url::form_urlencoded::parse(form) {
        let slot = match name.as_ref() {
            "SAMLResponse" => &mut response,
            "RelayState" => &mut relay_state,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(AuthError::Flow(format!("the callback names {name} twice")));
        }
    }
    let response = response.ok_or_else(|| {
        AuthError::Flow("the IdP sent the viewer back without a SAMLResponse".into())
    })?;
    Ok((response, relay_state.filter(|r| !r.is_empty())))
}

/// The XML of a base64 SAMLResponse (line breaks allowed, as some IdPs
/// wrap it).
fn decode(encoded: &str) -> Result<String, AuthError> {
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if compact.len() > outline::MAX_RESPONSE_BYTES / 3 * 4 + 4 {
        return Err(AuthError::Rejected(format!(
            "the SAMLResponse is larger than {} bytes",
            outline::MAX_RESPONSE_BYTES
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| AuthError::Rejected(format!("the SAMLResponse is not base64: {e}")))?;
    String::from_utf8(bytes)
        .map_err(|_| AuthError::Rejected("the SAMLResponse is not UTF-8 XML".into()))
}

/// What the viewer is told when the IdP reports a failure.
fn status_for_viewer(status: &str, sub_status: Option<&str>) -> &'static str {
    let code = sub_status.unwrap_or(status);
    match code.rsplit(':').next().unwrap_or_default() {
        "AuthnFailed" => "the identity provider could not sign you in",
        "RequestDenied" => "the identity provider declined the sign-in",
        "NoPassive" | "NoAuthnContext" => "the identity provider needs you to sign in there first",
        "Requester" | "RequestUnsupported" | "InvalidNameIDPolicy" | "VersionMismatch" => {
            "the identity provider refused this server's request (its configuration needs fixing)"
        }
        _ => "the identity provider reported a problem",
    }
}

/// A return path from an unsolicited RelayState: only a local path.
fn local_path(relay_state: Option<&str>) -> String {
    match relay_state {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.chars().any(|c| c == '\\' || c.is_control()) =>
        {
            p.to_owned()
        }
        _ => "/".into(),
    }
}

#[async_trait]
impl IdentityProvider for SamlProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Saml
    }

    fn method(&self) -> SignInMethod {
        SignInMethod::Redirect
    }

    fn accounts(&self) -> AccountSource {
        AccountSource::Provisioned
    }

    fn callback_is_cross_site_post(&self) -> bool {
        true
    }

    fn service_metadata(&self) -> Option<String> {
        Some(self.sp_metadata.clone())
    }

    async fn begin(&self, return_to: &str, binding: &str) -> Result<Redirect, AuthError> {
        if !self.settings.sso_initiated.allows_sp() {
            return Err(AuthError::Denied {
                shown: Some(
                    "this server accepts sign-ins started at your identity provider only: open \
                     it from your identity provider's portal"
                        .into(),
                ),
                logged: "a sign-in was started here, and [SAML] SSOInitiated = IdP".into(),
            });
        }
        let idp = self.metadata.current();
        let sso_url = idp.sso_url.clone().ok_or_else(|| {
            AuthError::Misconfigured(
                "the IdP's metadata names no HTTP-Redirect SingleSignOnService".into(),
            )
        })?;
        let random = crate::secrets::random_bytes::<16>()
            .map_err(|e| AuthError::Unavailable(format!("no randomness for a sign-in: {e}")))?;
        // An xs:ID starts with a letter.
        let request_id = format!(
            "id-{}",
            random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let relay_state = self.flows.start(
            PendingRequest {
                request_id: request_id.clone(),
                return_to: return_to.to_owned(),
            },
            binding,
        )?;
        let sp = self.service_provider(&idp, false);
        let mut request = sp
            .make_authentication_request(&sso_url)
            .map_err(|e| AuthError::Internal(format!("cannot make an AuthnRequest: {e}")))?;
        request.id = request_id;
        let url = match &self.sp_key {
            Some(key) => request.signed_redirect(&relay_state, key),
            None => request.redirect(&relay_state),
        }
        .map_err(|e| AuthError::Internal(format!("cannot encode the AuthnRequest: {e}")))?
        .ok_or_else(|| AuthError::Internal("the AuthnRequest has no destination".into()))?;
        Ok(Redirect {
            location: url.to_string(),
        })
    }

    async fn finish(&self, callback: Callback<'_>) -> Result<Returned, AuthError> {
        let (encoded, relay_state) = form_parameters(&callback)?;
        let xml = decode(&encoded)?;
        let shape = outline::outline(&xml).map_err(AuthError::Rejected)?;
        // A response to a request of ours names it; its pending request is
        // taken first, whatever the answer, so it is good for one answer.
        let pending = match &shape.in_response_to {
            Some(_) => {
                let key = relay_state.as_deref().ok_or_else(|| {
                    AuthError::Flow(
                        "the IdP answered a sign-in request but sent no RelayState back".into(),
                    )
                })?;
                Some(self.flows.take(key, callback.binding)?)
            }
            None => None,
        };
        if let Some(status) = shape.status.as_deref().filter(|s| *s != outline::SUCCESS) {
            return Err(AuthError::Denied {
                shown: Some(status_for_viewer(status, shape.sub_status.as_deref()).into()),
                logged: format!(
                    "the IdP answered with status {status}{}{}",
                    shape
                        .sub_status
                        .as_deref()
                        .map(|s| format!(" / {s}"))
                        .unwrap_or_default(),
                    shape
                        .status_message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
            });
        }
        let unsolicited = pending.is_none();
        let (assertion, return_to) = match pending {
            Some(pending) => (
                self.verify(xml, Some(pending.request_id)).await?,
                pending.return_to,
            ),
            None => {
                if !self.settings.sso_initiated.allows_idp() {
                    return Err(AuthError::Rejected(
                        "an unsolicited response (a sign-in started at the IdP), which [SAML] \
                         SSOInitiated = SP does not accept"
                            .into(),
                    ));
                }
                let assertion = self.verify(xml, None).await?;
                // The signed assertion may answer a request even when the
                // (perhaps unsigned) response around it does not say so.
                let answers_a_request = assertion
                    .subject
                    .iter()
                    .flat_map(|s| s.subject_confirmations.iter().flatten())
                    .any(|c| {
                        c.subject_confirmation_data
                            .as_ref()
                            .is_some_and(|d| d.in_response_to.is_some())
                    });
                if answers_a_request {
                    return Err(AuthError::Rejected(
                        "the assertion answers a sign-in request, but the response around it \
                         does not name one"
                            .into(),
                    ));
                }
                (assertion, local_path(relay_state.as_deref()))
            }
        };
        self.first_use(&assertion)?;
        let mut identity = attributes::identity(&self.settings, &self.provider_name, &assertion)?;
        self.log_attributes(&identity, &assertion);
        if !self.settings.groups_auto_provision {
            super::keep_existing_groups(self.store.as_ref(), &mut identity)?;
        }
        Ok(Returned {
            identity,
            return_to,
            unsolicited,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_parameters_are_taken_once() {
        let callback = |form: &'static [u8]| Callback {
            query: "",
            form: Some(form),
            binding: "",
        };
        let (r, s) = form_parameters(&callback(b"SAMLResponse=abc&RelayState=k")).expect("ok");
        assert_eq!((r.as_str(), s.as_deref()), ("abc", Some("k")));
        assert!(form_parameters(&callback(b"SAMLResponse=a&SAMLResponse=b")).is_err());
        assert!(form_parameters(&callback(b"SAMLResponse=a&RelayState=1&RelayState=2")).is_err());
        assert!(form_parameters(&callback(b"RelayState=k")).is_err());
        let no_form = Callback {
            query: "SAMLResponse=abc",
            form: None,
            binding: "",
        };
        assert!(matches!(form_parameters(&no_form), Err(AuthError::Flow(_))));
    }

    #[test]
    fn unsolicited_return_paths_stay_local() {
        assert_eq!(local_path(Some("/content/1/")), "/content/1/");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(Some("/\t/evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn the_sp_metadata_names_the_endpoints() {
        let xml = sp_metadata(
            "https://connect.example/__login__",
            "https://connect.example/__login__/callback",
            None,
        )
        .expect("metadata");
        let parsed: EntityDescriptor = xml.parse().expect("samael reads its own metadata back");
        assert_eq!(
            parsed.entity_id.as_deref(),
            Some("https://connect.example/__login__")
        );
        let sp = &parsed.sp_sso_descriptors.expect("sp")[0];
        assert_eq!(
            sp.assertion_consumer_services[0].location,
            "https://connect.example/__login__/callback"
        );
        assert_eq!(sp.assertion_consumer_services[0].binding, HTTP_POST_BINDING);
        assert_eq!(sp.authn_requests_signed, Some(false));
        assert!(sp.single_logout_services.is_none());
    }

    #[test]
    fn base64_with_line_breaks_is_read_and_size_is_bounded() {
        assert_eq!(decode("PFJl\r\ncz4=").expect("decode"), "<Res>");
        let huge = "A".repeat(outline::MAX_RESPONSE_BYTES * 2);
        assert!(matches!(decode(&huge), Err(AuthError::Rejected(_))));
        assert!(decode("***").is_err());
    }
}
