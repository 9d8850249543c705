//! The HTTP client for back-channel requests to an identity provider
//! (OpenID Connect discovery and tokens, SAML metadata): the system's CA
//! store plus an administrator's CA file, https only unless loopback http
//! is allowed, no redirects (a redirect could point a back-channel request
//! anywhere), and timeouts, so that a hung provider fails a sign-in, not
//! the server. Imports nothing of connectd.

use std::path::Path;
use std::time::Duration;

/// `ca_key` names the setting `ca` came from, for the error.
pub(crate) fn client(
    ca: Option<&Path>,
    allow_http: bool,
    ca_key: &str,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .https_only(!allow_http);
    if let Some(path) = ca {
        let pem = std::fs::read(path)
            .map_err(|e| format!("{ca_key} = {}: cannot be read: {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{ca_key} = {}: not usable: {e}", path.display()))?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client for the identity provider: {e}"))
}
