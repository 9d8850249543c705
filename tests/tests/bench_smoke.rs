//! A short run of the benchmark harness (`connect-bench --smoke`), so the
//! harness cannot rot: every scenario must still run and report numbers.
//! The full runs (and their numbers) are in BENCHMARKS.md, never here.

use std::process::Command;

use connect_tests::need_root;

#[test]
fn the_benchmark_harness_runs_every_scenario() {
    if need_root() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_connect-bench"))
        .arg("--smoke")
        .output()
        .expect("run connect-bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "connect-bench --smoke failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for scenario in [
        "| fast path | getpwnam hit, 1 thread(s) |",
        "| fast path | getpwnam hit, 4 processes |",
        "| fast path | getgrouplist, user with 50 groups |",
        "| daemon path | getpwnam via gRPC, 4 thread(s) |",
        "| daemon path | unknown name (never cached in the file) |",
        "| daemon path | enumerate all 201 users (getpwent) |",
        "| fast path | first lookup in a fresh process |",
        "| hung daemon | unknown name: 1 timeout, then fail fast |",
        "| stopped daemon | getpwnam of a nameservice user |",
        "| peer: files | getpwnam, user at line 1 (root) |",
        "| daemon | gRPC GetUserByName, 64 client(s) |",
        "| floor | Unix socket ping-pong, 2 processes, no protocol |",
    ] {
        // Labels carry digits ("4 thread(s)"), so only the figure columns
        // count: each of these rows is a latency measurement, and a failed
        // one prints its p50 as an empty cell.
        let (row, [p50, ..]) = figures_of(&text, scenario);
        assert!(
            p50.is_some_and(|v| v > 0.0),
            "{scenario}: p50 is not a positive number: {row}"
        );
    }
    // Memory is reported in the note: "RSS <MiB> MiB, peak <MiB> MiB".
    let (row, _) = figures_of(&text, "| daemon | resident memory with 500 accounts |");
    let rss = row
        .split("RSS ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|figure| figure.parse::<f64>().ok());
    assert!(
        rss.is_some_and(|v| v.is_finite() && v > 0.0),
        "no resident size in {row}"
    );
    // The peers are the point of the benchmark: each row must carry a real
    // measurement (p50 and lookups/s parse as finite positive numbers), not
    // just a label with digits in it. A peer that could not run has empty
    // figures and says why in its note ("NOT MEASURED: ..."), which the
    // failure message shows.
    for scenario in [
        "| peer: files | getpwnam, user at line 1 (root) |",
        "| peer: files | getpwnam, user at line 200 |",
        "| peer: nscd | getpwnam hit (shared memory) |",
        "| peer: SSSD | getpwnam hit (memory cache) |",
    ] {
        let (row, [p50, _, _, per_second]) = figures_of(&text, scenario);
        for (column, figure) in [("p50 µs", p50), ("per s", per_second)] {
            assert!(
                figure.is_some_and(|v| v > 0.0),
                "{scenario}: {column} is not a positive number: {row}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The row that starts with `scenario`, and its figure columns (p50, p99,
/// p99.9, per s). An empty cell is a figure the scenario does not report
/// (`None`); any other cell must parse as a finite number, so a NaN or an
/// infinity printed into the table fails here instead of passing as "some
/// text".
fn figures_of<'a>(text: &'a str, scenario: &str) -> (&'a str, [Option<f64>; 4]) {
    let row = text
        .lines()
        .find(|l| l.starts_with(scenario))
        .unwrap_or_else(|| panic!("no row {scenario:?} in:\n{text}"));
    // | group | scenario | p50 µs | p99 µs | p99.9 µs | per s | note |
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let figures = [3, 4, 5, 6].map(|i| match cells.get(i).copied().unwrap_or_default() {
        "" => None,
        cell => match cell.parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => panic!("{scenario}: figure {cell:?} is not a number: {row}"),
        },
    });
    (row, figures)
}
