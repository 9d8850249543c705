//! What: content items, who may open them, their process settings, and
//! the processes (jobs) that built or ran them.

use std::time::Duration;

use crate::bundle::AppMode;
use crate::config::{ResourceLimits, SchedulerSettings};

/// Who may open the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessType {
    /// Anyone, signed in or not.
    All,
    /// Any signed-in user.
    LoggedIn,
    /// The owner, collaborators, and the users and groups on its list.
    Acl,
}

impl AccessType {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessType::All => "all",
            AccessType::LoggedIn => "logged_in",
            AccessType::Acl => "acl",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "all" => Some(AccessType::All),
            "logged_in" => Some(AccessType::LoggedIn),
            "acl" => Some(AccessType::Acl),
            _ => None,
        }
    }
}

/// Per-content overrides of `[Scheduler]`; `None` means the server default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSettings {
    pub min_processes: Option<u32>,
    pub max_processes: Option<u32>,
    pub max_conns_per_process: Option<u32>,
    pub load_factor: Option<f64>,
    pub init_timeout: Option<u32>,
    pub idle_timeout: Option<u32>,
    pub connection_timeout: Option<u32>,
    pub read_timeout: Option<u32>,
    /// Bytes of memory its processes may use, below `[Scheduler]
    /// MemoryLimit` when the server sets one.
    pub memory_limit: Option<u64>,
    /// CPUs its processes may use, below `[Scheduler] CPULimit` when set.
    pub cpu_limit: Option<f64>,
}

impl ProcessSettings {
    /// The resource limits its processes run with: its own where set, the
    /// server's otherwise.
    pub fn limits(&self, server: &ResourceLimits) -> ResourceLimits {
        ResourceLimits {
            memory_bytes: self.memory_limit.or(server.memory_bytes),
            cpus: self.cpu_limit.or(server.cpus),
            ..server.clone()
        }
    }

    /// The settings a content item actually runs with.
    pub fn effective(&self, defaults: &SchedulerSettings) -> SchedulerSettings {
        let secs =
            |v: Option<u32>, d: Duration| v.map(|s| Duration::from_secs(s.into())).unwrap_or(d);
        SchedulerSettings {
            min_processes: self.min_processes.unwrap_or(defaults.min_processes),
            max_processes: self.max_processes.unwrap_or(defaults.max_processes).max(1),
            max_conns_per_process: self
                .max_conns_per_process
                .unwrap_or(defaults.max_conns_per_process)
                .max(1),
            load_factor: self.load_factor.unwrap_or(defaults.load_factor),
            init_timeout: secs(self.init_timeout, defaults.init_timeout),
            idle_timeout: secs(self.idle_timeout, defaults.idle_timeout),
            connection_timeout: secs(self.connection_timeout, defaults.connection_timeout),
            read_timeout: secs(self.read_timeout, defaults.read_timeout),
            ..*defaults
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    pub id: i64,
    pub guid: String,
    pub name: String,
    pub title: Option<String>,
    pub description: String,
    pub owner_id: i64,
    pub owner_guid: String,
    pub access_type: AccessType,
    /// `None` until a bundle has been deployed.
    pub app_mode: Option<AppMode>,
    pub run_as: Option<String>,
    pub run_as_current_user: bool,
    pub process: ProcessSettings,
    pub bundle_id: Option<i64>,
    pub created_time: i64,
    pub last_deployed_time: Option<i64>,
    /// The live deployment: names its environment directory. Each
    /// deployment builds a new one, so running processes keep theirs.
    pub deployment: Option<String>,
}

/// What a user is to one content item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Relation {
    None,
    /// On the access list (directly or through a group).
    Viewer,
    /// A collaborator: may change and deploy it.
    Collaborator,
    Owner,
}

/// A content item as a create request describes it.
#[derive(Debug, Clone)]
pub struct NewContent {
    pub name: String,
    pub title: Option<String>,
    pub description: String,
    pub owner_id: i64,
    pub access_type: AccessType,
    pub run_as: Option<String>,
    pub run_as_current_user: bool,
    pub process: ProcessSettings,
}

#[cfg(test)]
impl NewContent {
    /// What tests create: open to all, every setting at its default.
    pub fn open_to_all(name: &str, owner_id: i64) -> Self {
        Self {
            name: name.to_owned(),
            title: None,
            description: String::new(),
            owner_id,
            access_type: AccessType::All,
            run_as: None,
            run_as_current_user: false,
            process: ProcessSettings::default(),
        }
    }
}

/// One entry of a content item's access list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub id: i64,
    pub guid: String,
    pub principal_type: String,
    pub principal_guid: String,
    /// `viewer` or `owner` (a collaborator).
    pub role: String,
}

/// A process connectd started for a content item: a build or an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub key: String,
    pub kind: String,
    pub bundle_id: Option<i64>,
    pub pid: Option<i64>,
    pub unix_account: String,
    pub uid: u32,
    pub viewer_guid: Option<String>,
    pub started_time: i64,
    pub ended_time: Option<i64>,
    pub exit_code: Option<i64>,
    pub log_path: String,
}

/// A deployment's progress, as the tasks API reports it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TaskState {
    pub output: Vec<String>,
    pub finished: bool,
    pub code: i32,
    pub error: String,
    pub started: Option<i64>,
}

/// A deployment task as stored: whose content it deploys and which node
/// runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTask {
    pub id: String,
    pub content_guid: String,
    pub node: String,
    pub state: TaskState,
}
