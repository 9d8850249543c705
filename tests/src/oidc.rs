//! A real OpenID Connect provider for end-to-end tests, and a browser that
//! signs in through it.
//!
//! [`Idp`] runs `tests/oidc/idp.mjs`: panva's `oidc-provider` (pinned in
//! tests/oidc/package-lock.json; scripts/deps.sh runs `npm ci` there) on a
//! loopback port, with one client and the users of a JSON file that the
//! test may rewrite at any time (a rename at the provider). It can rotate
//! its signing key and, for the refusal tests, alter the next ID token it
//! hands out the way an attacker in the middle would.
//!
//! [`Browser`] is an HTTP client with a cookie jar that follows redirects
//! one by one and fills in the provider's login form, like a person would.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

pub const CLIENT_ID: &str = "connect-tests";
pub const CLIENT_SECRET: &str = "connect-tests-client-secret";

/// A running provider; killed when dropped.
pub struct Idp {
    child: Child,
    pub issuer: String,
    users: PathBuf,
    pub log: PathBuf,
}

/// Where `npm ci` put the provider.
fn idp_dir() -> PathBuf {
    crate::workspace_root().join("tests/oidc")
}

impl Idp {
    /// Starts the provider for a connectd whose callback is
    /// `redirect_uri`, with `users` as `{"<sub>": {"password", "claims"}}`.
    pub fn start(dir: &Path, redirect_uri: &str, users: Value) -> Idp {
        Self::start_with(dir, redirect_uri, users, None)
    }

    /// [`Idp::start`] over https with the certificate and key in `tls`
    /// (`server.pem`, `server.key`, as [`crate::slapd::make_tls`] makes).
    pub fn start_tls(dir: &Path, redirect_uri: &str, users: Value, tls: &Path) -> Idp {
        Self::start_with(dir, redirect_uri, users, Some(tls))
    }

    fn start_with(dir: &Path, redirect_uri: &str, users: Value, tls: Option<&Path>) -> Idp {
        let root = idp_dir();
        assert!(
            root.join("node_modules/oidc-provider").is_dir(),
            "the test OpenID Connect provider is not installed: run scripts/deps.sh (it runs \
             `npm ci` in {})",
            root.display()
        );
        let users_file = dir.join("idp-users.json");
        std::fs::write(&users_file, users.to_string()).expect("write users");
        let log = dir.join("idp.log");
        let file = std::fs::File::create(&log).expect("idp log");
        let mut command = Command::new("node");
        if let Some(tls) = tls {
            command
                .env("IDP_TLS_CERT", tls.join("server.pem"))
                .env("IDP_TLS_KEY", tls.join("server.key"));
        }
        let child = command
            .arg(root.join("idp.mjs"))
            .current_dir(&root)
            .env("IDP_USERS", &users_file)
            .env("IDP_CLIENT_ID", CLIENT_ID)
            .env("IDP_CLIENT_SECRET", CLIENT_SECRET)
            .env("IDP_REDIRECT_URI", redirect_uri)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("start node tests/oidc/idp.mjs");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let issuer = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let issuer = text.lines().find_map(|line| {
                serde_json::from_str::<Value>(line)
                    .ok()
                    .and_then(|v| v["issuer"].as_str().map(str::to_owned))
            });
            if let Some(issuer) = issuer {
                break issuer;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the provider did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Idp {
            child,
            issuer,
            users: users_file,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Replaces the provider's users (takes effect at the next lookup).
    pub fn set_users(&self, users: Value) {
        std::fs::write(&self.users, users.to_string()).expect("write users");
    }

    fn admin(&self, path: &str) -> String {
        let r = reqwest::blocking::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("client")
            .post(format!("{}{path}", self.issuer))
            .send()
            .expect("provider test endpoint");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.text().unwrap_or_default()
    }

    /// Signs with a new key from now on and publishes only that one.
    pub fn rotate_key(&self) -> String {
        self.admin("/__test__/rotate")
    }

    /// Alters the ID token of the next token response (see idp.mjs).
    pub fn tamper_next(&self, mode: &str) {
        self.admin(&format!("/__test__/tamper?mode={mode}"));
    }

    /// The `[Authentication]` and `[OAuth2]` sections for this provider
    /// (plain http to it is allowed, as it is on loopback).
    pub fn connectd_sections(&self, extra_oauth2: &str) -> String {
        self.connectd_sections_without_http(&format!(
            "AllowInsecureLoopbackIssuer = true\n{extra_oauth2}"
        ))
    }

    /// The sections with nothing added: for an https provider.
    pub fn connectd_sections_without_http(&self, extra_oauth2: &str) -> String {
        format!(
            "[Authentication]\nProvider = oauth2\n[OAuth2]\nOpenIDConnectIssuer = {}\n\
             ClientId = {CLIENT_ID}\nClientSecret = {CLIENT_SECRET}\n{extra_oauth2}\n",
            self.issuer
        )
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user entry for [`Idp::start`].
pub fn user(password: &str, claims: Value) -> Value {
    json!({"password": password, "claims": claims})
}

/// The last response of a walk through redirects.
#[derive(Debug)]
pub struct Landing {
    pub status: u16,
    pub url: String,
    pub body: String,
    /// The URL the provider sent the browser back to connectd with.
    pub callback: Option<String>,
}

/// A person at a browser: cookies, redirects, the provider's login form.
pub struct Browser {
    client: reqwest::blocking::Client,
    jar: std::sync::Arc<reqwest::cookie::Jar>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

fn form_action(body: &str) -> Option<String> {
    let start = body.find("<form")?;
    let tag = &body[start..start + body[start..].find('>')?];
    let action = tag.split("action=\"").nth(1)?;
    Some(action[..action.find('"')?].replace("&amp;", "&"))
}

/// Where connectd's sign-in button leads, when `body` is that page: what a
/// person presses to go to the identity provider.
pub(crate) fn sign_in_button(at: &reqwest::Url, status: u16, body: &str) -> Option<reqwest::Url> {
    if status != 200 || !body.contains("action=\"/__login__/start\"") {
        return None;
    }
    let target = body
        .split("name=\"url\" value=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or("/")
        .replace("&amp;", "&");
    let mut start = at.join("/__login__/start").ok()?;
    start.query_pairs_mut().append_pair("url", &target);
    Some(start)
}

/// The `connect_session` cookie `jar` holds for `base`, as `name=value`.
pub(crate) fn session_cookie_in(jar: &reqwest::cookie::Jar, base: &str) -> Option<String> {
    use reqwest::cookie::CookieStore;
    let url = reqwest::Url::parse(base).ok()?;
    let header = jar.cookies(&url)?;
    header
        .to_str()
        .ok()?
        .split("; ")
        .find(|c| c.starts_with("connect_session="))
        .map(str::to_owned)
}

impl Browser {
    pub fn new() -> Self {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        // Only the browser trusts any certificate (as a person would click
        // through); connectd's own client is what the tests check.
        let client = reqwest::blocking::Client::builder()
            .danger_accept_invalid_certs(true)
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Self { client, jar }
    }

    /// The session cookie connectd at `base` gave this browser, as
    /// `name=value`.
    pub fn session_cookie(&self, base: &str) -> Option<String> {
        session_cookie_in(&self.jar, base)
    }

    /// GETs `url` and follows redirects; at the provider's login form it
    /// signs in as `login` with `password` (or presses Cancel when
    /// `password` is `None`).
    pub fn walk(&self, url: &str, login: &str, password: Option<&str>) -> Landing {
        self.walk_until(url, login, password, false)
    }

    /// Signs in at the provider like [`Browser::walk`] but stops before
    /// following the provider's redirect back to connectd: returns that
    /// callback URL (to replay it, alter it, or open it elsewhere).
    pub fn walk_to_callback(&self, url: &str, login: &str, password: &str) -> String {
        let landing = self.walk_until(url, login, Some(password), true);
        match landing.callback {
            Some(callback) => callback,
            None => panic!("no callback reached: {} {}", landing.status, landing.body),
        }
    }

    fn walk_until(
        &self,
        url: &str,
        login: &str,
        password: Option<&str>,
        stop_at_callback: bool,
    ) -> Landing {
        let mut url = reqwest::Url::parse(url).expect("url");
        let mut form: Option<HashMap<&str, &str>> = None;
        let mut callback = None;
        for _ in 0..20 {
            if url.path() == "/__login__/callback" {
                callback = Some(url.to_string());
                if stop_at_callback {
                    return Landing {
                        status: 0,
                        url: url.to_string(),
                        body: String::new(),
                        callback,
                    };
                }
            }
            let response = match form.take() {
                Some(fields) => self.client.post(url.clone()).form(&fields).send(),
                None => self.client.get(url.clone()).send(),
            }
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = response.status().as_u16();
            if let Some(location) = response.headers().get("location") {
                let location = location.to_str().expect("location").to_owned();
                url = url.join(&location).expect("redirect");
                continue;
            }
            let body = response.text().unwrap_or_default();
            if let Some(start) = sign_in_button(&url, status, &body) {
                url = start;
                continue;
            }
            if status == 200 && body.contains("name=\"login\"") && !body.contains("Invalid login") {
                let action = form_action(&body).expect("login form action");
                match password {
                    Some(password) => {
                        url = url.join(&action).expect("action");
                        form = Some(HashMap::from([("login", login), ("password", password)]));
                    }
                    None => {
                        url = url
                            .join(&action.replace("/login", "/abort"))
                            .expect("abort");
                    }
                }
                continue;
            }
            return Landing {
                status,
                url: url.to_string(),
                body,
                callback,
            };
        }
        panic!("more than 20 redirects from {url}");
    }

    /// One GET, no redirects followed.
    pub fn get(&self, url: &str) -> (u16, String) {
        let r = self.client.get(url).send().expect("get");
        let status = r.status().as_u16();
        (status, r.text().unwrap_or_default())
    }

    /// One POST with the session cookie, no redirects followed.
    pub fn post(&self, url: &str) -> (u16, String) {
        let r = self.client.post(url).send().expect("post");
        let status = r.status().as_u16();
        (status, r.text().unwrap_or_default())
    }
}
