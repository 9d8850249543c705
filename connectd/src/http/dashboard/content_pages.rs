//! The content list and each content's page: Info, Access (with the
//! process owner), Runtime and Logs, as Connect's settings panel has them.
//! Saving goes through the API's own update ([`apply_update`]), so a form
//! can do exactly what the API would let the same person do, and a crafted
//! post is refused with the same codes.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{problem, redirect, render, sign_in_first, token_refusal, Layout};
use crate::http::content::{
    apply_update, load, load_editable, may_view, read_tail, relation_of, relation_with_groups,
    Fields, LOG_TAIL,
};
use crate::http::shapes::time;
use crate::http::{ApiError, AppState, Viewer};
use crate::model::{AccessType, Content, Relation, User};

/// Content items on one page of the list.
pub const PAGE_SIZE: usize = 25;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
}

pub struct Row {
    pub guid: String,
    pub name: String,
    pub title: String,
    pub owner: String,
    pub app_mode: &'static str,
    pub access: &'static str,
    pub runs_as: String,
    pub processes: usize,
}

#[derive(Template)]
#[template(path = "dashboard/content_list.html")]
struct ContentList {
    layout: Layout,
    /// Said once at the top: the viewer's Unix account is still to come.
    notice: String,
    query: String,
    rows: Vec<Row>,
    total: usize,
    page: usize,
    pages: usize,
}

/// The list's table alone, for htmx's in-place search.
#[derive(Template)]
#[template(path = "dashboard/content_table.html")]
struct ContentTable {
    query: String,
    rows: Vec<Row>,
    total: usize,
    page: usize,
    pages: usize,
}

fn access_label(access: AccessType) -> &'static str {
    match access {
        AccessType::All => "Anyone, no sign-in required",
        AccessType::LoggedIn => "All signed-in users",
        AccessType::Acl => "Specific users or groups",
    }
}

/// Who the content's processes run as, in words.
fn runs_as(app: &AppState, content: &Content) -> String {
    if content.run_as_current_user {
        "the viewer (current user)".into()
    } else {
        match &content.run_as {
            Some(account) => account.clone(),
            None => format!("{} (default)", app.settings.run_as),
        }
    }
}

fn matches(content: &Content, query: &str) -> bool {
    query.is_empty()
        || content.name.to_lowercase().contains(query)
        || content
            .title
            .as_deref()
            .is_some_and(|t| t.to_lowercase().contains(query))
}

pub async fn list(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first("/connect/");
    };
    match list_page(&app, me, &headers, &query) {
        Ok(page) if headers.contains_key("hx-request") => render(
            StatusCode::OK,
            &ContentTable {
                query: page.query,
                rows: page.rows,
                total: page.total,
                page: page.page,
                pages: page.pages,
            },
        ),
        Ok(page) => render(StatusCode::OK, &page),
        Err(e) => problem(e.status, me, &headers, e.message),
    }
}

fn list_page(
    app: &AppState,
    me: &User,
    headers: &HeaderMap,
    query: &ListQuery,
) -> Result<ContentList, ApiError> {
    let needle = query.q.trim().to_lowercase();
    // The person's groups once, not once per item.
    let groups: Vec<i64> = app.store.groups_of(me.id)?.iter().map(|g| g.id).collect();
    let mut visible = Vec::new();
    for content in app.store.list_content()? {
        if !matches(&content, &needle) {
            continue;
        }
        let may = match content.access_type {
            AccessType::All | AccessType::LoggedIn => true,
            AccessType::Acl => {
                relation_with_groups(app, &content, me, &groups)? >= Relation::Viewer
            }
        };
        if may {
            visible.push(content);
        }
    }
    let total = visible.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let page = query.page.unwrap_or(1).clamp(1, pages);
    let mut owners: HashMap<String, String> = HashMap::new();
    let mut rows = Vec::new();
    for content in visible
        .into_iter()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
    {
        let owner = match owners.get(&content.owner_guid) {
            Some(name) => name.clone(),
            None => {
                let name = app
                    .store
                    .user_by_guid(&content.owner_guid)?
                    .map(|u| u.username)
                    .unwrap_or_else(|| "(removed)".into());
                owners.insert(content.owner_guid.clone(), name.clone());
                name
            }
        };
        rows.push(Row {
            guid: content.guid.clone(),
            name: content.name.clone(),
            title: content.title.clone().unwrap_or_default(),
            owner,
            app_mode: content
                .app_mode
                .map(|m| m.as_str())
                .unwrap_or("not deployed"),
            access: access_label(content.access_type),
            runs_as: runs_as(app, &content),
            processes: app.scheduler.running(content.id).len(),
        });
    }
    let notice = if me.needs_provisioning && app.settings.run_as_current_user {
        "Your Unix account is not ready yet; it will be created when you open content."
    } else {
        ""
    };
    Ok(ContentList {
        layout: Layout::new("Content", me, "content", headers),
        notice: notice.into(),
        query: query.q.clone(),
        rows,
        total,
        page,
        pages,
    })
}

/// One person or group given access to a content item.
pub struct AclRow {
    pub id: String,
    pub kind: &'static str,
    pub name: String,
    pub role: &'static str,
}

fn acl_rows(app: &AppState, content: &Content) -> Result<Vec<AclRow>, ApiError> {
    let mut rows = Vec::new();
    for p in app.store.permissions(content.id)? {
        let (kind, name) = if p.principal_type == "group" {
            let name = app
                .store
                .group_by_guid(&p.principal_guid)?
                .map(|g| g.name)
                .unwrap_or_else(|| "(removed group)".into());
            ("group", name)
        } else {
            let name = app
                .store
                .user_by_guid(&p.principal_guid)?
                .map(|u| u.username)
                .unwrap_or_else(|| "(removed user)".into());
            ("user", name)
        };
        rows.push(AclRow {
            id: p.guid,
            kind,
            name,
            role: if p.role == "owner" {
                "collaborator"
            } else {
                "viewer"
            },
        });
    }
    Ok(rows)
}

#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    tab: Option<String>,
    #[serde(default)]
    saved: Option<u8>,
}

/// A scheduler field of the Runtime tab: its value (blank: the server's
/// default, which is shown beside it).
pub struct RuntimeField {
    pub name: &'static str,
    pub label: &'static str,
    pub value: String,
    pub default: String,
    pub hint: &'static str,
}

pub struct JobRow {
    pub key: String,
    pub kind: String,
    pub account: String,
    pub uid: u32,
    pub pid: String,
    pub started: String,
    pub ended: String,
    pub exit_code: String,
    pub running: bool,
}

#[derive(Template)]
#[template(path = "dashboard/content_page.html")]
struct ContentPage {
    layout: Layout,
    guid: String,
    name: String,
    title: String,
    description: String,
    tab: &'static str,
    editable: bool,
    saved: bool,
    /// A refusal of the last save, and the field it is about.
    error: Option<String>,
    error_field: &'static str,
    access_type: &'static str,
    owner_choice: &'static str,
    run_as: String,
    default_run_as: String,
    may_manage_run_as: bool,
    current_user_offered: bool,
    run_as_note: String,
    runtime: Vec<RuntimeField>,
    jobs: Vec<JobRow>,
    processes: usize,
    /// The Processes tab: what runs now, by account, and the last hour.
    groups: Vec<super::processes_pages::AccountGroup>,
    chart: Option<super::processes_pages::Chart>,
    /// The Access tab: who has been given access, by name.
    acl: Vec<AclRow>,
}

fn tab_of(name: Option<&str>, editable: bool) -> &'static str {
    match name {
        Some("access") if editable => "access",
        Some("runtime") if editable => "runtime",
        Some("logs") if editable => "logs",
        Some("processes") if editable => "processes",
        Some("deploy") if editable => "deploy",
        _ => "info",
    }
}

/// The field a refusal is about, by Connect's code.
fn field_of(code: u32) -> &'static str {
    match code {
        54..=58 => "process_owner",
        45 | 113 | 114 => "processes",
        150 | 151 => "timeouts",
        _ => "",
    }
}

fn seconds(d: std::time::Duration) -> String {
    d.as_secs().to_string()
}

#[allow(clippy::too_many_arguments)]
fn content_page(
    app: &AppState,
    me: &User,
    headers: &HeaderMap,
    content: &Content,
    relation: Relation,
    tab: Option<&str>,
    saved: bool,
    error: Option<&ApiError>,
) -> Result<ContentPage, ApiError> {
    let editable = relation >= Relation::Collaborator;
    let tab = tab_of(tab, editable);
    let settings = &app.settings;
    let s = &settings.scheduler;
    let p = &content.process;
    let opt = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
    let runtime = vec![
        RuntimeField {
            name: "min_processes",
            label: "Minimum processes",
            value: opt(p.min_processes),
            default: s.min_processes.to_string(),
            hint: "kept running even with no viewers",
        },
        RuntimeField {
            name: "max_processes",
            label: "Maximum processes",
            value: opt(p.max_processes),
            default: s.max_processes.to_string(),
            hint: "for the content as a whole; with the viewer as process owner, each viewer has their own",
        },
        RuntimeField {
            name: "max_conns_per_process",
            label: "Maximum connections per process",
            value: opt(p.max_conns_per_process),
            default: s.max_conns_per_process.to_string(),
            hint: "",
        },
        RuntimeField {
            name: "load_factor",
            label: "Load factor",
            value: p.load_factor.map(|f| f.to_string()).unwrap_or_default(),
            default: s.load_factor.to_string(),
            hint: "0 to 1: how full a process gets before another starts",
        },
        RuntimeField {
            name: "init_timeout",
            label: "Initial timeout (seconds)",
            value: opt(p.init_timeout),
            default: seconds(s.init_timeout),
            hint: "how long a process may take to start",
        },
        RuntimeField {
            name: "idle_timeout",
            label: "Idle timeout (seconds)",
            value: opt(p.idle_timeout),
            default: seconds(s.idle_timeout),
            hint: "an idle process ends after this",
        },
        RuntimeField {
            name: "connection_timeout",
            label: "Connection timeout (seconds)",
            value: opt(p.connection_timeout),
            default: seconds(s.connection_timeout),
            hint: "",
        },
        RuntimeField {
            name: "read_timeout",
            label: "Read timeout (seconds)",
            value: opt(p.read_timeout),
            default: seconds(s.read_timeout),
            hint: "",
        },
    ];
    let may_manage = crate::content::may_manage_run_as(settings, me, relation);
    let run_as_note = if !may_manage {
        if settings.publishers_can_manage_run_as {
            "Only the content's owner, its collaborators and administrators may change the process owner.".into()
        } else {
            "Only administrators may change the process owner on this server ([Authorization] PublishersCanManageRunAs is off).".into()
        }
    } else if !settings.run_as_current_user {
        "Running as the viewer is off on this server ([Applications] RunAsCurrentUser).".into()
    } else {
        String::new()
    };
    let running: Vec<String> = app
        .scheduler
        .running(content.id)
        .iter()
        .map(|p| p.job.clone())
        .collect();
    let jobs = if tab == "logs" {
        app.store
            .jobs(content.id)?
            .into_iter()
            .rev()
            .take(100)
            .map(|j| JobRow {
                running: running.contains(&j.key),
                key: j.key,
                kind: j.kind,
                account: j.unix_account,
                uid: j.uid,
                pid: j.pid.map(|p| p.to_string()).unwrap_or_default(),
                started: time(j.started_time),
                ended: j.ended_time.map(time).unwrap_or_default(),
                exit_code: j.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(ContentPage {
        layout: Layout::new(
            content
                .title
                .clone()
                .unwrap_or_else(|| content.name.clone()),
            me,
            "content",
            headers,
        ),
        guid: content.guid.clone(),
        name: content.name.clone(),
        title: content.title.clone().unwrap_or_default(),
        description: content.description.clone(),
        tab,
        editable,
        saved,
        error: error.map(super::described),
        error_field: error.map(|e| field_of(e.code)).unwrap_or(""),
        access_type: content.access_type.as_str(),
        owner_choice: if content.run_as_current_user {
            "current_user"
        } else if content.run_as.is_some() {
            "account"
        } else {
            "default"
        },
        run_as: content.run_as.clone().unwrap_or_default(),
        default_run_as: settings.run_as.clone(),
        may_manage_run_as: may_manage,
        current_user_offered: settings.run_as_current_user,
        run_as_note,
        runtime,
        jobs,
        processes: running.len(),
        groups: Vec::new(),
        chart: None,
        acl: if tab == "access" {
            acl_rows(app, content)?
        } else {
            Vec::new()
        },
    })
}

pub async fn page(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Path(guid): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first(&format!("/connect/content/{guid}"));
    };
    let (content, mut page) = match visible_page(
        &app,
        me,
        &headers,
        &guid,
        query.tab.as_deref(),
        query.saved == Some(1),
        None,
    ) {
        Ok(found) => found,
        Err(e) => return problem(e.status, me, &headers, e.message),
    };
    if page.tab == "processes" {
        let names = HashMap::from([(content.id, (content.name.clone(), content.guid.clone()))]);
        let running = app
            .scheduler
            .running(content.id)
            .into_iter()
            .map(|p| (content.id, p))
            .collect();
        let groups = match super::processes_pages::grouped(&app, running, &names).await {
            Ok(groups) => groups,
            Err(e) => return problem(e.status, me, &headers, e.message),
        };
        // The chart's last point is what was just measured for the table.
        let mut samples: Vec<_> = app
            .usage
            .samples()
            .iter()
            .map(|s| s.of_content(content.id))
            .collect();
        samples.push(crate::run::usage::Sample {
            at: chrono::Utc::now().timestamp(),
            processes: groups.iter().map(|g| g.rows.len()).sum(),
            rss_bytes: groups.iter().map(|g| g.bytes).sum(),
            by_content: Vec::new(),
        });
        page.chart = Some(super::processes_pages::chart(&samples));
        page.groups = groups;
    }
    render(StatusCode::OK, &page)
}

/// The fields of one tab's form, in the API's terms: blank numbers are
/// null (the server's default), the process owner becomes `run_as` and
/// `run_as_current_user`. Fields a form did not send stay as they are
/// (a disabled control sends nothing).
fn form_fields(form: &HashMap<String, String>) -> Result<Map<String, Value>, ApiError> {
    let mut map = Map::new();
    let text = |v: &str| {
        if v.trim().is_empty() {
            Value::Null
        } else {
            Value::String(v.trim().to_owned())
        }
    };
    match form.get("tab").map(String::as_str) {
        Some("info") => {
            if let Some(title) = form.get("title") {
                map.insert("title".into(), text(title));
            }
            if let Some(description) = form.get("description") {
                map.insert("description".into(), Value::String(description.clone()));
            }
        }
        Some("access") => {
            if let Some(access) = form.get("access_type") {
                map.insert("access_type".into(), Value::String(access.clone()));
            }
            match form.get("process_owner").map(String::as_str) {
                None => {}
                Some("default") => {
                    map.insert("run_as".into(), Value::Null);
                    map.insert("run_as_current_user".into(), Value::Bool(false));
                }
                Some("account") => {
                    let account = form.get("run_as").map(String::as_str).unwrap_or("");
                    if account.trim().is_empty() {
                        return Err(ApiError::bad_request(
                            "Name the Unix account the content's processes should run as.",
                        ));
                    }
                    map.insert("run_as".into(), text(account));
                    map.insert("run_as_current_user".into(), Value::Bool(false));
                }
                Some("current_user") => {
                    map.insert("run_as_current_user".into(), Value::Bool(true));
                }
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "{other:?} is not a process owner; choose the default account, a \
                         named account or the viewer."
                    )))
                }
            }
        }
        Some("runtime") => {
            for (name, value) in form {
                let is_runtime = matches!(
                    name.as_str(),
                    "min_processes"
                        | "max_processes"
                        | "max_conns_per_process"
                        | "load_factor"
                        | "init_timeout"
                        | "idle_timeout"
                        | "connection_timeout"
                        | "read_timeout"
                );
                if !is_runtime {
                    continue;
                }
                let value = value.trim();
                let parsed = if value.is_empty() {
                    Value::Null
                } else if name == "load_factor" {
                    value
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                        .ok_or_else(|| ApiError::bad_request("The load factor must be a number."))?
                } else if let Ok(n) = value.parse::<u64>() {
                    Value::Number(n.into())
                } else if let Ok(n) = value.parse::<i64>() {
                    // Negative: the API's own check gives Connect's code.
                    Value::Number(n.into())
                } else {
                    return Err(ApiError::bad_request(format!(
                        "{value:?} is not a whole number; leave the field blank for the \
                         server's default."
                    )));
                };
                map.insert(name.clone(), parsed);
            }
        }
        _ => return Err(ApiError::bad_request("The form names no settings tab.")),
    }
    Ok(map)
}

pub async fn save(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Path(guid): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first(&format!("/connect/content/{guid}"));
    };
    if let Some(refused) = token_refusal(&headers, me, form.get("token").map(String::as_str)) {
        return refused;
    }
    let tab = form.get("tab").cloned();
    let result = match form_fields(&form) {
        Ok(map) => apply_update(&app, me, &guid, Fields(map)).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => redirect(&format!(
            "/connect/content/{guid}?tab={}&saved=1",
            tab_of(tab.as_deref(), true)
        )),
        Err(error) => page_with_error(&app, me, &headers, &guid, tab.as_deref(), &error),
    }
}

/// The content's page again, the refusal beside the field it is about.
/// The content `guid`'s page as `me` may see it (not found when they may
/// not), and the content itself.
#[allow(clippy::too_many_arguments)]
fn visible_page(
    app: &AppState,
    me: &User,
    headers: &HeaderMap,
    guid: &str,
    tab: Option<&str>,
    saved: bool,
    error: Option<&ApiError>,
) -> Result<(Content, ContentPage), ApiError> {
    let content = load(app, guid)?;
    if !may_view(app, &content, Some(me))? {
        return Err(ApiError::not_found("content"));
    }
    let relation = relation_of(app, &content, me)?;
    let page = content_page(app, me, headers, &content, relation, tab, saved, error)?;
    Ok((content, page))
}

pub(super) fn page_with_error(
    app: &AppState,
    me: &User,
    headers: &HeaderMap,
    guid: &str,
    tab: Option<&str>,
    error: &ApiError,
) -> Response {
    let shown = visible_page(app, me, headers, guid, tab, false, Some(error));
    match shown {
        Ok((_, page)) => render(error.status, &page),
        Err(e) => problem(e.status, me, headers, e.message),
    }
}

#[derive(Template)]
#[template(path = "dashboard/log.html")]
struct LogPage {
    layout: Layout,
    guid: String,
    key: String,
    text: String,
    running: bool,
}

/// The log alone, which htmx fetches again while the process runs.
#[derive(Template)]
#[template(path = "dashboard/log_text.html")]
struct LogText {
    guid: String,
    key: String,
    text: String,
    running: bool,
}

/// One process's log (its last MiB); while the process runs, htmx fetches
/// it again every two seconds.
pub async fn log(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Path((guid, key)): Path<(String, String)>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first(&format!("/connect/content/{guid}?tab=logs"));
    };
    let found = (|| {
        let (content, _) = load_editable(&app, &guid, me)?;
        let job = app
            .store
            .jobs(content.id)?
            .into_iter()
            .find(|j| j.key == key)
            .ok_or_else(|| ApiError::not_found("process"))?;
        let running = app
            .scheduler
            .running(content.id)
            .iter()
            .any(|p| p.job == job.key);
        Ok::<_, ApiError>((job, running))
    })();
    let (job, running) = match found {
        Ok(found) => found,
        Err(e) => return problem(e.status, me, &headers, e.message),
    };
    let path = job.log_path.clone();
    let text = match tokio::task::spawn_blocking(move || read_tail(&path, LOG_TAIL)).await {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => format!("(the log cannot be read: {e})"),
        Err(e) => return ApiError::internal(e).into_response(),
    };
    if headers.contains_key("hx-request") {
        return render(
            StatusCode::OK,
            &LogText {
                guid,
                key: job.key,
                text,
                running,
            },
        );
    }
    render(
        StatusCode::OK,
        &LogPage {
            layout: Layout::new(format!("Log of {}", job.key), me, "content", &headers),
            guid,
            key: job.key,
            text,
            running,
        },
    )
}
