//! `/content/{guid}/`: static content served from its bundle, interactive
//! content proxied to a process the scheduler picks for this viewer.
//!
//! Viewers get pages, not JSON, when something goes wrong: the reason in
//! words they can pass on, and the details in the server log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde_json::json;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use super::content::may_view;
use super::pages::{escape, page};
use super::{AppState, Viewer, SESSION_COOKIE};
use crate::bundle::{self, AppMode};
use crate::identity::proxy::is_trusted;
use crate::model::Content;
use crate::model::User;
use crate::proxy::{self, Forward, ProxyError};
use crate::run::scheduler::AcquireError;

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    (status, page(title, &format!("<p>{}</p>", escape(message)))).into_response()
}

fn not_deployed() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Not deployed",
        "This content has not been deployed yet.",
    )
}

/// Apps use relative links, which only resolve under a trailing slash.
pub async fn redirect_to_slash(Path(guid): Path<String>, uri: Uri) -> Redirect {
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    Redirect::permanent(&format!("/content/{guid}/{query}"))
}

pub async fn content(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Response {
    let guid = params.get("guid").cloned().unwrap_or_default();
    let content = match app.hot.content(&*app.store, &guid) {
        Ok(Some(content)) => content,
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such content.",
            )
        }
        Err(e) => return super::ApiError::from(e).into_response(),
    };
    let viewer = viewer.0.as_ref();
    match may_view(&app, &content, viewer) {
        Ok(true) => {}
        Ok(false) if viewer.is_none() => {
            let target = format!("/__login__?url={}", request.uri().path());
            return Redirect::to(&target).into_response();
        }
        Ok(false) => {
            return error_page(
                StatusCode::FORBIDDEN,
                "Not allowed",
                "You do not have access to this content. Ask its owner to add you.",
            )
        }
        Err(e) => return e.into_response(),
    }
    match content.app_mode {
        None => not_deployed(),
        Some(AppMode::Static) => serve_static(&app, &content, request).await,
        Some(_) => serve_process(&app, &content, viewer, request).await,
    }
}

async fn serve_static(app: &AppState, content: &Content, request: Request) -> Response {
    let Some(bundle_id) = content.bundle_id else {
        return not_deployed();
    };
    let dir = app.scheduler.layout().bundle_dir(&content.guid, bundle_id);
    let prefix = format!("/content/{}", content.guid);
    let (mut parts, body) = request.into_parts();
    let rest = parts
        .uri
        .path()
        .strip_prefix(&prefix)
        .unwrap_or("/")
        .to_owned();
    // The bundle's primary document answers for the content's root.
    let path = if rest == "/" || rest.is_empty() {
        match bundle::read_manifest(&dir) {
            Ok(m) => format!("/{}", m.primary_html.unwrap_or_else(|| "index.html".into())),
            Err(_) => "/index.html".to_owned(),
        }
    } else {
        rest
    };
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    parts.uri = match format!("{path}{query}").parse() {
        Ok(uri) => uri,
        Err(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The address is not valid.",
            )
        }
    };
    // The manifest is bundle metadata, not content (however the path is
    // spelled: ServeDir decodes percent escapes).
    if percent_decoded(parts.uri.path()).trim_start_matches('/') == "manifest.json" {
        return error_page(StatusCode::NOT_FOUND, "Not found", "There is no such file.");
    }
    let request = Request::from_parts(parts, body);
    let mut response = match ServeDir::new(dir).oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    };
    // Published pages share connectd's origin: a sandboxed page has an
    // origin of its own, so its scripts cannot use a visiting
    // administrator's session against the API.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox allow-scripts allow-forms allow-popups allow-downloads"),
    );
    response
}

/// `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn serve_process(
    app: &AppState,
    content: &Content,
    viewer: Option<&User>,
    request: Request,
) -> Response {
    let credentials = viewer.and_then(|user| {
        let groups = app.hot.groups_of(&*app.store, user.id).unwrap_or_default();
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        HeaderValue::from_str(&json!({ "user": user.username, "groups": names }).to_string()).ok()
    });
    let limits = content.process.effective(&app.settings.scheduler);
    let trust_forwarded_for = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|info| is_trusted(&app.settings.proxy, info.0.ip()));
    // A process can die between being chosen and being connected to (its
    // end not yet noticed). A request without a body can then go to
    // another process; one with a body has been consumed.
    let mut spare = bodiless(&request).then(|| clone_head(&request));
    let mut request = request;
    loop {
        let lease = match app.scheduler.acquire(content, viewer).await {
            Ok(lease) => lease,
            Err(e) => return acquire_error(content, viewer, e),
        };
        let process = lease.process().clone();
        let forward = Forward {
            prefix: format!("/content/{}", content.guid),
            credentials: credentials.clone(),
            read_timeout: limits.read_timeout,
            idle_timeout: Some(limits.connection_timeout),
            guard: Box::new(lease),
            session_cookie: SESSION_COOKIE,
            trust_forwarded_for,
        };
        let error = match proxy::forward(&process.upstream, request, forward).await {
            Ok(response) => return response,
            Err(e) => e,
        };
        tracing::warn!(content = %content.guid, job = %process.job, "proxying failed: {error}");
        // Refused or missing socket: the process is gone. Anything else
        // (a full listen backlog, say) is this request's problem only.
        let gone = matches!(
            &error,
            ProxyError::Connect(e) if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            )
        );
        if gone {
            app.scheduler.retire(&process);
            if let Some(again) = spare.take() {
                request = again;
                continue;
            }
        }
        if !matches!(error, ProxyError::Timeout) {
            if let Some(limit) = process.killed_over_limit(Duration::from_secs(2)).await {
                return error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The application ran out of memory",
                    &format!(
                        "The application was stopped for using more than {}. Other \
                         applications are not affected. Reload to start it again; if it \
                         keeps happening, its owner can make it use less, or an \
                         administrator can raise the limit.",
                        limit
                    ),
                );
            }
        }
        return match error {
            ProxyError::Timeout => error_page(
                StatusCode::GATEWAY_TIMEOUT,
                "No answer",
                "The application did not answer in time (Scheduler ReadTimeout).",
            ),
            _ => error_page(
                StatusCode::BAD_GATEWAY,
                "The application stopped",
                "The application stopped unexpectedly or answered something that is not \
                 HTTP. Reload to start it again; if it keeps failing, its owner can read \
                 the process log.",
            ),
        };
    }
}

/// No body to lose: no Content-Length above zero and no Transfer-Encoding.
fn bodiless(request: &Request) -> bool {
    let headers = request.headers();
    !headers.contains_key(header::TRANSFER_ENCODING)
        && headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}

fn clone_head(request: &Request) -> Request {
    let mut copy = Request::new(axum::body::Body::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    // The client's address, for X-Forwarded-For.
    if let Some(info) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        copy.extensions_mut().insert(*info);
    }
    copy
}

fn acquire_error(content: &Content, viewer: Option<&User>, error: AcquireError) -> Response {
    let who = viewer.map(|u| u.username.as_str()).unwrap_or("anonymous");
    match &error {
        AcquireError::ServerBusy(_) | AcquireError::ContentBusy { .. } => {
            let mut response = error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                &format!("The server is busy: {error}."),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
        AcquireError::Refused(refusal) => {
            tracing::warn!(
                content = %content.guid,
                viewer = %who,
                "refused to launch content: {refusal}"
            );
            let own_account = content.run_as_current_user && viewer.is_some();
            let message = if own_account {
                format!(
                    "This content runs under your own Unix account, and it cannot: {refusal}. \
                     Ask an administrator."
                )
            } else {
                // Not the viewer's account: its details are for the log.
                "The Unix account this content runs as may not run it. Tell the content's \
                 owner or an administrator; the server log says why."
                    .to_owned()
            };
            error_page(StatusCode::FORBIDDEN, "Cannot run this content", &message)
        }
        AcquireError::Provisioning(_) => {
            tracing::error!(content = %content.guid, viewer = %who, "launch failed: {error}");
            error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Your account is not ready",
                &format!("{error}. Try again in a moment; if it persists, tell an administrator."),
            )
        }
        AcquireError::NotDeployed => not_deployed(),
        AcquireError::StartFailed(_) | AcquireError::Internal(_) => {
            tracing::error!(content = %content.guid, viewer = %who, "launch failed: {error}");
            error_page(
                StatusCode::BAD_GATEWAY,
                "The application failed to start",
                &format!(
                    "{error}. Its owner can read the process log \
                     (/__api__/v1/content/{}/jobs).",
                    content.guid
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decoded;

    #[test]
    fn escapes_are_decoded_and_bad_ones_kept() {
        assert_eq!(percent_decoded("/%6danifest.json"), "/manifest.json");
        assert_eq!(percent_decoded("/a%2Fb"), "/a/b");
        assert_eq!(percent_decoded("/50%"), "/50%");
        assert_eq!(percent_decoded("/%zz%4"), "/%zz%4");
    }
}
