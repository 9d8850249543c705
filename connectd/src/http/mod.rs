//! HTTP transport: the login pages and the JSON API under `/__api__/`.
//!
//! Every request passes through [`identify`], which first refuses
//! requests forged by pages on other origins (`csrf`), then finds the viewer from,
//! in order: an API key (`Authorization: Key …`), the session cookie, or,
//! with proxied authentication, the trusted proxy's headers. Handlers get
//! the result as a [`Viewer`] extension and decide what it may do.
//!
//! The top layer: may import every other module (identity for sign-in,
//! run for the scheduler, deploy, store, content, model); none imports it.
//! `shapes` holds what the API and the pages share, so neither imports the
//! other.

mod api;
mod content;
mod csrf;
mod dashboard;
mod error;
mod hot;
mod pages;
mod serve;
mod shapes;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::Router;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub use error::ApiError;

use crate::config::Settings;
use crate::deploy::Deployer;
use crate::identity::flow::{PendingFlows, MAX_PENDING_FLOWS};
use crate::identity::login::{Authenticator, LoginError};
use crate::identity::{AuthError, SignInMethod};
use crate::model::User;
use crate::run::scheduler::Scheduler;
use crate::secrets;
use crate::store::Store;

pub const SESSION_COOKIE: &str = "connect_session";
/// Binds a redirect sign-in to the browser that started it.
pub const FLOW_COOKIE: &str = "connect_sign_in";
/// The same, over https: `__Host-` cookies cannot be set by a sibling
/// host of the same site, which could otherwise plant its own binding.
pub const SECURE_FLOW_COOKIE: &str = "__Host-connect_sign_in";
/// Binds the confirmation of an IdP-started sign-in to its browser.
pub const CONFIRM_COOKIE: &str = "connect_confirm";

/// How long a verified API key is remembered, so that Argon2 runs once per
/// key per minute rather than on every request.
const KEY_CACHE_TTL: Duration = Duration::from_secs(60);

/// How long the confirmation page of an IdP-started sign-in stays good.
const CONFIRM_LIFETIME: Duration = Duration::from_secs(5 * 60);

pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    pub auth: Arc<Authenticator>,
    pub scheduler: Arc<Scheduler>,
    pub deployer: Arc<Deployer>,
    limits: LoginLimits,
    verified_keys: Mutex<Vec<(String, i64, Instant)>>,
    /// IdP-started sign-ins waiting for the viewer to confirm them.
    confirmations: PendingFlows<(User, String)>,
    /// The last hour of the server's processes and memory, for the
    /// dashboard; `main` samples it.
    pub usage: Arc<crate::run::usage::History>,
    /// What every proxied request reads, cached until the store changes.
    hot: hot::HotCache,
}

/// Sign-in attempts allowed, per client address and per username: a burst,
/// then a steady rate. Password guessing from one address, or against one
/// account from many, is slowed to a crawl; ordinary users never notice.
struct LoginLimits {
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    by_username: DefaultKeyedRateLimiter<String>,
    /// Redirect sign-ins started: each keeps state until its callback, so
    /// one address may not crowd out everyone else's pending sign-ins.
    flows_by_address: DefaultKeyedRateLimiter<IpAddr>,
}

impl LoginLimits {
    fn new() -> Self {
        let per_minute = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Self {
            by_address: RateLimiter::keyed(per_minute(30)),
            by_username: RateLimiter::keyed(
                per_minute(3).allow_burst(NonZeroU32::new(6).unwrap_or(NonZeroU32::MIN)),
            ),
            flows_by_address: RateLimiter::keyed(per_minute(60)),
        }
    }

    fn allow_flow(&self, address: IpAddr) -> bool {
        self.flows_by_address.check_key(&address).is_ok()
    }

    fn allow(&self, address: IpAddr, username: &str) -> bool {
        self.by_address.check_key(&address).is_ok()
            && self.by_username.check_key(&username.to_lowercase()).is_ok()
    }
}

impl AppState {
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        auth: Arc<Authenticator>,
        scheduler: Arc<Scheduler>,
        deployer: Arc<Deployer>,
    ) -> Self {
        Self {
            settings,
            store,
            auth,
            scheduler,
            deployer,
            limits: LoginLimits::new(),
            verified_keys: Mutex::new(Vec::new()),
            confirmations: PendingFlows::new(CONFIRM_LIFETIME, MAX_PENDING_FLOWS),
            usage: Arc::default(),
            hot: hot::HotCache::default(),
        }
    }

    fn session_cookie(&self, token: &str) -> String {
        format!(
            "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
            self.settings.session_lifetime.as_secs(),
            if self.settings.secure_cookies() {
                "; Secure"
            } else {
                ""
            }
        )
    }

    /// The cookie that binds a redirect sign-in to this browser: only the
    /// callback reads it, and it lives as long as a sign-in may take.
    ///
    /// OpenID Connect comes back with a top-level GET, which `Lax` cookies
    /// go with. SAML comes back with a POST from the IdP's page, which they
    /// do not: there the cookie is `SameSite=None`, which browsers accept
    /// only with `Secure` (an https Address). Over plain http, allowed on
    /// loopback only, it carries no SameSite at all, and browsers that
    /// default to Lax still send a cookie this young on a top-level POST.
    fn flow_cookie(&self, value: &str, max_age: u64) -> String {
        let secure = self.settings.secure_cookies();
        let same_site = match (self.auth.provider().callback_is_cross_site_post(), secure) {
            (false, _) => "; SameSite=Lax",
            (true, true) => "; SameSite=None",
            (true, false) => "",
        };
        if secure {
            format!(
                "{SECURE_FLOW_COOKIE}={value}; Path=/; HttpOnly{same_site}; Max-Age={max_age}; \
                 Secure"
            )
        } else {
            format!(
                "{FLOW_COOKIE}={value}; Path=/__login__/callback; HttpOnly{same_site}; \
                 Max-Age={max_age}"
            )
        }
    }

    /// The sign-in cookie the browser sent back, by the name
    /// [`flow_cookie`](Self::flow_cookie) gave it.
    fn flow_binding<'a>(&self, headers: &'a HeaderMap) -> &'a str {
        let name = if self.settings.secure_cookies() {
            SECURE_FLOW_COOKIE
        } else {
            FLOW_COOKIE
        };
        cookie_value(headers, name).unwrap_or("")
    }

    /// The confirmation page's binding: only its own form is sent it.
    fn confirm_cookie(&self, value: &str) -> String {
        let max_age = if value.is_empty() {
            0
        } else {
            CONFIRM_LIFETIME.as_secs()
        };
        format!(
            "{CONFIRM_COOKIE}={value}; Path=/__login__/confirm; HttpOnly; SameSite=Strict; \
             Max-Age={max_age}{}",
            if self.settings.secure_cookies() {
                "; Secure"
            } else {
                ""
            }
        )
    }

    fn clear_cookie(&self) -> String {
        format!(
            "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
            if self.settings.secure_cookies() {
                "; Secure"
            } else {
                ""
            }
        )
    }

    /// Starts a session for `user`; returns the Set-Cookie value.
    fn start_session(&self, user: &User) -> Result<String, ApiError> {
        let (token, hash) = secrets::new_session_token().map_err(ApiError::internal)?;
        self.store.create_session(
            &hash,
            user.id,
            self.settings.session_lifetime.as_secs() as i64,
        )?;
        Ok(self.session_cookie(&token))
    }
}

/// The signed-in user of a request, if any.
#[derive(Clone)]
pub struct Viewer(pub Option<User>);

impl Viewer {
    pub fn require(&self) -> Result<&User, ApiError> {
        self.0.as_ref().ok_or_else(ApiError::unauthenticated)
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/__login__", get(pages::login_page).post(pages::login))
        .route(
            "/__login__/callback",
            get(pages::login_callback).post(pages::login_callback),
        )
        .route("/__login__/start", get(pages::start_sign_in))
        .route("/__login__/metadata", get(pages::service_metadata))
        .route("/__login__/confirm", post(pages::confirm_sign_in))
        .route("/__logout__", post(pages::logout))
        .route("/__signup__", get(pages::signup_page).post(pages::signup))
        .route("/__ping__", get(|| async { "ok" }))
        .route("/__api__/v1/user", get(api::current_user))
        .route(
            "/__api__/v1/users",
            get(api::list_users).post(api::create_user),
        )
        .route(
            "/__api__/v1/users/{guid}",
            get(api::get_user)
                .put(api::update_user)
                .patch(api::update_user),
        )
        .route("/__api__/v1/users/{guid}/lock", post(api::lock_user))
        .route("/__api__/v1/groups", get(api::list_groups))
        .route("/__api__/v1/groups/{guid}/members", get(api::group_members))
        .route(
            "/__api__/v1/keys",
            get(api::list_keys).post(api::create_key),
        )
        .route("/__api__/v1/keys/{guid}", delete(api::delete_key))
        .route(
            "/__api__/v1/content",
            get(content::list).post(content::create),
        )
        .route(
            "/__api__/v1/content/{guid}",
            get(content::get)
                .patch(content::update)
                .delete(content::remove),
        )
        .route(
            "/__api__/v1/content/{guid}/bundles",
            post(content::upload_bundle),
        )
        .route("/__api__/v1/content/{guid}/deploy", post(content::deploy))
        .route(
            "/__api__/v1/content/{guid}/permissions",
            get(content::permissions).post(content::add_permission),
        )
        .route(
            "/__api__/v1/content/{guid}/permissions/{id}",
            delete(content::delete_permission),
        )
        .route("/__api__/v1/content/{guid}/jobs", get(content::jobs))
        .route(
            "/__api__/v1/content/{guid}/jobs/{key}/log",
            get(content::job_log),
        )
        .route("/__api__/v1/tasks/{id}", get(content::task))
        .route("/content/{guid}", any(serve::redirect_to_slash))
        .route("/content/{guid}/", any(serve::content))
        .route("/content/{guid}/{*rest}", any(serve::content))
        .merge(dashboard::routes(state.settings.max_bundle_size))
        .layer(middleware::from_fn_with_state(state.clone(), identify))
        .with_state(state)
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn identify(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let session_token = cookie_value(request.headers(), SESSION_COOKIE);
    if let Some(why) = csrf::refusal(
        request.method(),
        request.uri().path(),
        request.headers(),
        session_token.is_some(),
        app.settings.address.as_deref(),
    ) {
        tracing::warn!(client = %peer.ip(), path = %request.uri().path(), "{why}");
        return ApiError::forbidden(why).into_response();
    }
    let mut set_cookie = None;
    let resolved = resolve_viewer(
        &app,
        peer.ip(),
        request.headers(),
        session_token,
        &mut set_cookie,
    )
    .await;
    let viewer = match resolved {
        Ok(viewer) => viewer,
        Err(error) => return error.into_response(),
    };
    request.extensions_mut().insert(Viewer(viewer));
    request.extensions_mut().insert(ClientAddress(peer.ip()));
    let mut response = next.run(request).await;
    if let Some(cookie) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

/// The TCP peer, for rate limits and logs.
#[derive(Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

async fn resolve_viewer(
    app: &AppState,
    peer: IpAddr,
    headers: &HeaderMap,
    session_token: Option<&str>,
    set_cookie: &mut Option<String>,
) -> Result<Option<User>, ApiError> {
    if let Some(key) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Key "))
    {
        return api_key_user(app, key.trim()).await.map(Some);
    }
    let session_user = match session_token {
        Some(token) => app
            .hot
            .session_user(&*app.store, &secrets::token_hash(token))?,
        None => None,
    };
    if app.auth.provider().method() != SignInMethod::TrustedHeaders {
        return Ok(session_user);
    }
    // Proxied authentication: the headers are the truth on every request;
    // a session only saves redoing the sign-in while they stay the same.
    let identity = match app.auth.with_headers(peer, headers) {
        Ok(identity) => identity,
        Err(AuthError::UntrustedProxy(address)) => {
            tracing::warn!(
                peer = %address,
                "refused identity headers from a peer that is not a trusted proxy; only \
                 [ProxyAuth] TrustedProxy addresses may send them"
            );
            return Err(ApiError::forbidden(
                "Identity headers are only accepted from the trusted proxy.",
            ));
        }
        Err(e) => {
            tracing::warn!(peer = %peer, "refused proxied sign-in: {e}");
            return Err(ApiError::bad_request(e.to_string()));
        }
    };
    let Some(identity) = identity else {
        return Ok(None);
    };
    if let Some(user) = session_user {
        if user.provider == identity.provider && user.unique_id == identity.unique_id {
            return Ok(Some(user));
        }
    }
    let user = app.auth.complete(identity).await.map_err(login_error)?;
    *set_cookie = Some(app.start_session(&user)?);
    Ok(Some(user))
}

async fn api_key_user(app: &AppState, key: &str) -> Result<User, ApiError> {
    let invalid = || ApiError::new(axum::http::StatusCode::UNAUTHORIZED, 0, "Invalid API key.");
    let (key_id, secret) = secrets::split_api_key(key).ok_or_else(invalid)?;
    let fingerprint = secrets::token_hash(key);
    let (hash, user) = app.store.api_key(key_id)?.ok_or_else(invalid)?;
    if user.locked {
        return Err(ApiError::locked());
    }
    let cached = {
        let mut cache = app.verified_keys.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(_, _, at)| at.elapsed() < KEY_CACHE_TTL);
        cache
            .iter()
            .any(|(f, id, _)| *f == fingerprint && *id == user.id)
    };
    if !cached {
        let secret = secret.to_owned();
        let ok = tokio::task::spawn_blocking(move || secrets::verify_password(&secret, &hash))
            .await
            .map_err(ApiError::internal)?;
        if !ok {
            return Err(invalid());
        }
        app.verified_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((fingerprint, user.id, Instant::now()));
        app.store.touch_api_key(key_id)?;
    }
    Ok(user)
}

/// How a failed sign-in is answered; details go to the log only.
pub fn login_error(error: LoginError) -> ApiError {
    use axum::http::StatusCode;
    match error {
        LoginError::Auth(AuthError::InvalidCredentials) => {
            ApiError::new(StatusCode::UNAUTHORIZED, 0, "Invalid username or password.")
        }
        LoginError::Auth(AuthError::Unavailable(detail)) => {
            tracing::error!("sign-in failed: {}", detail.escape_debug());
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                0,
                "The identity provider cannot be reached; try again later.",
            )
        }
        LoginError::Auth(e @ AuthError::Misconfigured(_)) => {
            tracing::error!("sign-in failed: {}", e.to_string().escape_debug());
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                0,
                "Sign-in is misconfigured; the server log says more.",
            )
        }
        LoginError::Auth(e @ (AuthError::UntrustedProxy(_) | AuthError::BadHeaders(_))) => {
            ApiError::forbidden(e.to_string())
        }
        LoginError::Auth(e @ AuthError::Flow(_)) => {
            tracing::warn!("sign-in refused: {}", e.to_string().escape_debug());
            ApiError::bad_request("This sign-in could not be completed. Please sign in again.")
        }
        LoginError::Auth(AuthError::Denied { shown, logged }) => {
            tracing::warn!("sign-in refused: {}", logged.escape_debug());
            let why = shown.unwrap_or_else(|| "it gave no reason this server recognises".into());
            ApiError::forbidden(format!(
                "The identity provider did not sign you in: {why}. You can sign in again."
            ))
        }
        LoginError::Auth(AuthError::Rejected(detail)) => {
            tracing::warn!("sign-in refused: {}", detail.escape_debug());
            ApiError::forbidden(
                "The identity provider's answer could not be verified, so you were not signed \
                 in. Sign in again; if this keeps happening, tell your administrator.",
            )
        }
        LoginError::Auth(AuthError::Incomplete(message)) => {
            tracing::warn!("sign-in refused: {}", message.escape_debug());
            ApiError::forbidden(message)
        }
        LoginError::Auth(AuthError::NotOffered) => {
            ApiError::bad_request("This server does not sign in this way.")
        }
        LoginError::Auth(AuthError::Internal(detail)) => ApiError::internal(detail),
        LoginError::Locked => ApiError::locked(),
        LoginError::Conflict(detail) => {
            tracing::error!("sign-in refused: {detail}");
            ApiError::new(StatusCode::CONFLICT, 0, detail)
        }
        LoginError::Internal(detail) => ApiError::internal(detail),
    }
}
