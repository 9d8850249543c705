//! The NSS module as installed: its exports, its soname, and what it must
//! not carry (the daemon's multi-thread runtime and signal driver, which
//! Cargo's feature unification could pull in).

use std::process::Command;

use connect_tests::*;

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(&artifacts().module)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn exports_exactly_the_nss_entry_points() {
    let exports = tool("nm", &["-D", "--defined-only"]);
    let mut nss: Vec<&str> = exports
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("_nss_"))
        .collect();
    nss.sort_unstable();
    assert_eq!(
        nss,
        vec![
            "_nss_connect_endgrent",
            "_nss_connect_endpwent",
            "_nss_connect_getgrent_r",
            "_nss_connect_getgrgid_r",
            "_nss_connect_getgrnam_r",
            "_nss_connect_getpwent_r",
            "_nss_connect_getpwnam_r",
            "_nss_connect_getpwuid_r",
            "_nss_connect_initgroups_dyn",
            "_nss_connect_setgrent",
            "_nss_connect_setpwent",
        ]
    );
}

#[test]
fn has_the_soname_glibc_loads() {
    let dynamic = tool("readelf", &["-d"]);
    assert!(
        dynamic.contains("Library soname: [libnss_connect.so.2]"),
        "{dynamic}"
    );
}

#[test]
fn carries_no_multi_thread_runtime_or_signal_driver() {
    let symbols = tool("nm", &["--demangle"]);
    assert!(
        symbols.contains("tokio::runtime::scheduler::current_thread"),
        "the symbol table is present (the check below would be vacuous otherwise)"
    );
    for forbidden in [
        "tokio::runtime::scheduler::multi_thread",
        "tokio::signal",
        "tokio::process",
        "signal_hook_registry",
        "tokio::runtime::blocking::pool::Spawner::spawn_thread",
    ] {
        let hits: Vec<&str> = symbols
            .lines()
            .filter(|l| l.contains(forbidden))
            .take(3)
            .collect();
        assert!(hits.is_empty(), "{forbidden} found in the module: {hits:?}");
    }
}
