//! A short run of the content benchmark (`content-bench --smoke`), so the
//! harness cannot rot: cold starts, proxied throughput through nginx and
//! connectd, and memory must all still run and report numbers. The full
//! runs (and their numbers) are in BENCHMARKS.md, never here.
//!
//! The benchmark drives `wrk` through `nginx`: without them this test
//! fails (it does not skip), saying how to install them; CI installs them
//! with scripts/deps.sh.

use std::path::Path;
use std::process::Command;

use connect_tests::need_root;

fn on_path(program: &str, also: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .chain([Path::new(also).to_owned()])
        .any(|p| p.is_file())
}

#[test]
fn the_content_benchmark_harness_runs_every_scenario() {
    if need_root() {
        return;
    }
    let missing: Vec<&str> = [
        ("wrk", on_path("wrk", "/usr/bin/wrk")),
        ("nginx", on_path("nginx", "/usr/sbin/nginx")),
        ("nodejs", Path::new("/usr/bin/node").is_file()),
    ]
    .into_iter()
    .filter(|(_, found)| !found)
    .map(|(name, _)| name)
    .collect();
    assert!(
        missing.is_empty(),
        "the content benchmark needs {}: install them with scripts/deps.sh \
         (or apt-get install -y wrk nginx nodejs); CI does",
        missing.join(", ")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_content-bench"))
        .arg("--smoke")
        .output()
        .expect("run content-bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "content-bench --smoke failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for scenario in [
        "| cold start | python-api (stdlib WSGI probe): first byte via connectd |",
        "| cold start | python-api (stdlib WSGI probe): app alone, spawn to first byte |",
        "| cold start | nodejs (hello world, no dependencies): first byte via connectd |",
        "| cold start | nodejs (hello world, no dependencies): connectd overhead |",
        "| throughput | direct: Node on a TCP port (no proxy), 16 conns |",
        "| throughput | nginx → app socket, ",
        "| throughput | connectd, anonymous viewer, 16 conns |",
        "| throughput | connectd, anonymous viewer, 64 conns |",
        "| throughput | connectd, signed-in viewer (cookie, identity header), 64 conns |",
        "| memory | python-api (stdlib WSGI probe): per viewer process |",
        "| memory | nodejs (hello world, no dependencies): per viewer process |",
        "| memory | connectd, at the end |",
    ] {
        let row = text
            .lines()
            .find(|l| l.starts_with(scenario))
            .unwrap_or_else(|| panic!("no row {scenario:?} in:\n{text}"));
        // Every row reports at least one number.
        assert!(row.chars().any(|c| c.is_ascii_digit()), "{row}");
        assert!(!row.contains("n/a"), "a figure is missing: {row}");
    }
    // The section for BENCHMARKS.md comes with it.
    for heading in [
        "## Content: cold start, proxied throughput, memory per viewer",
        "### Cold start",
        "### Proxied throughput",
        "### Memory",
    ] {
        assert!(text.contains(heading), "no {heading:?} in:\n{text}");
    }
}
