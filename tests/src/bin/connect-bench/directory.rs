//! Directory accounts: lookups of RFC 2307 entries from a real slapd, first
//! while it answers, then while it is hung (SIGSTOP: connections stay open,
//! nothing answers), which is the case the lookup budget exists for.

use connect_tests::slapd::Slapd;
use connect_tests::*;

use super::{in_sandbox, Bench, MODULE_ALONE};

/// How many posixAccounts the directory holds; each is fetched from slapd
/// exactly once, in the one run of the first-lookup row.
const ACCOUNTS: usize = 600;

pub fn directory(bench: &mut Bench) {
    let slapd = Slapd::start();
    let mut ldif = String::new();
    for i in 1..=ACCOUNTS {
        let name = format!("dir{i:04}");
        ldif.push_str(&format!(
            "dn: uid={name},{people}\nchangetype: add\nobjectClass: inetOrgPerson\n\
             objectClass: posixAccount\nuid: {name}\ncn: {name}\nsn: {name}\n\
             uidNumber: {}\ngidNumber: 5000\nhomeDirectory: /home/{name}\n\n",
            40_000 + i,
            people = slapd.people_dn(),
        ));
    }
    slapd.modify_checked(&ldif, "add the benchmark's posixAccounts");
    slapd.add_posix_group("primary", 5000, &[]);
    let mut sandbox = Sandbox::new(&format!(
        "{}CacheTtl = 1h\nNegativeCacheTtl = 0s\n",
        slapd.nameservice_section()
    ));
    sandbox.set_nsswitch(MODULE_ALONE);
    let daemon = sandbox.start_daemon();
    let nb = bench.nss_bench.clone();
    let count = ACCOUNTS.to_string();
    let cached = [
        "--op", "getpwnam", "--keys", "dir%04d", "--start", "1", "--count", &count,
    ];
    let daemon_env: &[(&str, &str)] = &[("CONNECT_NSS_CACHE", "off")];
    // The first pass fetches every entry from slapd (one search for the
    // user, one for its groups); later ones answer from the rows, so this
    // row is one run over distinct entries, not a median of runs.
    let runs = std::mem::replace(&mut bench.opts.runs, 1);
    bench.nss(
        "directory",
        "getpwnam, first lookup (LDAP fetch; 1 run)",
        in_sandbox(&sandbox, &nb, daemon_env),
        &[
            "--op",
            "getpwnam",
            "--keys",
            "dir%04d",
            "--start",
            "1",
            "--count",
            &count,
            "--iterations",
            &count,
            "--warmup",
            "0",
        ],
    );
    bench.opts.runs = runs;
    bench.nss(
        "directory",
        "getpwnam cached, daemon path",
        in_sandbox(&sandbox, &nb, daemon_env),
        &cached,
    );
    bench.nss(
        "directory",
        "getpwnam cached, fast path",
        in_sandbox(&sandbox, &nb, &[]),
        &cached,
    );
    let slapd_pid = slapd.pid().expect("slapd runs") as i32;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(slapd_pid, libc::SIGSTOP) };
    bench.nss(
        "hung directory",
        "getpwnam cached, daemon path",
        in_sandbox(&sandbox, &nb, daemon_env),
        &cached,
    );
    let ghosts = if bench.opts.smoke { "20" } else { "400" };
    bench.nss(
        "hung directory",
        "unknown name, daemon path (400 ms budget, then backoff)",
        in_sandbox(&sandbox, &nb, daemon_env),
        &[
            "--op",
            "getpwnam",
            "--keys",
            "ghost%d",
            "--count",
            "100000",
            "--expect",
            "notfound",
            "--warmup",
            "0",
            "--iterations",
            ghosts,
        ],
    );
    // SAFETY: as above.
    unsafe { libc::kill(slapd_pid, libc::SIGCONT) };
    drop(daemon);
}
