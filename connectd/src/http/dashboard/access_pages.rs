//! The Access tab's forms that give specific users and groups access and
//! take it away, through the API's own permission rules (the list itself
//! is drawn by `content_pages`, which this module builds on).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Form};

use super::content_pages::page_with_error;
use super::{redirect, sign_in_first, token_refusal};
use crate::http::content::{grant, revoke};
use crate::http::{ApiError, AppState, Viewer};

/// Gives a person or a group, named in the Access tab's form, access.
pub async fn add_access(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Path(guid): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first(&format!("/connect/content/{guid}?tab=access"));
    };
    if let Some(refused) = token_refusal(&headers, me, form.get("token").map(String::as_str)) {
        return refused;
    }
    let kind = form
        .get("principal_type")
        .map(String::as_str)
        .unwrap_or("user");
    let name = form.get("name").map(|n| n.trim()).unwrap_or("");
    let role = match form.get("role").map(String::as_str) {
        Some("collaborator") => "owner",
        _ => "viewer",
    };
    let result = (|| {
        let principal_guid = match kind {
            "group" => {
                // Names are not unique (two directories' "Finance", or one a
                // user made at the IdP): a name that is ambiguous is refused
                // rather than a guess giving access to the wrong one.
                let matching: Vec<_> = app
                    .store
                    .list_groups(None)?
                    .into_iter()
                    .filter(|g| g.name == name)
                    .collect();
                if matching.len() > 1 {
                    return Err(ApiError::bad_request(format!(
                        "{} groups are named {name:?} (from {}); give access to one through the \
                         API with its guid instead",
                        matching.len(),
                        matching
                            .iter()
                            .map(|g| format!("{} {}", g.provider, g.unique_id))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                matching.into_iter().next().map(|g| g.guid)
            }
            _ => app.store.user_by_username(name)?.map(|u| u.guid),
        }
        .ok_or_else(|| {
            ApiError::not_found(&format!(
                "{kind} named {name:?} (people and groups are known once they have signed in)"
            ))
        })?;
        grant(&app, me, &guid, kind, &principal_guid, role)
    })();
    match result {
        Ok(_) => redirect(&format!("/connect/content/{guid}?tab=access&saved=1")),
        Err(error) => page_with_error(&app, me, &headers, &guid, Some("access"), &error),
    }
}

/// Takes a person's or group's access away.
pub async fn remove_access(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Path((guid, id)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first(&format!("/connect/content/{guid}?tab=access"));
    };
    if let Some(refused) = token_refusal(&headers, me, form.get("token").map(String::as_str)) {
        return refused;
    }
    match revoke(&app, me, &guid, &id) {
        Ok(()) => redirect(&format!("/connect/content/{guid}?tab=access&saved=1")),
        Err(error) => page_with_error(&app, me, &headers, &guid, Some("access"), &error),
    }
}
