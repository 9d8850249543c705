//! The JSON API: the current user, users, groups and API keys, in the
//! shapes of Connect's `/__api__/v1/` endpoints.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::shapes::{check_new_password_user, time, user_json, NewPasswordUser};
use super::{ApiError, AppState, Viewer};
use crate::model::{ApiKey, Group, User};
use crate::roles::Role;
use crate::secrets;

fn group_json(group: &Group) -> Value {
    json!({ "guid": group.guid, "name": group.name, "owner_guid": Value::Null })
}

pub async fn current_user(Extension(viewer): Extension<Viewer>) -> Result<Json<Value>, ApiError> {
    Ok(Json(user_json(viewer.require()?, true)))
}

#[derive(Deserialize)]
pub struct Page {
    prefix: Option<String>,
    page_number: Option<u32>,
    page_size: Option<u32>,
}

pub async fn list_users(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let size = page.page_size.unwrap_or(20).clamp(1, 500);
    let number = page.page_number.unwrap_or(1).max(1);
    let (users, total) = app.store.list_users(
        page.prefix.as_deref(),
        (number - 1).saturating_mul(size),
        size,
    )?;
    let admin = me.role == Role::Administrator;
    Ok(Json(json!({
        "results": users.iter().map(|u| user_json(u, admin || u.id == me.id)).collect::<Vec<_>>(),
        "current_page": number,
        "total": total,
    })))
}

pub async fn get_user(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let user = app
        .store
        .user_by_guid(&guid)?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(user_json(
        &user,
        me.role == Role::Administrator || user.id == me.id,
    )))
}

/// Creates a user of the built-in password provider (administrators only).
pub async fn create_user(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Json(new): Json<NewPasswordUser>,
) -> Result<Response, ApiError> {
    let me = viewer.require()?;
    if me.role != Role::Administrator {
        return Err(ApiError::forbidden("Only administrators can create users."));
    }
    if !app.auth.provider().creates_local_users() {
        return Err(ApiError::bad_request(format!(
            "Users of the {} provider are created when they first sign in.",
            app.settings.provider.as_str()
        )));
    }
    check_new_password_user(&app, &new)?;
    let role = match new.user_role.as_deref() {
        None => app.settings.default_role,
        Some(r) => r.parse::<Role>().map_err(|_| ApiError::unknown_role())?,
    };
    let password = new.password.clone();
    let hash = tokio::task::spawn_blocking(move || secrets::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let user = app.store.create_password_user(
        &new.username,
        &new.first_name,
        &new.last_name,
        &new.email,
        &hash,
        role,
    )?;
    tracing::info!(user = %user.username, role = %user.role, by = %me.username, "user created");
    Ok((StatusCode::CREATED, Json(user_json(&user, true))).into_response())
}

#[derive(Deserialize)]
pub struct UserUpdate {
    user_role: Option<String>,
}

/// Changes a user's role, by Connect's rules: administrators only (23), a
/// known role (112), never the last administrator (61), and never while
/// the identity provider assigns roles.
pub async fn update_user(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(guid): Path<String>,
    Json(update): Json<UserUpdate>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let user = match update.user_role {
        Some(role) => change_role(&app, me, &guid, &role)?,
        None => {
            let user = app
                .store
                .user_by_guid(&guid)?
                .ok_or_else(|| ApiError::not_found("user"))?;
            let full = me.role == Role::Administrator || user.id == me.id;
            return Ok(Json(user_json(&user, full)));
        }
    };
    Ok(Json(user_json(&user, true)))
}

/// Gives the user `guid` the role `role_text`, as `me` may (the dashboard's
/// form comes here too).
pub(super) fn change_role(
    app: &AppState,
    me: &User,
    guid: &str,
    role_text: &str,
) -> Result<User, ApiError> {
    let user = app
        .store
        .user_by_guid(guid)?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let role: Role = role_text.parse().map_err(|_| ApiError::unknown_role())?;
    if me.role != Role::Administrator {
        return Err(ApiError::cannot_give_role());
    }
    if app.settings.mapping.is_automatic() && role != user.role {
        return Err(ApiError::cannot_give_role().with_payload(json!({
            "reason": "Roles are assigned by automatic role mapping \
                       ([Authorization] UserRoleGroupMapping, UserRoleMapping or the \
                       provider's role attribute) at every sign-in. Change the user's groups \
                       or attributes in the identity provider instead."
        })));
    }
    if user.role == Role::Administrator
        && role != Role::Administrator
        && !user.locked
        && app.store.count_administrators()? <= 1
    {
        return Err(ApiError::last_administrator());
    }
    if role != user.role {
        app.store.set_role(user.id, role)?;
        tracing::info!(
            user = %user.username,
            by = %me.username,
            "role changed from {} to {role}",
            user.role
        );
    }
    app.store
        .user_by_guid(guid)?
        .ok_or_else(|| ApiError::not_found("user"))
}

#[derive(Deserialize)]
pub struct LockRequest {
    locked: bool,
}

pub async fn lock_user(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(guid): Path<String>,
    Json(request): Json<LockRequest>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let user = set_locked(&app, me, &guid, request.locked)?;
    Ok(Json(user_json(&user, true)))
}

/// Locks or unlocks the user `guid`, as `me` may.
pub(super) fn set_locked(
    app: &AppState,
    me: &User,
    guid: &str,
    locked: bool,
) -> Result<User, ApiError> {
    if me.role != Role::Administrator {
        return Err(ApiError::forbidden(
            "Only administrators can lock or unlock users.",
        ));
    }
    let user = app
        .store
        .user_by_guid(guid)?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if locked && user.id == me.id {
        return Err(ApiError::bad_request("You cannot lock yourself."));
    }
    if locked
        && user.role == Role::Administrator
        && !user.locked
        && app.store.count_administrators()? <= 1
    {
        return Err(ApiError::bad_request(
            "You cannot lock the only remaining administrator.",
        ));
    }
    app.store.set_locked(user.id, locked)?;
    tracing::info!(
        user = %user.username,
        by = %me.username,
        "{}",
        if locked { "user locked" } else { "user unlocked" }
    );
    app.store
        .user_by_guid(guid)?
        .ok_or_else(|| ApiError::not_found("user"))
}

pub async fn list_groups(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    viewer.require()?;
    let groups = app.store.list_groups(page.prefix.as_deref())?;
    Ok(Json(json!({
        "results": groups.iter().map(group_json).collect::<Vec<_>>(),
        "current_page": 1,
        "total": groups.len(),
    })))
}

pub async fn group_members(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let group = app
        .store
        .group_by_guid(&guid)?
        .ok_or_else(|| ApiError::not_found("group"))?;
    let members = app.store.group_members(group.id)?;
    let admin = me.role == Role::Administrator;
    Ok(Json(json!({
        "results": members.iter().map(|u| user_json(u, admin || u.id == me.id)).collect::<Vec<_>>(),
        "current_page": 1,
        "total": members.len(),
    })))
}

pub async fn list_keys(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let keys = app.store.list_api_keys(me.id)?;
    Ok(Json(Value::Array(
        keys.iter()
            .map(|k| {
                json!({
                    "guid": k.guid,
                    "name": k.name,
                    "created_time": time(k.created_time),
                    "last_used_time": k.last_used_time.map(time),
                })
            })
            .collect(),
    )))
}

#[derive(Deserialize)]
pub struct NewKey {
    name: String,
}

/// Creates an API key; the key itself is shown once, in this reply only.
pub async fn create_key(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Json(new): Json<NewKey>,
) -> Result<Response, ApiError> {
    let me = viewer.require()?;
    let (stored, key) = new_key(&app, me, &new.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "guid": stored.guid,
            "name": stored.name,
            "key": key,
            "created_time": time(stored.created_time),
        })),
    )
        .into_response())
}

/// A new API key of `me` named `name`: what is stored, and the key itself
/// (which nothing keeps).
pub(super) async fn new_key(
    app: &AppState,
    me: &User,
    name: &str,
) -> Result<(ApiKey, String), ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "The key name must be 1 to 100 characters without control characters.",
        ));
    }
    let key = tokio::task::spawn_blocking(secrets::new_api_key)
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let stored = app
        .store
        .create_api_key(me.id, name, &key.key_id, &key.hash)?;
    tracing::info!(user = %me.username, key = %stored.name, "API key created");
    Ok((stored, key.key))
}

pub async fn delete_key(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(guid): Path<String>,
) -> Result<StatusCode, ApiError> {
    let me = viewer.require()?;
    if app.store.delete_api_key(me.id, &guid)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("API key"))
    }
}
