//! Connect's rules for who may change how content runs, each with its code
//! and text: viewers and publishers refused (54, and the administrator-only
//! rule for RunAs), publishers allowed with PublishersCanManageRunAs on
//! content they own, static content refused (55), prohibited (56),
//! nonexistent (57) and non-member (58) accounts, the scheduler settings'
//! limits (45, 113, 114, 150, 151), and RunAsCurrentUser permitting but
//! changing nothing by itself. Real PAM accounts in a private namespace.

use connect_tests::connectd::Connectd;
use connect_tests::content::*;
use connect_tests::*;
use serde_json::{json, Value};

fn patch(server: &Connectd, cookie: &str, guid: &str, body: Value) -> (u16, Value) {
    let r = server.json(
        "PATCH",
        &format!("/__api__/v1/content/{guid}"),
        cookie,
        &body,
    );
    let json = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status, json)
}

fn assert_code(result: (u16, Value), status: u16, code: u64, text: &str) {
    assert_eq!(result.0, status, "{}", result.1);
    assert_eq!(result.1["code"], code, "{}", result.1);
    assert_eq!(result.1["error"], text, "{}", result.1);
}

const CODE_54: &str = "You cannot set this content to run as the current user";

#[test]
fn run_as_settings_follow_connects_rules_and_codes() {
    if need_root() {
        return;
    }
    let sandbox = pam_world(&[]);
    let server = Connectd::start_in(&sandbox, &pam_config(""));
    let admin = sign_in(&server, "admin1");
    let publisher = sign_in(&server, "pub1");
    let viewer = sign_in(&server, "view1");
    let pub_guid = server
        .get_with_cookie("/__api__/v1/user", &publisher)
        .json()["guid"]
        .as_str()
        .expect("guid")
        .to_owned();
    let r = server.json(
        "PUT",
        &format!("/__api__/v1/users/{pub_guid}"),
        &admin,
        &json!({"user_role": "publisher"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Viewers cannot create content at all.
    let r = server.json(
        "POST",
        "/__api__/v1/content",
        &viewer,
        &json!({"name": "nope"}),
    );
    assert_eq!(r.status, 403, "{}", r.body);

    let app = server.create_content(
        &publisher,
        json!({"name": "pubapp", "access_type": "logged_in"}),
    );
    let guid = app["guid"].as_str().expect("guid").to_owned();
    assert_eq!(app["run_as"], Value::Null, "null means Applications.RunAs");
    assert_eq!(app["run_as_current_user"], false);

    // A publisher without PublishersCanManageRunAs: 54, and RunAs is
    // administrators' alone.
    assert_code(
        patch(
            &server,
            &publisher,
            &guid,
            json!({"run_as_current_user": true}),
        ),
        400,
        54,
        CODE_54,
    );
    let (status, body) = patch(&server, &publisher, &guid, json!({"run_as": "svcdata"}));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("Only administrators"),
        "{body}"
    );
    // Creating with the settings is the same change.
    let r = server.json(
        "POST",
        "/__api__/v1/content",
        &publisher,
        &json!({"name": "pubapp2", "run_as_current_user": true}),
    );
    assert_eq!(r.json()["code"], 54, "{}", r.body);
    // A viewer who can see the content: 54 as well.
    assert_code(
        patch(
            &server,
            &viewer,
            &guid,
            json!({"run_as_current_user": true}),
        ),
        400,
        54,
        CODE_54,
    );
    let (status, _) = patch(&server, &viewer, &guid, json!({"run_as": "svcdata"}));
    assert_eq!(status, 403);
    // Unchanged values are not changes.
    let (status, body) = patch(
        &server,
        &publisher,
        &guid,
        json!({"run_as_current_user": false, "run_as": null, "title": "Mine"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["title"], "Mine");

    // Administrators may, with a valid account.
    let (status, body) = patch(&server, &admin, &guid, json!({"run_as_current_user": true}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run_as_current_user"], true);
    let (status, body) = patch(&server, &admin, &guid, json!({"run_as": "svcdata"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run_as"], "svcdata");
    let prohibited = "The RunAs setting references a prohibited Unix account.";
    for account in ["root", "daemon", "sysacct", "rootgrp"] {
        assert_code(
            patch(&server, &admin, &guid, json!({"run_as": account})),
            400,
            56,
            prohibited,
        );
    }
    assert_code(
        patch(&server, &admin, &guid, json!({"run_as": "no-such-account"})),
        400,
        57,
        "The RunAs setting does not reference a valid Unix account.",
    );
    assert_code(
        patch(&server, &admin, &guid, json!({"run_as": "outsider"})),
        400,
        58,
        "The RunAs setting references a Unix account that does not have the correct group \
         membership.",
    );
    // The refused values were not stored.
    let now = server
        .get_with_cookie(&format!("/__api__/v1/content/{guid}"), &admin)
        .json();
    assert_eq!(now["run_as"], "svcdata", "{now}");

    // Scheduler settings: Connect's limits and texts.
    let cases: &[(Value, u64, &str)] = &[
        (
            json!({"min_processes": 21, "max_processes": 20}),
            45,
            "Invalid MinProcesses setting. The MinProcesses setting may not exceed the \
             Scheduler.MinProcessesLimit setting.",
        ),
        (
            json!({"max_processes": 21}),
            113,
            "Invalid MaxProcesses setting. The MaxProcesses setting may not exceed the \
             Scheduler.MaxProcessesLimit setting.",
        ),
        (
            json!({"min_processes": 5, "max_processes": 2}),
            114,
            "Invalid MinProcesses setting. The MinProcesses setting may not exceed the \
             MaxProcesses setting.",
        ),
        (
            json!({"load_factor": 1.5}),
            150,
            "The load factor must be between 0.0 and 1.0.",
        ),
        (
            json!({"idle_timeout": 2_592_001}),
            151,
            "The timeout must be between 0 and 2592000 seconds.",
        ),
        (
            json!({"read_timeout": -1}),
            151,
            "The timeout must be between 0 and 2592000 seconds.",
        ),
    ];
    for (body, code, text) in cases {
        assert_code(
            patch(&server, &admin, &guid, body.clone()),
            400,
            *code,
            text,
        );
    }
    let (status, body) = patch(
        &server,
        &admin,
        &guid,
        json!({"min_processes": 1, "max_processes": 4, "load_factor": 0.25, "idle_timeout": 30}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["max_processes"], 4);
    let (status, body) = patch(&server, &admin, &guid, json!({"max_processes": null}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["max_processes"],
        Value::Null,
        "null is the server default"
    );

    // Static content runs no process: any RunAs setting is 55.
    let site = server.create_content(&admin, json!({"name": "site", "access_type": "all"}));
    let site_guid = site["guid"].as_str().expect("guid").to_owned();
    server.deploy(&admin, &site_guid, &static_bundle("<h1>static</h1>"));
    let static_text = "Custom RunAs settings are prohibited for static content.";
    assert_code(
        patch(&server, &admin, &site_guid, json!({"run_as": "svcdata"})),
        400,
        55,
        static_text,
    );
    assert_code(
        patch(
            &server,
            &admin,
            &site_guid,
            json!({"run_as_current_user": true}),
        ),
        400,
        55,
        static_text,
    );
    // A collaborator demoted to viewer no longer changes or deploys.
    let team = server.create_content(&admin, json!({"name": "team"}));
    let team_guid = team["guid"].as_str().expect("guid").to_owned();
    let r = server.json(
        "POST",
        &format!("/__api__/v1/content/{team_guid}/permissions"),
        &admin,
        &json!({"principal_guid": pub_guid, "principal_type": "user", "role": "owner"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let (status, body) = patch(&server, &publisher, &team_guid, json!({"title": "ours"}));
    assert_eq!(status, 200, "a collaborator edits: {body}");
    let set_role = |role: &str| {
        let r = server.json(
            "PUT",
            &format!("/__api__/v1/users/{pub_guid}"),
            &admin,
            &json!({ "user_role": role }),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    set_role("viewer");
    let (status, body) = patch(&server, &publisher, &team_guid, json!({"title": "mine"}));
    assert_eq!(status, 403, "{body}");
    let r = server.send(
        "POST",
        &format!("/__api__/v1/content/{team_guid}/bundles"),
        Some(&publisher),
        "application/gzip",
        &probe_bundle(),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    set_role("publisher");

    let page = server.open(&site_guid, "", None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<h1>static</h1>"), "{}", page.body);
    assert!(
        page.header("content-security-policy")
            .is_some_and(|p| p.starts_with("sandbox") && !p.contains("allow-same-origin")),
        "static pages get an origin of their own: {:?}",
        page.headers
    );
    for spelling in ["manifest.json", "%6danifest.json", "%6D%61nifest.json"] {
        let r = server.open(&site_guid, spelling, None);
        assert_eq!(r.status, 404, "{spelling}: the manifest is not content");
    }
    // Deployment output is for those who may change the content.
    let r = server.send(
        "POST",
        &format!("/__api__/v1/content/{site_guid}/deploy"),
        Some(&admin),
        "application/json",
        b"{}",
    );
    let task = r.json()["task_id"].as_str().expect("task").to_owned();
    let r = server.get_with_cookie(&format!("/__api__/v1/tasks/{task}"), &viewer);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = server.get_with_cookie(&format!("/__api__/v1/tasks/{task}"), &admin);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(server.stop());

    // PublishersCanManageRunAs: publishers may, on content they own.
    let server = Connectd::start_in(
        &sandbox,
        "[Authorization]\nPublishersCanManageRunAs = true\n",
    );
    let admin = sign_in(&server, "admin1");
    let publisher = sign_in(&server, "pub1");
    let own = server.create_content(&publisher, json!({"name": "own"}));
    let own_guid = own["guid"].as_str().expect("guid").to_owned();
    let (status, body) = patch(
        &server,
        &publisher,
        &own_guid,
        json!({"run_as_current_user": true, "run_as": "svcdata"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run_as_current_user"], true);
    assert_eq!(body["run_as"], "svcdata");
    // ... but not on someone else's content they can only view.
    let theirs = server.create_content(
        &admin,
        json!({"name": "theirs", "access_type": "logged_in"}),
    );
    let theirs_guid = theirs["guid"].as_str().expect("guid").to_owned();
    assert_code(
        patch(
            &server,
            &publisher,
            &theirs_guid,
            json!({"run_as_current_user": true}),
        ),
        400,
        54,
        CODE_54,
    );
    assert!(server.stop());

    // RunAsCurrentUser off: nobody may ask for it, and content that asked
    // keeps its setting (the server setting permits; it changes nothing).
    let server = Connectd::start_in(&sandbox, "[Applications]\nRunAsCurrentUser = false\n");
    let admin = sign_in(&server, "admin1");
    let fresh = server.create_content(&admin, json!({"name": "fresh"}));
    let fresh_guid = fresh["guid"].as_str().expect("guid").to_owned();
    assert_code(
        patch(
            &server,
            &admin,
            &fresh_guid,
            json!({"run_as_current_user": true}),
        ),
        400,
        54,
        CODE_54,
    );
    let kept = server
        .get_with_cookie(&format!("/__api__/v1/content/{own_guid}"), &admin)
        .json();
    assert_eq!(kept["run_as_current_user"], true, "{kept}");
    assert!(server.stop());
}
