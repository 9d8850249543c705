//! What content processes cost, read from /proc: resident memory and CPU
//! time of a process, and a history of the whole server's processes and
//! memory over the last hour (one sample a minute), which the dashboard
//! draws so that an administrator sees what per-viewer processes cost.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::scheduler::Scheduler;

/// One process's use of the machine.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// The most processes of one tree that are read: a content process's
/// tree is bounded by its TasksMax, but one without limits must not make
/// connectd walk (or recurse through) an unbounded chain.
const MAX_TREE: usize = 8192;

/// `pid`'s resident memory and CPU time, with its descendants' (the
/// sandbox's first process is a small supervisor; the app is its child).
/// `None` once it has gone. Walks the tree breadth first, each pid once.
pub fn of_process(pid: u32) -> Option<Usage> {
    if pid == 0 {
        return None;
    }
    let mut total = own_usage(pid)?;
    let mut seen = std::collections::HashSet::from([pid]);
    let mut queue: VecDeque<u32> = children(pid).into();
    while let Some(next) = queue.pop_front() {
        if seen.len() >= MAX_TREE || !seen.insert(next) {
            continue;
        }
        if let Some(usage) = own_usage(next) {
            total.rss_bytes += usage.rss_bytes;
            total.cpu_seconds += usage.cpu_seconds;
            queue.extend(children(next));
        }
    }
    Some(total)
}

fn own_usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces and ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 here.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(Usage {
        rss_bytes: rss_kib * 1024,
        cpu_seconds: (ticks(11) + ticks(12)) as f64 / hz,
    })
}

fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = std::fs::read_to_string(path) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// The server's processes at one moment, in all and per content item.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Seconds since the epoch.
    pub at: i64,
    pub processes: usize,
    pub rss_bytes: u64,
    /// (content id, processes, resident bytes) of each item that had any.
    pub by_content: Vec<(i64, usize, u64)>,
}

impl Sample {
    /// The same moment, for one content item only.
    pub fn of_content(&self, content_id: i64) -> Sample {
        let (processes, rss_bytes) = self
            .by_content
            .iter()
            .find(|(id, _, _)| *id == content_id)
            .map(|(_, n, bytes)| (*n, *bytes))
            .unwrap_or((0, 0));
        Sample {
            at: self.at,
            processes,
            rss_bytes,
            by_content: Vec::new(),
        }
    }
}

/// The last hour of samples.
pub const KEPT: usize = 60;
pub const INTERVAL: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The server's processes now (reading /proc off the async threads).
    pub async fn take_sample(scheduler: &Scheduler) -> Sample {
        let running: Vec<(i64, u32)> = scheduler
            .all_running()
            .iter()
            .map(|(id, p)| (*id, p.pid.load(std::sync::atomic::Ordering::Acquire)))
            .collect();
        let processes = running.len();
        let measured = tokio::task::spawn_blocking(move || {
            running
                .into_iter()
                .map(|(id, pid)| (id, of_process(pid).map(|u| u.rss_bytes).unwrap_or(0)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut by_content: Vec<(i64, usize, u64)> = Vec::new();
        for (id, bytes) in &measured {
            match by_content.iter_mut().find(|(c, _, _)| c == id) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 += bytes;
                }
                None => by_content.push((*id, 1, *bytes)),
            }
        }
        Sample {
            at: chrono::Utc::now().timestamp(),
            processes,
            rss_bytes: measured.iter().map(|(_, b)| b).sum(),
            by_content,
        }
    }

    /// Samples every minute while connectd runs.
    pub async fn sample_forever(self: Arc<Self>, scheduler: Arc<Scheduler>) {
        let mut ticks = tokio::time::interval(INTERVAL);
        loop {
            ticks.tick().await;
            let sample = Self::take_sample(&scheduler).await;
            self.record(sample);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu() {
        let usage = of_process(std::process::id()).expect("our own process");
        assert!(usage.rss_bytes > 1 << 20, "{usage:?}");
        assert!(usage.cpu_seconds >= 0.0);
        assert!(of_process(0).is_none());
        assert!(of_process(u32::MAX).is_none());
    }

    #[test]
    fn an_hour_is_kept() {
        let history = History::default();
        for at in 0..(KEPT as i64 + 5) {
            history.record(Sample {
                at,
                processes: 1,
                rss_bytes: 0,
                by_content: vec![(7, 1, 0)],
            });
        }
        let samples = history.samples();
        assert_eq!(samples.len(), KEPT);
        assert_eq!(samples[0].at, 5, "the oldest went first");
        assert_eq!(samples[0].of_content(7).processes, 1);
        assert_eq!(samples[0].of_content(8).processes, 0);
    }
}
