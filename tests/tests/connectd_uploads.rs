//! `[Applications] MaxBundleSize`: an upload larger than the limit is
//! refused with 413 (README, "Bundles"), one at the limit is read, and a
//! refused upload leaves no bundle behind.

use connect_tests::connectd::Connectd;
use connect_tests::content::static_bundle;
use connect_tests::*;
use serde_json::json;

const LIMIT: usize = 4096;

#[test]
fn uploads_beyond_max_bundle_size_are_refused_with_413() {
    if need_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(
        dir.path(),
        &format!("[Applications]\nMaxBundleSize = {LIMIT}\n"),
    );
    let admin = server.sign_up("ada", "correct horse battery");
    let app = server.create_content(&admin, json!({"name": "sized"}));
    let guid = app["guid"].as_str().expect("guid").to_owned();
    let upload = |bytes: &[u8]| {
        server.send(
            "POST",
            &format!("/__api__/v1/content/{guid}/bundles"),
            Some(&admin),
            "application/gzip",
            bytes,
        )
    };

    // A real bundle under the limit is taken.
    let small = static_bundle("<p>small</p>");
    assert!(small.len() < LIMIT, "{} bytes", small.len());
    let r = upload(&small);
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log_text());

    // One byte over the limit: 413, with the key to change in the message.
    let r = upload(&vec![b'x'; LIMIT + 1]);
    assert_eq!(r.status, 413, "{}\n{}", r.body, server.log_text());
    let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("MaxBundleSize") && error.contains(&LIMIT.to_string()),
        "{}",
        r.body
    );

    // Exactly at the limit, the upload is read in full and judged as a
    // bundle (it is not one): the limit is not lower than configured.
    let r = upload(&vec![b'x'; LIMIT]);
    assert_eq!(r.status, 400, "{}\n{}", r.body, server.log_text());

    // Nothing of the refused uploads stayed on disk.
    let uploads = dir
        .path()
        .join("data")
        .join("apps")
        .join(&guid)
        .join("uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", uploads.display());
}
