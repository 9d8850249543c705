//! OpenID Connect sign-in (`[Authentication] Provider = oauth2`): the
//! authorization-code flow with PKCE, through the `openidconnect` crate.
//!
//! - [`discovery`]: the provider's metadata and keys, cached and refreshed;
//! - [`claims`]: verified claims to a person.
//!
//! `begin` keeps the nonce, the PKCE verifier and the return path
//! server-side under the `state` value; `finish` takes them once, trades
//! the code for tokens on the back channel, verifies the ID token
//! (signature with an advertised algorithm, issuer, audience and `azp`,
//! expiry, issue time, nonce, access-token hash) and merges userinfo. May
//! import `config`, `store`, `logging` and its parent `identity`.

pub(crate) mod claims;
mod discovery;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreResponseType,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AuthenticationFlow, AuthorizationCode,
    ClaimsVerificationError, Client, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken, IdTokenFields, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError,
    Scope, SignatureVerificationError, StandardErrorResponse, StandardTokenResponse,
    TokenResponse as _, UserInfoClaims,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use self::discovery::{chain, Discovered, Discovery};
use super::flow::{PendingFlows, FLOW_LIFETIME};
use super::{
    AccountSource, AuthError, Callback, ExternalIdentity, IdentityProvider, Redirect, Returned,
    SignInMethod,
};
use crate::config::{OAuth2Settings, ProviderKind};
use crate::store::Store;

const UNKNOWN_KEY: &str = "the ID token is signed with a key the provider does not publish";

/// Why `verify` refused a token: a key we lack is worth one re-fetch.
enum Refusal {
    UnknownKey,
    Other(AuthError),
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        Refusal::Other(e)
    }
}

impl From<Refusal> for AuthError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::UnknownKey => AuthError::Rejected(UNKNOWN_KEY.into()),
            Refusal::Other(e) => e,
        }
    }
}

/// How far a provider's clock may be ahead of ours.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Every claim the provider sent, whatever its name: `[OAuth2]` names the
/// claims to read, so they cannot be fields of a struct.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AllClaims {
    #[serde(flatten)]
    claims: Map<String, Value>,
}

impl AdditionalClaims for AllClaims {}

type Token =
    IdToken<AllClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;
type TokenFields = IdTokenFields<
    AllClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<TokenFields, CoreTokenType>;
type OidcClient = Client<
    AllClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What `begin` keeps for `finish`.
struct PendingSignIn {
    nonce: Nonce,
    verifier: PkceCodeVerifier,
    return_to: String,
}

pub struct OidcProvider {
    settings: OAuth2Settings,
    /// `oidc/` and the issuer: the provider half of every identity.
    provider_name: String,
    redirect_url: RedirectUrl,
    discovery: Discovery,
    flows: PendingFlows<PendingSignIn>,
    store: Arc<dyn Store>,
}

impl OidcProvider {
    /// `address` is `[Server] Address`, which the settings require.
    pub fn new(
        settings: OAuth2Settings,
        address: &str,
        store: Arc<dyn Store>,
    ) -> Result<Self, String> {
        let callback = format!("{}/__login__/callback", address.trim_end_matches('/'));
        let redirect_url = RedirectUrl::new(callback)
            .map_err(|e| format!("[Server] Address does not make a callback URL: {e}"))?;
        Ok(Self {
            provider_name: format!("oidc/{}", settings.issuer),
            discovery: Discovery::new(&settings)?,
            redirect_url,
            flows: PendingFlows::default(),
            store,
            settings,
        })
    }

    fn client(&self, discovered: &Discovered) -> OidcClient {
        OidcClient::from_provider_metadata(
            discovered.metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(self.settings.client_secret.clone())),
        )
        .set_redirect_uri(self.redirect_url.clone())
    }

    /// Trades the code for tokens on the back channel.
    async fn exchange(
        &self,
        client: &OidcClient,
        code: &str,
        verifier: PkceCodeVerifier,
    ) -> Result<Tokens, AuthError> {
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| {
                AuthError::Misconfigured(format!(
                    "the provider's discovery document names no token endpoint: {e}"
                ))
            })?;
        request
            .set_pkce_verifier(verifier)
            .request_async(&self.discovery.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(answer) => AuthError::Rejected(format!(
                    "the provider's token endpoint refused the code: {}{}",
                    answer.error().as_ref(),
                    answer
                        .error_description()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                )),
                RequestTokenError::Request(e) => AuthError::Unavailable(format!(
                    "the provider's token endpoint cannot be reached: {}",
                    chain(&e)
                )),
                other => AuthError::Rejected(format!(
                    "the provider's token endpoint answered something unusable: {}",
                    chain(&other)
                )),
            })
    }

    /// Checks the ID token and returns its claims, re-reading the
    /// provider's keys once when it is signed with a key we lack.
    async fn verified_claims(
        &self,
        discovered: Arc<Discovered>,
        tokens: &Tokens,
        nonce: &Nonce,
    ) -> Result<(Arc<Discovered>, Map<String, Value>), AuthError> {
        let token = tokens.id_token().ok_or_else(|| {
            AuthError::Rejected("the provider's token response holds no ID token".into())
        })?;
        match self.verify(&discovered, token, tokens, nonce) {
            Ok(claims) => Ok((discovered, claims)),
            Err(Refusal::UnknownKey) => {
                let fresh = match self.discovery.refetch_keys(&discovered).await? {
                    Some(fresh) => fresh,
                    // Another sign-in may have just read the new keys.
                    None => match self.discovery.cached() {
                        Some(newer) if !Arc::ptr_eq(&newer, &discovered) => newer,
                        _ => {
                            return Err(AuthError::Rejected(format!(
                                "{UNKNOWN_KEY}; the provider's keys were read again moments \
                                 ago, so this is not a key rotation"
                            )))
                        }
                    },
                };
                match self.verify(&fresh, token, tokens, nonce) {
                    Ok(claims) => Ok((fresh, claims)),
                    Err(refusal) => Err(refusal.into()),
                }
            }
            Err(Refusal::Other(e)) => Err(e),
        }
    }

    fn verify(
        &self,
        discovered: &Discovered,
        token: &Token,
        tokens: &Tokens,
        nonce: &Nonce,
    ) -> Result<Map<String, Value>, Refusal> {
        let client = self.client(discovered);
        // Only what the provider advertises, and only signatures by the
        // provider's own keys: never `none`, and never HMAC, whose key is
        // the client secret (which is not the provider's alone).
        let algorithms: Vec<CoreJwsSigningAlgorithm> = discovered
            .metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|a| is_asymmetric(a))
            .cloned()
            .collect();
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(algorithms)
            .set_issue_time_verifier_fn(issued_recently);
        let claims = token.claims(&verifier, nonce).map_err(|e| match e {
            ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            ) => Refusal::UnknownKey,
            other => {
                AuthError::Rejected(format!("the ID token was refused: {}", chain(&other))).into()
            }
        })?;
        let client_id = self.settings.client_id.as_str();
        Ok(Self::checked_claims(
            client_id, claims, token, tokens, &verifier,
        )?)
    }

    fn checked_claims(
        client_id: &str,
        claims: &openidconnect::IdTokenClaims<AllClaims, CoreGenderClaim>,
        token: &Token,
        tokens: &Tokens,
        verifier: &openidconnect::IdTokenVerifier<'_, CoreJsonWebKey>,
    ) -> Result<Map<String, Value>, AuthError> {
        // The crate does not check `azp` (OIDC Core 3.1.3.7, 4-5), and it
        // already refuses audiences besides ours, so only a foreign `azp`
        // is left to refuse; the several-audiences branch is defence in
        // depth should that ever change.
        match claims.authorized_party() {
            Some(azp) if azp.as_str() != client_id => {
                return Err(AuthError::Rejected(format!(
                    "the ID token was issued to {:?} (azp), not to this server ({client_id:?})",
                    azp.as_str()
                )))
            }
            None if claims.audiences().len() > 1 => {
                return Err(AuthError::Rejected(
                    "the ID token has several audiences and no authorized party (azp)".into(),
                ))
            }
            _ => {}
        }
        if let Some(expected) = claims.access_token_hash() {
            let algorithm = token
                .signing_alg()
                .map_err(|e| AuthError::Rejected(format!("the ID token: {}", chain(&e))))?;
            let key = token
                .signing_key(verifier)
                .map_err(|e| AuthError::Rejected(format!("the ID token: {}", chain(&e))))?;
            let actual = AccessTokenHash::from_token(tokens.access_token(), algorithm, key)
                .map_err(|e| AuthError::Rejected(format!("the access token: {}", chain(&e))))?;
            if actual != *expected {
                return Err(AuthError::Rejected(
                    "the access token does not match the ID token's at_hash".into(),
                ));
            }
        }
        match serde_json::to_value(claims) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(AuthError::Internal(
                "the ID token's claims are not an object".into(),
            )),
        }
    }

    /// The provider's userinfo, when it has an endpoint: its claims fill
    /// what the ID token left out (many providers send groups only here).
    async fn userinfo(
        &self,
        discovered: &Discovered,
        tokens: &Tokens,
        subject: &str,
    ) -> Result<Map<String, Value>, AuthError> {
        let client = self.client(discovered);
        let Ok(request) = client.user_info(
            tokens.access_token().clone(),
            Some(openidconnect::SubjectIdentifier::new(subject.to_owned())),
        ) else {
            return Ok(Map::new());
        };
        let info: UserInfoClaims<AllClaims, CoreGenderClaim> = request
            .request_async(&self.discovery.http)
            .await
            .map_err(|e| {
                AuthError::Unavailable(format!(
                    "the provider's userinfo endpoint failed: {}",
                    chain(&e)
                ))
            })?;
        match serde_json::to_value(info) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Ok(Map::new()),
        }
    }
}

impl OidcProvider {
    /// With `GroupsAutoProvision = false`, only groups connectd has already
    /// are joined.
    fn existing_groups_only(&self, identity: &mut ExternalIdentity) -> Result<(), AuthError> {
        if self.settings.groups_auto_provision {
            return Ok(());
        }
        super::keep_existing_groups(self.store.as_ref(), identity)
    }
}

fn is_asymmetric(algorithm: &CoreJwsSigningAlgorithm) -> bool {
    use CoreJwsSigningAlgorithm as A;
    matches!(
        algorithm,
        A::RsaSsaPkcs1V15Sha256
            | A::RsaSsaPkcs1V15Sha384
            | A::RsaSsaPkcs1V15Sha512
            | A::RsaSsaPssSha256
            | A::RsaSsaPssSha384
            | A::RsaSsaPssSha512
            | A::EcdsaP256Sha256
            | A::EcdsaP384Sha384
            | A::EcdsaP521Sha512
            | A::EdDsa
    )
}

/// The ID token's `iat`: not ahead of our clock by more than the skew, and
/// not older than a sign-in may take.
fn issued_recently(issued: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
    let now = chrono::Utc::now();
    let skew = chrono::Duration::from_std(CLOCK_SKEW).unwrap_or_default();
    let lifetime = chrono::Duration::from_std(FLOW_LIFETIME).unwrap_or_default();
    if issued > now + skew {
        return Err(format!(
            "the ID token was issued in the future ({issued}, now {now}); is a clock wrong?"
        ));
    }
    if issued < now - lifetime - skew {
        return Err(format!(
            "the ID token was issued at {issued}, longer ago than a sign-in may take"
        ));
    }
    Ok(())
}

/// The error codes of RFC 6749 4.1.2.1 and OIDC Core 3.1.2.6, which may be
/// shown to the viewer; anything else is someone's text, shown to nobody.
fn known_error(code: &str) -> Option<&'static str> {
    Some(match code {
        "access_denied" => "you, or the provider's policy, declined the sign-in",
        "login_required" | "interaction_required" | "consent_required" => {
            "the provider needs you to sign in there first"
        }
        "invalid_scope"
        | "invalid_request"
        | "unauthorized_client"
        | "unsupported_response_type" => {
            "the provider refused this server's request (its configuration needs fixing)"
        }
        "server_error" | "temporarily_unavailable" => "the provider had a problem",
        _ => return None,
    })
}

/// The callback's query (connectd asks for the query response mode, so a
/// form body is not the provider's). A parameter given twice is refused
/// (RFC 6749 3.1): which one a server reads is how confusion attacks start.
fn parameters(callback: &Callback<'_>) -> Result<HashMap<String, String>, AuthError> {
    let mut map = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(callback.query.as_bytes()).into_owned() {
        if map.insert(name.clone(), value).is_some() {
            return Err(AuthError::Flow(format!(
                "the callback names {:?} twice",
                name.escape_debug().to_string()
            )));
        }
    }
    Ok(map)
}

#[async_trait]
impl IdentityProvider for OidcProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::OAuth2
    }

    fn method(&self) -> SignInMethod {
        SignInMethod::Redirect
    }

    fn accounts(&self) -> AccountSource {
        AccountSource::Provisioned
    }

    fn end_session_endpoint(&self) -> Option<String> {
        let mut url = self.discovery.end_session_endpoint()?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.settings.client_id);
        Some(url.to_string())
    }

    async fn begin(&self, return_to: &str, binding: &str) -> Result<Redirect, AuthError> {
        let discovered = self.discovery.current().await?;
        let client = self.client(&discovered);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = Nonce::new_random();
        let state = self.flows.start(
            PendingSignIn {
                nonce: nonce.clone(),
                verifier,
                return_to: return_to.to_owned(),
            },
            binding,
        )?;
        let mut request = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                move || CsrfToken::new(state),
                move || nonce,
            )
            .set_pkce_challenge(challenge)
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new("email".into()));
        for scope in &self.settings.custom_scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, _, _) = request.url();
        Ok(Redirect {
            location: url.to_string(),
        })
    }

    async fn finish(&self, callback: Callback<'_>) -> Result<Returned, AuthError> {
        let params = parameters(&callback)?;
        let state = params.get("state").ok_or_else(|| {
            AuthError::Flow("the provider sent the viewer back without a state".into())
        })?;
        // Taken before anything else: a state is good for one answer,
        // whatever that answer is.
        let pending = self.flows.take(state, callback.binding)?;
        if let Some(code) = params.get("error") {
            let detail = params
                .get("error_description")
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            return Err(AuthError::Denied {
                shown: known_error(code).map(str::to_owned),
                logged: format!("the identity provider answered {code}{detail}"),
            });
        }
        let code = params.get("code").ok_or_else(|| {
            AuthError::Flow("the provider sent neither a code nor an error".into())
        })?;
        let discovered = self.discovery.current().await?;
        // RFC 9207: the answer names who sent it, so that a code from
        // another provider the viewer also uses cannot be slipped in here.
        let issuer = discovered.metadata.issuer().as_str();
        match params.get("iss") {
            Some(iss) if iss != issuer => {
                return Err(AuthError::Rejected(format!(
                    "the authorization answer came from {iss:?}, not {issuer:?} (iss)"
                )))
            }
            None if discovered
                .metadata
                .additional_metadata()
                .authorization_response_iss_parameter_supported
                == Some(true) =>
            {
                return Err(AuthError::Rejected(
                    "the authorization answer does not name its issuer (iss), which this \
                     provider promises to"
                        .into(),
                ))
            }
            _ => {}
        }
        let client = self.client(&discovered);
        let tokens = self.exchange(&client, code, pending.verifier).await?;
        let (discovered, mut claims) = self
            .verified_claims(discovered, &tokens, &pending.nonce)
            .await?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        for (name, value) in self.userinfo(&discovered, &tokens, &subject).await? {
            claims.entry(name).or_insert(value);
        }
        if self.settings.logging {
            let mut names: Vec<&str> = claims.keys().map(String::as_str).collect();
            names.sort_unstable();
            tracing::info!(
                subject = %subject.escape_debug(),
                "OpenID Connect claims received (ID token and userinfo): {}",
                names.join(", ").escape_debug()
            );
        }
        let mut identity = claims::identity(&self.settings, &self.provider_name, &claims)?;
        self.existing_groups_only(&mut identity)?;
        Ok(Returned {
            identity,
            return_to: pending.return_to,
            unsolicited: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GroupRef;
    use crate::store::{LoginRecord, SqliteStore};

    fn provider(auto_provision: bool, store: Arc<dyn Store>) -> OidcProvider {
        let mut settings = claims::tests::settings();
        settings.groups_auto_provision = auto_provision;
        OidcProvider::new(settings, "https://connect.example.com/", store).expect("provider")
    }

    fn person(groups: &[&str]) -> ExternalIdentity {
        ExternalIdentity {
            provider: "oidc/https://idp.example".into(),
            unique_id: "u-1".into(),
            username: "alice".into(),
            first_name: String::new(),
            last_name: String::new(),
            email: String::new(),
            groups: Some(
                groups
                    .iter()
                    .map(|g| GroupRef {
                        unique_id: (*g).into(),
                        name: (*g).into(),
                    })
                    .collect(),
            ),
            role_values: vec![],
            logging: false,
            is_ldap: false,
        }
    }

    #[test]
    fn without_auto_provisioning_only_existing_groups_are_joined() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().expect("store"));
        let existing = [GroupRef {
            unique_id: "staff".into(),
            name: "staff".into(),
        }];
        store
            .record_login(
                &LoginRecord {
                    provider: "oidc/https://idp.example",
                    unique_id: "u-0",
                    username: "admin",
                    first_name: "",
                    last_name: "",
                    email: "",
                    groups: Some(&existing),
                },
                &mut |_, _| crate::roles::Role::Administrator,
            )
            .expect("record");
        let mut alice = person(&["staff", "new-team"]);
        provider(false, store.clone())
            .existing_groups_only(&mut alice)
            .expect("filter");
        let names: Vec<_> = alice
            .groups
            .expect("groups")
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(
            names,
            ["staff"],
            "new-team does not exist and is not created"
        );
        let mut bob = person(&["staff", "new-team"]);
        provider(true, store)
            .existing_groups_only(&mut bob)
            .expect("filter");
        assert_eq!(
            bob.groups.expect("groups").len(),
            2,
            "auto-provisioning keeps all"
        );
    }

    #[test]
    fn the_callback_url_is_the_servers_address() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().expect("store"));
        let p = provider(true, store);
        assert_eq!(
            p.redirect_url.as_str(),
            "https://connect.example.com/__login__/callback"
        );
        assert_eq!(p.provider_name, "oidc/https://idp.example");
    }

    #[test]
    fn issue_times_outside_the_window_are_refused() {
        let now = chrono::Utc::now();
        assert!(issued_recently(now).is_ok());
        assert!(
            issued_recently(now + chrono::Duration::minutes(1)).is_ok(),
            "small skew"
        );
        assert!(issued_recently(now + chrono::Duration::minutes(10)).is_err());
        assert!(issued_recently(now - chrono::Duration::hours(1)).is_err());
    }

    #[test]
    fn only_standard_error_codes_reach_the_viewer() {
        assert!(known_error("access_denied").is_some());
        assert!(known_error("<script>alert(1)</script>").is_none());
    }
}
