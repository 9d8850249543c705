//! The content API, in the shapes of Connect's `/__api__/v1/content`:
//! create, get, list, update and delete content; upload and deploy bundles;
//! access lists; tasks; and the content's processes with their logs.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::shapes::time;
use super::{ApiError, AppState, Viewer};
use crate::content::{self, Refusal, RunAsChange};
use crate::deploy::UploadError;
use crate::model::{AccessType, Content, ProcessSettings, Relation};
use crate::model::{NewContent, User};
use crate::roles::Role;

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let status = if refusal.forbidden {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, refusal.code, refusal.message)
    }
}

pub fn content_json(app: &AppState, content: &Content) -> Value {
    let base = app
        .settings
        .address
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    let p = &content.process;
    json!({
        "guid": content.guid,
        "name": content.name,
        "title": content.title,
        "description": content.description,
        "access_type": content.access_type.as_str(),
        "owner_guid": content.owner_guid,
        "app_mode": content.app_mode.map(|m| m.as_str()).unwrap_or("unknown"),
        "run_as": content.run_as,
        "run_as_current_user": content.run_as_current_user,
        "min_processes": p.min_processes,
        "max_processes": p.max_processes,
        "max_conns_per_process": p.max_conns_per_process,
        "load_factor": p.load_factor,
        "init_timeout": p.init_timeout,
        "idle_timeout": p.idle_timeout,
        "connection_timeout": p.connection_timeout,
        "read_timeout": p.read_timeout,
        "memory_limit": p.memory_limit,
        "cpu_limit": p.cpu_limit,
        "bundle_id": content.bundle_id.map(|b| b.to_string()),
        "created_time": time(content.created_time),
        "last_deployed_time": content.last_deployed_time.map(time),
        "content_url": format!("{base}/content/{}/", content.guid),
    })
}

/// What `user` is to `content`; administrators count as owners.
pub fn relation_of(app: &AppState, content: &Content, user: &User) -> Result<Relation, ApiError> {
    if user.role == Role::Administrator {
        return Ok(Relation::Owner);
    }
    let groups: Vec<i64> = app
        .hot
        .groups_of(&*app.store, user.id)?
        .iter()
        .map(|g| g.id)
        .collect();
    relation_with_groups(app, content, user, &groups)
}

/// [`relation_of`] with the user's group ids already read: a list of many
/// content items reads them once.
pub(super) fn relation_with_groups(
    app: &AppState,
    content: &Content,
    user: &User,
    groups: &[i64],
) -> Result<Relation, ApiError> {
    if user.role == Role::Administrator {
        return Ok(Relation::Owner);
    }
    let relation = app.store.relation(content, user.id, groups)?;
    // Collaborators publish: a viewer (demoted since, or a member of a
    // group listed as owner) only views, else their deployed code would
    // run as every viewer of current-user content.
    if user.role == Role::Viewer && relation > Relation::Viewer {
        return Ok(Relation::Viewer);
    }
    Ok(relation)
}

/// Whether `viewer` (maybe anonymous) may open the content.
pub fn may_view(
    app: &AppState,
    content: &Content,
    viewer: Option<&User>,
) -> Result<bool, ApiError> {
    Ok(match (content.access_type, viewer) {
        (AccessType::All, _) => true,
        (_, None) => false,
        (AccessType::LoggedIn, Some(_)) => true,
        (AccessType::Acl, Some(user)) => relation_of(app, content, user)? >= Relation::Viewer,
    })
}

pub(super) fn load(app: &AppState, guid: &str) -> Result<Content, ApiError> {
    app.store
        .content_by_guid(guid)?
        .ok_or_else(|| ApiError::not_found("content"))
}

/// The content, if `user` may change it (owner, collaborator, admin).
pub(super) fn load_editable(
    app: &AppState,
    guid: &str,
    user: &User,
) -> Result<(Content, Relation), ApiError> {
    let content = load(app, guid)?;
    let relation = relation_of(app, &content, user)?;
    if relation < Relation::Collaborator {
        if may_view(app, &content, Some(user))? {
            return Err(cannot_change());
        }
        return Err(ApiError::not_found("content"));
    }
    Ok((content, relation))
}

/// For someone who sees the content but may not change it.
fn cannot_change() -> ApiError {
    ApiError::forbidden(
        "You don't have permission to change this content; its owner, its collaborators and \
         administrators can.",
    )
}

/// Fields of a create or update request. `Some(Value::Null)` resets a
/// nullable field to the server default; absent fields are left alone.
pub(super) struct Fields(pub(super) Map<String, Value>);

impl Fields {
    fn string(&self, name: &str) -> Result<Option<Option<String>>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
            Some(_) => Err(ApiError::bad_request(format!("{name} must be a string."))),
        }
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::bad_request(format!(
                "{name} must be true or false."
            ))),
        }
    }

    fn number<T: TryFrom<u64>>(&self, name: &str) -> Result<Option<Option<T>>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => {
                let n = v.as_u64().and_then(|n| T::try_from(n).ok());
                match n {
                    Some(n) => Ok(Some(Some(n))),
                    // Negative or fractional timeouts are Connect's 151.
                    None if name.ends_with("_timeout") && v.is_number() => {
                        Err(Refusal::bad_timeout().into())
                    }
                    None => Err(ApiError::bad_request(format!(
                        "{name} must be a whole number of at least 0, or null."
                    ))),
                }
            }
        }
    }

    fn float(&self, name: &str) -> Result<Option<Option<f64>>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => v
                .as_f64()
                .map(|f| Some(Some(f)))
                .ok_or_else(|| ApiError::bad_request(format!("{name} must be a number or null."))),
        }
    }

    /// Applies the scheduler fields present in the request onto `p`.
    fn process(&self, p: &mut ProcessSettings) -> Result<(), ApiError> {
        if let Some(v) = self.number("min_processes")? {
            p.min_processes = v;
        }
        if let Some(v) = self.number("max_processes")? {
            p.max_processes = v;
        }
        if let Some(v) = self.number("max_conns_per_process")? {
            p.max_conns_per_process = v;
        }
        if let Some(v) = self.float("load_factor")? {
            p.load_factor = v;
        }
        if let Some(v) = self.number("init_timeout")? {
            p.init_timeout = v;
        }
        if let Some(v) = self.number("idle_timeout")? {
            p.idle_timeout = v;
        }
        if let Some(v) = self.number("connection_timeout")? {
            p.connection_timeout = v;
        }
        if let Some(v) = self.number("read_timeout")? {
            p.read_timeout = v;
        }
        if let Some(v) = self.number("memory_limit")? {
            p.memory_limit = v;
        }
        if let Some(v) = self.float("cpu_limit")? {
            p.cpu_limit = v;
        }
        Ok(())
    }

    fn run_as(&self) -> Result<RunAsChange, ApiError> {
        Ok(RunAsChange {
            run_as: self
                .string("run_as")?
                .map(|v| v.filter(|s| !s.trim().is_empty())),
            run_as_current_user: self.bool("run_as_current_user")?,
        })
    }

    fn access_type(&self) -> Result<Option<AccessType>, ApiError> {
        match self.string("access_type")? {
            None | Some(None) => Ok(None),
            Some(Some(s)) => AccessType::parse(&s).map(Some).ok_or_else(|| {
                ApiError::bad_request("access_type must be one of all, logged_in, acl.")
            }),
        }
    }
}

fn fields(body: Value) -> Result<Fields, ApiError> {
    match body {
        Value::Object(map) => Ok(Fields(map)),
        _ => Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        )),
    }
}

/// Connect's RunAs rules; account lookups go through libc, off the runtime.
async fn check_run_as(
    app: &Arc<AppState>,
    user: &User,
    relation: Relation,
    content: Option<&Content>,
    change: &RunAsChange,
) -> Result<(), ApiError> {
    let settings = app.settings.clone();
    let (user, change) = (user.clone(), change.clone());
    let (app_mode, run_as, current_user) = match content {
        Some(c) => (c.app_mode, c.run_as.clone(), c.run_as_current_user),
        None => (None, None, false),
    };
    tokio::task::spawn_blocking(move || {
        content::check_run_as(
            &settings,
            &user,
            relation,
            app_mode,
            (&run_as, current_user),
            &change,
        )
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)
}

pub async fn create(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let me = viewer.require()?;
    let fields = fields(body)?;
    let change = fields.run_as()?;
    // RunAs rules first: they are the stricter, and name Connect's codes.
    check_run_as(&app, me, Relation::Owner, None, &change).await?;
    if me.role == Role::Viewer {
        return Err(ApiError::forbidden(
            "You don't have permission to create content; publishers and administrators can.",
        ));
    }
    let name = fields
        .string("name")?
        .flatten()
        .ok_or_else(|| ApiError::bad_request("name is required."))?;
    if !content::valid_name(&name) {
        return Err(ApiError::bad_request(
            "name must be 1 to 64 letters, digits, '-' or '_'.",
        ));
    }
    let mut process = ProcessSettings::default();
    fields.process(&mut process)?;
    content::check_process_settings(&process, &app.settings.scheduler)?;
    content::check_resource_limits(&process, &app.settings.limits)?;
    let new = NewContent {
        name: name.clone(),
        title: fields.string("title")?.flatten(),
        description: fields.string("description")?.flatten().unwrap_or_default(),
        owner_id: me.id,
        access_type: fields.access_type()?.unwrap_or(AccessType::Acl),
        run_as: change.run_as.flatten(),
        run_as_current_user: change.run_as_current_user.unwrap_or(false),
        process,
    };
    let created = app.store.create_content(&new)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            0,
            format!("You already have content named {name:?}; choose another name."),
        )
    })?;
    tracing::info!(content = %created.guid, name = %created.name, by = %me.username, "content created");
    Ok((StatusCode::OK, Json(content_json(&app, &created))).into_response())
}

pub async fn get(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let content = load(&app, &guid)?;
    if !may_view(&app, &content, Some(me))? {
        return Err(ApiError::not_found("content"));
    }
    Ok(Json(content_json(&app, &content)))
}

pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let mut visible = Vec::new();
    for content in app.store.list_content()? {
        if may_view(&app, &content, Some(me))? {
            visible.push(content_json(&app, &content));
        }
    }
    Ok(Json(Value::Array(visible)))
}

pub async fn update(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(guid): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let content = apply_update(&app, me, &guid, fields(body)?).await?;
    Ok(Json(content_json(&app, &content)))
}

/// Changes content as `me` may, by the API's rules (the dashboard's forms
/// come here too): absent fields stay, null ones go back to the server's
/// default.
pub(super) async fn apply_update(
    app: &Arc<AppState>,
    me: &User,
    guid: &str,
    fields: Fields,
) -> Result<Content, ApiError> {
    let content = load(app, guid)?;
    if !may_view(app, &content, Some(me))? {
        return Err(ApiError::not_found("content"));
    }
    let relation = relation_of(app, &content, me)?;
    let change = fields.run_as()?;
    check_run_as(app, me, relation, Some(&content), &change).await?;
    if relation < Relation::Collaborator {
        return Err(cannot_change());
    }
    let mut content = content;
    if let Some(Some(name)) = fields.string("name")? {
        if !content::valid_name(&name) {
            return Err(ApiError::bad_request(
                "name must be 1 to 64 letters, digits, '-' or '_'.",
            ));
        }
        content.name = name;
    }
    if let Some(title) = fields.string("title")? {
        content.title = title;
    }
    if let Some(description) = fields.string("description")? {
        content.description = description.unwrap_or_default();
    }
    if let Some(access) = fields.access_type()? {
        content.access_type = access;
    }
    if let Some(run_as) = &change.run_as {
        content.run_as = run_as.clone();
    }
    if let Some(current_user) = change.run_as_current_user {
        content.run_as_current_user = current_user;
    }
    let mut process = content.process;
    fields.process(&mut process)?;
    content::check_process_settings(&process, &app.settings.scheduler)?;
    content::check_resource_limits(&process, &app.settings.limits)?;
    let run_changed = process != content.process
        || change.run_as.is_some()
        || change.run_as_current_user.is_some();
    content.process = process;
    app.store.update_content(&content)?;
    if run_changed {
        // Running processes were started under the old settings.
        app.scheduler.drain_content(content.id, None);
    }
    tracing::info!(content = %content.guid, by = %me.username, "content updated");
    Ok(content)
}

pub async fn remove(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    let me = viewer.require()?;
    let (content, relation) = load_editable(&app, &guid, me)?;
    if relation != Relation::Owner {
        return Err(ApiError::forbidden(
            "Only the owner or an administrator can delete content.",
        ));
    }
    app.scheduler.stop_content(content.id);
    app.store.delete_content(content.id)?;
    let (scheduler, id) = (app.scheduler.clone(), content.id);
    let dirs = [
        scheduler.layout().content_dir(&content.guid),
        scheduler.layout().logs_dir(&content.guid),
    ];
    tokio::spawn(async move {
        // Files go once the processes that use them have stopped.
        for _ in 0..200 {
            if scheduler.running(id).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for dir in dirs {
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("could not remove {}: {e}", dir.display());
                }
            }
        }
    });
    tracing::info!(content = %content.guid, by = %me.username, "content deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn upload_bundle(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(guid): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let (content, _) = load_editable(&app, &guid, me)?;
    let bundle_id = upload(&app, me, &content, body).await?;
    Ok(Json(json!({
        "id": bundle_id.to_string(),
        "content_guid": content.guid,
        "created_time": time(crate::store::now()),
    })))
}

/// Stores a bundle `me` uploads for `content` (the dashboard's upload
/// comes here too).
pub(super) async fn upload(
    app: &AppState,
    me: &User,
    content: &Content,
    body: Body,
) -> Result<i64, ApiError> {
    let bundle_id = app
        .deployer
        .upload(content, body)
        .await
        .map_err(|e| match e {
            UploadError::TooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, 0, e.to_string())
            }
            UploadError::Bundle(_) | UploadError::Body(_) => ApiError::bad_request(e.to_string()),
            UploadError::Internal(detail) => ApiError::internal(detail),
        })?;
    tracing::info!(content = %content.guid, bundle_id, by = %me.username, "bundle uploaded");
    Ok(bundle_id)
}

#[derive(Deserialize, Default)]
pub struct DeployRequest {
    bundle_id: Option<String>,
}

pub async fn deploy(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(guid): Path<String>,
    body: Option<Json<DeployRequest>>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let (content, _) = load_editable(&app, &guid, me)?;
    let requested = body.map(|Json(b)| b).unwrap_or_default().bundle_id;
    let bundle_id = match requested {
        Some(id) => id
            .parse::<i64>()
            .ok()
            .filter(|id| app.store.bundle_exists(content.id, *id).unwrap_or(false))
            .ok_or_else(|| ApiError::not_found("bundle"))?,
        None => app
            .store
            .latest_bundle(content.id)?
            .ok_or_else(|| ApiError::bad_request("Upload a bundle before deploying."))?,
    };
    let task = app.deployer.deploy(content, bundle_id);
    Ok(Json(json!({ "task_id": task.id })))
}

#[derive(Deserialize)]
pub struct TaskQuery {
    first: Option<usize>,
    wait: Option<u64>,
}

pub async fn task(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Query(query): Query<TaskQuery>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let mut task = app
        .deployer
        .task(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    // Build output can name paths and packages: only for those who may
    // change the content.
    load_editable(&app, task.content_guid(), me)?;
    let first = query.first.unwrap_or(0);
    if let Some(wait) = query.wait {
        task.wait_for(first, Duration::from_secs(wait.min(30)))
            .await;
    }
    let state = task.snapshot();
    let output: Vec<&String> = state.output.iter().skip(first).collect();
    Ok(Json(json!({
        "id": task.id(),
        "output": output,
        "finished": state.finished,
        "code": state.code,
        "error": state.error,
        "last": state.output.len(),
        "result": Value::Null,
    })))
}

pub async fn permissions(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let (content, _) = load_editable(&app, &guid, me)?;
    let list: Vec<Value> = app
        .store
        .permissions(content.id)?
        .iter()
        .map(|p| permission_json(&content, p))
        .collect();
    Ok(Json(Value::Array(list)))
}

fn permission_json(content: &Content, p: &crate::model::Permission) -> Value {
    json!({
        "id": p.guid,
        "content_guid": content.guid,
        "principal_guid": p.principal_guid,
        "principal_type": p.principal_type,
        "role": p.role,
    })
}

#[derive(Deserialize)]
pub struct NewPermission {
    principal_guid: String,
    principal_type: String,
    role: String,
}

pub async fn add_permission(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(guid): Path<String>,
    Json(new): Json<NewPermission>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let id = grant(
        &app,
        me,
        &guid,
        &new.principal_type,
        &new.principal_guid,
        &new.role,
    )?;
    Ok(Json(json!({
        "id": id,
        "content_guid": guid,
        "principal_guid": new.principal_guid,
        "principal_type": new.principal_type,
        "role": new.role,
    })))
}

/// Gives a user or group `role` (`viewer`, or `owner` for collaborators)
/// on the content `guid`, as `me` may; the permission's id.
pub(super) fn grant(
    app: &AppState,
    me: &User,
    guid: &str,
    principal_type: &str,
    principal_guid: &str,
    role: &str,
) -> Result<String, ApiError> {
    let (content, _) = load_editable(app, guid, me)?;
    if !matches!(role, "viewer" | "owner") {
        return Err(ApiError::bad_request("role must be viewer or owner."));
    }
    let principal_id = match principal_type {
        "user" => {
            let user = app
                .store
                .user_by_guid(principal_guid)?
                .ok_or_else(|| ApiError::not_found("user"))?;
            if role == "owner" && user.role == Role::Viewer {
                return Err(ApiError::bad_request(
                    "Viewers cannot be collaborators; make the user a publisher first.",
                ));
            }
            user.id
        }
        "group" => app
            .store
            .group_id_by_guid(principal_guid)?
            .ok_or_else(|| ApiError::not_found("group"))?,
        _ => {
            return Err(ApiError::bad_request(
                "principal_type must be user or group.",
            ))
        }
    };
    Ok(app
        .store
        .set_permission(content.id, principal_type, principal_id, role)?)
}

pub async fn delete_permission(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path((guid, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let me = viewer.require()?;
    revoke(&app, me, &guid, &id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Removes the permission `id` from the content `guid`, as `me` may.
pub(super) fn revoke(app: &AppState, me: &User, guid: &str, id: &str) -> Result<(), ApiError> {
    let (content, _) = load_editable(app, guid, me)?;
    if !app.store.delete_permission(content.id, id)? {
        return Err(ApiError::not_found("permission"));
    }
    Ok(())
}

pub async fn jobs(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path(guid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let me = viewer.require()?;
    let (content, _) = load_editable(&app, &guid, me)?;
    let running: Vec<String> = app
        .scheduler
        .running(content.id)
        .iter()
        .map(|p| p.job.clone())
        .collect();
    let list: Vec<Value> = app
        .store
        .jobs(content.id)?
        .iter()
        .map(|j| {
            json!({
                "key": j.key,
                "kind": j.kind,
                "bundle_id": j.bundle_id.map(|b| b.to_string()),
                "pid": j.pid,
                "unix_account": j.unix_account,
                "uid": j.uid,
                "viewer_guid": j.viewer_guid,
                "start_time": time(j.started_time),
                "end_time": j.ended_time.map(time),
                "exit_code": j.exit_code,
                "running": running.contains(&j.key),
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

/// The last MiB of a process's log: enough to see why it failed without
/// sending a runaway log whole.
pub(super) const LOG_TAIL: u64 = 1 << 20;

pub async fn job_log(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    Path((guid, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let me = viewer.require()?;
    let (content, _) = load_editable(&app, &guid, me)?;
    let job = app
        .store
        .jobs(content.id)?
        .into_iter()
        .find(|j| j.key == key)
        .ok_or_else(|| ApiError::not_found("job"))?;
    let text = tokio::task::spawn_blocking(move || read_tail(&job.log_path, LOG_TAIL))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::not_found(&format!("log ({e})")))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

pub(super) fn read_tail(path: &str, max: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > max {
        file.seek(SeekFrom::Start(len - max))?;
    }
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
