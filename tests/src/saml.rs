//! A real SAML 2.0 identity provider for end-to-end tests, and a browser
//! that signs in through it.
//!
//! [`Idp`] runs `tests/saml/idp.py`: a small IdP on pysaml2 (pinned in
//! tests/saml/requirements.txt; scripts/deps.sh installs it into
//! tests/saml/.venv), signing with Debian's xmlsec1, on a loopback port,
//! with the users of a JSON file the test may rewrite at any time. For the
//! refusal tests it can shape its next response the way a broken IdP or an
//! attacker would (see `MODES` in idp.py), and sign with a second key its
//! metadata does not hold.
//!
//! [`SamlBrowser`] follows redirects, fills in the IdP's login form and
//! stops at (or posts) the auto-submitting form that carries the
//! SAMLResponse to connectd, like a browser would.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// A running IdP; killed when dropped.
pub struct Idp {
    child: Child,
    pub base: String,
    pub entity_id: String,
    users: PathBuf,
    pub log: PathBuf,
}

fn idp_dir() -> PathBuf {
    crate::workspace_root().join("tests/saml")
}

/// A self-signed RSA certificate and key, `<name>.pem` and `<name>.key`.
pub fn make_key_pair(dir: &Path, name: &str) {
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN={name}")])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.pem")))
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A user entry for [`Idp::start`]: `id` is the persistent NameID.
pub fn user(password: &str, id: &str, username: &str, groups: &[&str], role: &str) -> Value {
    json!({
        "password": password, "id": id, "username": username,
        "first": format!("{username} first"), "last": format!("{username} last"),
        "email": format!("{username}@example.org"), "groups": groups, "role": role,
    })
}

impl Idp {
    /// Starts the IdP with `users` as `{"<login>": user(...)}`.
    pub fn start(dir: &Path, users: Value) -> Idp {
        Self::start_with(dir, users, false)
    }

    /// [`Idp::start`], refusing AuthnRequests that are not signed by the
    /// certificate in the SP's metadata when `require_signed_requests`.
    pub fn start_with(dir: &Path, users: Value, require_signed_requests: bool) -> Idp {
        let root = idp_dir();
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "the test SAML IdP is not installed: run scripts/deps.sh (it installs pysaml2 \
             into {})",
            root.join(".venv").display()
        );
        let keys = dir.join("idp-keys");
        std::fs::create_dir_all(&keys).expect("mkdir");
        make_key_pair(&keys, "idp");
        make_key_pair(&keys, "impostor");
        let users_file = dir.join("saml-users.json");
        std::fs::write(&users_file, users.to_string()).expect("write users");
        let log = dir.join("saml-idp.log");
        let file = std::fs::File::create(&log).expect("idp log");
        let child = Command::new(python)
            .arg(root.join("idp.py"))
            .args(["idp.key", "idp.pem", "impostor.key", "impostor.pem"])
            .current_dir(&keys)
            .env("IDP_USERS", &users_file)
            .env("PYTHONWARNINGS", "ignore")
            .env(
                "IDP_REQUIRE_SIGNED_REQUESTS",
                if require_signed_requests { "1" } else { "0" },
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("start tests/saml/idp.py");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let started = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let line = text
                .lines()
                .find_map(|line| serde_json::from_str::<Value>(line).ok());
            if let Some(line) = line {
                break line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the SAML IdP did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Idp {
            child,
            base: started["base"].as_str().expect("base").to_owned(),
            entity_id: started["entity_id"].as_str().expect("entity").to_owned(),
            users: users_file,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn metadata_url(&self) -> String {
        format!("{}/metadata", self.base)
    }

    /// Replaces the IdP's users (takes effect at the next sign-in).
    pub fn set_users(&self, users: Value) {
        std::fs::write(&self.users, users.to_string()).expect("write users");
    }

    fn admin(&self, path: &str) {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.base))
            .send()
            .expect("IdP test endpoint");
        assert!(
            r.status().is_success(),
            "{path}: {} {}",
            r.status(),
            r.text().unwrap_or_default()
        );
    }

    /// Loads connectd's SP metadata from its `/__login__/metadata`, as an
    /// IdP administrator imports it.
    pub fn trust_sp(&self, metadata_url: &str) {
        self.admin(&format!(
            "/__test__/sp?url={}",
            url::form_urlencoded::byte_serialize(metadata_url.as_bytes()).collect::<String>()
        ));
    }

    /// Shapes the next response (a mode of idp.py's `MODES`).
    pub fn next_response(&self, mode: &str) {
        self.admin(&format!("/__test__/mode?set={mode}"));
    }

    /// Makes `/metadata` fail (500) or serve again.
    pub fn metadata_fails(&self, fail: bool) {
        self.admin(&format!("/__test__/metadata?fail={}", u8::from(fail)));
    }

    /// The `[Authentication]` and `[SAML]` sections for this IdP.
    pub fn connectd_sections(&self, extra_saml: &str) -> String {
        format!(
            "[Authentication]\nProvider = saml\n[SAML]\nIdPMetaDataURL = {}\n\
             AllowInsecureLoopbackMetadata = true\nRoleAttribute = Role\n{extra_saml}",
            self.metadata_url()
        )
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The auto-submitting form an IdP hands the browser for connectd.
#[derive(Debug, Clone)]
pub struct AcsPost {
    pub action: String,
    /// Base64, as the form carries it.
    pub saml_response: String,
    pub relay_state: Option<String>,
}

impl AcsPost {
    /// The response's XML.
    pub fn xml(&self) -> String {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.saml_response)
            .expect("base64");
        String::from_utf8(bytes).expect("utf-8")
    }

    /// The same form carrying `xml` instead.
    pub fn with_xml(&self, xml: &str) -> AcsPost {
        use base64::Engine as _;
        AcsPost {
            saml_response: base64::engine::general_purpose::STANDARD.encode(xml),
            ..self.clone()
        }
    }
}

/// The last response of a walk.
#[derive(Debug)]
pub struct Landing {
    pub status: u16,
    pub url: String,
    pub body: String,
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let value = tag.split(&format!("{name}=\"")).nth(1)?;
    Some(unescape(&value[..value.find('"')?]))
}

/// The action of the page's first form and its inputs' names and values.
fn form(body: &str) -> Option<(String, HashMap<String, String>)> {
    let start = body.find("<form")?;
    let tag = &body[start..start + body[start..].find('>')?];
    let action = attribute(tag, "action")?;
    let mut fields = HashMap::new();
    for input in body[start..].split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap_or(input.len())];
        if let Some(name) = attribute(tag, "name") {
            fields.insert(name, attribute(tag, "value").unwrap_or_default());
        }
    }
    Some((action, fields))
}

/// A person at a browser: cookies, redirects, the IdP's forms.
pub struct SamlBrowser {
    client: reqwest::blocking::Client,
    jar: std::sync::Arc<reqwest::cookie::Jar>,
}

impl Default for SamlBrowser {
    fn default() -> Self {
        Self::new()
    }
}

impl SamlBrowser {
    pub fn new() -> Self {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::blocking::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Self { client, jar }
    }

    /// The session cookie connectd at `base` gave this browser.
    pub fn session_cookie(&self, base: &str) -> Option<String> {
        crate::oidc::session_cookie_in(&self.jar, base)
    }

    /// GETs `url` (and POSTs `form` first, when given), following redirects
    /// to the first page that is not one.
    fn follow(&self, url: &str, mut form: Option<HashMap<String, String>>) -> Landing {
        let mut url = reqwest::Url::parse(url).expect("url");
        for _ in 0..20 {
            let response = match form.take() {
                Some(fields) => self.client.post(url.clone()).form(&fields).send(),
                None => self.client.get(url.clone()).send(),
            }
            .unwrap_or_else(|e| panic!("{url}: {e}"));
            let status = response.status().as_u16();
            if let Some(location) = response.headers().get("location") {
                url = url
                    .join(location.to_str().expect("location"))
                    .expect("redirect");
                continue;
            }
            let body = response.text().unwrap_or_default();
            if let Some(start) = crate::oidc::sign_in_button(&url, status, &body) {
                url = start;
                continue;
            }
            return Landing {
                status,
                url: url.to_string(),
                body,
            };
        }
        panic!("more than 20 redirects from {url}");
    }

    /// GETs `url` and follows its redirects.
    pub fn follow_from(&self, url: &str) -> Landing {
        self.follow(url, None)
    }

    /// Starts at `url` (connectd's sign-in), signs in at the IdP as `login`
    /// and returns the form the IdP would have the browser post.
    pub fn sign_in_at_idp(&self, url: &str, login: &str, password: &str) -> AcsPost {
        let page = self.follow(url, None);
        let (action, mut fields) = form(&page.body)
            .filter(|(_, f)| f.contains_key("login"))
            .unwrap_or_else(|| panic!("no IdP login form at {}: {page:?}", page.url));
        fields.insert("login".into(), login.into());
        fields.insert("password".into(), password.into());
        let action = reqwest::Url::parse(&page.url)
            .and_then(|u| u.join(&action))
            .expect("action");
        let answer = self.follow(action.as_str(), Some(fields));
        acs_post(&answer)
    }

    /// An IdP-initiated sign-in: the form the IdP's portal would post.
    pub fn unsolicited(&self, idp: &Idp, login: &str, relay_state: &str) -> AcsPost {
        let answer = self.follow(
            &format!(
                "{}/__test__/unsolicited?user={login}&relay={}",
                idp.base,
                url::form_urlencoded::byte_serialize(relay_state.as_bytes()).collect::<String>()
            ),
            None,
        );
        acs_post(&answer)
    }

    /// Posts the IdP's form to connectd and follows where it leads.
    pub fn post(&self, post: &AcsPost) -> Landing {
        let mut fields = HashMap::from([("SAMLResponse".to_owned(), post.saml_response.clone())]);
        if let Some(relay) = &post.relay_state {
            fields.insert("RelayState".into(), relay.clone());
        }
        self.follow(&post.action, Some(fields))
    }

    /// Presses "Continue" on connectd's confirmation of a sign-in started at
    /// the IdP (the page `landing` is).
    pub fn confirm(&self, landing: &Landing) -> Landing {
        let (action, fields) = form(&landing.body)
            .filter(|(action, _)| action == "/__login__/confirm")
            .unwrap_or_else(|| panic!("no confirmation form: {landing:?}"));
        let action = reqwest::Url::parse(&landing.url)
            .and_then(|u| u.join(&action))
            .expect("action");
        self.follow(action.as_str(), Some(fields))
    }

    /// The whole sign-in: connectd, the IdP's login, back to connectd.
    pub fn walk(&self, url: &str, login: &str, password: &str) -> Landing {
        let post = self.sign_in_at_idp(url, login, password);
        self.post(&post)
    }

    pub fn get(&self, url: &str) -> (u16, String) {
        let r = self.client.get(url).send().expect("get");
        let status = r.status().as_u16();
        (status, r.text().unwrap_or_default())
    }
}

fn acs_post(page: &Landing) -> AcsPost {
    let (action, fields) = form(&page.body)
        .filter(|(_, f)| f.contains_key("SAMLResponse"))
        .unwrap_or_else(|| panic!("the IdP sent no SAMLResponse form: {page:?}"));
    AcsPost {
        action,
        saml_response: fields["SAMLResponse"].clone(),
        relay_state: fields.get("RelayState").cloned(),
    }
}
