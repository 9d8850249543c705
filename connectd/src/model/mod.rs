//! Plain types every layer shares: who (users, groups, API keys) and what
//! (content items, access, process settings, jobs). Data and its parsing
//! and formatting only, no policy and no I/O, so that the store, the
//! sign-in, the scheduler and HTTP can all name them without importing one
//! another. May import `roles` (Role), `bundle` (AppMode) and `config`
//! (SchedulerSettings), which import nothing of connectd's above them.

pub mod content;
pub mod users;

pub use content::{
    AccessType, Content, Job, NewContent, Permission, ProcessSettings, Relation, StoredTask,
    TaskState,
};
pub use users::{ApiKey, Group, GroupRef, User};
