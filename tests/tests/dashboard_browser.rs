//! The dashboard in a real browser (Debian's headless Chromium through
//! chromedriver): a publisher signs in through the sign-in form, finds the
//! content in the list, makes the viewer its process owner on the Access
//! tab, and two directory viewers open the app, each in their own browser,
//! each under their own uid (checked in /proc); the Logs tab then lists
//! both processes with their accounts. Where publishers may not manage the
//! process owner, the control is disabled.
//!
//! Screenshots of the pages at a laptop's and a phone's width go to
//! target/screenshots/, or to docs/screenshots/ with
//! CONNECT_UPDATE_SCREENSHOTS=1 (which is how the README's are made).

use std::path::PathBuf;
use std::time::Duration;

use connect_tests::browser::{self, Chrome};
use connect_tests::connectd::Connectd;
use connect_tests::content::*;
use connect_tests::slapd::Slapd;
use connect_tests::*;
use serde_json::{json, Value};

const LAPTOP: (u32, u32) = (1280, 800);
const PHONE: (u32, u32) = (390, 844);

fn screenshot_dir() -> PathBuf {
    if std::env::var_os("CONNECT_UPDATE_SCREENSHOTS").is_some() {
        workspace_root().join("docs/screenshots")
    } else {
        workspace_root().join("target/screenshots")
    }
}

/// Both widths of the page the browser shows.
fn screenshots(chrome: &Chrome, name: &str) {
    let dir = screenshot_dir();
    chrome.resize(LAPTOP.0, LAPTOP.1);
    chrome.screenshot(&dir.join(format!("{name}-laptop.png")));
    chrome.resize(PHONE.0, PHONE.1);
    chrome.screenshot(&dir.join(format!("{name}-phone.png")));
    chrome.resize(LAPTOP.0, LAPTOP.1);
}

/// Signs in through the sign-in page's form, as a person would.
fn sign_in(chrome: &Chrome, base: &str, username: &str, password: &str) {
    chrome.goto(&format!("{base}/__login__"));
    chrome.fill("input[name=username]", username);
    chrome.fill("input[name=password]", password);
    chrome.click("button[type=submit]");
    chrome.wait_for_text(&format!("{username} <span class=\"badge\">"));
}

/// The JSON the probe app answered in the browser.
fn answer_in(chrome: &Chrome) -> Value {
    let source = chrome.source();
    let start = source.find('{').expect("JSON in the page");
    let end = source.rfind('}').expect("JSON in the page") + 1;
    serde_json::from_str(&source[start..end].replace("&quot;", "\""))
        .unwrap_or_else(|e| panic!("{e}: {source}"))
}

#[test]
fn a_publisher_makes_the_viewer_the_process_owner_and_each_viewer_runs_as_themselves() {
    if need_root() {
        return;
    }
    assert!(
        browser::available(),
        "Chromium and chromedriver are missing: run scripts/deps.sh"
    );
    let slapd = Slapd::start();
    slapd.add_user("carol", "carol pw", "Carol", "Admin", "", &[]);
    slapd.add_user("pat", "pat pw", "Pat", "Publisher", "", &[]);
    slapd.add_user("alice", "alice pw", "Alice", "Liddell", "", &[]);
    slapd.add_user("bob", "bob pw", "Bob", "Builder", "", &[]);
    let mut sandbox = Sandbox::new("");
    sandbox.bind_run_as_account();
    let _daemon = sandbox.start_daemon();
    let server = Connectd::start_in(
        &sandbox,
        &format!(
            "[Authentication]\nProvider = ldap\n{}\
             [Authorization]\nDefaultUserRole = publisher\nPublishersCanManageRunAs = true\n\
             [Applications]\nRunAsCurrentUser = true\nRunAs = connect\n",
            slapd.connectd_section(),
        ),
    );
    let base = format!("http://{}", server.address);
    let carol = server.login("carol", "carol pw").session_cookie(); // the administrator
    let pat = server.login("pat", "pat pw").session_cookie();
    let app = server.create_content(
        &pat,
        json!({"name": "explorer", "title": "Sales explorer", "access_type": "logged_in"}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();

    // Pat, in the browser: the list, the content, its Deploy tab (upload
    // with the file picker, the build log until it is live), its Access tab.
    let chrome = Chrome::start(LAPTOP.0, LAPTOP.1);
    sign_in(&chrome, &base, "pat", "pat pw");
    assert!(chrome.url().ends_with("/connect/"), "{}", chrome.url());
    let list = chrome.wait_for_text("Sales explorer");
    assert!(list.contains("connect (default)"), "who it runs as: {list}");
    screenshots(&chrome, "content-list");
    chrome.click(&format!("a[href='/connect/content/{guid}']"));
    chrome.wait_for_text("Open the content");
    chrome.click("nav.tabs a[href$='tab=deploy']");
    let bundle = sandbox.path("probe.tar.gz");
    std::fs::write(&bundle, probe_bundle()).expect("bundle");
    chrome.choose_file("#bundle", &bundle);
    chrome.click("main form button[type=submit]");
    let deployed = chrome.wait_for_text_within("the new bundle is live", Duration::from_secs(120));
    assert!(deployed.contains("Build log"), "{deployed}");
    screenshots(&chrome, "deploy");
    chrome.goto(&format!("{base}/connect/content/{guid}"));
    chrome.click("nav.tabs a[href$='tab=access']");
    chrome.wait_for_text("Process owner");
    assert_eq!(chrome.enabled("#process_owner"), Some(true));
    chrome.choose("#process_owner", "current_user");
    chrome.click("main form button[type=submit]");
    chrome.wait_for_text("Saved.");
    screenshots(&chrome, "content-access");
    let stored = server.get_with_cookie(&format!("/__api__/v1/content/{guid}"), &pat);
    assert_eq!(
        stored.json()["run_as_current_user"],
        true,
        "{}",
        stored.body
    );

    // Two viewers, each in their own browser, each under their own uid.
    let mut uids = Vec::new();
    for (name, password) in [("alice", "alice pw"), ("bob", "bob pw")] {
        let viewer = Chrome::start(LAPTOP.0, LAPTOP.1);
        sign_in(&viewer, &base, name, password);
        viewer.goto(&format!("{base}/content/{guid}/whoami"));
        let who = answer_in(&viewer);
        let uid = sandbox.uid_of(name);
        assert_eq!(
            proc_uid(host_pid(&who).expect("pid")),
            Some(uid),
            "{name}: {who}"
        );
        uids.push(uid);
    }
    assert_ne!(uids[0], uids[1]);

    // The Logs tab lists both processes with their accounts and uids.
    chrome.goto(&format!("{base}/connect/content/{guid}?tab=logs"));
    let logs = chrome.wait_for_text(&format!("alice ({})", uids[0]));
    assert!(logs.contains(&format!("bob ({})", uids[1])), "{logs}");
    screenshots(&chrome, "content-logs");

    // The Processes tab: one group, one process, per viewer.
    chrome.goto(&format!("{base}/connect/content/{guid}?tab=processes"));
    let processes = chrome.wait_for_text(&format!("alice <span class=\"muted\">(uid {})", uids[0]));
    assert!(
        processes.contains(&format!("bob <span class=\"muted\">(uid {})", uids[1])),
        "{processes}"
    );
    assert_eq!(processes.matches("1 process ·").count(), 2, "{processes}");
    screenshots(&chrome, "content-processes");

    // Carol, administrator, sees it all too: the server's processes with
    // the limits in force; a server where publishers may not manage the
    // process owner shows pat the control disabled.
    let admin = Chrome::start(LAPTOP.0, LAPTOP.1);
    sign_in(&admin, &base, "carol", "carol pw");
    admin.goto(&format!("{base}/connect/processes"));
    let server_page = admin.wait_for_text("Limits in force");
    assert!(
        server_page.contains("<strong>2</strong> content processes running"),
        "{server_page}"
    );
    screenshots(&admin, "server-processes");
    admin.goto(&format!("{base}/connect/content/{guid}?tab=access"));
    assert_eq!(admin.enabled("#process_owner"), Some(true));

    // People: carol makes alice a viewer and locks bob, who then cannot
    // sign in.
    admin.goto(&format!("{base}/connect/people"));
    admin.wait_for_text("Unix account");
    let people = admin.source();
    let guid_of = |name: &str| {
        let at = people
            .find(&format!("Role of {name}"))
            .unwrap_or_else(|| panic!("{name} on the page: {people}"));
        let before = &people[..at];
        let start = before.rfind("/connect/people/").expect("form") + "/connect/people/".len();
        before[start..start + before[start..].find('/').expect("end")].to_owned()
    };
    let (alice_id, bob_id) = (guid_of("alice"), guid_of("bob"));
    admin.choose(&format!("#role-{alice_id}"), "viewer");
    admin.click(&format!(
        "form[action='/connect/people/{alice_id}/role'] button"
    ));
    admin.wait_for_text("Saved alice.");
    admin.click(&format!(
        "form[action='/connect/people/{bob_id}/lock'] button"
    ));
    admin.wait_for_text("Saved bob.");
    let listed = admin.source();
    assert!(listed.contains("Unlock bob"), "{listed}");
    screenshots(&admin, "people");
    let users = server
        .get_with_cookie("/__api__/v1/users?page_size=100", &pat)
        .json();
    let role_of = |name: &str| {
        users["results"]
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["username"] == name)
            .map(|u| (u["user_role"].clone(), u["locked"].clone()))
            .expect("listed")
    };
    assert_eq!(role_of("alice").0, "viewer");
    assert_eq!(role_of("bob").1, true);
    let locked_out = server.login("bob", "bob pw");
    assert_eq!(
        (locked_out.status, locked_out.json()["code"].clone()),
        (403, serde_json::json!(50)),
        "a locked user cannot sign in: {}",
        locked_out.body
    );
    let alice_guid = server
        .get_with_cookie(
            "/__api__/v1/user",
            &server.login("alice", "alice pw").session_cookie(),
        )
        .json()["guid"]
        .as_str()
        .expect("guid")
        .to_owned();
    admin.goto(&format!("{base}/connect/people/{alice_guid}/account"));
    let inspected = admin.wait_for_text("What a launch would do");
    assert!(
        inspected.contains(&format!("<dt>uid</dt><dd>{}</dd>", uids[0])),
        "{inspected}"
    );
    assert!(
        inspected.contains("<dd>yes</dd>"),
        "in the shared group: {inspected}"
    );
    assert!(inspected.contains("would run as alice"), "{inspected}");
    screenshots(&admin, "inspector");
    drop(carol);
    let strict = Connectd::start_in(
        &sandbox,
        &format!(
            "[Authentication]\nProvider = ldap\n{}\
             [Authorization]\nDefaultUserRole = publisher\nPublishersCanManageRunAs = false\n\
             [Applications]\nRunAsCurrentUser = true\nRunAs = connect\n",
            slapd.connectd_section(),
        ),
    );
    let strict_base = format!("http://{}", strict.address);
    strict.login("carol", "carol pw");
    let pat = strict.login("pat", "pat pw").session_cookie();
    let app = strict.create_content(&pat, json!({"name": "report", "access_type": "logged_in"}));
    let other = app["guid"].as_str().expect("guid").to_owned();
    let chrome = Chrome::start(LAPTOP.0, LAPTOP.1);
    sign_in(&chrome, &strict_base, "pat", "pat pw");
    chrome.goto(&format!("{strict_base}/connect/content/{other}?tab=access"));
    let page = chrome.wait_for_text("Only administrators may change the process owner");
    assert_eq!(chrome.enabled("#process_owner"), Some(false), "{page}");
}
