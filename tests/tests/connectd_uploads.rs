//! `[Applications] MaxBundleSize`: an upload larger than the limit is
//! refused with 413 (README, "Bundles"), one at the limit is read, and a
//! refused upload leaves no bundle behind.

use connect_tests::connectd::Connectd;
use connect_tests::content::static_bundle;
use connect_tests::*;
use serde_json::json;

const LIMIT: usize = 4096;

/// `dir` holds nothing (or does not exist).
fn assert_empty(dir: &std::path::Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
}

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
    assert_empty(&uploads);
}

/// The review's bomb, scaled down: a small archive whose one file unpacks
/// to 16 times MaxBundleSize. It was accepted while the unpacked limit was
/// an undocumented 20 x MaxBundleSize; now the per-file limit (default
/// MaxBundleSize) refuses it by name, and the total limit (default 4 x
/// MaxBundleSize) is documented and has its own key.
#[test]
fn a_small_archive_that_unpacks_huge_is_refused_naming_the_file() {
    if need_root() {
        return;
    }
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().expect("dir");
    let server = Connectd::start(
        dir.path(),
        &format!("[Applications]\nMaxBundleSize = {MIB}\n"),
    );
    let admin = server.sign_up("ada", "correct horse battery");
    let app = server.create_content(&admin, json!({"name": "bomb"}));
    let guid = app["guid"].as_str().expect("guid").to_owned();
    let manifest = json!({
        "version": 1,
        "metadata": {"appmode": "static", "primary_html": "index.html"},
    })
    .to_string();
    let zeros = "0".repeat(16 * MIB);
    let archive = connect_tests::content::bundle(&[
        ("manifest.json", &manifest),
        ("index.html", "<p>hi</p>"),
        ("data/zeros.txt", &zeros),
    ]);
    assert!(archive.len() < MIB / 4, "{} bytes", archive.len());
    let r = server.send(
        "POST",
        &format!("/__api__/v1/content/{guid}/bundles"),
        Some(&admin),
        "application/gzip",
        &archive,
    );
    assert_eq!(r.status, 400, "{}\n{}", r.body, server.log_text());
    let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("data/zeros.txt") && error.contains("MaxBundleFileSize"),
        "{}",
        r.body
    );
    // Nothing of it stayed on disk.
    let bundles = dir.path().join("data/apps").join(&guid).join("bundles");
    assert_empty(&bundles);
}
