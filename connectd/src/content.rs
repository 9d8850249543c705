//! Content items: their settings, who may see and change them, and the
//! validation rules of Connect's content API (codes 45, 54-58, 113, 114,
//! 150, 151), kept apart from HTTP so that they can be tested directly.

use crate::accounts::runas::{self, AccountRefusal};
use crate::bundle::AppMode;
use crate::config::{ResourceLimits, SchedulerSettings, Settings, MAX_TIMEOUT_SECONDS};
use crate::model::User;
use crate::model::{ProcessSettings, Relation};
use crate::roles::Role;

/// A rule of the content API was broken; `code` and `message` are Connect's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: u32,
    pub message: String,
    /// 400 for bad values, 403 for permissions.
    pub forbidden: bool,
}

impl Refusal {
    fn bad(code: u32, message: &str) -> Self {
        Self {
            code,
            message: message.to_owned(),
            forbidden: false,
        }
    }

    fn forbidden(code: u32, message: &str) -> Self {
        Self {
            code,
            message: message.to_owned(),
            forbidden: true,
        }
    }

    pub fn bad_timeout() -> Self {
        Self::bad(151, "The timeout must be between 0 and 2592000 seconds.")
    }

    pub fn cannot_run_as_current_user() -> Self {
        Self::bad(54, "You cannot set this content to run as the current user")
    }

    pub fn static_run_as() -> Self {
        Self::bad(
            55,
            "Custom RunAs settings are prohibited for static content.",
        )
    }

    /// Publishers without `PublishersCanManageRunAs`, and viewers.
    pub fn run_as_admin_only() -> Self {
        Self::forbidden(
            0,
            "Only administrators can change the RunAs setting of content; publishers can \
             when Authorization.PublishersCanManageRunAs is on and they own or collaborate \
             on the content.",
        )
    }

    pub fn from_account(refusal: &AccountRefusal) -> Self {
        match refusal {
            AccountRefusal::Prohibited { .. } => Self::bad(
                56,
                "The RunAs setting references a prohibited Unix account.",
            ),
            AccountRefusal::Unknown { .. } | AccountRefusal::Lookup { .. } => Self::bad(
                57,
                "The RunAs setting does not reference a valid Unix account.",
            ),
            AccountRefusal::NotMember { .. } => Self::bad(
                58,
                "The RunAs setting references a Unix account that does not have the correct \
                 group membership.",
            ),
        }
    }
}

/// What a create or update asks to change about how the content runs.
#[derive(Debug, Clone, Default)]
pub struct RunAsChange {
    /// `Some(None)`: back to `Applications.RunAs`.
    pub run_as: Option<Option<String>>,
    pub run_as_current_user: Option<bool>,
}

/// May `user` change how this content runs (RunAs, current user)?
pub fn may_manage_run_as(settings: &Settings, user: &User, relation: Relation) -> bool {
    match user.role {
        Role::Administrator => true,
        Role::Publisher => {
            settings.publishers_can_manage_run_as && relation >= Relation::Collaborator
        }
        Role::Viewer => false,
    }
}

/// Connect's RunAs rules, in Connect's order: static content first (55),
/// then who is asking (54, admin-only), then the account itself (56-58).
/// Values equal to the current ones are not changes and pass.
pub fn check_run_as(
    settings: &Settings,
    user: &User,
    relation: Relation,
    app_mode: Option<AppMode>,
    current: (&Option<String>, bool),
    change: &RunAsChange,
) -> Result<(), Refusal> {
    let run_as = change.run_as.as_ref().filter(|wanted| *wanted != current.0);
    let current_user = change.run_as_current_user.filter(|w| *w != current.1);
    if run_as.is_none() && current_user.is_none() {
        return Ok(());
    }
    let is_static = app_mode == Some(AppMode::Static);
    if is_static && (run_as.is_some_and(Option::is_some) || current_user == Some(true)) {
        return Err(Refusal::static_run_as());
    }
    let allowed = may_manage_run_as(settings, user, relation);
    if let Some(wanted) = current_user {
        if !allowed || (wanted && !settings.run_as_current_user) {
            return Err(Refusal::cannot_run_as_current_user());
        }
    }
    if let Some(wanted) = run_as {
        if !allowed {
            return Err(Refusal::run_as_admin_only());
        }
        if let Some(name) = wanted {
            runas::check_account(settings, name)
                .map_err(|refusal| Refusal::from_account(&refusal))?;
        }
    }
    Ok(())
}

/// Connect's checks of per-content process settings against `[Scheduler]`.
pub fn check_process_settings(
    wanted: &ProcessSettings,
    limits: &SchedulerSettings,
) -> Result<(), Refusal> {
    let effective = wanted.effective(limits);
    if let Some(min) = wanted.min_processes {
        if min > limits.min_processes_limit {
            return Err(Refusal::bad(
                45,
                "Invalid MinProcesses setting. The MinProcesses setting may not exceed the \
                 Scheduler.MinProcessesLimit setting.",
            ));
        }
    }
    if let Some(max) = wanted.max_processes {
        if max > limits.max_processes_limit {
            return Err(Refusal::bad(
                113,
                "Invalid MaxProcesses setting. The MaxProcesses setting may not exceed the \
                 Scheduler.MaxProcessesLimit setting.",
            ));
        }
    }
    if effective.min_processes > effective.max_processes {
        return Err(Refusal::bad(
            114,
            "Invalid MinProcesses setting. The MinProcesses setting may not exceed the \
             MaxProcesses setting.",
        ));
    }
    if let Some(factor) = wanted.load_factor {
        if !(0.0..=1.0).contains(&factor) {
            return Err(Refusal::bad(
                150,
                "The load factor must be between 0.0 and 1.0.",
            ));
        }
    }
    let timeouts = [
        wanted.init_timeout,
        wanted.idle_timeout,
        wanted.connection_timeout,
        wanted.read_timeout,
    ];
    if timeouts
        .iter()
        .flatten()
        .any(|t| u64::from(*t) > MAX_TIMEOUT_SECONDS)
    {
        return Err(Refusal::bad_timeout());
    }
    Ok(())
}

/// The smallest memory limit a content item may have: below it nothing
/// starts (the server's own limit has the same floor).
const MIN_MEMORY_LIMIT: u64 = 16 << 20;

/// Per-content `memory_limit` and `cpu_limit`: plausible, and no higher
/// than the server's `[Scheduler] MemoryLimit` and `CPULimit` where it sets
/// them (content may ask for less, never more).
pub fn check_resource_limits(
    wanted: &ProcessSettings,
    server: &ResourceLimits,
) -> Result<(), Refusal> {
    if let Some(bytes) = wanted.memory_limit {
        if bytes < MIN_MEMORY_LIMIT {
            return Err(Refusal::bad(
                3,
                "The memory limit must be at least 16777216 bytes (16 MiB).",
            ));
        }
        if server.memory_bytes.is_some_and(|max| bytes > max) {
            return Err(Refusal::bad(
                3,
                "The memory limit may not exceed the Scheduler.MemoryLimit setting.",
            ));
        }
    }
    if let Some(cpus) = wanted.cpu_limit {
        if !(0.01..=4096.0).contains(&cpus) {
            return Err(Refusal::bad(
                3,
                "The CPU limit must be between 0.01 and 4096.",
            ));
        }
        if server.cpus.is_some_and(|max| cpus > max) {
            return Err(Refusal::bad(
                3,
                "The CPU limit may not exceed the Scheduler.CPULimit setting.",
            ));
        }
    }
    Ok(())
}

/// Content names: Connect's rule (letters, digits, `-` and `_`, 1-64).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_may_lower_the_servers_resource_limits_never_raise_them() {
        let server = ResourceLimits {
            memory_bytes: Some(1 << 30),
            cpus: Some(2.0),
            ..ResourceLimits::default()
        };
        let wants = |memory_limit, cpu_limit| {
            check_resource_limits(
                &ProcessSettings {
                    memory_limit,
                    cpu_limit,
                    ..Default::default()
                },
                &server,
            )
            .map_err(|r| r.message)
        };
        assert_eq!(wants(None, None), Ok(()));
        assert_eq!(wants(Some(512 << 20), Some(0.5)), Ok(()));
        assert!(wants(Some(2 << 30), None).is_err_and(|m| m.contains("MemoryLimit")));
        assert!(wants(None, Some(4.0)).is_err_and(|m| m.contains("CPULimit")));
        assert!(wants(Some(1000), None).is_err_and(|m| m.contains("at least")));
        assert!(wants(None, Some(0.0)).is_err());
        // Without server limits, any plausible value.
        let none = ResourceLimits::default();
        let big = ProcessSettings {
            memory_limit: Some(64 << 30),
            cpu_limit: Some(64.0),
            ..Default::default()
        };
        assert_eq!(
            check_resource_limits(&big, &none).map_err(|r| r.code),
            Ok(())
        );
        // The effective limits: the content's where set.
        let effective = big.limits(&server);
        assert_eq!(effective.memory_bytes, Some(64 << 30));
        assert_eq!(ProcessSettings::default().limits(&server).cpus, Some(2.0));
    }
    use std::time::Duration;

    fn limits() -> SchedulerSettings {
        SchedulerSettings::default()
    }

    #[test]
    fn process_settings_follow_connects_rules() {
        let ok = ProcessSettings {
            min_processes: Some(1),
            max_processes: Some(5),
            load_factor: Some(1.0),
            idle_timeout: Some(MAX_TIMEOUT_SECONDS as u32),
            ..Default::default()
        };
        assert_eq!(check_process_settings(&ok, &limits()), Ok(()));
        let code = |p: ProcessSettings| check_process_settings(&p, &limits()).map_err(|r| r.code);
        assert_eq!(
            code(ProcessSettings {
                min_processes: Some(21),
                max_processes: Some(20),
                ..Default::default()
            }),
            Err(45)
        );
        assert_eq!(
            code(ProcessSettings {
                max_processes: Some(21),
                ..Default::default()
            }),
            Err(113)
        );
        assert_eq!(
            code(ProcessSettings {
                min_processes: Some(4),
                ..Default::default()
            }),
            Err(114),
            "the server's MaxProcesses (3) applies when the content sets none"
        );
        assert_eq!(
            code(ProcessSettings {
                load_factor: Some(1.01),
                ..Default::default()
            }),
            Err(150)
        );
        assert_eq!(
            code(ProcessSettings {
                load_factor: Some(-0.1),
                ..Default::default()
            }),
            Err(150)
        );
        assert_eq!(
            code(ProcessSettings {
                read_timeout: Some(MAX_TIMEOUT_SECONDS as u32 + 1),
                ..Default::default()
            }),
            Err(151)
        );
    }

    #[test]
    fn effective_settings_fall_back_to_the_server() {
        let defaults = limits();
        let p = ProcessSettings {
            max_conns_per_process: Some(1),
            idle_timeout: Some(7),
            ..Default::default()
        };
        let e = p.effective(&defaults);
        assert_eq!(e.max_conns_per_process, 1);
        assert_eq!(e.idle_timeout, Duration::from_secs(7));
        assert_eq!(e.max_processes, defaults.max_processes);
        assert_eq!(e.read_timeout, defaults.read_timeout);
    }

    #[test]
    fn names() {
        assert!(valid_name("my-app_2"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
