//! The IdP's SAML metadata: read at start-up (connectd does not start
//! without it), then again every `MetadataRefreshInterval` in the
//! background. A refresh that fails, or brings something unusable (no
//! signing certificate, another entity ID, expired), is logged and the
//! last good copy stays in use.

use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use samael::crypto::CertificateDer;
use samael::metadata::{EntityDescriptor, HTTP_REDIRECT_BINDING};
use samael::service_provider::ServiceProvider;

use crate::config::{MetadataSource, SamlSettings};
use crate::logging::error_chain;

/// The most metadata connectd reads (aggregates of whole federations are
/// larger; point `IdPMetaDataURL` at the one IdP's entity instead).
const MAX_METADATA_BYTES: usize = 4 << 20;

/// How soon a failed refresh is tried again (or sooner, at the interval).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// `saml/` and the entity ID make the provider half of every identity,
/// which the nameservice keeps in at most 128 bytes.
pub const MAX_ENTITY_ID_LEN: usize = 123;

/// Usable metadata of one IdP.
#[derive(Debug)]
pub struct IdpMetadata {
    pub descriptor: EntityDescriptor,
    pub entity_id: String,
    /// Where AuthnRequests go (HTTP-Redirect binding), when it has one.
    pub sso_url: Option<String>,
    pub signing_certificates: usize,
    pub read_at: Instant,
}

/// Checks what was read: everything a sign-in will need must be there.
pub fn parse(text: &str, expected_entity_id: Option<&str>) -> Result<IdpMetadata, String> {
    if text.contains("<!DOCTYPE") || text.contains("<!ENTITY") {
        return Err("it holds a DOCTYPE, which SAML metadata never needs".into());
    }
    let descriptor: EntityDescriptor = text.parse().map_err(|e| {
        format!(
            "it is not one IdP's EntityDescriptor ({}); an aggregate (EntitiesDescriptor) is \
             not supported",
            error_chain(&e)
        )
    })?;
    let entity_id = descriptor
        .entity_id
        .clone()
        .filter(|id| !id.trim().is_empty())
        .ok_or("its EntityDescriptor has no entityID")?;
    if entity_id.len() > MAX_ENTITY_ID_LEN || entity_id.chars().any(char::is_control) {
        return Err(format!(
            "its entityID is {} bytes long or holds control characters; at most \
             {MAX_ENTITY_ID_LEN} printable bytes are supported (it is part of every viewer's \
             identity)",
            entity_id.len()
        ));
    }
    if let Some(expected) = expected_entity_id {
        if expected != entity_id {
            return Err(format!(
                "its entityID changed from {expected:?} to {entity_id:?}; every viewer's \
                 identity includes it, so connectd keeps the metadata it has. Restart connectd \
                 to move to the new IdP"
            ));
        }
    }
    if descriptor
        .valid_until
        .is_some_and(|until| until < chrono::Utc::now())
    {
        return Err(format!(
            "it expired at {} (validUntil)",
            descriptor.valid_until.unwrap_or_default()
        ));
    }
    if descriptor
        .idp_sso_descriptors
        .as_ref()
        .is_none_or(Vec::is_empty)
    {
        return Err("it describes no identity provider (no IDPSSODescriptor)".into());
    }
    let probe = ServiceProvider {
        idp_metadata: descriptor.clone(),
        ..ServiceProvider::default()
    };
    let certificates: Vec<CertificateDer> = probe
        .idp_signing_certs()
        .map_err(|e| format!("a signing certificate in it is unreadable: {e}"))?
        .unwrap_or_default();
    if certificates.is_empty() {
        // Without one, samael would accept unsigned responses.
        return Err(
            "it holds no signing certificate (KeyDescriptor use=\"signing\" with an \
                    X509Certificate): connectd will not accept sign-ins it cannot verify"
                .into(),
        );
    }
    for certificate in &certificates {
        openssl::x509::X509::from_der(certificate.der_data())
            .map_err(|e| format!("a signing certificate in it is not X.509: {e}"))?;
    }
    Ok(IdpMetadata {
        sso_url: probe.sso_binding_location(HTTP_REDIRECT_BINDING),
        entity_id,
        signing_certificates: certificates.len(),
        descriptor,
        read_at: Instant::now(),
    })
}

/// The metadata in use, and how to read it again.
pub struct MetadataCache {
    source: MetadataSource,
    http: reqwest::Client,
    current: RwLock<Arc<IdpMetadata>>,
    refresh: Duration,
}

impl MetadataCache {
    /// Reads the metadata once; an error says why connectd cannot start.
    pub async fn load(settings: &SamlSettings) -> Result<Arc<Self>, String> {
        let http = crate::identity::http_client::client(
            settings.ca_certificate.as_deref(),
            true,
            "[SAML] TLSCACertificate",
        )?;
        let text = read(&settings.metadata, &http).await.map_err(|e| {
            format!(
                "[SAML] IdPMetaDataURL = {}: cannot be read: {e}",
                settings.metadata
            )
        })?;
        let metadata = parse(&text, None).map_err(|e| {
            format!(
                "[SAML] IdPMetaDataURL = {}: unusable: {e}",
                settings.metadata
            )
        })?;
        tracing::info!(
            idp = %metadata.entity_id,
            certificates = metadata.signing_certificates,
            "read the SAML IdP's metadata from {}",
            settings.metadata
        );
        Ok(Arc::new(Self {
            source: settings.metadata.clone(),
            http,
            current: RwLock::new(Arc::new(metadata)),
            refresh: settings.metadata_refresh,
        }))
    }

    pub fn current(&self) -> Arc<IdpMetadata> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the metadata again; keeps the old copy when that fails.
    pub async fn refresh(&self) -> Result<(), String> {
        let old = self.current();
        let text = read(&self.source, &self.http).await?;
        let fresh = parse(&text, Some(&old.entity_id))?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    /// Refreshes every interval until the provider is gone. Failures are
    /// logged when they start and when they end, not at every retry.
    pub fn spawn_refresh(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let interval = self.refresh;
        tokio::spawn(async move {
            let mut wait = interval;
            let mut failing = false;
            loop {
                tokio::time::sleep(wait).await;
                let Some(cache) = weak.upgrade() else { return };
                match cache.refresh().await {
                    Ok(()) => {
                        if failing {
                            tracing::info!(
                                "the SAML IdP's metadata at {} can be read again",
                                cache.source
                            );
                        }
                        failing = false;
                        wait = interval;
                    }
                    Err(e) => {
                        if !failing {
                            tracing::error!(
                                "cannot refresh the SAML IdP's metadata from {}: {e}; the copy \
                                 read {}s ago stays in use, and connectd tries again",
                                cache.source,
                                cache.current().read_at.elapsed().as_secs()
                            );
                        }
                        failing = true;
                        wait = interval.min(RETRY_AFTER_FAILURE);
                    }
                }
            }
        });
    }
}

async fn read(source: &MetadataSource, http: &reqwest::Client) -> Result<String, String> {
    match source {
        MetadataSource::File(path) => {
            let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
            if bytes.len() > MAX_METADATA_BYTES {
                return Err(format!("larger than {MAX_METADATA_BYTES} bytes"));
            }
            String::from_utf8(bytes).map_err(|_| "not UTF-8".into())
        }
        MetadataSource::Url(url) => {
            let mut response = http
                .get(url.clone())
                .send()
                .await
                .map_err(|e| error_chain(&e))?;
            if !response.status().is_success() {
                return Err(format!("the server answered {}", response.status()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
                if body.len() + chunk.len() > MAX_METADATA_BYTES {
                    return Err(format!("larger than {MAX_METADATA_BYTES} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            String::from_utf8(body).map_err(|_| "not UTF-8".into())
        }
    }
}
