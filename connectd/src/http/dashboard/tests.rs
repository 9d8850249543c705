//! The dashboard through the real router: who sees what, the form token,
//! and that forms change only what the API would let the same person
//! change (a crafted post included).

use axum::http::StatusCode;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use super::HTMX;
use crate::http::tests::{server_with, Server};
use crate::store::{ContentStore, UserStore};

const FORM: &str = "application/x-www-form-urlencoded";

#[test]
fn vendored_htmx_is_the_pinned_release() {
    let digest = Sha256::digest(HTMX);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex, "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717",
        "connectd/assets/README.md says how to upgrade htmx"
    );
}

/// The form token on a page.
fn token_in(page: &str) -> String {
    let at = page.find("name=\"token\" value=\"").expect("a token field") + 20;
    page[at..at + page[at..].find('"').expect("end")].to_owned()
}

async fn form_post(
    server: &Server,
    path: &str,
    cookie: &str,
    fields: &[(&str, &str)],
) -> super::super::tests::Answer {
    let body = serde_urlencoded::to_string(fields).expect("form");
    server.post(path, cookie, FORM, body.into_bytes()).await
}

#[tokio::test]
async fn the_content_list_shows_what_each_person_may_see() {
    let server = server_with("");
    let signed_out = server.get("/connect/", "").await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
    assert_eq!(
        signed_out.location.as_deref(),
        Some("/__login__?url=%2Fconnect%2F")
    );

    let ada = server.session("ada", "secret").await;
    let content = server.content_owned_by("ada");
    let bob = server.session("bob", "hunter2").await;
    let mut hidden = content.clone();
    let page = server.get("/connect/", &ada).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page
        .text
        .contains(&format!("/connect/content/{}", content.guid)));
    assert!(page.text.contains("Anyone, no sign-in required"));
    assert!(
        page.text.contains("(default)"),
        "who it runs as: {}",
        page.text
    );
    assert!(page.text.contains("<html"), "a whole page");

    // Search, and htmx's in-place update (only the table).
    let none = server.get("/connect/?q=nothing-like-it", &ada).await;
    assert!(!none.text.contains(&content.guid) && none.text.contains("No content matches"));
    let request = axum::http::Request::get("/connect/?q=ap")
        .header(axum::http::header::COOKIE, &ada)
        .header("hx-request", "true")
        .body(axum::body::Body::empty())
        .expect("request");
    let fragment = server.send(request).await;
    assert!(fragment.text.contains(&content.guid) && !fragment.text.contains("<html"));

    // Restricted to specific people: bob, who is not one of them, does not
    // see it in the list, nor on its own page.
    hidden.access_type = crate::model::AccessType::Acl;
    server.store.update_content(&hidden).expect("update");
    let list = server.get("/connect/", &bob).await;
    assert!(!list.text.contains(&content.guid), "{}", list.text);
    let page = server
        .get(&format!("/connect/content/{}", content.guid), &bob)
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn forms_need_the_sessions_token_and_save_through_the_api_rules() {
    let server = server_with("");
    let ada = server.session("ada", "secret").await;
    let content = server.content_owned_by("ada");
    let path = format!("/connect/content/{}", content.guid);
    let page = server.get(&path, &ada).await;
    assert!(
        page.text.contains("?tab=runtime"),
        "the owner sees the settings tabs"
    );
    let token = token_in(&page.text);

    // Without the token, or with another session's, nothing changes.
    for sent in ["", "forged"] {
        let refused = form_post(
            &server,
            &path,
            &ada,
            &[("token", sent), ("tab", "info"), ("title", "Changed")],
        )
        .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{sent:?}");
        assert!(refused.text.contains("out of date"));
    }
    let stored = server
        .store
        .content_by_guid(&content.guid)
        .expect("read")
        .expect("there");
    assert_eq!(stored.title, None);

    let saved = form_post(
        &server,
        &path,
        &ada,
        &[
            ("token", &token),
            ("tab", "info"),
            ("title", "Sales explorer"),
            ("description", "Q3"),
        ],
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.text);
    assert_eq!(
        saved.location.as_deref(),
        Some(format!("{path}?tab=info&saved=1").as_str())
    );
    let stored = server
        .store
        .content_by_guid(&content.guid)
        .expect("read")
        .expect("there");
    assert_eq!(stored.title.as_deref(), Some("Sales explorer"));
    assert_eq!(stored.description, "Q3");

    // Runtime: a number, a blank (the server's default) and a refusal with
    // Connect's code beside the fields.
    let saved = form_post(
        &server,
        &path,
        &ada,
        &[
            ("token", &token),
            ("tab", "runtime"),
            ("max_processes", "4"),
            ("idle_timeout", ""),
        ],
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.text);
    let stored = server
        .store
        .content_by_guid(&content.guid)
        .expect("read")
        .expect("there");
    assert_eq!(stored.process.max_processes, Some(4));
    assert_eq!(stored.process.idle_timeout, None);
    let refused = form_post(
        &server,
        &path,
        &ada,
        &[
            ("token", &token),
            ("tab", "runtime"),
            ("min_processes", "5"),
            ("max_processes", "2"),
        ],
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert!(
        refused.text.contains("runtime-error") && refused.text.contains("(code "),
        "{}",
        refused.text
    );
    let not_a_number = form_post(
        &server,
        &path,
        &ada,
        &[
            ("token", &token),
            ("tab", "runtime"),
            ("max_processes", "many"),
        ],
    )
    .await;
    assert_eq!(not_a_number.status, StatusCode::BAD_REQUEST);
    assert!(not_a_number.text.contains("not a whole number"));
}

#[tokio::test]
async fn the_process_owner_is_offered_only_to_who_may_change_it() {
    let server = server_with(
        "[Applications]\nRunAsCurrentUser = true\n[Authorization]\nPublishersCanManageRunAs = false\n\
         [Authentication]\nProvider = ldap\n[LDAP \"x\"]\nServerAddress = 127.0.0.1:1\n\
         UserSearchBaseDN = dc=x\n",
    );
    let ada = server.session("ada", "secret").await;
    let content = server.content_owned_by("ada");
    let path = format!("/connect/content/{}", content.guid);
    let page = server.get(&format!("{path}?tab=access"), &ada).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let select = &page.text[page.text.find("id=\"process_owner\"").expect("the control")..];
    let select = &select[..select.find('>').expect("tag")];
    assert!(
        select.contains("disabled"),
        "a publisher may not change it here: {select}"
    );
    assert!(page
        .text
        .contains("Only administrators may change the process owner"));

    // A crafted post (the disabled control re-enabled) is refused with
    // Connect's message beside the control, and nothing changes.
    let token = token_in(&page.text);
    let refused = form_post(
        &server,
        &path,
        &ada,
        &[
            ("token", &token),
            ("tab", "access"),
            ("access_type", "all"),
            ("process_owner", "current_user"),
        ],
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "as the API answers: {}",
        refused.text
    );
    assert!(
        refused.text.contains("owner-error") && refused.text.contains("(code 54)"),
        "{}",
        refused.text
    );
    let stored = server
        .store
        .content_by_guid(&content.guid)
        .expect("read")
        .expect("there");
    assert!(!stored.run_as_current_user);
}

#[tokio::test]
async fn administrators_change_roles_and_lock_people_with_connects_codes() {
    let server = server_with("");
    let ada = server.session("ada", "secret").await;
    let bob = server.session("bob", "hunter2").await;
    let users = server.store.inner();
    let ada_user = users.user_by_username("ada").expect("read").expect("ada");
    let bob_user = users.user_by_username("bob").expect("read").expect("bob");
    let people = server.get("/connect/people", &bob).await;
    assert_eq!(people.status, StatusCode::OK);
    assert!(
        !people.text.contains("/role\""),
        "a viewer gets no role controls"
    );
    let token = token_in(&people.text);
    let refused = form_post(
        &server,
        &format!("/connect/people/{}/role", ada_user.guid),
        &bob,
        &[("token", &token), ("role", "administrator")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.text.contains("(code 23)"), "{}", refused.text);

    server
        .store
        .set_role(ada_user.id, crate::roles::Role::Administrator)
        .expect("admin");
    let page = server.get("/connect/people", &ada).await;
    let token = token_in(&page.text);
    let saved = form_post(
        &server,
        &format!("/connect/people/{}/role", bob_user.guid),
        &ada,
        &[("token", &token), ("role", "publisher")],
    )
    .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.text);
    let bob_now = users.user_by_username("bob").expect("read").expect("bob");
    assert_eq!(bob_now.role, crate::roles::Role::Publisher);
    let unknown = form_post(
        &server,
        &format!("/connect/people/{}/role", bob_user.guid),
        &ada,
        &[("token", &token), ("role", "emperor")],
    )
    .await;
    assert!(unknown.text.contains("(code 112)"), "{}", unknown.text);

    let locked = form_post(
        &server,
        &format!("/connect/people/{}/lock", bob_user.guid),
        &ada,
        &[("token", &token), ("locked", "1")],
    )
    .await;
    assert_eq!(locked.status, StatusCode::SEE_OTHER);
    assert!(
        users
            .user_by_username("bob")
            .expect("read")
            .expect("bob")
            .locked
    );
    let myself = form_post(
        &server,
        &format!("/connect/people/{}/lock", ada_user.guid),
        &ada,
        &[("token", &token), ("locked", "1")],
    )
    .await;
    assert_eq!(myself.status, StatusCode::BAD_REQUEST);
    assert!(myself.text.contains("cannot lock yourself"));
}

#[tokio::test]
async fn a_new_api_key_is_shown_once_and_can_be_deleted() {
    let server = server_with("");
    let ada = server.session("ada", "secret").await;
    let profile = server.get("/connect/profile", &ada).await;
    assert!(profile.text.contains("You have no API keys"));
    let token = token_in(&profile.text);
    let request = axum::http::Request::post("/connect/profile/keys")
        .header(axum::http::header::COOKIE, &ada)
        .header(axum::http::header::CONTENT_TYPE, FORM)
        .body(axum::body::Body::from(format!("token={token}&name=laptop")))
        .expect("request");
    let response = server.app.clone().oneshot(request).await.expect("answer");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let page = String::from_utf8_lossy(&body).into_owned();
    let at = page.find("id=\"new-key\" value=\"").expect("the key, once") + 20;
    let key = &page[at..at + page[at..].find('"').expect("end")];
    // The key works for the API, and is never shown again.
    let me = server
        .send(
            axum::http::Request::get("/__api__/v1/user")
                .header("authorization", format!("Key {key}"))
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(me.json["username"], "ada");
    let again = server.get("/connect/profile", &ada).await;
    assert!(!again.text.contains(key) && again.text.contains("laptop"));
    let guid = server
        .store
        .inner()
        .list_api_keys(
            server
                .store
                .inner()
                .user_by_username("ada")
                .expect("r")
                .expect("ada")
                .id,
        )
        .expect("keys")[0]
        .guid
        .clone();
    let deleted = form_post(
        &server,
        &format!("/connect/profile/keys/{guid}/delete"),
        &ada,
        &[("token", &token)],
    )
    .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert!(server
        .get("/connect/profile", &ada)
        .await
        .text
        .contains("You have no API keys"));
}

#[tokio::test]
async fn the_inspector_is_for_administrators_and_says_where_accounts_come_from() {
    let server = server_with("");
    let ada = server.session("ada", "secret").await;
    let bob = server.session("bob", "hunter2").await;
    let bob_user = server
        .store
        .inner()
        .user_by_username("bob")
        .expect("read")
        .expect("bob");
    let path = format!("/connect/people/{}/account", bob_user.guid);
    assert_eq!(server.get(&path, &bob).await.status, StatusCode::FORBIDDEN);
    let ada_user = server
        .store
        .inner()
        .user_by_username("ada")
        .expect("read")
        .expect("ada");
    server
        .store
        .set_role(ada_user.id, crate::roles::Role::Administrator)
        .expect("admin");
    let page = server.get(&path, &ada).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        page.text
            .contains("none yet: the nameservice provisions one"),
        "{}",
        page.text
    );
    assert!(
        page.text.contains("no account to launch as"),
        "{}",
        page.text
    );
}

#[tokio::test]
async fn an_upload_without_the_token_stores_nothing() {
    let server = server_with("");
    let ada = server.session("ada", "secret").await;
    let content = server.content_owned_by("ada");
    let multipart = |token: &str| {
        format!(
            "--b\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\n{token}\r\n\
             --b\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"b.tar.gz\"\r\n\
             Content-Type: application/gzip\r\n\r\nnot a bundle\r\n--b--\r\n"
        )
    };
    for token in ["", "forged"] {
        let answer = server
            .post(
                &format!("/connect/content/{}/deploy", content.guid),
                &ada,
                "multipart/form-data; boundary=b",
                multipart(token).into_bytes(),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{token:?}: {}",
            answer.text
        );
    }
    assert_eq!(
        server.store.latest_bundle(content.id).expect("read"),
        None,
        "nothing was uploaded"
    );
    // With the token, the deployer reads it (and refuses what is not a
    // bundle, saying why).
    let page = server
        .get(
            &format!("/connect/content/{}?tab=deploy", content.guid),
            &ada,
        )
        .await;
    let token = token_in(&page.text);
    let answer = server
        .post(
            &format!("/connect/content/{}/deploy", content.guid),
            &ada,
            "multipart/form-data; boundary=b",
            multipart(&token).into_bytes(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
}

#[tokio::test]
async fn specific_people_are_given_and_denied_access_by_name() {
    let server = server_with("");
    let ada = server.session("ada", "secret").await;
    let bob = server.session("bob", "hunter2").await;
    let mut content = server.content_owned_by("ada");
    content.access_type = crate::model::AccessType::Acl;
    server.store.update_content(&content).expect("update");
    let path = format!("/connect/content/{}", content.guid);
    assert_eq!(server.get(&path, &bob).await.status, StatusCode::NOT_FOUND);
    let page = server.get(&format!("{path}?tab=access"), &ada).await;
    assert!(page.text.contains("Nobody has been given access by name"));
    let token = token_in(&page.text);
    let access = format!("{path}/access");

    let unknown = form_post(
        &server,
        &access,
        &ada,
        &[
            ("token", &token),
            ("principal_type", "user"),
            ("name", "zed"),
            ("role", "viewer"),
        ],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(
        unknown.text.contains("once they have signed in"),
        "{}",
        unknown.text
    );
    let viewer_as_collaborator = form_post(
        &server,
        &access,
        &ada,
        &[
            ("token", &token),
            ("principal_type", "user"),
            ("name", "bob"),
            ("role", "collaborator"),
        ],
    )
    .await;
    assert_eq!(viewer_as_collaborator.status, StatusCode::BAD_REQUEST);
    assert!(viewer_as_collaborator
        .text
        .contains("Viewers cannot be collaborators"));

    let added = form_post(
        &server,
        &access,
        &ada,
        &[
            ("token", &token),
            ("principal_type", "user"),
            ("name", "bob"),
            ("role", "viewer"),
        ],
    )
    .await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.text);
    assert_eq!(
        server.get(&path, &bob).await.status,
        StatusCode::OK,
        "bob may view now"
    );
    let page = server.get(&format!("{path}?tab=access"), &ada).await;
    assert!(page.text.contains("Remove bob"), "{}", page.text);
    let id = server.store.permissions(content.id).expect("read")[0]
        .guid
        .clone();
    let refused = form_post(
        &server,
        &format!("{access}/{id}/delete"),
        &ada,
        &[("token", "x")],
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let removed = form_post(
        &server,
        &format!("{access}/{id}/delete"),
        &ada,
        &[("token", &token)],
    )
    .await;
    assert_eq!(removed.status, StatusCode::SEE_OTHER);
    assert_eq!(server.get(&path, &bob).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pages_are_never_framed_nor_cached() {
    let server = server_with("");
    let ada = server.session("ada", "secret").await;
    let response = server
        .app
        .clone()
        .oneshot(
            axum::http::Request::get("/connect/people")
                .header(axum::http::header::COOKIE, &ada)
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
    let headers = response.headers();
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["content-security-policy"], "frame-ancestors 'none'");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["vary"], "HX-Request");
}

#[tokio::test]
async fn a_group_name_two_groups_share_is_refused_not_guessed() {
    use crate::model::GroupRef;
    use crate::store::LoginRecord;
    let server = server_with("");
    let ada = server.session("ada", "secret").await;
    let mut content = server.content_owned_by("ada");
    content.access_type = crate::model::AccessType::Acl;
    server.store.update_content(&content).expect("update");
    // Two directories' "Finance": the same name, two groups.
    for (provider, id) in [
        ("ldap/corp", "cn=finance,ou=a"),
        ("oidc/https://idp", "g-77"),
    ] {
        let groups = [GroupRef {
            unique_id: id.into(),
            name: "Finance".into(),
        }];
        server
            .store
            .inner()
            .record_login(
                &LoginRecord {
                    provider,
                    unique_id: &format!("member-{id}"),
                    username: &format!("member-{}", id.len()),
                    first_name: "",
                    last_name: "",
                    email: "",
                    groups: Some(&groups),
                },
                &mut |_, _| crate::roles::Role::Viewer,
            )
            .expect("record");
    }
    let path = format!("/connect/content/{}", content.guid);
    let page = server.get(&format!("{path}?tab=access"), &ada).await;
    let token = token_in(&page.text);
    let refused = form_post(
        &server,
        &format!("{path}/access"),
        &ada,
        &[
            ("token", &token),
            ("principal_type", "group"),
            ("name", "Finance"),
            ("role", "viewer"),
        ],
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert!(
        refused.text.contains("2 groups are named"),
        "{}",
        refused.text
    );
    assert!(server
        .store
        .permissions(content.id)
        .expect("read")
        .is_empty());
}
