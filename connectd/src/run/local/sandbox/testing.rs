//! Test helpers for code that starts sandboxed processes: finding them
//! from the host, where the pids they print (their namespace's) mean
//! nothing.

use std::time::{Duration, Instant};

/// Host pids of running (not zombie) `sleep <seconds>` processes.
pub(crate) fn sleeping(seconds: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with(['Z', 'X']));
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_it = matches!(args[..], [program, arg, b""]
            if program.ends_with(b"sleep") && arg == seconds.as_bytes());
        if !zombie && is_it {
            found.push(pid);
        }
    }
    found
}

/// Waits until `sleep <seconds>` runs.
pub(crate) async fn wait_for_sleep(seconds: &str) {
    let started = Instant::now();
    while sleeping(seconds).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "sleep {seconds} never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
