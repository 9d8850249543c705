//! The dashboard: server-rendered pages for publishers, viewers and
//! administrators at `/connect/`, on the same session and the same rules as
//! the JSON API (its checks are called, not repeated).
//!
//! Pages are askama templates (`connectd/templates/dashboard/`, checked at
//! compile time). Every form works without JavaScript; htmx, served by
//! connectd itself from a pinned copy (`connectd/assets/`), makes search and
//! log following update in place. Every form carries a token derived from
//! the session cookie ([`form_token`]), checked on every POST beside the
//! Origin check of the request middleware.
//!
//! - [`content_pages`]: the content list and each content's page (Info,
//!   Access with the process owner, Runtime, Logs);
//! - [`people_pages`]: users (roles, locking), groups, one's own profile
//!   and API keys;
//! - [`access_pages`]: specific users and groups given access;
//! - [`deploy_pages`]: upload and deploy a bundle, its build log live;
//! - [`inspect_pages`]: a person's Unix account as the OS sees it, and
//!   what a launch would do;
//! - [`processes_pages`]: running processes by account, per content and
//!   for the whole server, with the limits and an hour's chart.
//!
//! Part of the HTTP layer: may import `http`'s own modules, `content`,
//! `model`, `store`, `config` and `roles`.

mod access_pages;
mod content_pages;
mod deploy_pages;
mod inspect_pages;
mod people_pages;
mod processes_pages;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use askama::Template;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState, SESSION_COOKIE};
use crate::model::User;

pub const HTMX_PATH: &str = "/__static__/htmx-2.0.11.min.js";
const HTMX: &[u8] = include_bytes!("../../../assets/htmx-2.0.11.min.js");
const CSS_PATH: &str = "/__static__/dashboard.css";
const CSS: &[u8] = include_bytes!("../../../assets/dashboard.css");

/// The dashboard's routes. `max_upload` bounds a deploy form's body: the
/// bundle size limit and room for the form around it.
pub(super) fn routes(max_upload: u64) -> Router<Arc<AppState>> {
    let max_upload = usize::try_from(max_upload.saturating_add(1 << 20)).unwrap_or(usize::MAX);
    let pages = Router::new()
        .route("/connect", get(|| async { redirect("/connect/") }))
        .route("/connect/", get(content_pages::list))
        .route(
            "/connect/content/{guid}",
            get(content_pages::page).post(content_pages::save),
        )
        .route(
            "/connect/content/{guid}/access",
            post(access_pages::add_access),
        )
        .route(
            "/connect/content/{guid}/access/{id}/delete",
            post(access_pages::remove_access),
        )
        .route(
            "/connect/content/{guid}/deploy",
            post(deploy_pages::deploy).layer(DefaultBodyLimit::max(max_upload)),
        )
        .route(
            "/connect/content/{guid}/tasks/{id}",
            get(deploy_pages::task),
        )
        .route(
            "/connect/content/{guid}/jobs/{key}/log",
            get(content_pages::log),
        )
        .route("/connect/processes", get(processes_pages::server))
        .route("/connect/people", get(people_pages::people))
        .route("/connect/people/{guid}/role", post(people_pages::role))
        .route("/connect/people/{guid}/lock", post(people_pages::lock))
        .route(
            "/connect/people/{guid}/account",
            get(inspect_pages::inspect),
        )
        .route("/connect/groups", get(people_pages::groups))
        .route("/connect/profile", get(people_pages::profile))
        .route("/connect/profile/keys", post(people_pages::create_key))
        .route(
            "/connect/profile/keys/{guid}/delete",
            post(people_pages::delete_key),
        )
        .layer(axum::middleware::map_response(private_page));
    Router::new()
        .merge(pages)
        .route(HTMX_PATH, get(|| async { asset(HTMX, "text/javascript") }))
        .route(CSS_PATH, get(|| async { asset(CSS, "text/css") }))
}

/// Every dashboard page: never in a frame (a page on a sibling host could
/// lay a decoy over a one-click button), never kept by a cache (emails,
/// logs, the form token; Back after signing out), and a page and its htmx
/// fragment, which share a URL, are different answers.
async fn private_page(mut response: Response) -> Response {
    use axum::http::header::{HeaderValue, VARY, X_FRAME_OPTIONS};
    let headers = response.headers_mut();
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(VARY, HeaderValue::from_static("HX-Request"));
    response
}

/// A file compiled into connectd; its name changes with its content, so
/// browsers may keep it for good.
fn asset(bytes: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_owned())]).into_response()
}

/// The sign-in page, coming back to `here` afterwards.
fn sign_in_first(here: &str) -> Response {
    let back: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
    redirect(&format!("/__login__?url={back}"))
}

/// The token every dashboard form carries: a hash of the session cookie,
/// which a page on another origin cannot read, so it cannot fill in the
/// token either. Empty without a session (API keys use no forms).
pub(super) fn form_token(headers: &HeaderMap) -> String {
    let Some(session) = super::cookie_value(headers, SESSION_COOKIE) else {
        return String::new();
    };
    let digest = Sha256::new()
        .chain_update(b"connect dashboard form\0")
        .chain_update(session.as_bytes())
        .finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// Whether `sent` is this session's form token; compares hashes, so the
/// time taken says nothing about the token.
fn token_matches(headers: &HeaderMap, sent: &str) -> bool {
    let expected = form_token(headers);
    !expected.is_empty() && Sha256::digest(expected.as_bytes()) == Sha256::digest(sent.as_bytes())
}

/// The page a form without this session's token gets, or `None` when
/// `sent` is the token. Logged: a forged form is worth knowing about.
pub(super) fn token_refusal(
    headers: &HeaderMap,
    me: &User,
    sent: Option<&str>,
) -> Option<Response> {
    if token_matches(headers, sent.unwrap_or("")) {
        return None;
    }
    tracing::warn!(user = %me.username, "a dashboard form without this session's token was refused");
    Some(problem(
        StatusCode::FORBIDDEN,
        me,
        headers,
        "This form is out of date or did not come from this server's page. Reload the page \
         and try again.",
    ))
}

/// An API refusal as a page says it, with Connect's code when it has one.
pub(super) fn described(e: &ApiError) -> String {
    if e.code == 0 {
        e.message.clone()
    } else {
        format!("{} (code {})", e.message, e.code)
    }
}

/// What every page's frame shows: who is signed in, where they are.
pub(super) struct Layout {
    pub title: String,
    pub username: String,
    pub role: String,
    pub admin: bool,
    pub section: &'static str,
    pub token: String,
    pub htmx: &'static str,
    pub css: &'static str,
}

impl Layout {
    fn new(
        title: impl Into<String>,
        user: &User,
        section: &'static str,
        headers: &HeaderMap,
    ) -> Self {
        Self {
            title: title.into(),
            username: user.username.clone(),
            role: user.role.to_string(),
            admin: user.role == crate::roles::Role::Administrator,
            section,
            token: form_token(headers),
            htmx: HTMX_PATH,
            css: CSS_PATH,
        }
    }
}

/// A template rendered, or a plain error page when rendering fails.
fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!("a dashboard page failed to render: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "This page could not be shown; the server's log says why.",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/problem.html")]
struct Problem {
    layout: Layout,
    message: String,
}

/// A page that says what went wrong, in the dashboard's frame.
fn problem(
    status: StatusCode,
    user: &User,
    headers: &HeaderMap,
    message: impl Into<String>,
) -> Response {
    render(
        status,
        &Problem {
            layout: Layout::new("Connect", user, "content", headers),
            message: message.into(),
        },
    )
}
