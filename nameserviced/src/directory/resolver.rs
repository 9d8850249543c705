//! Which directory answers, and when.
//!
//! - Lookups the service cannot answer from its own rows ask the
//!   directories that answer lookups, in order, within [`LOOKUP_BUDGET`]:
//!   the NSS module gives the daemon one second, and a slow directory must
//!   not turn into a timed-out lookup. A fetch that overruns goes on in the
//!   background and its result is cached for the next lookup.
//! - Answers that found nothing (or an entry that was refused) are
//!   remembered for the directory's `NegativeCacheTtl`.
//! - A directory that fails is skipped at once until its backoff (1 s,
//!   doubling to 60 s) expires; this is logged once when it goes down and
//!   once when it comes back, never per lookup. Cached entries keep
//!   answering meanwhile.
//! - The background refresh rereads entries before their `CacheTtl` runs
//!   out, one at a time per directory, and drops the ones the directory no
//!   longer has.
//! - A first-seen identity whose directories include one that is down is
//!   refused as a temporary failure: never provisioned under a new uid. An
//!   identity whose entry is found but refused is refused too, and a name
//!   the directories hold is never provisioned to someone else.

/// What reading one entry gave.
enum Loaded<T> {
    Found(T),
    Absent,
    /// There, but not usable (logged); says why.
    Refused(String),
}

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use connect_proto::v1::{Account, PosixGroup, PosixUser};
use lru::LruCache;
use tokio::sync::Notify;

use super::checks;
use super::ldap::LdapDirectory;
use super::source::{Caller, Source};
use super::{Directory, DirectoryError, GroupKey, UserKey};
use crate::config::directory::{DirectorySettings, IdentityValue};
use crate::config::FORBIDDEN_RANGES;
use crate::service::{
    DirectoryAccount, DirectoryGroup, EnsureOutcome, EnsureRequest, Nameservice, Selector,
    ServiceError,
};
use crate::store::bindings::BindingKind;
use crate::store::unix_now;

/// How long a lookup waits for a directory before answering "unavailable".
pub const LOOKUP_BUDGET: Duration = Duration::from_millis(400);
const NEGATIVE_CAPACITY: usize = 16_384;
/// Entries refreshed per directory per pass of the background refresh.
const REFRESH_BATCH: u32 = 256;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Wanted {
    UserName(String),
    Uid(u32),
    GroupName(String),
    Gid(u32),
}

pub struct Resolver {
    ns: Arc<Nameservice>,
    sources: Vec<Source>,
    /// (directory index, key) → when the negative answer expires.
    negative: Mutex<LruCache<(usize, Wanted), Instant>>,
    /// One fetch per key at a time; later askers wait for it.
    inflight: Mutex<HashMap<Wanted, Arc<tokio::sync::Mutex<()>>>>,
    wake_refresh: Notify,
}

fn unavailable(e: DirectoryError) -> ServiceError {
    match e {
        DirectoryError::Ambiguous(m) => ServiceError::FailedPrecondition(m),
        DirectoryError::Unavailable(m) | DirectoryError::Misconfigured(m) => {
            ServiceError::Unavailable(m)
        }
    }
}

async fn blocking<T: Send + 'static>(
    ns: &Arc<Nameservice>,
    f: impl FnOnce(&Nameservice) -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    let ns = ns.clone();
    tokio::task::spawn_blocking(move || f(&ns))
        .await
        .map_err(|e| ServiceError::Unavailable(format!("a nameservice task failed: {e}")))?
}

impl Resolver {
    /// The configured directories, reached with LDAP.
    pub fn new(ns: Arc<Nameservice>) -> Result<Self, String> {
        let mut directories: Vec<(Arc<DirectorySettings>, Arc<dyn Directory>)> = Vec::new();
        for settings in ns.settings().directories.clone() {
            let settings = Arc::new(settings);
            let ldap = LdapDirectory::new(settings.clone()).map_err(|e| e.to_string())?;
            directories.push((settings, Arc::new(ldap)));
        }
        Ok(Self::with_directories(ns, directories))
    }

    /// Any directories, e.g. fakes in unit tests.
    pub fn with_directories(
        ns: Arc<Nameservice>,
        directories: Vec<(Arc<DirectorySettings>, Arc<dyn Directory>)>,
    ) -> Self {
        Self {
            ns,
            sources: directories
                .into_iter()
                .map(|(settings, directory)| Source::new(settings, directory))
                .collect(),
            negative: Mutex::new(LruCache::new(
                NonZeroUsize::new(NEGATIVE_CAPACITY).unwrap_or(NonZeroUsize::MIN),
            )),
            inflight: Mutex::new(HashMap::new()),
            wake_refresh: Notify::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    fn answering(&self) -> impl Iterator<Item = (usize, &Source)> {
        self.sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.settings.answer_lookups)
    }

    fn negative_hit(&self, index: usize, wanted: &Wanted) -> bool {
        let mut negative = lock(&self.negative);
        match negative.get(&(index, wanted.clone())) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                negative.pop(&(index, wanted.clone()));
                false
            }
            None => false,
        }
    }

    fn remember_absent(&self, index: usize, wanted: Wanted) {
        let ttl = self.sources[index].settings.negative_ttl;
        if !ttl.is_zero() {
            lock(&self.negative).put((index, wanted), Instant::now() + ttl);
        }
    }

    async fn one_at_a_time(&self, wanted: &Wanted) -> tokio::sync::OwnedMutexGuard<()> {
        let gate = lock(&self.inflight)
            .entry(wanted.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        gate.lock_owned().await
    }

    fn uid_worth_asking(&self, uid: u32) -> bool {
        let s = self.ns.settings();
        uid >= s.minimum_uid
            && !s.uid_range.contains(&uid)
            && !FORBIDDEN_RANGES.iter().any(|(r, _)| r.contains(&uid))
    }

    fn gid_worth_asking(&self, gid: u32) -> bool {
        let s = self.ns.settings();
        gid >= s.minimum_gid
            && !s.gid_range.contains(&gid)
            && !FORBIDDEN_RANGES.iter().any(|(r, _)| r.contains(&gid))
    }

    /// Reads a user and its groups from one directory, checks them and
    /// stores them. `Ok(None)`: not there, or refused (logged).
    async fn load_user(
        &self,
        source: &Source,
        key: UserKey<'_>,
        caller: Caller,
    ) -> Result<Loaded<DirectoryAccount>, DirectoryError> {
        let Some(mut entry) = source.user(key, caller).await? else {
            return Ok(Loaded::Absent);
        };
        entry.source = source.name().to_owned();
        let settings = self.ns.settings();
        let local = self.ns.local_accounts();
        let user = match checks::user(settings, &local, &entry) {
            Ok(u) => u,
            Err(why) => {
                tracing::warn!(directory = %source.name(), dn = %entry.dn, "refused directory entry: {why}");
                return Ok(Loaded::Refused(why));
            }
        };
        let groups = source
            .groups_of(&user, caller)
            .await?
            .iter()
            .filter_map(|g| match checks::group(settings, &local, g) {
                Ok(g) => Some(DirectoryGroup {
                    source: source.name().to_owned(),
                    ..g
                }),
                Err(why) => {
                    tracing::warn!(directory = %source.name(), dn = %g.dn, "refused directory group: {why}");
                    None
                }
            })
            .collect::<Vec<_>>();
        let account = user;
        if source.settings.answer_lookups {
            let stored = account.clone();
            match blocking(&self.ns, move |ns| {
                ns.store_directory_user(&stored, &groups)
            })
            .await
            {
                Ok(warnings) => {
                    for w in warnings {
                        tracing::warn!(directory = %source.name(), account = %account.name, "{w}");
                    }
                }
                Err(ServiceError::FailedPrecondition(why)) => {
                    tracing::warn!(directory = %source.name(), dn = %account.dn, "refused directory entry: {why}");
                    return Ok(Loaded::Refused(why));
                }
                Err(e) => return Err(DirectoryError::Unavailable(e.to_string())),
            }
        }
        Ok(Loaded::Found(account))
    }

    async fn load_group(
        &self,
        source: &Source,
        key: GroupKey<'_>,
        caller: Caller,
    ) -> Result<Option<DirectoryGroup>, DirectoryError> {
        let Some(entry) = source.group(key, caller).await? else {
            return Ok(None);
        };
        let group = match checks::group(self.ns.settings(), &self.ns.local_accounts(), &entry) {
            Ok(g) => DirectoryGroup {
                source: source.name().to_owned(),
                ..g
            },
            Err(why) => {
                tracing::warn!(directory = %source.name(), dn = %entry.dn, "refused directory group: {why}");
                return Ok(None);
            }
        };
        let stored = group.clone();
        match blocking(&self.ns, move |ns| ns.store_directory_group(&stored)).await {
            Ok(()) => Ok(Some(group)),
            Err(ServiceError::FailedPrecondition(why)) => {
                tracing::warn!(directory = %source.name(), dn = %group.dn, "refused directory group: {why}");
                Ok(None)
            }
            Err(e) => Err(DirectoryError::Unavailable(e.to_string())),
        }
    }

    /// Asks the answering directories in order for `wanted`; Ok(true) when
    /// one found (and stored) it.
    async fn fetch(self: &Arc<Self>, wanted: Wanted) -> Result<bool, ServiceError> {
        let gate = self.one_at_a_time(&wanted).await;
        let result = self.fetch_locked(&wanted).await;
        drop(gate);
        let mut inflight = lock(&self.inflight);
        if inflight
            .get(&wanted)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            inflight.remove(&wanted);
        }
        result
    }

    async fn fetch_locked(&self, wanted: &Wanted) -> Result<bool, ServiceError> {
        let mut down = None;
        for (index, source) in self.answering() {
            if self.negative_hit(index, wanted) {
                continue;
            }
            let Ok(_permit) = source.lookups.try_acquire() else {
                down = Some(DirectoryError::Unavailable(format!(
                    "{} has {} lookups waiting already",
                    source.settings.header(),
                    super::source::MAX_LOOKUPS_IN_FLIGHT
                )));
                continue;
            };
            let lookup = Caller::Lookup;
            let found = match wanted {
                Wanted::UserName(n) => self
                    .load_user(source, UserKey::Name(n), lookup)
                    .await
                    .map(|u| matches!(u, Loaded::Found(_))),
                Wanted::Uid(u) => self
                    .load_user(source, UserKey::Uid(*u), lookup)
                    .await
                    .map(|u| matches!(u, Loaded::Found(_))),
                Wanted::GroupName(n) => self
                    .load_group(source, GroupKey::Name(n), lookup)
                    .await
                    .map(|g| g.is_some()),
                Wanted::Gid(g) => self
                    .load_group(source, GroupKey::Gid(*g), lookup)
                    .await
                    .map(|g| g.is_some()),
            };
            match found {
                Ok(true) => return Ok(true),
                Ok(false) => self.remember_absent(index, wanted.clone()),
                Err(DirectoryError::Ambiguous(why)) => {
                    tracing::warn!(directory = %source.name(), "{why}");
                    self.remember_absent(index, wanted.clone());
                }
                Err(e) => down = Some(e),
            }
        }
        match down {
            Some(e) => Err(unavailable(e)),
            None => Ok(false),
        }
    }

    /// Fetches within the lookup budget; past it the fetch goes on alone.
    async fn fetch_for_lookup(self: &Arc<Self>, wanted: Wanted) -> Result<bool, ServiceError> {
        let this = self.clone();
        let task = tokio::spawn(async move { this.fetch(wanted).await });
        match tokio::time::timeout(LOOKUP_BUDGET, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(ServiceError::Unavailable(format!(
                "directory lookup failed: {e}"
            ))),
            Err(_) => Err(ServiceError::Unavailable(format!(
                "the directory did not answer within {} ms; the answer is cached when it comes",
                LOOKUP_BUDGET.as_millis()
            ))),
        }
    }

    /// A lookup the service's rows could not answer: fetch `wanted` if
    /// worth asking, then answer from the rows again.
    async fn lookup<T>(
        self: &Arc<Self>,
        worth_asking: bool,
        wanted: Wanted,
        answer: impl FnOnce(&Nameservice) -> Result<Option<T>, ServiceError>,
    ) -> Result<Option<T>, ServiceError> {
        if !worth_asking || self.answering().next().is_none() {
            return Ok(None);
        }
        if !self.fetch_for_lookup(wanted).await? {
            return Ok(None);
        }
        answer(&self.ns)
    }

    fn name_worth_asking(&self, name: &str) -> bool {
        crate::names::plausible_lookup_name(name, self.ns.settings().policy.max_len)
    }

    pub async fn user_by_name(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Option<Arc<PosixUser>>, ServiceError> {
        let wanted = Wanted::UserName(name.to_owned());
        self.lookup(self.name_worth_asking(name), wanted, |ns| {
            ns.user_by_name(name)
        })
        .await
    }

    pub async fn user_by_uid(
        self: &Arc<Self>,
        uid: u32,
    ) -> Result<Option<Arc<PosixUser>>, ServiceError> {
        self.lookup(self.uid_worth_asking(uid), Wanted::Uid(uid), |ns| {
            ns.user_by_uid(uid)
        })
        .await
    }

    pub async fn group_by_name(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Option<Arc<PosixGroup>>, ServiceError> {
        let wanted = Wanted::GroupName(name.to_owned());
        self.lookup(self.name_worth_asking(name), wanted, |ns| {
            ns.group_by_name(name)
        })
        .await
    }

    pub async fn group_by_gid(
        self: &Arc<Self>,
        gid: u32,
    ) -> Result<Option<Arc<PosixGroup>>, ServiceError> {
        self.lookup(self.gid_worth_asking(gid), Wanted::Gid(gid), |ns| {
            ns.group_by_gid(gid)
        })
        .await
    }

    pub async fn supplementary(
        self: &Arc<Self>,
        user: &str,
    ) -> Result<Option<Arc<Vec<u32>>>, ServiceError> {
        if self.user_by_name(user).await?.is_none() {
            return Ok(None);
        }
        self.ns.supplementary(user)
    }

    /// The account of a federated identity, in the documented order.
    pub async fn ensure(
        self: &Arc<Self>,
        req: EnsureRequest,
    ) -> Result<EnsureOutcome, ServiceError> {
        let (provider, unique_id) = (req.provider.clone(), req.unique_id.clone());
        let binding = blocking(&self.ns, move |ns| ns.binding(&provider, &unique_id)).await?;
        if let Some(b) = &binding {
            if b.kind == BindingKind::Directory {
                self.refresh_if_due(&b.source, b.uid).await;
            }
        }
        let (provider, unique_id) = (req.provider.clone(), req.unique_id.clone());
        let known = binding.is_some()
            || blocking(&self.ns, move |ns| ns.is_provisioned(&provider, &unique_id)).await?;
        if !known {
            if let Some(outcome) = self.bind_from_directories(&req).await? {
                return Ok(outcome);
            }
            if !self.ns.settings().auto_provision {
                return Err(ServiceError::FailedPrecondition(format!(
                    "no account for {:?}: no directory has an entry for this identity, no \
                     administrator mapped it, and [Nameservice] AutoProvision = false",
                    req.username
                )));
            }
        }
        if binding.is_none() {
            // The name it would get may be a directory account not cached
            // yet: cache it first, so provisioning picks another name.
            // Someone known does not wait on a directory that is backing off.
            let caller = if known {
                Caller::Refresh
            } else {
                Caller::SignIn
            };
            let claimed = self.cache_name(&req.username, caller).await;
            if let (false, Err(e)) = (known, claimed) {
                return Err(e);
            }
        }
        blocking(&self.ns, move |ns| ns.ensure_user(&req)).await
    }

    /// Makes sure a directory account named like `username` (normalised)
    /// is in the cache.
    async fn cache_name(&self, username: &str, caller: Caller) -> Result<(), ServiceError> {
        let Ok(name) = self.ns.settings().policy.username(username) else {
            return Ok(());
        };
        if self.ns.directory_user_by_name(&name)?.is_some() {
            return Ok(());
        }
        let wanted = Wanted::UserName(name.clone());
        for (index, source) in self.answering() {
            if self.negative_hit(index, &wanted) {
                continue;
            }
            match self.load_user(source, UserKey::Name(&name), caller).await {
                Ok(Loaded::Found(_)) => return Ok(()),
                Ok(Loaded::Absent | Loaded::Refused(_)) | Err(DirectoryError::Ambiguous(_)) => {
                    self.remember_absent(index, wanted.clone())
                }
                Err(e) => {
                    return Err(ServiceError::Unavailable(format!(
                        "{e}; the name {name:?} may be a directory account, so no new account \
                         is made until the directory answers"
                    )))
                }
            }
        }
        Ok(())
    }

    async fn bind_from_directories(
        self: &Arc<Self>,
        req: &EnsureRequest,
    ) -> Result<Option<EnsureOutcome>, ServiceError> {
        let mut down = None;
        for source in self
            .sources
            .iter()
            .filter(|s| s.settings.accepts(&req.provider))
        {
            let value = match source.settings.identity_value {
                IdentityValue::UniqueId => req.unique_id.as_str(),
                IdentityValue::Username => req.username.as_str(),
            };
            match self
                .load_user(source, UserKey::Link(value), Caller::SignIn)
                .await
            {
                Ok(Loaded::Found(account)) => {
                    let (p, u, s) = (
                        req.provider.clone(),
                        req.unique_id.clone(),
                        source.name().to_owned(),
                    );
                    let cached = source.settings.answer_lookups;
                    let outcome = blocking(&self.ns, move |ns| {
                        ns.bind_directory(&p, &u, &s, &account.name, account.uid, cached)
                    })
                    .await?;
                    return Ok(Some(outcome));
                }
                Ok(Loaded::Absent) => {}
                Ok(Loaded::Refused(why)) => {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "{} has this identity's account, but it is refused: {why}; fix the \
                         entry there (it is never replaced by a new uid)",
                        source.settings.header()
                    )))
                }
                Err(DirectoryError::Ambiguous(why)) => {
                    return Err(ServiceError::FailedPrecondition(why))
                }
                Err(e) => down = Some(e),
            }
        }
        match down {
            Some(e) => Err(ServiceError::Unavailable(format!(
                "{e}; a first-time sign-in waits until every directory that may hold the \
                 account answers, so nobody is given a new uid by mistake"
            ))),
            None => Ok(None),
        }
    }

    fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name() == name)
    }

    async fn refresh_if_due(&self, source: &str, uid: Option<u32>) {
        let (Some(source), Some(uid)) = (self.source(source), uid) else {
            return;
        };
        // A missing row (dropped after a rename elsewhere) is read again
        // by the bound uid.
        let due = match self.ns.directory_user_by_uid(uid) {
            Ok(Some(row)) => {
                unix_now().saturating_sub(row.fetched)
                    >= (source.settings.cache_ttl.as_secs() / 2) as i64
            }
            Ok(None) => true,
            Err(_) => false,
        };
        // Respecting the backoff: during an outage a bound user signs in
        // from the cache at once instead of waiting out a timeout.
        if due {
            let _ = self.refresh_user_row(source, uid, Caller::Refresh).await;
        }
    }

    /// Rereads one cached user by uid; drops it if the directory no longer
    /// has it. A directory that is down leaves the cached entry alone.
    async fn refresh_user_row(
        &self,
        source: &Source,
        uid: u32,
        caller: Caller,
    ) -> Result<(), ServiceError> {
        match self.load_user(source, UserKey::Uid(uid), caller).await {
            Ok(Loaded::Found(_)) => Ok(()),
            Ok(Loaded::Absent | Loaded::Refused(_)) => {
                tracing::info!(directory = %source.name(), uid, "no longer in the directory (or refused); dropped from the cache");
                blocking(&self.ns, move |ns| ns.forget_directory_user(uid)).await
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn refresh_group_row(&self, source: &Source, gid: u32) -> Result<(), ServiceError> {
        match self
            .load_group(source, GroupKey::Gid(gid), Caller::Refresh)
            .await
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                tracing::info!(directory = %source.name(), gid, "group no longer in the directory (or refused); dropped from the cache");
                blocking(&self.ns, move |ns| ns.forget_directory_group(gid)).await
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// `nameservicectl refresh`: rereads one directory account now.
    pub async fn refresh(self: &Arc<Self>, selector: Selector) -> Result<Account, ServiceError> {
        // (directory, uid): from the cached row, or from a directory
        // binding whose row is gone.
        let target = match &selector {
            Selector::Name(n) => self
                .ns
                .directory_user_by_name(n)?
                .map(|r| (r.source, r.uid)),
            Selector::Uid(u) => self
                .ns
                .directory_user_by_uid(*u)?
                .map(|r| (r.source, r.uid)),
            Selector::Identity {
                provider,
                unique_id,
            } => match self.ns.binding(provider, unique_id)? {
                Some(b) if b.kind == BindingKind::Directory => b.uid.map(|uid| (b.source, uid)),
                _ => None,
            },
        };
        let Some((source_name, uid)) = target else {
            return Err(ServiceError::NotFound(
                "no directory account by that name, uid or identity".into(),
            ));
        };
        let Some(source) = self.source(&source_name) else {
            return Err(ServiceError::FailedPrecondition(format!(
                "the account came from [Nameservice \"{source_name}\"], which is no longer \
                 configured"
            )));
        };
        self.refresh_user_row(source, uid, Caller::SignIn).await?;
        self.ns.get_account(&Selector::Uid(uid))
    }

    /// `nameservicectl flush-cache`.
    pub fn flush(&self) -> Result<u64, ServiceError> {
        lock(&self.negative).clear();
        let expired = self.ns.expire_directory()?;
        self.wake_refresh.notify_one();
        tracing::info!(
            expired,
            "directory cache flushed: every entry is refreshed next"
        );
        Ok(expired)
    }

    /// The background refresh; runs for the daemon's lifetime.
    pub async fn run_refresh(self: Arc<Self>) {
        if self.sources.is_empty() {
            return;
        }
        let shortest = self
            .sources
            .iter()
            .map(|s| s.settings.cache_ttl)
            .min()
            .unwrap_or(Duration::from_secs(900));
        let period = (shortest / 4).clamp(Duration::from_millis(500), Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = self.wake_refresh.notified() => {}
            }
            self.refresh_pass().await;
            lock(&self.inflight).retain(|_, gate| Arc::strong_count(gate) > 1);
        }
    }

    /// Rereads what is due: entries older than three quarters of their TTL.
    pub async fn refresh_pass(&self) {
        let now = unix_now();
        for source in &self.sources {
            if !source.settings.answer_lookups || source.ready().is_err() {
                continue;
            }
            let due = now - (source.settings.cache_ttl.as_secs() * 3 / 4) as i64;
            let users = self
                .ns
                .stale_directory_users(source.name(), due, REFRESH_BATCH)
                .unwrap_or_default();
            for row in &users {
                if self
                    .refresh_user_row(source, row.uid, Caller::Refresh)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let groups = self
                .ns
                .stale_directory_groups(source.name(), due, REFRESH_BATCH)
                .unwrap_or_default();
            for row in &groups {
                if self.refresh_group_row(source, row.gid).await.is_err() {
                    break;
                }
            }
        }
    }
}
