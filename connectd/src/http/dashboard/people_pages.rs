//! People: the users (search; administrators change roles and lock or
//! unlock, with Connect's codes 23, 61 and 112 shown), the groups and
//! their members, and each person's own profile and API keys (a new key
//! is shown once). Changes go through the API's own functions.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{problem, redirect, render, sign_in_first, token_refusal, Layout};
use crate::http::api::{change_role, new_key, set_locked};
use crate::http::shapes::time;
use crate::http::{ApiError, AppState, Viewer};
use crate::model::User;
use crate::roles::Role;

pub const PEOPLE_PAGE_SIZE: u32 = 50;

#[derive(Deserialize, Default)]
pub struct PeopleQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<u32>,
    #[serde(default)]
    saved: Option<String>,
}

pub struct PersonRow {
    pub guid: String,
    pub username: String,
    pub name: String,
    pub email: String,
    pub role: String,
    pub locked: bool,
    pub is_me: bool,
}

#[derive(Template)]
#[template(path = "dashboard/people.html")]
struct PeoplePage {
    layout: Layout,
    query: String,
    rows: Vec<PersonRow>,
    total: u64,
    page: u32,
    pages: u32,
    admin: bool,
    /// Roles come from the identity provider at every sign-in.
    roles_mapped: bool,
    saved: String,
    error: Option<String>,
}

fn person_row(user: &User, me: &User, admin: bool) -> PersonRow {
    PersonRow {
        guid: user.guid.clone(),
        username: user.username.clone(),
        name: format!("{} {}", user.first_name, user.last_name)
            .trim()
            .to_owned(),
        // Addresses are for administrators and the person themselves.
        email: if admin || user.id == me.id {
            user.email.clone()
        } else {
            String::new()
        },
        role: user.role.to_string(),
        locked: user.locked,
        is_me: user.id == me.id,
    }
}

fn people_page(
    app: &AppState,
    me: &User,
    headers: &HeaderMap,
    query: &PeopleQuery,
    error: Option<&ApiError>,
) -> Result<PeoplePage, ApiError> {
    let prefix = query.q.trim();
    let page = query.page.unwrap_or(1).max(1);
    let (users, total) = app.store.list_users(
        (!prefix.is_empty()).then_some(prefix),
        (page - 1).saturating_mul(PEOPLE_PAGE_SIZE),
        PEOPLE_PAGE_SIZE,
    )?;
    let admin = me.role == Role::Administrator;
    let pages = u32::try_from(total.div_ceil(u64::from(PEOPLE_PAGE_SIZE)))
        .unwrap_or(u32::MAX)
        .max(1);
    Ok(PeoplePage {
        layout: Layout::new("People", me, "people", headers),
        query: query.q.clone(),
        rows: users.iter().map(|u| person_row(u, me, admin)).collect(),
        total,
        page: page.min(pages),
        pages,
        admin,
        roles_mapped: app.settings.mapping.is_automatic(),
        // The guid of who was just changed, named from the store: nothing
        // of the query string is shown as it came.
        saved: match query.saved.as_deref() {
            Some(guid) => app
                .store
                .user_by_guid(guid)?
                .map(|u| u.username)
                .unwrap_or_default(),
            None => String::new(),
        },
        error: error.map(super::described),
    })
}

pub async fn people(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Query(query): Query<PeopleQuery>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first("/connect/people");
    };
    match people_page(&app, me, &headers, &query, None) {
        Ok(page) => render(StatusCode::OK, &page),
        Err(e) => problem(e.status, me, &headers, e.message),
    }
}

/// The people page again with `error` at the top, or back to it.
fn after_change(
    app: &AppState,
    me: &User,
    headers: &HeaderMap,
    result: Result<User, ApiError>,
) -> Response {
    match result {
        Ok(user) => redirect(&format!("/connect/people?saved={}", user.guid)),
        Err(error) => match people_page(app, me, headers, &PeopleQuery::default(), Some(&error)) {
            Ok(page) => render(error.status, &page),
            Err(e) => problem(e.status, me, headers, e.message),
        },
    }
}

pub async fn role(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Path(guid): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first("/connect/people");
    };
    if let Some(refused) = token_refusal(&headers, me, form.get("token").map(String::as_str)) {
        return refused;
    }
    let wanted = form.get("role").map(String::as_str).unwrap_or("");
    after_change(&app, me, &headers, change_role(&app, me, &guid, wanted))
}

pub async fn lock(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Path(guid): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first("/connect/people");
    };
    if let Some(refused) = token_refusal(&headers, me, form.get("token").map(String::as_str)) {
        return refused;
    }
    let locked = form.get("locked").map(String::as_str) == Some("1");
    after_change(&app, me, &headers, set_locked(&app, me, &guid, locked))
}

pub struct GroupRow {
    pub guid: String,
    pub name: String,
}

#[derive(Template)]
#[template(path = "dashboard/groups.html")]
struct GroupsPage {
    layout: Layout,
    groups: Vec<GroupRow>,
    selected: String,
    members: Vec<PersonRow>,
}

#[derive(Deserialize, Default)]
pub struct GroupsQuery {
    #[serde(default)]
    group: Option<String>,
}

pub async fn groups(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Query(query): Query<GroupsQuery>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first("/connect/groups");
    };
    let shown = (|| {
        let admin = me.role == Role::Administrator;
        let groups = app.store.list_groups(None)?;
        let (selected, members) = match &query.group {
            Some(guid) => {
                let group = app
                    .store
                    .group_by_guid(guid)?
                    .ok_or_else(|| ApiError::not_found("group"))?;
                let members = app.store.group_members(group.id)?;
                (
                    group.name,
                    members.iter().map(|u| person_row(u, me, admin)).collect(),
                )
            }
            None => (String::new(), Vec::new()),
        };
        Ok::<_, ApiError>(GroupsPage {
            layout: Layout::new("Groups", me, "groups", &headers),
            groups: groups
                .into_iter()
                .map(|g| GroupRow {
                    guid: g.guid,
                    name: g.name,
                })
                .collect(),
            selected,
            members,
        })
    })();
    match shown {
        Ok(page) => render(StatusCode::OK, &page),
        Err(e) => problem(e.status, me, &headers, e.message),
    }
}

pub struct KeyRow {
    pub guid: String,
    pub name: String,
    pub created: String,
    pub last_used: String,
}

#[derive(Template)]
#[template(path = "dashboard/profile.html")]
struct ProfilePage {
    layout: Layout,
    person: PersonRow,
    keys: Vec<KeyRow>,
    /// A key just made: shown this once.
    new_key: Option<(String, String)>,
    error: Option<String>,
}

fn profile_page(
    app: &AppState,
    me: &User,
    headers: &HeaderMap,
    new_key: Option<(String, String)>,
    error: Option<&ApiError>,
) -> Result<ProfilePage, ApiError> {
    let keys = app
        .store
        .list_api_keys(me.id)?
        .into_iter()
        .map(|k| KeyRow {
            guid: k.guid,
            name: k.name,
            created: time(k.created_time),
            last_used: k.last_used_time.map(time).unwrap_or_else(|| "never".into()),
        })
        .collect();
    Ok(ProfilePage {
        layout: Layout::new("Your profile", me, "profile", headers),
        person: person_row(me, me, true),
        keys,
        new_key,
        error: error.map(super::described),
    })
}

pub async fn profile(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first("/connect/profile");
    };
    match profile_page(&app, me, &headers, None, None) {
        Ok(page) => render(StatusCode::OK, &page),
        Err(e) => problem(e.status, me, &headers, e.message),
    }
}

pub async fn create_key(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first("/connect/profile");
    };
    if let Some(refused) = token_refusal(&headers, me, form.get("token").map(String::as_str)) {
        return refused;
    }
    let name = form.get("name").map(String::as_str).unwrap_or("");
    let (status, shown) = match new_key(&app, me, name).await {
        Ok((stored, key)) => (
            StatusCode::OK,
            profile_page(&app, me, &headers, Some((stored.name, key)), None),
        ),
        Err(error) => (
            error.status,
            profile_page(&app, me, &headers, None, Some(&error)),
        ),
    };
    match shown {
        // The key is in this page only: no cache may keep it.
        Ok(page) => {
            let mut response = render(status, &page);
            response.headers_mut().insert(
                CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            response
        }
        Err(e) => problem(e.status, me, &headers, e.message),
    }
}

pub async fn delete_key(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Path(guid): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first("/connect/profile");
    };
    if let Some(refused) = token_refusal(&headers, me, form.get("token").map(String::as_str)) {
        return refused;
    }
    match app.store.delete_api_key(me.id, &guid) {
        Ok(true) => {
            tracing::info!(user = %me.username, "API key deleted");
            redirect("/connect/profile")
        }
        Ok(false) => problem(StatusCode::NOT_FOUND, me, &headers, "No such API key."),
        Err(e) => ApiError::from(e).into_response(),
    }
}
