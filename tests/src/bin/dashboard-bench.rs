//! Dashboard benchmark: `cargo run --release -p connect-tests --bin
//! dashboard-bench` (no root needed).
//!
//! Seeds connectd's own SQLite store (through `connectd::store`, as the
//! server would write it) with 1,000 content items and 10,000 users, half
//! the content restricted to specific people, then starts connectd
//! (release build, `CONNECT_E2E_RELEASE=1`, set here) with the password
//! provider and times every dashboard page for an administrator and for a
//! viewer who may see some of the restricted content: sequential GETs over
//! one keep-alive loopback connection, after a warm-up; the figure is the
//! time from sending the request to the last byte of the page, which is
//! connectd's server time plus a loopback round trip (tens of µs).
//!
//! Prints a Markdown table (p50, p99 per page) and writes it to
//! `bench/results/dashboard-bench.md`. `--smoke` is a short run with a
//! small store (its numbers mean nothing).

use std::path::Path;
use std::time::{Duration, Instant};

use connect_tests::connectd::Connectd;
use connect_tests::workspace_root;
use connectd::model::{AccessType, NewContent, ProcessSettings};
use connectd::roles::Role;
use connectd::store::sqlite::SqliteStore;
use connectd::store::{ContentStore, UserStore};

struct Size {
    content: usize,
    users: usize,
    requests: usize,
}

fn seed(data: &Path, size: &Size) -> (String, String) {
    std::fs::create_dir_all(data).expect("data dir");
    let store = SqliteStore::open(&data.join("connect.db"), "bench").expect("store");
    let admin_hash = connectd::secrets::hash_password("admin pw").expect("hash");
    let viewer_hash = connectd::secrets::hash_password("viewer pw").expect("hash");
    store
        .create_password_user(
            "admin",
            "Ada",
            "Admin",
            "admin@example.org",
            &admin_hash,
            Role::Administrator,
        )
        .expect("admin");
    let viewer = store
        .create_password_user(
            "viewer",
            "Vic",
            "Viewer",
            "viewer@example.org",
            &viewer_hash,
            Role::Viewer,
        )
        .expect("viewer");
    let mut publishers = Vec::new();
    for i in 0..size.users.saturating_sub(2) {
        // Not a password anyone can use: nobody signs in as these.
        let role = if i % 20 == 0 {
            Role::Publisher
        } else {
            Role::Viewer
        };
        let user = store
            .create_password_user(
                &format!("user{i:05}"),
                "First",
                &format!("Last{i}"),
                &format!("user{i}@example.org"),
                "unusable",
                role,
            )
            .expect("user");
        if role == Role::Publisher {
            publishers.push(user.id);
        }
    }
    let mut some_guid = String::new();
    for i in 0..size.content {
        let owner = publishers[i % publishers.len().max(1)];
        let new = NewContent {
            name: format!("app-{i:04}"),
            title: Some(format!("Report number {i}")),
            description: String::new(),
            owner_id: owner,
            access_type: if i % 2 == 0 {
                AccessType::Acl
            } else {
                AccessType::LoggedIn
            },
            run_as: None,
            run_as_current_user: false,
            process: ProcessSettings::default(),
        };
        let content = store.create_content(&new).expect("content").expect("new");
        if i % 10 == 0 {
            store
                .set_permission(content.id, "user", viewer.id, "viewer")
                .expect("permission");
        }
        if some_guid.is_empty() {
            some_guid = content.guid.clone();
        }
    }
    (some_guid, viewer.guid)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let size = if smoke {
        Size {
            content: 40,
            users: 200,
            requests: 10,
        }
    } else {
        Size {
            content: 1_000,
            users: 10_000,
            requests: 200,
        }
    };
    if !smoke {
        std::env::set_var("CONNECT_E2E_RELEASE", "1");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let (content_guid, viewer_guid) = seed(&dir.path().join("data"), &size);
    eprintln!(
        "seeded {} content items and {} users in {:.1}s",
        size.content,
        size.users,
        started.elapsed().as_secs_f64()
    );
    let server = Connectd::start(dir.path(), "[Applications]\nRunAs = nobody\n");
    let base = format!("http://{}", server.address);
    let cookie = |user: &str, password: &str| server.login(user, password).session_cookie();
    let admin = cookie("admin", "admin pw");
    let viewer = cookie("viewer", "viewer pw");
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let pages: Vec<(&str, String, &String)> = vec![
        ("content list (administrator)", "/connect/".into(), &admin),
        ("content list (viewer)", "/connect/".into(), &viewer),
        (
            "content search (viewer)",
            "/connect/?q=number+12".into(),
            &viewer,
        ),
        (
            "content list, page 20 (administrator)",
            "/connect/?page=20".into(),
            &admin,
        ),
        (
            "content: Info",
            format!("/connect/content/{content_guid}"),
            &admin,
        ),
        (
            "content: Access",
            format!("/connect/content/{content_guid}?tab=access"),
            &admin,
        ),
        (
            "content: Runtime",
            format!("/connect/content/{content_guid}?tab=runtime"),
            &admin,
        ),
        (
            "content: Processes",
            format!("/connect/content/{content_guid}?tab=processes"),
            &admin,
        ),
        (
            "content: Logs",
            format!("/connect/content/{content_guid}?tab=logs"),
            &admin,
        ),
        ("people", "/connect/people".into(), &admin),
        ("people search", "/connect/people?q=user0999".into(), &admin),
        ("groups", "/connect/groups".into(), &admin),
        ("processes (server)", "/connect/processes".into(), &admin),
        ("profile", "/connect/profile".into(), &viewer),
        (
            "inspector",
            format!("/connect/people/{viewer_guid}/account"),
            &admin,
        ),
    ];
    let mut rows = Vec::new();
    for (name, path, cookie) in &pages {
        let url = format!("{base}{path}");
        let fetch = || {
            let t = Instant::now();
            let r = client
                .get(&url)
                .header("Cookie", cookie.as_str())
                .send()
                .expect("request");
            let status = r.status().as_u16();
            let body = r.bytes().expect("body");
            assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&body));
            t.elapsed()
        };
        for _ in 0..5 {
            fetch();
        }
        let mut times: Vec<Duration> = (0..size.requests).map(|_| fetch()).collect();
        times.sort();
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let verdict = if ms(p50) <= 20.0 && ms(p99) <= 50.0 {
            "met"
        } else {
            "missed"
        };
        rows.push(format!(
            "| {name} | {:.2} | {:.2} | {verdict} |",
            ms(p50),
            ms(p99)
        ));
        eprintln!("{name}: p50 {:.2} ms, p99 {:.2} ms", ms(p50), ms(p99));
    }
    let table = format!(
        "| page ({} content items, {} users) | p50 ms | p99 ms | target (20 / 50 ms) |\n\
         |---|---:|---:|---|\n{}\n",
        size.content,
        size.users,
        rows.join("\n")
    );
    println!("{table}");
    if !smoke {
        let out = workspace_root().join("bench/results/dashboard-bench.md");
        std::fs::write(&out, &table).expect("write results");
        eprintln!("wrote {}", out.display());
    }
}
