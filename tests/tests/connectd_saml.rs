//! SAML 2.0 sign-in against a real IdP (pysaml2 with xmlsec1, tests/saml),
//! driven like a browser: connectd's redirect with an AuthnRequest, the
//! IdP's login form, its auto-submitting form back to connectd. A new
//! viewer lands with their attributes and mapped role, gets a Unix account
//! from the real nameservice and runs current-user content under it; a
//! rename at the IdP keeps the account; sign-ins started at the IdP work
//! where allowed; and every forged, altered, misdirected, expired or
//! replayed response is refused with its cause in the log, creating nobody.

use std::time::Duration;

use connect_tests::connectd::{connectd_start_refused, free_port, Connectd};
use connect_tests::content::*;
use connect_tests::saml::{make_key_pair, user, AcsPost, Idp, SamlBrowser};
use connect_tests::*;
use serde_json::{json, Value};

fn users() -> Value {
    json!({
        "carol": user("carol pw", "p-carol", "carol", &["admins"], "admin"),
        "alice": user("alice pw", "p-alice", "alice", &["analysts", "staff"], "publisher"),
    })
}

fn server_sections(port: u16) -> String {
    format!("[Server]\nAddress = http://127.0.0.1:{port}\n[HTTP]\nListen = 127.0.0.1:{port}\n")
}

fn base(server: &Connectd) -> String {
    format!("http://{}", server.address)
}

/// A connectd signing in through `idp`, which has imported its metadata.
fn start(dir: &std::path::Path, idp: &Idp, extra: &str, extra_saml: &str) -> Connectd {
    let port = free_port();
    let server = Connectd::start(
        dir,
        &format!(
            "{}{extra}{}",
            server_sections(port),
            idp.connectd_sections(extra_saml)
        ),
    );
    idp.trust_sp(&format!("{}/__login__/metadata", base(&server)));
    server
}

fn sign_in(server: &Connectd, login: &str, password: &str) -> String {
    let browser = SamlBrowser::new();
    let landing = browser.walk(&format!("{}/__login__", base(server)), login, password);
    assert_eq!(
        landing.status,
        200,
        "{login}: {landing:?}\n{}",
        server.log_text()
    );
    browser
        .session_cookie(&base(server))
        .unwrap_or_else(|| panic!("{login} got no session: {landing:?}\n{}", server.log_text()))
}

fn me(server: &Connectd, cookie: &str) -> Value {
    let r = server.get_with_cookie("/__api__/v1/user", cookie);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn usernames(server: &Connectd, admin: &str) -> Vec<String> {
    let users = server.get_with_cookie("/__api__/v1/users", admin).json();
    users["results"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["username"].as_str().map(str::to_owned))
        .collect()
}

fn new_log(server: &Connectd, before: usize) -> String {
    server.log_text()[before..].to_owned()
}

#[test]
fn saml_viewers_are_provisioned_keep_their_account_and_run_as_themselves() {
    if need_root() {
        return;
    }
    let mut sandbox = Sandbox::new("");
    sandbox.bind_run_as_account();
    let _daemon = sandbox.start_daemon();
    let idp = Idp::start(sandbox.dir.path(), users());
    let port = free_port();
    let server = Connectd::start_in(
        &sandbox,
        &format!(
            "{}{}[Authorization]\nUserRoleMapping = true\nPublisherRoleMapping = publisher\n\
             AdministratorRoleMapping = admin\n\
             [Applications]\nRunAsCurrentUser = true\nRunAs = connect\n",
            server_sections(port),
            idp.connectd_sections("SSOInitiated = IdPAndSP\nLogging = true\n"),
        ),
    );
    // connectd's SP metadata, as the IdP's administrator imports it.
    let (status, metadata) =
        SamlBrowser::new().get(&format!("{}/__login__/metadata", base(&server)));
    assert_eq!(status, 200, "{metadata}");
    assert!(
        metadata.contains(&format!("entityID=\"{}/__login__\"", base(&server)))
            && metadata.contains(&format!(
                "Location=\"{}/__login__/callback\"",
                base(&server)
            )),
        "{metadata}"
    );
    idp.trust_sp(&format!("{}/__login__/metadata", base(&server)));

    let carol = sign_in(&server, "carol", "carol pw");
    assert_eq!(me(&server, &carol)["user_role"], "administrator");
    let alice = sign_in(&server, "alice", "alice pw");
    let alice_json = me(&server, &alice);
    assert_eq!(alice_json["username"], "alice", "{alice_json}");
    assert_eq!(alice_json["email"], "alice@example.org");
    assert_eq!(alice_json["first_name"], "alice first");
    assert_eq!(alice_json["last_name"], "alice last");
    assert_eq!(alice_json["user_role"], "publisher");
    assert!(
        !server
            .log_lines_with("Matched 'publisher' as role (publisher)")
            .is_empty(),
        "role mapping logs with Logging = true:\n{}",
        server.log_text()
    );
    assert!(
        !server.log_lines_with("SAML assertion").is_empty(),
        "Logging = true shows the attributes received"
    );
    let groups = server.get_with_cookie("/__api__/v1/groups", &carol).json();
    let names: Vec<&str> = groups["results"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    for group in ["analysts", "staff", "admins"] {
        assert!(names.contains(&group), "{group} in {groups}");
    }

    // The nameservice gave alice an account; current-user content runs
    // under it.
    let alice_uid = sandbox.uid_of("alice");
    let (code, line) = sandbox.getent(&["passwd", "alice"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.starts_with(&format!("alice:x:{alice_uid}:")), "{line}");
    let app = server.create_content(
        &carol,
        json!({"name": "explorer", "access_type": "logged_in", "run_as_current_user": true}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    server.deploy(&carol, &guid, &probe_bundle());
    let who = server.open(&guid, "whoami", Some(&alice)).json();
    assert_eq!(
        proc_uid(host_pid(&who).expect("pid")),
        Some(alice_uid),
        "{who}"
    );

    // A rename at the IdP, and a group left: same person (same persistent
    // NameID), same account; the groups follow the IdP.
    let mut renamed = users();
    renamed["alice"]["username"] = json!("alice.liddell");
    renamed["alice"]["groups"] = json!(["analysts"]);
    idp.set_users(renamed.clone());
    let again = sign_in(&server, "alice", "alice pw");
    let again_json = me(&server, &again);
    assert_eq!(again_json["username"], "alice.liddell", "{again_json}");
    assert_eq!(again_json["guid"], alice_json["guid"], "the same user");
    let (code, line) = sandbox.getent(&["passwd", &alice_uid.to_string()]);
    assert_eq!(code, 0, "the account is still there: {line}");
    let who = server.open(&guid, "whoami", Some(&again)).json();
    assert_eq!(
        proc_uid(host_pid(&who).expect("pid")),
        Some(alice_uid),
        "after the rename content still runs under the same uid: {who}"
    );
    let alice_guid = alice_json["guid"].as_str().expect("guid");
    let staff = groups["results"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == "staff")
        .and_then(|g| g["guid"].as_str())
        .expect("staff")
        .to_owned();
    let members = server
        .get_with_cookie(&format!("/__api__/v1/groups/{staff}/members"), &carol)
        .json();
    assert!(
        !members.to_string().contains(alice_guid),
        "alice left staff at the IdP: {members}"
    );

    // A sign-in started at the IdP's portal (SSOInitiated = IdPAndSP):
    // confirmed by the viewer, it lands on the page its RelayState names.
    let browser = SamlBrowser::new();
    let post = browser.unsolicited(&idp, "alice", &format!("/content/{guid}/"));
    assert!(post.relay_state.is_some());
    let asked = browser.post(&post);
    assert!(
        asked.status == 200 && asked.body.contains("Continue as alice.liddell"),
        "{asked:?}"
    );
    assert!(
        browser.session_cookie(&base(&server)).is_none(),
        "not before the viewer says so"
    );
    let landing = browser.confirm(&asked);
    assert!(
        landing.url.contains(&format!("/content/{guid}/")),
        "{landing:?}\n{}",
        server.log_text()
    );
    let cookie = browser.session_cookie(&base(&server)).expect("session");
    assert_eq!(me(&server, &cookie)["guid"], alice_json["guid"]);
}

/// The prefix `xml` declares for namespace `ns` (pysaml2 writes ns0, ns1...).
fn prefix_of(xml: &str, ns: &str) -> String {
    let declaration = format!("=\"{ns}\"");
    let at = xml
        .find(&declaration)
        .unwrap_or_else(|| panic!("no {ns} in {xml}"));
    let start = xml[..at].rfind("xmlns:").expect("xmlns") + "xmlns:".len();
    xml[start..at].to_owned()
}

const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";

/// Removes every signature element.
fn strip_signatures(xml: &str) -> String {
    strip_signatures_with_prefix(xml, &prefix_of(xml, DSIG))
}

fn strip_signatures_with_prefix(xml: &str, p: &str) -> String {
    let (open, close) = (format!("<{p}:Signature"), format!("</{p}:Signature>"));
    let mut out = xml.to_owned();
    while let Some(start) = out.find(&open) {
        let end = out[start..].find(&close).expect("end") + start;
        out.replace_range(start..end + close.len(), "");
    }
    out
}

/// Where the assertion element of a response starts and ends, and its
/// prefix.
fn assertion_of(xml: &str) -> (usize, usize, String) {
    let p = prefix_of(xml, ASSERTION);
    let start = xml.find(&format!("<{p}:Assertion")).expect("assertion");
    let close = format!("</{p}:Assertion>");
    let end = xml.find(&close).expect("end") + close.len();
    (start, end, p)
}

#[test]
fn every_saml_refusal_says_why_and_creates_nobody() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idp = Idp::start(dir.path(), users());
    let server = start(dir.path(), &idp, "", "");
    let login = format!("{}/__login__", base(&server));
    let carol = sign_in(&server, "carol", "carol pw");

    // Responses the IdP shapes the way a broken IdP or an attacker would.
    let cases = [
        ("unsigned", 403, "signature"),
        ("other_key", 403, "signature"),
        ("wrong_audience", 403, "audience"),
        ("no_audience", 403, "names no audience"),
        ("wrong_recipient", 403, "recipient"),
        ("wrong_destination", 403, "destination"),
        ("expired", 403, "expired"),
        ("failure", 403, "AuthnFailed"),
        ("transient", 500, "transient NameID"),
        ("sha1", 403, "signature"),
    ];
    for (mode, status, cause) in cases {
        let before = server.log_text().len();
        idp.next_response(mode);
        let landing = SamlBrowser::new().walk(&login, "alice", "alice pw");
        assert_eq!(landing.status, status, "{mode}: {landing:?}");
        let log = new_log(&server, before);
        assert!(
            (log.contains("sign-in refused") || log.contains("sign-in failed"))
                && log.to_lowercase().contains(&cause.to_lowercase()),
            "{mode}: the log names the cause ({cause}):\n{log}"
        );
    }
    idp.next_response("failure");
    let landing = SamlBrowser::new().walk(&login, "alice", "alice pw");
    assert!(
        landing.body.contains("could not sign you in"),
        "the IdP's failure in plain words: {}",
        landing.body
    );

    // Responses altered on the way, each from a real sign-in.
    type Alteration = fn(&str) -> String;
    let altered: [(&str, Alteration, &str); 3] = [
        (
            "a modified assertion",
            |xml| xml.replace(">alice<", ">mallory<"),
            "signature",
        ),
        (
            "signatures stripped",
            |xml| strip_signatures(xml),
            "signature",
        ),
        (
            "a forged assertion wrapped around the signed one",
            |xml| {
                let (start, end, p) = assertion_of(xml);
                let signed = &xml[start..end];
                // The forged copy's signature goes, or it would cover the
                // forged ID; xmlns declarations of the response stay.
                let forged = strip_signatures_with_prefix(signed, &prefix_of(xml, DSIG))
                    .replace(">alice<", ">mallory<")
                    .replacen("ID=\"", "ID=\"forged", 1);
                let (open_end, close) = (
                    forged.find('>').expect("tag") + 1,
                    forged.rfind(&format!("</{p}:Assertion>")).expect("end"),
                );
                let wrapped = format!(
                    "{}{}<{p}:Advice>{signed}</{p}:Advice>{}",
                    &forged[..open_end],
                    &forged[open_end..close],
                    &forged[close..]
                );
                format!("{}{wrapped}{}", &xml[..start], &xml[end..])
            },
            "assertions",
        ),
    ];
    for (what, alter, cause) in altered {
        let browser = SamlBrowser::new();
        let post = browser.sign_in_at_idp(&login, "alice", "alice pw");
        let xml = post.xml();
        assert!(xml.contains(">alice<"), "{xml}");
        let changed = alter(&xml);
        assert_ne!(changed, xml, "{what}: the alteration changes the response");
        let before = server.log_text().len();
        let landing = browser.post(&post.with_xml(&changed));
        assert_eq!(landing.status, 403, "{what}: {landing:?}");
        assert!(
            landing.body.contains("could not be verified"),
            "{what}: {}",
            landing.body
        );
        let log = new_log(&server, before);
        assert!(
            log.contains("sign-in refused") && log.contains(cause),
            "{what}: the log names the cause ({cause}):\n{log}"
        );
    }

    // A signature whose reference names another resource: libxmlsec1 would
    // fetch it before checking anything (an unsigned response could have
    // connectd read files or reach internal URLs). Refused unread.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let target = format!("http://{}/fetched", listener.local_addr().expect("addr"));
    for uri in [target.as_str(), "file:///dev/zero"] {
        let browser = SamlBrowser::new();
        let post = browser.sign_in_at_idp(&login, "alice", "alice pw");
        let xml = post.xml();
        let changed = xml.replace(" URI=\"#", &format!(" URI=\"{uri}?"));
        assert_ne!(changed, xml);
        let before = server.log_text().len();
        let landing = browser.post(&post.with_xml(&changed));
        assert_eq!(landing.status, 403, "{uri}: {landing:?}");
        assert!(
            new_log(&server, before).contains("only elements of the response itself"),
            "{uri}: {}",
            new_log(&server, before)
        );
    }
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "connectd fetched the reference"
    );

    // A response posted twice: the first signs in, the second is refused.
    let browser = SamlBrowser::new();
    let post = browser.sign_in_at_idp(&login, "alice", "alice pw");
    assert_eq!(browser.post(&post).status, 200);
    let before = server.log_text().len();
    let landing = browser.post(&post);
    assert_eq!(landing.status, 400, "a replay: {landing:?}");
    assert!(new_log(&server, before).contains("already used"));

    // One browser, two sign-ins: the answer to the first, sent back with
    // the second's RelayState, answers a request that is not this one.
    let browser = SamlBrowser::new();
    let first = browser.sign_in_at_idp(&login, "alice", "alice pw");
    let second = browser.sign_in_at_idp(&login, "alice", "alice pw");
    let before = server.log_text().len();
    let landing = browser.post(&AcsPost {
        relay_state: second.relay_state.clone(),
        ..first.clone()
    });
    assert_eq!(landing.status, 403, "{landing:?}");
    assert!(
        new_log(&server, before).contains("InResponseTo"),
        "{}",
        new_log(&server, before)
    );

    // Login CSRF: an attacker's response, posted from someone else's
    // browser (as an auto-submitting page of the attacker's would).
    let attacker = SamlBrowser::new();
    let post = attacker.sign_in_at_idp(&login, "alice", "alice pw");
    let before = server.log_text().len();
    let landing = SamlBrowser::new().post(&post);
    assert_eq!(landing.status, 400, "{landing:?}");
    assert!(new_log(&server, before).contains("started in another browser"));

    // A sign-in started at the IdP, which SSOInitiated = SP does not take.
    let browser = SamlBrowser::new();
    let post = browser.unsolicited(&idp, "alice", "/");
    let before = server.log_text().len();
    let landing = browser.post(&post);
    assert_eq!(landing.status, 403, "{landing:?}");
    assert!(new_log(&server, before).contains("unsolicited"));

    // Alice was signed in once above (the first post of the replay pair);
    // nobody else but carol was created, and no forged "mallory".
    let names = usernames(&server, &carol);
    assert_eq!(names, ["alice", "carol"], "{names:?}");
    assert!(!idp.log_text().is_empty());
}

#[test]
fn unsolicited_sign_ins_are_single_use_and_answers_stay_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idp = Idp::start(dir.path(), users());
    let server = start(dir.path(), &idp, "", "SSOInitiated = IdPAndSP\n");

    let browser = SamlBrowser::new();
    let post = browser.unsolicited(&idp, "alice", "//evil.example/");
    let asked = browser.post(&post);
    assert_eq!(asked.status, 200, "{asked:?}\n{}", server.log_text());
    assert!(asked.body.contains("Continue as alice"), "{asked:?}");
    let landing = browser.confirm(&asked);
    assert_eq!(landing.status, 200, "{landing:?}\n{}", server.log_text());
    assert!(
        landing.url.starts_with(&base(&server)),
        "an outside RelayState is not followed: {landing:?}"
    );
    assert!(browser.session_cookie(&base(&server)).is_some());

    // Login CSRF with an IdP-started sign-in: the attacker's own response,
    // auto-posted from their page into someone's browser, only asks that
    // person whether they are mallory; a confirmation from elsewhere (or
    // one used twice) signs nobody in.
    let victim = SamlBrowser::new();
    let asked = victim.post(&browser.unsolicited(&idp, "carol", "/"));
    assert!(asked.body.contains("Continue as carol"), "{asked:?}");
    assert!(victim.session_cookie(&base(&server)).is_none());
    let before = server.log_text().len();
    let elsewhere = SamlBrowser::new().confirm(&asked);
    assert_eq!(elsewhere.status, 400, "{elsewhere:?}");
    assert!(new_log(&server, before).contains("another browser"));
    let again = victim.confirm(&asked);
    assert_eq!(
        again.status, 400,
        "a confirmation is used up even when refused: {again:?}"
    );
    assert!(victim.session_cookie(&base(&server)).is_none());
    // The same unsolicited response again: only the replay cache stops it.
    let before = server.log_text().len();
    let landing = SamlBrowser::new().post(&post);
    assert_eq!(landing.status, 403, "{landing:?}");
    assert!(new_log(&server, before).contains("used already"));

    // An answer to a request of connectd's, with the response's own
    // InResponseTo taken out (it is unsigned when only the assertion is
    // signed), still answers that request: not taken as unsolicited.
    idp.next_response("assertion_only");
    let browser = SamlBrowser::new();
    let post = browser.sign_in_at_idp(&format!("{}/__login__", base(&server)), "alice", "alice pw");
    let xml = post.xml();
    let from = xml.find(" InResponseTo=\"").expect("InResponseTo");
    let to = xml[from + 15..].find('"').expect("end") + from + 16;
    let stripped = format!("{}{}", &xml[..from], &xml[to..]);
    let before = server.log_text().len();
    let landing = browser.post(&AcsPost {
        relay_state: None,
        ..post.with_xml(&stripped)
    });
    assert_eq!(landing.status, 403, "{landing:?}");
    assert!(
        new_log(&server, before).contains("answers a sign-in request"),
        "{}",
        new_log(&server, before)
    );
}

#[test]
fn a_comment_in_a_signed_name_id_does_not_make_one_person_another() {
    // XML canonicalization leaves comments out, so a comment put into a
    // signed NameID keeps the signature valid; a reader that stops at the
    // comment would see "p-alice" in mallory's "p-alice.evil".
    let dir = tempfile::tempdir().expect("tempdir");
    let mut people = users();
    people["mallory"] = user("mallory pw", "p-alice.evil", "mallory", &[], "viewer");
    let idp = Idp::start(dir.path(), people);
    let server = start(dir.path(), &idp, "", "");
    let login = format!("{}/__login__", base(&server));
    let alice = sign_in(&server, "alice", "alice pw");
    let alice_guid = me(&server, &alice)["guid"].clone();

    let browser = SamlBrowser::new();
    let post = browser.sign_in_at_idp(&login, "mallory", "mallory pw");
    let xml = post.xml();
    assert!(xml.contains(">p-alice.evil<"), "{xml}");
    let landing =
        browser.post(&post.with_xml(&xml.replace(">p-alice.evil<", ">p-alice<!---->.evil<")));
    if landing.status == 200 {
        let cookie = browser.session_cookie(&base(&server)).expect("session");
        let who = me(&server, &cookie);
        assert_ne!(who["guid"], alice_guid, "mallory became alice: {who}");
        assert_eq!(who["username"], "mallory", "{who}");
    } else {
        assert_eq!(landing.status, 403, "{landing:?}");
    }
}

#[test]
fn metadata_that_cannot_be_read_stops_start_up_and_later_the_last_copy_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing answers at the metadata URL: connectd does not start.
    let dead = format!("http://127.0.0.1:{}/metadata", free_port());
    let out = connectd_start_refused(
        dir.path(),
        &format!(
            "{}[Authentication]\nProvider = saml\n[SAML]\nIdPMetaDataURL = {dead}\n\
             AllowInsecureLoopbackMetadata = true\n",
            server_sections(free_port())
        ),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("IdPMetaDataURL") && text.contains("cannot be read"),
        "{text}"
    );

    // Metadata without a signing certificate: without one nothing could be
    // verified, so connectd does not start.
    let idp = Idp::start(dir.path(), users());
    let unsigned = dir.path().join("no-certs.xml");
    let (_, metadata) = SamlBrowser::new().get(&idp.metadata_url());
    let from = metadata.find("<ns0:KeyDescriptor").expect("key");
    let to = metadata.find("</ns0:KeyDescriptor>").expect("end") + "</ns0:KeyDescriptor>".len();
    std::fs::write(
        &unsigned,
        format!("{}{}", &metadata[..from], &metadata[to..]),
    )
    .expect("write");
    let out = connectd_start_refused(
        dir.path(),
        &format!(
            "{}[Authentication]\nProvider = saml\n[SAML]\nIdPMetaDataURL = {}\n",
            server_sections(free_port()),
            unsigned.display()
        ),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("no signing certificate"), "{text}");

    // Read at start, then the metadata URL fails: the copy in hand serves.
    let server = start(dir.path(), &idp, "", "MetadataRefreshInterval = 1s\n");
    idp.metadata_fails(true);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server
        .log_lines_with("cannot refresh the SAML IdP's metadata")
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh failure logged:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sign_in(&server, "alice", "alice pw");
    assert_eq!(
        server
            .log_lines_with("cannot refresh the SAML IdP's metadata")
            .len(),
        1,
        "logged once, not at every retry"
    );
    idp.metadata_fails(false);
}

#[test]
fn requests_are_signed_with_the_sp_key_for_an_idp_that_requires_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idp = Idp::start_with(dir.path(), users(), true);
    make_key_pair(dir.path(), "sp");
    let signed = start(
        dir.path(),
        &idp,
        "",
        &format!(
            "SPCertificateFile = {}\nSPPrivateKeyFile = {}\n",
            dir.path().join("sp.pem").display(),
            dir.path().join("sp.key").display()
        ),
    );
    let (_, metadata) = SamlBrowser::new().get(&format!("{}/__login__/metadata", base(&signed)));
    assert!(
        metadata.contains("AuthnRequestsSigned=\"true\"") && metadata.contains("X509Certificate"),
        "the SP metadata carries the certificate: {metadata}"
    );
    sign_in(&signed, "alice", "alice pw");
    assert!(
        idp.log_text().contains("idp: signed AuthnRequest"),
        "{}",
        idp.log_text()
    );

    // The same IdP refuses a server that does not sign: it does check.
    let sub = dir.path().join("unsigned");
    std::fs::create_dir(&sub).expect("mkdir");
    let unsigned = start(&sub, &idp, "", "");
    let browser = SamlBrowser::new();
    let (status, body) = browser.get(&format!("{}/__login__/start", base(&unsigned)));
    assert_eq!(status, 303, "{body}");
    let landing = browser.follow_from(&format!("{}/__login__", base(&unsigned)));
    assert!(
        landing.status == 500 && landing.body.contains("IncorrectlySigned"),
        "{landing:?}"
    );

    // A key that is not the certificate's stops start-up.
    make_key_pair(dir.path(), "other");
    let out = connectd_start_refused(
        dir.path(),
        &format!(
            "{}{}",
            server_sections(free_port()),
            idp.connectd_sections(&format!(
                "SPCertificateFile = {}\nSPPrivateKeyFile = {}\n",
                dir.path().join("sp.pem").display(),
                dir.path().join("other.key").display()
            ))
        ),
        Duration::from_secs(30),
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("is not the certificate of"), "{text}");
}
