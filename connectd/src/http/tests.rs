//! The HTTP layer in process: the real router, sign-in and handlers over a
//! fake identity provider, a fake launcher and a store that fails on
//! demand, so that what a browser or client sees is checked without a
//! network, a directory or a database file.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::{Request, StatusCode};
use axum::Router;
use connect_gcfg::Config;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::{router, AppState};
use crate::accounts::provision::Provisioner;
use crate::config::Settings;
use crate::deploy::Deployer;
use crate::identity::fake::FakeProvider;
use crate::identity::login::Authenticator;
use crate::identity::SignInMethod;
use crate::model::{Content, NewContent};
use crate::roles::Role;
use crate::run::fake::FakeLauncher;
use crate::run::scheduler::Scheduler;
use crate::store::fake::FailingStore;
use crate::store::{ContentStore, Store, TaskStore, UserStore};

pub(super) struct Server {
    pub(super) data: tempfile::TempDir,
    pub(super) store: Arc<FailingStore>,
    pub(super) provider: Arc<FakeProvider>,
    pub(super) app: Router,
}

fn server() -> Server {
    server_with("")
}

/// [`server`] with `gcfg` as its configuration.
pub(super) fn server_with(gcfg: &str) -> Server {
    let data = tempfile::tempdir().expect("data dir");
    let config = Config::parse(gcfg, "test.gcfg").expect("config");
    let mut settings = Settings::from_config(&config).expect("defaults");
    settings.data_dir = data.path().to_path_buf();
    // Deployments chown what they build to RunAs: only root may give it
    // away, anyone may keep it.
    // SAFETY: geteuid has no preconditions.
    settings.run_as = if unsafe { libc::geteuid() } == 0 {
        "nobody".to_owned()
    } else {
        std::env::var("USER").expect("USER names the account running the tests")
    };
    settings.shared_group = None;
    let settings = Arc::new(settings);
    let store = Arc::new(FailingStore::new());
    // The first user ever is an administrator: make it someone else.
    store
        .create_password_user("admin", "", "", "", "x", Role::Administrator)
        .expect("admin");
    let provider = Arc::new(
        FakeProvider::new(SignInMethod::Password)
            .with_person("ada", "secret", &[])
            .with_person("bob", "hunter2", &[]),
    );
    let dyn_store: Arc<dyn Store> = store.clone();
    let auth = Arc::new(Authenticator::new(
        settings.clone(),
        dyn_store.clone(),
        provider.clone(),
        Provisioner::new("/nonexistent/provision.sock".into(), Duration::from_secs(1)),
    ));
    let scheduler = Scheduler::new(
        settings.clone(),
        dyn_store.clone(),
        auth.clone(),
        FakeLauncher::new(),
    );
    let deployer = Deployer::new(settings.clone(), dyn_store.clone(), scheduler.clone());
    let state = Arc::new(AppState::new(
        settings, dyn_store, auth, scheduler, deployer,
    ));
    let peer: SocketAddr = "192.0.2.10:40000".parse().expect("address");
    Server {
        data,
        store,
        provider,
        app: router(state).layer(MockConnectInfo(peer)),
    }
}

pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) set_cookie: Option<String>,
    pub(super) location: Option<String>,
    pub(super) json: Value,
    pub(super) text: String,
}

impl Server {
    pub(super) async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("the router always answers");
        let status = response.status();
        let set_cookie = response
            .headers()
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let location = response
            .headers()
            .get(axum::http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Answer {
            status,
            set_cookie,
            location,
            json,
            text: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn sign_in(&self, username: &str, password: &str) -> Answer {
        let body = serde_json::json!({"username": username, "password": password});
        self.send(
            Request::post("/__login__")
                .header(CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .expect("request"),
        )
        .await
    }

    /// Signs in and returns the Cookie header value of the new session.
    pub(super) async fn session(&self, username: &str, password: &str) -> String {
        let answer = self.sign_in(username, password).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
        let set_cookie = answer.set_cookie.expect("a session cookie");
        set_cookie.split(';').next().expect("name=value").to_owned()
    }

    pub(super) async fn post(
        &self,
        path: &str,
        cookie: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        self.send(
            Request::post(path)
                .header(COOKIE, cookie)
                .header(CONTENT_TYPE, content_type)
                .body(Body::from(body))
                .expect("request"),
        )
        .await
    }

    pub(super) async fn get(&self, path: &str, cookie: &str) -> Answer {
        self.send(
            Request::get(path)
                .header(COOKIE, cookie)
                .body(Body::empty())
                .expect("request"),
        )
        .await
    }

    pub(super) fn content_owned_by(&self, username: &str) -> Content {
        let owner = self
            .store
            .user_by_username(username)
            .expect("read")
            .expect("signed in before");
        // Viewers own nothing.
        self.store
            .set_role(owner.id, Role::Publisher)
            .expect("publisher");
        self.store
            .create_content(&NewContent::open_to_all("app", owner.id))
            .expect("create")
            .expect("a new name")
    }
}

fn user_count(store: &FailingStore) -> u64 {
    store.inner().list_users(None, 0, 1).expect("list").1
}

#[tokio::test]
async fn a_session_from_sign_in_identifies_the_viewer() {
    let server = server();
    let cookie = server.session("ada", "secret").await;
    assert!(cookie.starts_with("connect_session="));

    let me = server.get("/__api__/v1/user", &cookie).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json["username"], "ada");

    let forged = server
        .get("/__api__/v1/user", "connect_session=forged")
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_wrong_password_gets_no_session_and_records_nobody() {
    let server = server();
    let before = user_count(&server.store);
    let answer = server.sign_in("ada", "wrong").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json["error"], "Invalid username or password.");
    assert!(answer.set_cookie.is_none());
    assert_eq!(user_count(&server.store), before);
}

#[tokio::test]
async fn a_dead_database_fails_the_sign_in_cleanly() {
    let server = server();
    let before = user_count(&server.store);
    server.store.fail("record_login");
    let answer = server.sign_in("ada", "secret").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer.set_cookie.is_none());
    assert_eq!(user_count(&server.store), before);

    // The person is recorded, but the session cannot be: still no cookie.
    server.store.recover();
    server.store.fail("create_session");
    let answer = server.sign_in("ada", "secret").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(answer.set_cookie.is_none());

    server.store.recover();
    server.session("ada", "secret").await;
}

#[tokio::test]
async fn a_dead_identity_provider_is_reported_as_unavailable() {
    let server = server();
    server
        .provider
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let answer = server.sign_in("ada", "secret").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.set_cookie.is_none());
}

#[tokio::test]
async fn a_task_run_elsewhere_is_reported_to_those_who_may_change_the_content() {
    let server = server();
    let ada = server.session("ada", "secret").await;
    let bob = server.session("bob", "hunter2").await;
    let content = server.content_owned_by("ada");
    // Another node (or this one before a restart) ran it: only the store
    // knows it.
    let store = server.store.inner();
    store.create_task("t1", content.id, 100).expect("create");
    store
        .append_task_output("t1", 0, &["one".into(), "two".into()])
        .expect("output");
    store.finish_task("t1", 0, "").expect("finish");

    let task = server.get("/__api__/v1/tasks/t1?first=1", &ada).await;
    assert_eq!(task.status, StatusCode::OK, "{}", task.json);
    assert_eq!(task.json["output"], serde_json::json!(["two"]));
    assert_eq!(task.json["finished"], true);
    assert_eq!(task.json["last"], 2);

    // Bob may view the content, not change it: the output is not his.
    let refused = server.get("/__api__/v1/tasks/t1", &bob).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.json["output"].is_null());

    let missing = server.get("/__api__/v1/tasks/none", &ada).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // A database that is down is not "no such task".
    server.store.fail("task");
    let down = server.get("/__api__/v1/tasks/t1", &ada).await;
    assert_eq!(down.status, StatusCode::INTERNAL_SERVER_ERROR);
}

fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        archive
            .append_data(&mut header, name, text.as_bytes())
            .expect("append");
    }
    archive.into_inner().expect("tar").finish().expect("gzip")
}

impl Server {
    /// Ada, made a publisher, and a content item of hers: (session, guid).
    async fn publisher_with_content(&self) -> (String, String) {
        let ada = self.session("ada", "secret").await;
        let me = self
            .store
            .user_by_username("ada")
            .expect("read")
            .expect("ada");
        self.store
            .set_role(me.id, Role::Publisher)
            .expect("publisher");
        let created = self
            .post(
                "/__api__/v1/content",
                &ada,
                "application/json",
                br#"{"name": "site"}"#.to_vec(),
            )
            .await;
        assert_eq!(created.status, StatusCode::OK, "{}", created.json);
        let guid = created.json["guid"].as_str().expect("guid").to_owned();
        (ada, guid)
    }

    /// Uploads a static bundle saying `text` and deploys it to the end.
    async fn deploy_static(&self, session: &str, guid: &str, text: &str) -> i64 {
        let bundle = tar_gz(&[
            (
                "manifest.json",
                r#"{"version": 1, "metadata": {"appmode": "static", "primary_html": "index.html"}}"#,
            ),
            ("index.html", text),
        ]);
        let uploaded = self
            .post(
                &format!("/__api__/v1/content/{guid}/bundles"),
                session,
                "application/gzip",
                bundle,
            )
            .await;
        assert_eq!(uploaded.status, StatusCode::OK, "{}", uploaded.json);
        let id = uploaded.json["id"].as_str().expect("bundle id").to_owned();
        let body = serde_json::json!({ "bundle_id": id }).to_string();
        let deploy = self
            .post(
                &format!("/__api__/v1/content/{guid}/deploy"),
                session,
                "application/json",
                body.into_bytes(),
            )
            .await;
        assert_eq!(deploy.status, StatusCode::OK, "{}", deploy.json);
        let task = deploy.json["task_id"].as_str().expect("task id").to_owned();
        let mut seen = 0;
        for _ in 0..30 {
            let state = self
                .get(
                    &format!("/__api__/v1/tasks/{task}?first={seen}&wait=1"),
                    session,
                )
                .await
                .json;
            seen += state["output"].as_array().map_or(0, Vec::len);
            if state["finished"] == true {
                assert_eq!(state["code"], 0, "{state}");
                return id.parse().expect("numeric id");
            }
        }
        panic!("the deployment of bundle {id} did not finish");
    }
}

#[tokio::test]
async fn old_bundles_beyond_the_retention_limit_are_removed_after_a_deployment() {
    let server = server_with("[Applications]\nBundleRetentionLimit = 2\n");
    let (ada, guid) = server.publisher_with_content().await;
    let mut ids = Vec::new();
    for n in 1..=4 {
        ids.push(
            server
                .deploy_static(&ada, &guid, &format!("<p>{n}</p>"))
                .await,
        );
    }
    let content = server
        .store
        .content_by_guid(&guid)
        .expect("read")
        .expect("content");
    // The live bundle and the one before it.
    assert_eq!(server.store.bundle_ids(content.id).expect("ids"), ids[2..]);
    let bundles = server.data.path().join("apps").join(&guid).join("bundles");
    let mut on_disk: Vec<i64> = std::fs::read_dir(&bundles)
        .expect("bundles dir")
        .map(|e| {
            e.expect("entry")
                .file_name()
                .to_string_lossy()
                .parse()
                .expect("id")
        })
        .collect();
    on_disk.sort_unstable();
    assert_eq!(on_disk, ids[2..]);
    // An upload not yet deployed is never counted against the limit.
    let upload = server
        .post(
            &format!("/__api__/v1/content/{guid}/bundles"),
            &ada,
            "application/gzip",
            tar_gz(&[
                (
                    "manifest.json",
                    r#"{"version": 1, "metadata": {"appmode": "static"}}"#,
                ),
                ("index.html", "<p>next</p>"),
            ]),
        )
        .await;
    assert_eq!(upload.status, StatusCode::OK, "{}", upload.json);
    assert_eq!(server.store.bundle_ids(content.id).expect("ids").len(), 3);
}

#[tokio::test]
async fn a_publisher_uploads_and_deploys_a_bundle_and_reads_its_task() {
    let server = server();
    let (ada, guid) = server.publisher_with_content().await;

    // A broken archive is refused at upload, and leaves no bundle.
    let broken = server
        .post(
            &format!("/__api__/v1/content/{guid}/bundles"),
            &ada,
            "application/gzip",
            b"not a tarball".to_vec(),
        )
        .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST, "{}", broken.json);

    let bundle = tar_gz(&[
        (
            "manifest.json",
            r#"{"version": 1, "metadata": {"appmode": "static", "primary_html": "index.html"}, "files": {"index.html": {}}}"#,
        ),
        ("index.html", "<h1>hello</h1>"),
    ]);
    let uploaded = server
        .post(
            &format!("/__api__/v1/content/{guid}/bundles"),
            &ada,
            "application/gzip",
            bundle,
        )
        .await;
    assert_eq!(uploaded.status, StatusCode::OK, "{}", uploaded.json);
    let bundle_id = uploaded.json["id"].as_str().expect("bundle id").to_owned();

    let deploy = server
        .post(
            &format!("/__api__/v1/content/{guid}/deploy"),
            &ada,
            "application/json",
            serde_json::json!({ "bundle_id": bundle_id })
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(deploy.status, StatusCode::OK, "{}", deploy.json);
    let task_id = deploy.json["task_id"].as_str().expect("task id").to_owned();

    // Read as a client does: from the last line seen, waiting for more.
    let (mut output, mut task) = (Vec::new(), Value::Null);
    for _ in 0..30 {
        task = server
            .get(
                &format!("/__api__/v1/tasks/{task_id}?first={}&wait=1", output.len()),
                &ada,
            )
            .await
            .json;
        output.extend(task["output"].as_array().cloned().unwrap_or_default());
        if task["finished"] == true {
            break;
        }
    }
    assert_eq!(task["finished"], true, "{task}");
    assert_eq!(task["code"], 0, "{task}");
    assert_eq!(task["last"], output.len());
    let output = Value::Array(output).to_string();
    assert!(
        output.contains(&format!("Deployed bundle {bundle_id}")),
        "{output}"
    );

    let content = server
        .get(&format!("/__api__/v1/content/{guid}"), &ada)
        .await;
    assert_eq!(content.json["bundle_id"], bundle_id.as_str());
    assert_eq!(content.json["app_mode"], "static");
}

#[tokio::test]
async fn a_page_on_another_origin_cannot_act_with_the_viewers_cookie() {
    let server = server();
    let ada = server.session("ada", "secret").await;
    let forged = |path: &str, origin: &str| {
        Request::post(path)
            .header(COOKIE, &ada)
            .header("host", "connect.example:3939")
            .header("origin", origin)
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"name": "stolen"}"#))
            .expect("request")
    };
    for path in ["/__api__/v1/keys", "/__logout__"] {
        let answer = server.send(forged(path, "https://evil.example")).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            answer.json
        );
        assert!(
            answer.json["error"]
                .as_str()
                .is_some_and(|e| e.contains("https://evil.example")),
            "{}",
            answer.json
        );
    }
    // The session survived the forged logout.
    let me = server.get("/__api__/v1/user", &ada).await;
    assert_eq!(me.status, StatusCode::OK);
    let ada_id = server
        .store
        .user_by_username("ada")
        .expect("read")
        .expect("ada")
        .id;
    let keys = || {
        server
            .store
            .inner()
            .list_api_keys(ada_id)
            .expect("keys")
            .len()
    };
    assert_eq!(keys(), 0);

    // Login CSRF: signing the victim in as the attacker.
    let login = server
        .send(
            Request::post("/__login__")
                .header("host", "connect.example:3939")
                .header("sec-fetch-site", "cross-site")
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("username=bob&password=hunter2"))
                .expect("request"),
        )
        .await;
    assert_eq!(login.status, StatusCode::FORBIDDEN);
    assert!(login.set_cookie.is_none());

    // The server's own pages, and clients that are not browsers, go on.
    let own = server
        .send(forged("/__api__/v1/keys", "http://connect.example:3939"))
        .await;
    assert_eq!(own.status, StatusCode::CREATED, "{}", own.json);
    assert_eq!(keys(), 1);
    let plain = server
        .send(
            Request::post("/__logout__")
                .header(COOKIE, &ada)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(plain.status, StatusCode::SEE_OTHER);
}
