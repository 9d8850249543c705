//! The dashboard benchmark's short run: every page answers 200 over a
//! seeded store and a table comes out (its numbers mean nothing here; the
//! full run is `cargo run --release -p connect-tests --bin dashboard-bench`).

#[test]
fn the_dashboard_benchmark_runs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dashboard-bench"))
        .arg("--smoke")
        .output()
        .expect("run dashboard-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "content list (viewer)",
        "content: Access",
        "people",
        "inspector",
    ] {
        assert!(stdout.contains(&format!("| {page} |")), "{page}: {stdout}");
    }
}
