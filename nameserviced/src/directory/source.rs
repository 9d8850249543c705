//! One configured directory as the resolver sees it: its settings, the
//! seam to its server, whether it is backing off after a failure, and how
//! many lookups may wait on it at once.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::{Directory, DirectoryAccount, DirectoryError, DirectoryGroup, GroupKey, UserKey};
use crate::config::directory::DirectorySettings;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Lookups that may wait on one directory at once; more are answered
/// "unavailable" at once, so a flood of distinct names from any local
/// process (the lookup socket is open to all) cannot pile up searches.
pub const MAX_LOOKUPS_IN_FLIGHT: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Who is asking: lookups and the background refresh respect the backoff;
/// a sign-in always asks (a person is waiting, and a directory that came
/// back must not be ignored for a minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Lookup,
    Refresh,
    SignIn,
}

#[derive(Default)]
pub struct Health {
    down_since: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

pub struct Source {
    pub settings: Arc<DirectorySettings>,
    directory: Arc<dyn Directory>,
    health: Mutex<Health>,
    pub lookups: Semaphore,
}

impl Source {
    pub fn new(settings: Arc<DirectorySettings>, directory: Arc<dyn Directory>) -> Self {
        Self {
            settings,
            directory,
            health: Mutex::new(Health::default()),
            lookups: Semaphore::new(MAX_LOOKUPS_IN_FLIGHT),
        }
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Whether to ask now; `Err` says why not (still backing off).
    pub fn ready(&self) -> Result<(), DirectoryError> {
        let health = lock(&self.health);
        match health.retry_at {
            Some(at) if Instant::now() < at => Err(DirectoryError::Unavailable(format!(
                "{} is unreachable (retrying in {} ms)",
                self.settings.header(),
                at.saturating_duration_since(Instant::now()).as_millis()
            ))),
            _ => Ok(()),
        }
    }

    /// Records how a call went; logs only the transitions.
    fn record<T>(&self, result: &Result<T, DirectoryError>) {
        let mut health = lock(&self.health);
        match result {
            Err(DirectoryError::Unavailable(why)) | Err(DirectoryError::Misconfigured(why)) => {
                if health.down_since.is_none() {
                    health.down_since = Some(Instant::now());
                    tracing::warn!(
                        directory = %self.settings.name,
                        "{why}; cached entries keep answering, new ones wait until it answers"
                    );
                }
                health.backoff = (health.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                health.retry_at = Some(Instant::now() + health.backoff);
            }
            _ => {
                if let Some(since) = health.down_since.take() {
                    tracing::info!(
                        directory = %self.settings.name,
                        down_seconds = since.elapsed().as_secs(),
                        "directory reachable again"
                    );
                }
                health.retry_at = None;
                health.backoff = Duration::ZERO;
            }
        }
    }

    fn may_ask(&self, caller: Caller) -> Result<(), DirectoryError> {
        match caller {
            Caller::SignIn => Ok(()),
            Caller::Lookup | Caller::Refresh => self.ready(),
        }
    }

    pub async fn user(
        &self,
        key: UserKey<'_>,
        caller: Caller,
    ) -> Result<Option<DirectoryAccount>, DirectoryError> {
        self.may_ask(caller)?;
        let result = self.directory.user(key).await;
        self.record(&result);
        result
    }

    pub async fn group(
        &self,
        key: GroupKey<'_>,
        caller: Caller,
    ) -> Result<Option<DirectoryGroup>, DirectoryError> {
        self.may_ask(caller)?;
        let result = self.directory.group(key).await;
        self.record(&result);
        result
    }

    pub async fn groups_of(
        &self,
        user: &DirectoryAccount,
        caller: Caller,
    ) -> Result<Vec<DirectoryGroup>, DirectoryError> {
        self.may_ask(caller)?;
        let result = self.directory.groups_of(user).await;
        self.record(&result);
        result
    }
}
