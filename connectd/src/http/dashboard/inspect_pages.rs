//! The nameservice inspector (administrators): for one person, their Unix
//! account as this operating system sees it, through the same libc calls
//! a launch makes (`getpwnam_r`, `getgrouplist`, `getgrgid_r`): uid,
//! primary and supplementary groups, home and shell; whether it is in the
//! shared group; where it came from; and whether content could run as it,
//! with the fix when it could not.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;

use super::{problem, render, sign_in_first, Layout};
use crate::accounts::{runas, unix};
use crate::http::{ApiError, AppState, Viewer};
use crate::identity::AccountSource;
use crate::model::User;
use crate::roles::Role;

pub struct GroupEntry {
    pub gid: u32,
    pub name: String,
    pub shared: bool,
}

#[derive(Template)]
#[template(path = "dashboard/inspect.html")]
struct InspectPage {
    layout: Layout,
    username: String,
    provider: String,
    unique_id: String,
    /// Where the account comes from, in words.
    source: String,
    account_name: String,
    found: bool,
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
    gecos: String,
    groups: Vec<GroupEntry>,
    shared_group: String,
    in_shared_group: bool,
    /// What a launch as the viewer would do.
    verdict: String,
    launch_ok: bool,
    current_user_enabled: bool,
}

/// What the inspector finds for an account name, off the async threads.
struct Found {
    account: Option<unix::Account>,
    groups: Vec<GroupEntry>,
    shared: Option<(String, u32)>,
    check: Result<(), String>,
}

fn look_up(settings: &crate::config::Settings, name: &str) -> Found {
    let shared = runas::shared_group(settings).ok();
    let account = unix::lookup_user(name).ok().flatten();
    let groups = account
        .as_ref()
        .and_then(|a| unix::group_list(a).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|gid| GroupEntry {
            gid,
            name: unix::group_name(gid).ok().flatten().unwrap_or_default(),
            shared: shared.as_ref().is_some_and(|(_, g)| *g == gid),
        })
        .collect();
    let check = runas::check_account(settings, name)
        .map(|_| ())
        .map_err(|refusal| refusal.to_string());
    Found {
        account,
        groups,
        shared,
        check,
    }
}

/// Where the nameservice says the account comes from, in words.
fn binding_words(
    record: Result<Option<connect_proto::v1::Account>, crate::accounts::provision::ProvisionError>,
    provider: &str,
    unique_id: &str,
) -> String {
    let ago = |unix: i64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        match (now - unix).max(0) {
            s if s < 120 => format!("{s} seconds ago"),
            s if s < 7200 => format!("{} minutes ago", s / 60),
            s => format!("{} hours ago", s / 3600),
        }
    };
    match record {
        Ok(Some(a)) => match a.source.as_str() {
            "provisioned" | "" => {
                format!("provisioned by the nameservice for the identity {provider} / {unique_id}")
            }
            "host" => format!(
                "an existing account of this host, bound to the identity {provider} / \
                 {unique_id} by an administrator or a directory the host answers for{}",
                if a.bound_unix > 0 {
                    format!(" ({})", ago(a.bound_unix))
                } else {
                    String::new()
                }
            ),
            directory => format!(
                "an existing {directory} account, bound to the identity {provider} / \
                 {unique_id} {}; last read from the directory {}",
                ago(a.bound_unix),
                ago(a.refreshed_unix)
            ),
        },
        Ok(None) => format!(
            "bound to the identity {provider} / {unique_id}, but the nameservice no longer \
             has it; it is provisioned again at the next sign-in"
        ),
        Err(e) => format!(
            "bound to the identity {provider} / {unique_id} (the nameservice \
             did not say more: {e})"
        ),
    }
}

pub async fn inspect(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    Path(guid): Path<String>,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first(&format!("/connect/people/{guid}/account"));
    };
    if me.role != Role::Administrator {
        return problem(
            StatusCode::FORBIDDEN,
            me,
            &headers,
            "Only administrators may inspect people's Unix accounts.",
        );
    }
    match inspect_page(&app, me, &headers, &guid).await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(e) => problem(e.status, me, &headers, e.message),
    }
}

async fn inspect_page(
    app: &AppState,
    me: &User,
    headers: &HeaderMap,
    guid: &str,
) -> Result<InspectPage, ApiError> {
    let user = app
        .store
        .user_by_guid(guid)?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let (account_name, source) = match app.auth.provider().accounts() {
        AccountSource::Host => (
            Some(user.username.clone()),
            "an account of this host: the PAM provider signs in Unix accounts".to_owned(),
        ),
        AccountSource::Provisioned => match app.store.unix_account(user.id)? {
            Some(name) if !user.needs_provisioning => {
                let record = app
                    .auth
                    .provisioner
                    .account_of(&user.provider, &user.unique_id)
                    .await;
                (
                    Some(name),
                    binding_words(record, &user.provider, &user.unique_id),
                )
            }
            Some(name) => (
                Some(name),
                "bound by the nameservice, to be provisioned again at the next sign-in or \
                 launch (the last attempt failed)"
                    .to_owned(),
            ),
            None => (
                None,
                "none yet: the nameservice provisions one at the next sign-in or launch".to_owned(),
            ),
        },
        AccountSource::None => (
            None,
            format!(
                "none: people of the {} provider have no Unix account, and content runs as \
                 [Applications] RunAs",
                app.settings.provider.as_str()
            ),
        ),
    };
    let settings = app.settings.clone();
    let lookup_name = account_name.clone();
    let found = tokio::task::spawn_blocking(move || lookup_name.map(|n| look_up(&settings, &n)))
        .await
        .map_err(ApiError::internal)?;
    let (shared_group, shared_gid) = found
        .as_ref()
        .and_then(|f| f.shared.clone())
        .unwrap_or_else(|| ("(unresolved)".into(), u32::MAX));
    let account = found.as_ref().and_then(|f| f.account.clone());
    let groups = found
        .as_ref()
        .map(|f| {
            f.groups
                .iter()
                .map(|g| GroupEntry {
                    gid: g.gid,
                    name: g.name.clone(),
                    shared: g.shared,
                })
                .collect()
        })
        .unwrap_or_default();
    let (verdict, launch_ok) = match (&account_name, found.as_ref().map(|f| &f.check)) {
        (Some(name), Some(Ok(()))) => (
            format!(
                "Content with the viewer as process owner would run as {name}, with the groups \
                 above."
            ),
            true,
        ),
        (_, Some(Err(why))) => (format!("A launch would be refused: {why}."), false),
        (None, _) => ("There is no account to launch as yet.".into(), false),
        (Some(_), None) => ("The account could not be looked up.".into(), false),
    };
    Ok(InspectPage {
        layout: Layout::new(
            format!("{}'s Unix account", user.username),
            me,
            "people",
            headers,
        ),
        username: user.username.clone(),
        provider: user.provider.clone(),
        unique_id: user.unique_id.clone(),
        source,
        account_name: account_name.unwrap_or_default(),
        found: account.is_some(),
        uid: account.as_ref().map(|a| a.uid).unwrap_or_default(),
        gid: account.as_ref().map(|a| a.gid).unwrap_or_default(),
        home: account.as_ref().map(|a| a.home.clone()).unwrap_or_default(),
        shell: account
            .as_ref()
            .map(|a| a.shell.clone())
            .unwrap_or_default(),
        gecos: account
            .as_ref()
            .map(|a| a.gecos.clone())
            .unwrap_or_default(),
        in_shared_group: found
            .as_ref()
            .is_some_and(|f| f.groups.iter().any(|g| g.gid == shared_gid)),
        groups,
        shared_group,
        verdict,
        launch_ok,
        current_user_enabled: app.settings.run_as_current_user,
    })
}
