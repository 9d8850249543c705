//! Proxied authentication: a front proxy (nginx with auth_request, an SSO
//! gateway) signs viewers in and tells connectd who they are in headers.
//!
//! Trust is established by the TCP peer address and nothing else: only
//! connections from `[ProxyAuth] TrustedProxy` addresses may carry identity
//! headers. A request from anywhere else that carries the username header is
//! refused outright (and logged), rather than silently treated as anonymous,
//! so a misrouted deployment is noticed. The proxy must also strip these
//! headers from what its clients send, and connectd must listen where only
//! the proxy can reach it (e.g. `[HTTP] Listen = 127.0.0.1:3939`).

use std::net::IpAddr;

use axum::http::HeaderMap;

use super::{
    plausible_username, AccountSource, AuthError, ExternalIdentity, IdentityProvider, SignInMethod,
};
use crate::config::{ProviderKind, ProxySettings};
use crate::model::GroupRef;

/// `[ProxyAuth]`: the trusted proxies and the headers they set.
pub struct ProxyProvider {
    settings: ProxySettings,
}

impl ProxyProvider {
    pub fn new(settings: ProxySettings) -> Self {
        Self { settings }
    }
}

#[async_trait::async_trait]
impl IdentityProvider for ProxyProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Proxy
    }

    fn method(&self) -> SignInMethod {
        SignInMethod::TrustedHeaders
    }

    /// Proxied users have no Unix account of their own: their content runs
    /// as `Applications.RunAs` (RunAsCurrentUser is refused with proxy).
    fn accounts(&self) -> AccountSource {
        AccountSource::None
    }

    fn identity_in_headers(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Result<Option<ExternalIdentity>, AuthError> {
        identity(&self.settings, peer, headers)
    }
}

/// Whether `peer` is one of the trusted proxies. IPv4 peers that arrive as
/// IPv4-mapped IPv6 addresses are compared as IPv4.
pub fn is_trusted(settings: &ProxySettings, peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
        v4 => v4,
    };
    settings.trusted.iter().any(|net| net.contains(&peer))
}

fn header(headers: &HeaderMap, name: &str) -> Result<Option<String>, AuthError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim().to_owned()))
            .map_err(|_| AuthError::BadHeaders(format!("the {name} header is not plain text"))),
    }
}

/// The identity the proxy asserts, `Ok(None)` when the request carries none.
pub fn identity(
    settings: &ProxySettings,
    peer: IpAddr,
    headers: &HeaderMap,
) -> Result<Option<ExternalIdentity>, AuthError> {
    let Some(username) = header(headers, &settings.username_header)? else {
        return Ok(None);
    };
    if !is_trusted(settings, peer) {
        return Err(AuthError::UntrustedProxy(peer));
    }
    if !plausible_username(&username) {
        return Err(AuthError::BadHeaders(format!(
            "the {} header does not hold a usable username",
            settings.username_header
        )));
    }
    let list = |name: &Option<String>| -> Result<Vec<String>, AuthError> {
        let Some(name) = name else {
            return Ok(Vec::new());
        };
        Ok(header(headers, name)?
            .map(|v| {
                v.split(settings.groups_separator.as_str())
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    };
    let groups = settings.groups_header.as_ref().map(|_| {
        list(&settings.groups_header).map(|names| {
            names
                .into_iter()
                .map(|name| GroupRef {
                    unique_id: name.clone(),
                    name,
                })
                .collect::<Vec<_>>()
        })
    });
    let groups = groups.transpose()?;
    let unique_id = match &settings.unique_id_header {
        Some(h) => header(headers, h)?.filter(|v| !v.is_empty()),
        None => None,
    }
    .unwrap_or_else(|| username.clone());
    let optional = |name: &Option<String>| -> Result<String, AuthError> {
        Ok(match name {
            Some(n) => header(headers, n)?.unwrap_or_default(),
            None => String::new(),
        })
    };
    Ok(Some(ExternalIdentity {
        provider: "proxy".into(),
        unique_id,
        first_name: optional(&settings.first_name_header)?,
        last_name: optional(&settings.last_name_header)?,
        email: optional(&settings.email_header)?,
        groups,
        role_values: list(&settings.role_header)?,
        logging: settings.logging,
        is_ldap: false,
        username,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn settings() -> ProxySettings {
        ProxySettings {
            username_header: "X-Auth-Username".into(),
            unique_id_header: None,
            groups_header: Some("X-Auth-Groups".into()),
            groups_separator: ",".into(),
            role_header: Some("X-Auth-Role".into()),
            email_header: None,
            first_name_header: None,
            last_name_header: None,
            trusted: vec!["127.0.0.2/32".parse().expect("net")],
            logging: true,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn trusted_peer_headers_make_an_identity() {
        let h = headers(&[
            ("x-auth-username", "alice"),
            ("x-auth-groups", "Sales, IT ,,"),
            ("x-auth-role", "publisher"),
        ]);
        let id = identity(&settings(), "127.0.0.2".parse().expect("ip"), &h)
            .expect("ok")
            .expect("identity");
        assert_eq!(id.username, "alice");
        assert_eq!(id.unique_id, "alice");
        let names: Vec<_> = id
            .groups
            .expect("groups")
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(names, ["Sales", "IT"]);
        assert_eq!(id.role_values, ["publisher"]);
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().expect("ip");
        assert!(is_trusted(&settings(), mapped));
    }

    #[test]
    fn untrusted_peers_are_refused_and_absent_headers_are_anonymous() {
        let h = headers(&[("x-auth-username", "admin")]);
        let err = identity(&settings(), "127.0.0.1".parse().expect("ip"), &h).expect_err("refused");
        assert!(matches!(err, AuthError::UntrustedProxy(_)));
        let none = identity(
            &settings(),
            "127.0.0.1".parse().expect("ip"),
            &HeaderMap::new(),
        );
        assert!(matches!(none, Ok(None)));
        let bad = identity(
            &settings(),
            "127.0.0.2".parse().expect("ip"),
            &headers(&[("x-auth-username", "")]),
        );
        assert!(matches!(bad, Err(AuthError::BadHeaders(_))));
    }
}
