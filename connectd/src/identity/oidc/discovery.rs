//! The provider's discovery document and signing keys, fetched over an
//! HTTP client that never follows redirects, cached, refreshed hourly, and
//! re-fetched (at a bounded rate) when a token names a key we do not have.
//!
//! A failed refresh keeps the last good copy, so a provider that blips
//! does not stop sign-ins that its cached keys can still verify.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, DiscoveryError, EndSessionUrl, IssuerUrl, ProviderMetadata,
};
use serde::{Deserialize, Serialize};

use crate::config::OAuth2Settings;
use crate::identity::AuthError;

/// How long a discovery document is used before it is fetched again.
const REFRESH_AFTER: Duration = Duration::from_secs(3600);

/// The least time between two key re-fetches caused by unknown key ids:
/// tokens come from the provider's own token endpoint, so an unknown key
/// means a rotation, and one re-fetch picks it up; a burst of them is a
/// misbehaving provider, which should not be hammered.
const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// After a failed fetch, how long the stale copy is used before the
/// provider is asked again, so that a provider that is down costs each
/// sign-in nothing instead of a timeout (and queueing behind it).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// With no copy at all, how long a failure is repeated without asking.
const RETRY_WITHOUT_COPY: Duration = Duration::from_secs(5);

/// The discovery fields connectd reads beyond the crate's core set.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(super) struct ExtraMetadata {
    /// RP-initiated logout.
    pub end_session_endpoint: Option<EndSessionUrl>,
    /// RFC 9207: the provider names itself in every authorization answer.
    pub authorization_response_iss_parameter_supported: Option<bool>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

pub(super) type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Whether `url` may carry connectd's requests: https, or http to a
/// loopback host when `[OAuth2] AllowInsecureLoopbackIssuer` allows it.
pub(super) fn acceptable_url(url: &url::Url, allow_loopback_http: bool) -> bool {
    url.scheme() == "https" || (allow_loopback_http && crate::config::is_loopback_http(url))
}

/// One copy of the provider's metadata and keys.
pub(super) struct Discovered {
    pub metadata: Metadata,
    fetched: Instant,
}

/// The most connectd reads of any answer from the provider: discovery
/// documents, key sets, tokens and userinfo are a few kilobytes, and a
/// provider (or something posing as one) must not fill memory.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// reqwest for the `openidconnect` crate, reading at most
/// [`MAX_ANSWER_BYTES`] of each answer.
pub(super) struct Http(openidconnect::reqwest::Client);

#[derive(Debug, thiserror::Error)]
pub(super) enum HttpError {
    #[error(transparent)]
    Request(#[from] openidconnect::reqwest::Error),
    #[error("the provider's answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("unusable answer: {0}")]
    Answer(#[from] openidconnect::http::Error),
}

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let mut response = self.0.execute(request.try_into()?).await?;
            if response
                .content_length()
                .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
            {
                return Err(HttpError::TooLarge);
            }
            let mut answer = openidconnect::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                answer = answer.header(name, value);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(HttpError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(answer.body(body)?)
        })
    }
}

pub(super) struct Discovery {
    issuer: IssuerUrl,
    pub http: Http,
    current: RwLock<Option<Arc<Discovered>>>,
    /// One fetch at a time; the others wait for its result.
    fetching: tokio::sync::Mutex<()>,
    key_refetches: RateLimit,
    /// When the last fetch failed, and why (a configuration problem or not).
    last_failure: Mutex<Option<(Instant, bool, String)>>,
    allow_loopback_http: bool,
}

/// At most one event per interval.
struct RateLimit {
    last: Mutex<Option<Instant>>,
    interval: Duration,
}

impl RateLimit {
    fn new(interval: Duration) -> Self {
        Self {
            last: Mutex::new(None),
            interval,
        }
    }

    /// Whether the event may happen now; if so, it counts.
    fn allow(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < self.interval) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// The HTTP client for everything sent to the provider
/// ([`crate::identity::http_client`] says what it refuses).
fn http_client(settings: &OAuth2Settings) -> Result<Http, String> {
    crate::identity::http_client::client(
        settings.ca_certificate.as_deref(),
        settings.allow_loopback_http,
        "[OAuth2] TLSCACertificate",
    )
    .map(Http)
}

pub(super) use crate::logging::error_chain as chain;

impl Discovery {
    pub fn new(settings: &OAuth2Settings) -> Result<Self, String> {
        let issuer = IssuerUrl::new(settings.issuer.clone())
            .map_err(|e| format!("[OAuth2] OpenIDConnectIssuer: {e}"))?;
        Ok(Self {
            issuer,
            http: http_client(settings)?,
            current: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
            key_refetches: RateLimit::new(KEY_REFETCH_INTERVAL),
            last_failure: Mutex::new(None),
            allow_loopback_http: settings.allow_loopback_http,
        })
    }

    pub fn cached(&self) -> Option<Arc<Discovered>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn keep(&self, discovered: Discovered) -> Arc<Discovered> {
        let discovered = Arc::new(discovered);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(discovered.clone());
        discovered
    }

    /// The metadata to use now: the cached copy while it is fresh, else a
    /// new one (or the old one, with a warning, if the provider fails).
    pub async fn current(&self) -> Result<Arc<Discovered>, AuthError> {
        let fresh = |d: &Arc<Discovered>| d.fetched.elapsed() < REFRESH_AFTER;
        if let Some(d) = self.cached().filter(fresh) {
            return Ok(d);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(d) = self.cached().filter(fresh) {
            return Ok(d);
        }
        let recent_failure = self
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((when, misconfigured, why)) = recent_failure {
            match self.cached() {
                Some(old) if when.elapsed() < RETRY_AFTER_FAILURE => return Ok(old),
                None if when.elapsed() < RETRY_WITHOUT_COPY => {
                    return Err(if misconfigured {
                        AuthError::Misconfigured(why)
                    } else {
                        AuthError::Unavailable(why)
                    })
                }
                _ => {}
            }
        }
        let fetched = Metadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| self.discovery_error(e))
            .and_then(|metadata| self.check_endpoints(metadata));
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = match &fetched {
            Ok(_) => None,
            Err(AuthError::Misconfigured(why)) => Some((Instant::now(), true, why.clone())),
            Err(e) => Some((Instant::now(), false, e.to_string())),
        };
        match fetched {
            Ok(metadata) => {
                tracing::info!(
                    issuer = %self.issuer.as_str(),
                    keys = metadata.jwks().keys().len(),
                    "read the OpenID Connect provider's discovery document"
                );
                Ok(self.keep(Discovered {
                    metadata,
                    fetched: Instant::now(),
                }))
            }
            Err(error) => match self.cached() {
                Some(old) => {
                    tracing::warn!("{error}; going on with the copy read earlier");
                    Ok(old)
                }
                None => Err(error),
            },
        }
    }

    fn discovery_error<E: std::error::Error + 'static>(&self, e: DiscoveryError<E>) -> AuthError {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.as_str().trim_end_matches('/')
        );
        match e {
            // The document names another issuer: configuration, not an outage.
            DiscoveryError::Validation(why) => AuthError::Misconfigured(format!(
                "the discovery document at {url} does not match [OAuth2] \
                 OpenIDConnectIssuer: {why}"
            )),
            DiscoveryError::Parse(e) => AuthError::Misconfigured(format!(
                "the discovery document at {url} is not OpenID Connect metadata: {}",
                chain(&e)
            )),
            other => AuthError::Unavailable(format!(
                "cannot read the OpenID Connect discovery document at {url}: {}",
                chain(&other)
            )),
        }
    }

    /// Fetches the provider's keys again after a token was signed with a
    /// key `stale` does not hold. `Ok(None)` when a re-fetch happened too
    /// recently to try again.
    pub async fn refetch_keys(
        &self,
        stale: &Discovered,
    ) -> Result<Option<Arc<Discovered>>, AuthError> {
        if !self.key_refetches.allow() {
            return Ok(None);
        }
        let uri = stale.metadata.jwks_uri().clone();
        let jwks = CoreJsonWebKeySet::fetch_async(&uri, &self.http)
            .await
            .map_err(|e| {
                AuthError::Unavailable(format!(
                    "cannot read the provider's signing keys at {}: {}",
                    uri.as_str(),
                    chain(&e)
                ))
            })?;
        tracing::info!(
            keys = jwks.keys().len(),
            "a token named a signing key not seen before; read the provider's keys again"
        );
        Ok(Some(self.keep(Discovered {
            metadata: stale.metadata.clone().set_jwks(jwks),
            fetched: stale.fetched,
        })))
    }

    /// Every endpoint the document names must be one connectd may send
    /// secrets and tokens to: an https issuer cannot hand out an http
    /// token endpoint, and the loopback allowance stays on loopback.
    fn check_endpoints(&self, metadata: Metadata) -> Result<Metadata, AuthError> {
        let mut endpoints = vec![
            (
                "authorization_endpoint",
                metadata.authorization_endpoint().url(),
            ),
            ("jwks_uri", metadata.jwks_uri().url()),
        ];
        if let Some(token) = metadata.token_endpoint() {
            endpoints.push(("token_endpoint", token.url()));
        }
        if let Some(userinfo) = metadata.userinfo_endpoint() {
            endpoints.push(("userinfo_endpoint", userinfo.url()));
        }
        for (name, url) in endpoints {
            if !acceptable_url(url, self.allow_loopback_http) {
                return Err(AuthError::Misconfigured(format!(
                    "the provider's discovery document names {name} = {url}, which is not \
                     https; connectd will not send tokens or its client secret there"
                )));
            }
        }
        Ok(metadata)
    }

    /// The provider's `end_session_endpoint`, from the cached document,
    /// when it is one a browser may safely be sent to.
    pub fn end_session_endpoint(&self) -> Option<url::Url> {
        let url = self
            .cached()?
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()?
            .url()
            .clone();
        acceptable_url(&url, self.allow_loopback_http).then_some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_refetches_are_rate_limited() {
        let limit = RateLimit::new(Duration::from_millis(50));
        assert!(limit.allow(), "the first re-fetch goes through");
        assert!(!limit.allow(), "a second one at once does not");
        std::thread::sleep(Duration::from_millis(60));
        assert!(limit.allow(), "after the interval it may again");
    }
}
