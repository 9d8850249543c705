//! What runs: each content's processes grouped by the account they run as
//! (with the viewer as process owner, one group per viewer), and for
//! administrators the whole server's, with the limits in force and a chart
//! of the last hour, so that what per-viewer processes cost is in plain
//! sight (the seed's capacity-planning point).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;

use super::{problem, render, sign_in_first, Layout};
use crate::http::{ApiError, AppState, Viewer};
use crate::roles::Role;
use crate::run::usage::{self, Sample};
use crate::run::Process;

pub struct ProcessRow {
    pub content: String,
    pub content_guid: String,
    pub pid: u32,
    pub memory: String,
    pub cpu: String,
    pub connections: usize,
    pub age: String,
}

/// The processes running as one account (one viewer, with the viewer as
/// process owner).
pub struct AccountGroup {
    pub account: String,
    pub uid: u32,
    /// Resident memory of its processes, in all.
    pub bytes: u64,
    pub memory: String,
    pub rows: Vec<ProcessRow>,
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// `processes` (of content `names` by id) grouped by account, with their
/// use of the machine read from /proc.
pub async fn grouped(
    app: &AppState,
    processes: Vec<(i64, Arc<Process>)>,
    names: &HashMap<i64, (String, String)>,
) -> Result<Vec<AccountGroup>, ApiError> {
    let now = chrono::Utc::now().timestamp();
    let mut started: HashMap<String, i64> = HashMap::new();
    let contents: Vec<i64> = {
        let mut ids: Vec<i64> = processes.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    for id in contents {
        for job in app.store.jobs(id)? {
            started.insert(job.key, job.started_time);
        }
    }
    let pids: Vec<u32> = processes
        .iter()
        .map(|(_, p)| p.pid.load(Ordering::Acquire))
        .collect();
    let usages = tokio::task::spawn_blocking(move || {
        pids.into_iter().map(usage::of_process).collect::<Vec<_>>()
    })
    .await
    .map_err(ApiError::internal)?;
    let mut groups: BTreeMap<(String, u32), (u64, Vec<ProcessRow>)> = BTreeMap::new();
    for ((content_id, process), usage) in processes.iter().zip(usages) {
        let usage = usage.unwrap_or_default();
        let (content, content_guid) = names.get(content_id).cloned().unwrap_or_default();
        let entry = groups
            .entry((process.account.clone(), process.uid))
            .or_default();
        entry.0 += usage.rss_bytes;
        entry.1.push(ProcessRow {
            content,
            content_guid,
            pid: process.pid.load(Ordering::Acquire),
            memory: mib(usage.rss_bytes),
            cpu: format!("{:.1} s", usage.cpu_seconds),
            connections: process.connections(),
            age: started
                .get(&process.job)
                .map(|t| age(now - t))
                .unwrap_or_default(),
        });
    }
    Ok(groups
        .into_iter()
        .map(|((account, uid), (bytes, rows))| AccountGroup {
            account,
            uid,
            bytes,
            memory: mib(bytes),
            rows,
        })
        .collect())
}

/// The last hour as two polylines in a 600 x 120 box: processes and
/// memory, each scaled to its own maximum.
pub struct Chart {
    pub processes: String,
    pub memory: String,
    pub max_processes: usize,
    pub max_memory: String,
    pub samples: usize,
}

pub(super) fn chart(samples: &[Sample]) -> Chart {
    let max_processes = samples.iter().map(|s| s.processes).max().unwrap_or(0);
    let max_memory = samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
    // The hour's samples and the one taken now: the last point at the
    // right edge, however many there are.
    let step = 600.0 / (samples.len().max(2) - 1) as f64;
    let line = |value: &dyn Fn(&Sample) -> f64, max: f64| -> String {
        samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let y = if max > 0.0 { value(s) / max } else { 0.0 };
                format!("{:.1},{:.1}", i as f64 * step, 115.0 - y * 110.0)
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    Chart {
        processes: line(&|s| s.processes as f64, max_processes as f64),
        memory: line(&|s| s.rss_bytes as f64, max_memory as f64),
        max_processes,
        max_memory: mib(max_memory),
        samples: samples.len(),
    }
}

pub struct Limit {
    pub name: &'static str,
    pub value: String,
}

#[derive(Template)]
#[template(path = "dashboard/processes.html")]
struct ServerProcesses {
    layout: Layout,
    total: usize,
    memory: String,
    groups: Vec<AccountGroup>,
    limits: Vec<Limit>,
    chart: Chart,
}

pub async fn server(
    State(app): State<Arc<AppState>>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
) -> Response {
    let Some(me) = viewer.0.as_ref() else {
        return sign_in_first("/connect/processes");
    };
    if me.role != Role::Administrator {
        return problem(
            StatusCode::FORBIDDEN,
            me,
            &headers,
            "Only administrators see the whole server's processes.",
        );
    }
    let result = async {
        let names: HashMap<i64, (String, String)> = app
            .store
            .list_content()?
            .into_iter()
            .map(|c| (c.id, (c.name, c.guid)))
            .collect();
        let groups = grouped(&app, app.scheduler.all_running(), &names).await?;
        Ok::<_, ApiError>(groups)
    }
    .await;
    let groups = match result {
        Ok(groups) => groups,
        Err(e) => return problem(e.status, me, &headers, e.message),
    };
    let mut samples = app.usage.samples();
    // Now, too, so that the chart is not empty for the first minute.
    samples.push(usage::History::take_sample(&app.scheduler).await);
    let now = samples.last().cloned();
    let s = &app.settings;
    let limits = vec![
        Limit {
            name: "Processes on the whole server ([Scheduler] MaxTotalProcesses)",
            value: s.scheduler.max_total_processes.to_string(),
        },
        Limit {
            name: "Processes per content, by default ([Scheduler] MaxProcesses)",
            value: s.scheduler.max_processes.to_string(),
        },
        Limit {
            name: "Memory per process ([Scheduler] MemoryLimit)",
            value: s
                .limits
                .memory_bytes
                .map(mib)
                .unwrap_or_else(|| "none".into()),
        },
        Limit {
            name: "CPUs per process ([Scheduler] CPULimit)",
            value: s
                .limits
                .cpus
                .map(|c| c.to_string())
                .unwrap_or_else(|| "none".into()),
        },
        Limit {
            name: "Tasks per process ([Scheduler] TasksMax)",
            value: s
                .limits
                .tasks
                .map(|t| t.to_string())
                .unwrap_or_else(|| "none".into()),
        },
    ];
    render(
        StatusCode::OK,
        &ServerProcesses {
            layout: Layout::new("Processes", me, "processes", &headers),
            total: now.as_ref().map(|n| n.processes).unwrap_or(0),
            memory: mib(now.as_ref().map(|n| n.rss_bytes).unwrap_or(0)),
            groups,
            limits,
            chart: chart(&samples),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_sizes_read_naturally() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(125), "2m 5s");
        assert_eq!(age(7300), "2h 1m");
        assert_eq!(age(-3), "0s");
        assert_eq!(mib(3 << 20), "3.0 MiB");
    }

    #[test]
    fn the_chart_scales_each_line_to_its_maximum() {
        let samples: Vec<Sample> = (0..3)
            .map(|i| Sample {
                at: i,
                processes: i as usize,
                rss_bytes: (i as u64) << 20,
                by_content: Vec::new(),
            })
            .collect();
        let c = chart(&samples);
        assert_eq!(c.max_processes, 2);
        assert_eq!(c.samples, 3);
        let points: Vec<&str> = c.processes.split(' ').collect();
        assert_eq!(points.len(), 3);
        assert!(
            points[0].ends_with(",115.0") && points[2].ends_with(",5.0"),
            "{points:?}"
        );
        assert_eq!(chart(&[]).processes, "");
    }
}
