//! Server-rendered pages: sign in, sign up, sign out, and a home page.
//!
//! `POST /__login__` takes a form (browsers: redirect on success, the page
//! again with a message on failure) or JSON (scripts: the user, or an error
//! in Connect's shape).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::shapes::{check_new_password_user, user_json, NewPasswordUser};
use super::{login_error, ApiError, AppState, ClientAddress, Viewer, SESSION_COOKIE};
use crate::identity::{plausible_username, Callback, SignInMethod};
use crate::secrets;
use base64::Engine as _;

#[derive(Deserialize, Default)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// Where to go after signing in (a path on this server only).
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
pub struct Next {
    url: Option<String>,
}

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Only local paths: `//evil.example` and `https://…` would redirect away.
/// Browsers read `\` as `/` and drop tab, CR and LF anywhere in a URL, so
/// `/\evil.example` and `/<tab>/evil.example/` are `//evil.example/` to them:
/// refuse backslashes and every control character rather than guess how a
/// browser normalises.
fn safe_target(url: Option<&str>) -> &str {
    match url {
        Some(u)
            if u.starts_with('/')
                && !u.starts_with("//")
                && !u.chars().any(|c| c == '\\' || c.is_control()) =>
        {
            u
        }
        _ => "/",
    }
}

pub(super) fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Connect</title><style>body{{font-family:system-ui,sans-serif;\
         max-width:26rem;margin:4rem auto;padding:0 1rem}}label{{display:block;margin:.8rem 0}}\
         input{{width:100%;padding:.4rem;box-sizing:border-box}}.error{{color:#a00}}</style>\
         </head><body><h1>{title}</h1>{body}</body></html>"
    ))
}

fn login_form(app: &AppState, message: Option<&str>, target: &str, username: &str) -> Html<String> {
    let error = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    if app.auth.provider().method() == SignInMethod::TrustedHeaders {
        return page(
            "Sign in",
            "<p>This server signs you in through your organisation's proxy. If you see this \
             page, the proxy did not pass your identity; ask your administrator.</p>",
        );
    }
    let signup = if app.auth.provider().creates_local_users() {
        "<p><a href=\"/__signup__\">Create an account</a></p>"
    } else {
        ""
    };
    page(
        "Sign in",
        &format!(
            "{error}<form method=\"post\" action=\"/__login__\">\
             <input type=\"hidden\" name=\"url\" value=\"{}\">\
             <label>Username <input name=\"username\" autocomplete=\"username\" required \
             value=\"{}\"></label>\
             <label>Password <input name=\"password\" type=\"password\" \
             autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">Sign in</button></form>{signup}",
            escape(target),
            escape(username)
        ),
    )
}

/// The sign-in page; with a redirect provider, straight to its pages,
/// with a cookie that binds the sign-in to this browser.
pub async fn login_page(State(app): State<Arc<AppState>>, Query(next): Query<Next>) -> Response {
    let target = safe_target(next.url.as_deref());
    if app.auth.provider().method() != SignInMethod::Redirect {
        return login_form(&app, None, target, "").into_response();
    }
    // A button, not a redirect: the viewer chooses to go to the identity
    // provider, and a failed sign-in lands here without a loop.
    let through = match app.settings.provider {
        crate::config::ProviderKind::Saml => "your organisation's identity provider (SAML)",
        _ => "your organisation's identity provider (OpenID Connect)",
    };
    page(
        "Sign in",
        &format!(
            "<p>This server signs you in through {through}.</p>\
             <form method=\"get\" action=\"/__login__/start\">\
             <input type=\"hidden\" name=\"url\" value=\"{}\">\
             <button type=\"submit\">Sign in with your identity provider</button></form>",
            escape(target)
        ),
    )
    .into_response()
}

/// `/__login__/start`: sends the viewer to the identity provider, with a
/// cookie that binds the sign-in to this browser.
pub async fn start_sign_in(
    State(app): State<Arc<AppState>>,
    Extension(ClientAddress(address)): Extension<ClientAddress>,
    Query(next): Query<Next>,
) -> Response {
    let target = safe_target(next.url.as_deref());
    if app.auth.provider().method() != SignInMethod::Redirect {
        return login_form(&app, None, target, "").into_response();
    }
    if !app.limits.allow_flow(address) {
        tracing::warn!(client = %address, "too many sign-ins started from one address");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            sign_in_failed("Too many sign-ins were started from your address. Wait a minute."),
        )
            .into_response();
    }
    let binding = match secrets::random_bytes::<32>() {
        Ok(bytes) => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    match app.auth.begin(target, &binding).await {
        Ok(redirect) => with_cookie(
            (StatusCode::SEE_OTHER, [(LOCATION, redirect.location)]).into_response(),
            &app.flow_cookie(&binding, crate::identity::flow::FLOW_LIFETIME.as_secs()),
        ),
        Err(e) => {
            tracing::warn!("could not start a sign-in: {e}");
            let error = login_error(e);
            (error.status, sign_in_failed(&error.message)).into_response()
        }
    }
}

/// `/__login__/metadata`: this server's SAML metadata, for the IdP's
/// administrator to import; 404 with other providers.
pub async fn service_metadata(State(app): State<Arc<AppState>>) -> Response {
    match app.auth.provider().service_metadata() {
        Some(xml) => (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/samlmetadata+xml")],
            xml,
        )
            .into_response(),
        None => ApiError::not_found("SAML metadata: this server does not sign in with SAML")
            .into_response(),
    }
}

/// `/__login__/callback`: the identity provider sends the viewer back here
/// (a query for redirect bindings, a form for POST bindings).
pub async fn login_callback(
    State(app): State<Arc<AppState>>,
    Extension(ClientAddress(address)): Extension<ClientAddress>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Response {
    let callback = Callback {
        query: uri.query().unwrap_or(""),
        form: (!body.is_empty()).then_some(&body[..]),
        binding: app.flow_binding(&headers),
    };
    // The binding is good for one callback, whatever its outcome.
    let spent = app.flow_cookie("", 0);
    let (user, target, unsolicited) = match app.auth.finish(callback).await {
        Ok(done) => done,
        Err(e) => {
            tracing::warn!(client = %address, "sign-in failed: {}", e.to_string().escape_debug());
            let error = login_error(e);
            return with_cookie(
                (error.status, sign_in_failed(&error.message)).into_response(),
                &spent,
            );
        }
    };
    // The provider hands back what `begin` was given, checked there; check
    // again so that no provider can turn this into an open redirect.
    let target = safe_target(Some(&target)).to_owned();
    if unsolicited {
        return with_cookie(confirm_page(&app, user, target), &spent);
    }
    tracing::info!(user = %user.username, role = %user.role, client = %address, "signed in");
    signed_in(&app, &user, target, &spent)
}

/// Starts `user`'s session and sends them to `target`.
fn signed_in(app: &AppState, user: &crate::model::User, target: String, spent: &str) -> Response {
    let cookie = match app.start_session(user) {
        Ok(cookie) => cookie,
        Err(e) => return e.into_response(),
    };
    let response = with_cookie(
        (StatusCode::SEE_OTHER, [(LOCATION, target)]).into_response(),
        &cookie,
    );
    with_cookie(response, spent)
}

/// A sign-in the identity provider started reached connectd without
/// anything tying it to this browser: an attacker could have posted their
/// own from a page of theirs (login CSRF). So the viewer is asked first,
/// naming the account; the page may not be framed (no clickjacking), and
/// the answer must come from it, in this browser.
fn confirm_page(app: &AppState, user: crate::model::User, target: String) -> Response {
    let binding = match secrets::random_bytes::<32>() {
        Ok(bytes) => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let username = user.username.clone();
    let key = match app.confirmations.start((user, target), &binding) {
        Ok(key) => key,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let body = page(
        "Sign in",
        &format!(
            "<p>Your identity provider signed you in as <strong>{}</strong>.</p>\
             <form method=\"post\" action=\"/__login__/confirm\">\
             <input type=\"hidden\" name=\"key\" value=\"{key}\">\
             <button type=\"submit\">Continue as {}</button></form>\
             <p>Not you, or did you not just sign in? <a href=\"/__login__\">Sign in \
             yourself</a> instead.</p>",
            escape(&username),
            escape(&username)
        ),
    );
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        "x-frame-options",
        axum::http::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        "content-security-policy",
        axum::http::HeaderValue::from_static("frame-ancestors 'none'"),
    );
    with_cookie(response, &app.confirm_cookie(&binding))
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    key: String,
}

/// `POST /__login__/confirm`: the viewer said yes on [`confirm_page`].
pub async fn confirm_sign_in(
    State(app): State<Arc<AppState>>,
    Extension(ClientAddress(address)): Extension<ClientAddress>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ConfirmForm>,
) -> Response {
    let binding = super::cookie_value(&headers, super::CONFIRM_COOKIE).unwrap_or("");
    let spent = app.confirm_cookie("");
    match app.confirmations.take(&form.key, binding) {
        Ok((user, target)) => {
            tracing::info!(user = %user.username, role = %user.role, client = %address, "signed in (started at the identity provider, confirmed)");
            signed_in(&app, &user, target, &spent)
        }
        Err(e) => {
            tracing::warn!(client = %address, "sign-in refused: {}", e.to_string().escape_debug());
            let error = login_error(e.into());
            with_cookie(
                (error.status, sign_in_failed(&error.message)).into_response(),
                &spent,
            )
        }
    }
}

/// `response` with `Set-Cookie: cookie` added (a session started or ended).
fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = cookie.parse() {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

fn sign_in_failed(message: &str) -> Html<String> {
    page(
        "Sign in",
        &format!(
            "<p class=\"error\" role=\"alert\">{}</p><p><a href=\"/__login__\">Sign in \
             again</a></p>",
            escape(message)
        ),
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Reads a form or JSON body into `T`.
fn parse_body<T: for<'de> Deserialize<'de>>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    if is_json(headers) {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("The request body is not valid JSON: {e}")))
    } else {
        serde_urlencoded_from(body)
    }
}

fn serde_urlencoded_from<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::bad_request(format!("The form could not be read: {e}")))
}

pub async fn login(
    State(app): State<Arc<AppState>>,
    Extension(ClientAddress(address)): Extension<ClientAddress>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let json = is_json(&headers);
    let form: LoginForm = match parse_body(&headers, &body) {
        Ok(form) => form,
        Err(e) => return e.into_response(),
    };
    let target = safe_target(form.url.as_deref()).to_owned();
    let fail = |error: ApiError, username: &str| -> Response {
        if json {
            error.into_response()
        } else {
            let status = error.status;
            (
                status,
                login_form(&app, Some(&error.message), &target, username),
            )
                .into_response()
        }
    };
    // Logged names are screened first: control characters could forge lines.
    let logged_name = if plausible_username(&form.username) {
        form.username.clone()
    } else {
        "<malformed username>".into()
    };
    if !app.limits.allow(address, &form.username) {
        tracing::warn!(user = %logged_name, client = %address, "sign-in rate limit reached");
        return fail(
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                0,
                "Too many sign-in attempts. Wait a minute and try again.",
            ),
            &form.username,
        );
    }
    let user = match app.auth.with_password(&form.username, &form.password).await {
        Ok(user) => user,
        Err(e) => {
            tracing::warn!(user = %logged_name, client = %address, "sign-in failed: {e}");
            return fail(login_error(e), &form.username);
        }
    };
    tracing::info!(user = %user.username, role = %user.role, client = %address, "signed in");
    let cookie = match app.start_session(&user) {
        Ok(cookie) => cookie,
        Err(e) => return fail(e, &form.username),
    };
    let response = if json {
        Json(user_json(&user, true)).into_response()
    } else {
        (StatusCode::SEE_OTHER, [(LOCATION, target)]).into_response()
    };
    with_cookie(response, &cookie)
}

pub async fn logout(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(token) = super::cookie_value(&headers, SESSION_COOKIE) {
        if let Err(e) = app.store.delete_session(&secrets::token_hash(token)) {
            return ApiError::from(e).into_response();
        }
    }
    let provider = app.auth.provider();
    // With a redirect provider, /__login__ would send the viewer straight
    // back to it, whose own session signs them in again: say they are
    // signed out instead, and offer to end that session too.
    let response = if provider.method() == SignInMethod::Redirect {
        let elsewhere = provider
            .end_session_endpoint()
            .map(|url| {
                format!(
                    "<p><a href=\"{}\">Also sign out of your identity provider</a>, so \
                     that nobody else at this browser can sign in as you.</p>",
                    escape(&url)
                )
            })
            .unwrap_or_default();
        page(
            "Signed out",
            &format!(
                "<p>You are signed out of Connect.</p>{elsewhere}\
                 <p><a href=\"/__login__\">Sign in again</a></p>"
            ),
        )
        .into_response()
    } else {
        (StatusCode::SEE_OTHER, [(LOCATION, "/__login__")]).into_response()
    };
    with_cookie(response, &app.clear_cookie())
}

/// `/`: the dashboard for people signed in, the sign-in page otherwise.
pub async fn home(Extension(viewer): Extension<Viewer>) -> Response {
    let to = if viewer.0.is_some() {
        "/connect/"
    } else {
        "/__login__"
    };
    (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
}

/// Self-registration: only with the password provider, and only when
/// `[Password] SelfRegistration = true` or nobody exists yet (the first
/// person becomes the administrator, as in Connect).
fn signup_open(app: &AppState) -> Result<bool, ApiError> {
    if !app.auth.provider().creates_local_users() {
        return Ok(false);
    }
    Ok(app.settings.self_registration || app.store.list_users(None, 0, 1)?.1 == 0)
}

fn signup_form(message: Option<&str>) -> Html<String> {
    let error = message
        .map(|m| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(m)))
        .unwrap_or_default();
    page(
        "Create an account",
        &format!(
            "{error}<form method=\"post\" action=\"/__signup__\">\
             <label>Username <input name=\"username\" autocomplete=\"username\" required></label>\
             <label>First name <input name=\"first_name\"></label>\
             <label>Last name <input name=\"last_name\"></label>\
             <label>Email <input name=\"email\" type=\"email\"></label>\
             <label>Password <input name=\"password\" type=\"password\" \
             autocomplete=\"new-password\" required></label>\
             <button type=\"submit\">Create account</button></form>"
        ),
    )
}

pub async fn signup_page(State(app): State<Arc<AppState>>) -> Response {
    match signup_open(&app) {
        Ok(true) => signup_form(None).into_response(),
        Ok(false) => (
            StatusCode::FORBIDDEN,
            page(
                "Create an account",
                "<p>Accounts are created by an administrator.</p>",
            ),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn signup(
    State(app): State<Arc<AppState>>,
    Extension(ClientAddress(address)): Extension<ClientAddress>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let json = is_json(&headers);
    let fail = |e: ApiError| -> Response {
        if json {
            e.into_response()
        } else {
            (e.status, signup_form(Some(&e.message))).into_response()
        }
    };
    match signup_open(&app) {
        Ok(true) => {}
        Ok(false) => {
            return fail(ApiError::forbidden(
                "Accounts are created by an administrator.",
            ))
        }
        Err(e) => return fail(e),
    }
    let new: NewPasswordUser = match parse_body(&headers, &body) {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    if !app.limits.allow(address, &new.username) {
        return fail(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            0,
            "Too many attempts. Wait a minute and try again.",
        ));
    }
    if let Err(e) = check_new_password_user(&app, &new) {
        return fail(e);
    }
    let password = new.password.clone();
    let hash = match tokio::task::spawn_blocking(move || secrets::hash_password(&password)).await {
        Ok(Ok(hash)) => hash,
        Ok(Err(e)) => return fail(ApiError::internal(e)),
        Err(e) => return fail(ApiError::internal(e)),
    };
    let user = match app.store.create_password_user(
        &new.username,
        &new.first_name,
        &new.last_name,
        &new.email,
        &hash,
        app.settings.default_role,
    ) {
        Ok(user) => user,
        Err(e) => return fail(e.into()),
    };
    tracing::info!(user = %user.username, role = %user.role, "account created by self-registration");
    let cookie = match app.start_session(&user) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let response = if json {
        (StatusCode::CREATED, Json(user_json(&user, true))).into_response()
    } else {
        (StatusCode::SEE_OTHER, [(LOCATION, "/")]).into_response()
    };
    with_cookie(response, &cookie)
}
