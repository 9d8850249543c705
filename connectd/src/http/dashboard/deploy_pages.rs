//! Deploying from the dashboard: a bundle chosen with the file picker (or
//! dropped on it) is uploaded and deployed in one step, and the build's log
//! is shown as it grows until the new bundle is live or the build fails.
//! The upload streams to the deployer, which enforces the bundle size
//! limit; the API's own upload and deploy do the work.

use std::sync::Arc;

use askama::Template;
use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;

use super::{problem, redirect, render, sign_in_first, token_matches, Layout};
use crate::http::content::{load_editable, upload};
use crate::http::{ApiError, AppState, Viewer};

/// Uploads the form's bundle and starts deploying it.
pub async fn deploy(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Path(guid): Path<String>,
    mut form: Multipart,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first(&format!("/connect/content/{guid}?tab=deploy"));
    };
    let result = async {
        let (content, _) = load_editable(&app, &guid, me)?;
        // The token comes first in the form, so that nothing is stored
        // for a forged one.
        let mut token_seen = false;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("The upload could not be read: {e}")))?
        {
            match field.name() {
                Some("token") => {
                    // A token is 43 characters: read at most a little more.
                    let mut field = field;
                    let mut sent = Vec::new();
                    while let Some(chunk) = field.chunk().await.map_err(|e| {
                        ApiError::bad_request(format!("The upload could not be read: {e}"))
                    })? {
                        sent.extend_from_slice(&chunk);
                        if sent.len() > 256 {
                            return Err(ApiError::bad_request("The form's token is too long."));
                        }
                    }
                    let sent = String::from_utf8_lossy(&sent);
                    if !token_matches(&headers, &sent) {
                        return Err(ApiError::forbidden(
                            "This form is out of date or did not come from this server's page. \
                             Reload the page and try again.",
                        ));
                    }
                    token_seen = true;
                }
                Some("bundle") if token_seen => {
                    // The field borrows the form, and a body must own its
                    // stream: the chunks cross a small channel, pumped in
                    // this task beside the upload that reads them. When the
                    // upload stops early (too large), the pump stops too.
                    let mut field = field;
                    let (tx, rx) =
                        tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
                    let pump = async move {
                        loop {
                            let chunk = match field.chunk().await {
                                Ok(Some(chunk)) => Ok(chunk),
                                Ok(None) => break,
                                Err(e) => Err(std::io::Error::other(e)),
                            };
                            let failed = chunk.is_err();
                            if tx.send(chunk).await.is_err() || failed {
                                break;
                            }
                        }
                    };
                    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|chunk| (chunk, rx))
                    });
                    let (_, uploaded) =
                        tokio::join!(pump, upload(&app, me, &content, Body::from_stream(chunks)));
                    let task = app.deployer.deploy(content, uploaded?);
                    return Ok(task.id.clone());
                }
                Some("bundle") => {
                    return Err(ApiError::forbidden(
                        "The form's token must come before the bundle; reload the page.",
                    ))
                }
                _ => {}
            }
        }
        Err(ApiError::bad_request(
            "Choose a bundle (a .tar.gz with its manifest.json) to deploy.",
        ))
    }
    .await;
    match result {
        Ok(task) => redirect(&format!("/connect/content/{guid}/tasks/{task}")),
        Err(e) => problem(e.status, me, &headers, e.message),
    }
}

#[derive(Template)]
#[template(path = "dashboard/task.html")]
struct TaskPage {
    layout: Layout,
    guid: String,
    id: String,
    output: Vec<String>,
    finished: bool,
    ok: bool,
    error: String,
}

#[derive(Template)]
#[template(path = "dashboard/task_log.html")]
struct TaskLog {
    guid: String,
    id: String,
    output: Vec<String>,
    finished: bool,
    ok: bool,
    error: String,
}

/// A deployment's progress; htmx fetches it again each second until it
/// has finished.
pub async fn task(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Path((guid, id)): Path<(String, String)>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first(&format!("/connect/content/{guid}"));
    };
    let found = async {
        let task = app
            .deployer
            .task(&id)
            .await?
            .ok_or_else(|| ApiError::not_found("deployment"))?;
        if task.content_guid() != guid {
            return Err(ApiError::not_found("deployment"));
        }
        load_editable(&app, &guid, me)?;
        Ok::<_, ApiError>(task.snapshot())
    }
    .await;
    let state = match found {
        Ok(state) => state,
        Err(e) => return problem(e.status, me, &headers, e.message),
    };
    let ok = state.finished && state.code == 0;
    if headers.contains_key("hx-request") {
        return render(
            StatusCode::OK,
            &TaskLog {
                guid,
                id,
                output: state.output,
                finished: state.finished,
                ok,
                error: state.error,
            },
        );
    }
    render(
        StatusCode::OK,
        &TaskPage {
            layout: Layout::new("Deployment", me, "content", &headers),
            guid,
            id,
            output: state.output,
            finished: state.finished,
            ok,
            error: state.error,
        },
    )
}
