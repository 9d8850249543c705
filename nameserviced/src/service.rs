//! The nameservice's rules: what a lookup answers, and how an identity
//! becomes an account.
//!
//! - The same identity (provider + unique id) always gets the same uid.
//! - A new identity gets the next free uid of the range; uids are never
//!   reused (accounts are never deleted, and the counter only grows).
//! - Every id is checked against /etc/passwd and /etc/group at the moment it
//!   is handed out, not only at start-up.
//! - Provisioning is serialised through one writer and runs in one
//!   transaction: it either happens entirely or not at all.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use connect_proto::v1::{Account, AccountGroup, Identity, PosixGroup, PosixUser};
use rusqlite::{Connection, TransactionBehavior};

use crate::cache::{CacheKey, CacheStats, CacheValue, LookupCache};
use crate::config::{Settings, SharedGroup};
use crate::high_water::{self, HighWater};
use crate::local::{LocalAccounts, LocalFiles, LocalWatcher};
use crate::names::{plausible_lookup_name, sanitise_gecos, with_suffix, NameError};
use crate::publish::Publisher;
use crate::state_dir::{lock_state_dir, prepare_state_dir};
use crate::store::{self, unix_now, DbError, GroupRow, IdKind, Table, UserRow, SYSTEM_PROVIDER};

/// Most entries one enumeration page returns.
pub const MAX_PAGE: u32 = 1000;
/// Limits on what an identity provider may send, so a hostile or broken
/// provider cannot grow the database without bound.
const MAX_PROVIDER_LEN: usize = 128;
const MAX_UNIQUE_ID_LEN: usize = 1024;
const MAX_USERNAME_LEN: usize = 256;
const MAX_GROUPS_PER_USER: usize = 1024;
/// How many `name-N` candidates to try before giving up on a name.
const MAX_SUFFIX: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("database error: {0}")]
    Database(#[from] DbError),
}

impl From<NameError> for ServiceError {
    fn from(e: NameError) -> Self {
        ServiceError::InvalidArgument(e.to_string())
    }
}

/// The shared group as resolved at start-up.
#[derive(Debug, Clone)]
pub struct Shared {
    pub name: String,
    pub gid: u32,
    /// True when the nameservice answers for it (not in /etc/group).
    pub owned: bool,
}

/// An identity-provider group as the caller sends it.
#[derive(Debug, Clone)]
pub struct IdpGroup {
    pub unique_id: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct EnsureRequest {
    pub provider: String,
    pub unique_id: String,
    pub username: String,
    pub display_name: String,
    pub groups: Vec<IdpGroup>,
}

#[derive(Debug, Clone)]
pub struct EnsureOutcome {
    pub account: Account,
    pub created: bool,
    pub warnings: Vec<String>,
}

pub enum Selector {
    Name(String),
    Uid(u32),
    Identity { provider: String, unique_id: String },
}

pub struct Nameservice {
    /// Held for the daemon's lifetime: one writer per database.
    _state_lock: std::fs::File,
    settings: Settings,
    shared: Shared,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    cache: LookupCache,
    publisher: Arc<Publisher>,
    local: LocalWatcher,
    started: Instant,
    /// The highest ids ever handed out; no allocation goes at or below it.
    high_water: HighWater,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn check_text(what: &str, value: &str, max: usize) -> Result<(), ServiceError> {
    if value.is_empty() {
        return Err(ServiceError::InvalidArgument(format!("{what} is empty")));
    }
    if value.len() > max {
        return Err(ServiceError::InvalidArgument(format!(
            "{what} is {} bytes long; at most {max} are accepted",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(ServiceError::InvalidArgument(format!(
            "{what} contains a NUL byte"
        )));
    }
    Ok(())
}

impl Nameservice {
    /// Opens the database under the state directory, checks it against
    /// the high-water mark ([`high_water::open_checked`]) and resolves the
    /// shared group. `settings.check` must have run. `start_over`: an
    /// administrator asked to go on from an empty database on purpose.
    pub fn open(
        settings: Settings,
        shared: SharedGroup,
        files: LocalFiles,
        readers: usize,
        start_over: bool,
    ) -> Result<Self, String> {
        let db_path = Self::db_path(&settings.state_dir);
        let settings_cache_file = settings.cache_file.clone();
        // Before prepare_state_dir creates an empty file in its place.
        let had_data = std::fs::metadata(&db_path).is_ok_and(|m| m.len() > 0);
        prepare_state_dir(&settings.state_dir, &db_path)?;
        let state_lock = lock_state_dir(&settings.state_dir)?;
        let (writer, high_water) = high_water::open_checked(
            &settings.state_dir,
            &db_path,
            had_data,
            start_over,
            &settings.uid_range,
            &settings.gid_range,
        )?;
        let local = LocalWatcher::new(files).map_err(|e| e.to_string())?;
        let shared =
            Self::resolve_shared(&settings, shared, &writer, &local.current(), &high_water)?;
        let readers = (0..readers.max(1))
            .map(|_| store::open_reader(&db_path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot open the database {}: {e}", db_path.display()))?;
        let cache = LookupCache::new(
            NonZeroUsize::new(settings.cache_size).unwrap_or(NonZeroUsize::MIN),
            settings.positive_ttl,
            settings.negative_ttl,
        );
        Ok(Self {
            _state_lock: state_lock,
            settings,
            shared,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            cache,
            publisher: Arc::new(Publisher::new(settings_cache_file)),
            local,
            started: Instant::now(),
            high_water,
        })
    }

    /// Where the database lives under the state directory.
    pub fn db_path(state_dir: &Path) -> PathBuf {
        state_dir.join("nameservice.sqlite3")
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The uid of the account allowed to provision besides root, read from
    /// /etc/passwd now (it may be created after the daemon started).
    pub fn service_account_uid(&self) -> Option<u32> {
        let name = self.settings.service_account.as_deref()?;
        self.local.current().user(name).map(|u| u.uid)
    }

    fn resolve_shared(
        settings: &Settings,
        shared: SharedGroup,
        conn: &Connection,
        local: &LocalAccounts,
        high_water: &HighWater,
    ) -> Result<Shared, String> {
        match shared {
            SharedGroup::Local { name, gid } => Ok(Shared {
                name,
                gid,
                owned: false,
            }),
            SharedGroup::Nameservice { name, gid } => {
                let unique_id = format!("shared:{name}");
                let existing = store::group_by_identity(conn, SYSTEM_PROVIDER, &unique_id)
                    .map_err(|e| e.to_string())?;
                if let Some(row) = existing {
                    if let Some(configured) = gid.filter(|g| *g != row.gid) {
                        return Err(format!(
                            "{}: [Nameservice] SharedGroupGid = {configured}, but the shared \
                             group {name:?} was given gid {} earlier and files on disk carry \
                             it; set SharedGroupGid = {} (or remove the line)",
                            settings.origin, row.gid, row.gid
                        ));
                    }
                    return Ok(Shared {
                        name,
                        gid: row.gid,
                        owned: true,
                    });
                }
                let tx = conn.unchecked_transaction().map_err(|e| e.to_string())?;
                if let Some(other) = store::group_by_name(&tx, &name).map_err(|e| e.to_string())? {
                    return Err(format!(
                        "the shared group name {name:?} is already used by the identity \
                         provider group {:?} (gid {}); choose another SharedRunAsUnixGroup",
                        other.idp_name, other.gid
                    ));
                }
                let gid = match gid {
                    Some(g) => g,
                    None => allocate(
                        &tx,
                        IdKind::Gid,
                        &settings.gid_range,
                        &local.gids,
                        "GidRange",
                        high_water,
                    )
                    .map_err(|e| e.to_string())?,
                };
                store::insert_group(
                    &tx,
                    &GroupRow {
                        gid,
                        name: name.clone(),
                        provider: SYSTEM_PROVIDER.into(),
                        unique_id,
                        idp_name: name.clone(),
                    },
                    unix_now(),
                )
                .map_err(|e| e.to_string())?;
                tx.commit().map_err(|e| e.to_string())?;
                high_water.sync()?;
                Ok(Shared {
                    name,
                    gid,
                    owned: true,
                })
            }
        }
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(guard) = self.readers[(start + i) % n].try_lock() {
                return guard;
            }
        }
        lock(&self.readers[start % n])
    }

    fn posix_user(&self, row: &UserRow) -> PosixUser {
        PosixUser {
            name: row.name.clone(),
            uid: row.uid,
            gid: self.shared.gid,
            gecos: row.gecos.clone(),
            home: self.settings.home_for(&row.name, row.uid),
            shell: if row.locked {
                self.settings.locked_shell.clone()
            } else {
                self.settings.shell.clone()
            },
        }
    }

    /// A user's supplementary gids as initgroups sees them: when the
    /// nameservice answers for the shared group, that group lists every
    /// account as a member, so it comes first.
    fn with_shared_group(&self, mut gids: Vec<u32>) -> Vec<u32> {
        if self.shared.owned {
            gids.insert(0, self.shared.gid);
        }
        gids
    }

    fn posix_group(&self, c: &Connection, row: &GroupRow) -> Result<PosixGroup, DbError> {
        let members = if self.shared.owned && row.gid == self.shared.gid {
            store::all_user_names(c)?
        } else {
            store::member_names(c, row.gid)?
        };
        Ok(PosixGroup {
            name: row.name.clone(),
            gid: row.gid,
            members,
        })
    }

    fn cached<T>(
        &self,
        key: CacheKey,
        unwrap: impl Fn(CacheValue) -> Option<T>,
        wrap: impl Fn(T) -> CacheValue,
        load: impl FnOnce(&Connection) -> Result<T, DbError>,
    ) -> Result<T, ServiceError>
    where
        T: Clone,
    {
        if let Some(value) = self.cache.get(&key).and_then(&unwrap) {
            return Ok(value);
        }
        let generation = self.cache.generation();
        let value = load(&self.reader())?;
        self.cache.insert(key, wrap(value.clone()), generation);
        Ok(value)
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<Arc<PosixUser>>, ServiceError> {
        if !plausible_lookup_name(name, self.settings.policy.max_len) {
            return Ok(None);
        }
        self.cached(
            CacheKey::UserByName(name.to_owned()),
            |v| match v {
                CacheValue::User(u) => Some(u),
                _ => None,
            },
            CacheValue::User,
            |c| Ok(store::user_by_name(c, name)?.map(|r| Arc::new(self.posix_user(&r)))),
        )
    }

    pub fn user_by_uid(&self, uid: u32) -> Result<Option<Arc<PosixUser>>, ServiceError> {
        self.cached(
            CacheKey::UserByUid(uid),
            |v| match v {
                CacheValue::User(u) => Some(u),
                _ => None,
            },
            CacheValue::User,
            |c| Ok(store::user_by_uid(c, uid)?.map(|r| Arc::new(self.posix_user(&r)))),
        )
    }

    pub fn group_by_name(&self, name: &str) -> Result<Option<Arc<PosixGroup>>, ServiceError> {
        if !plausible_lookup_name(name, self.settings.policy.max_len) {
            return Ok(None);
        }
        self.cached(
            CacheKey::GroupByName(name.to_owned()),
            |v| match v {
                CacheValue::Group(g) => Some(g),
                _ => None,
            },
            CacheValue::Group,
            |c| match store::group_by_name(c, name)? {
                Some(row) => Ok(Some(Arc::new(self.posix_group(c, &row)?))),
                None => Ok(None),
            },
        )
    }

    pub fn group_by_gid(&self, gid: u32) -> Result<Option<Arc<PosixGroup>>, ServiceError> {
        self.cached(
            CacheKey::GroupByGid(gid),
            |v| match v {
                CacheValue::Group(g) => Some(g),
                _ => None,
            },
            CacheValue::Group,
            |c| match store::group_by_gid(c, gid)? {
                Some(row) => Ok(Some(Arc::new(self.posix_group(c, &row)?))),
                None => Ok(None),
            },
        )
    }

    /// The gids initgroups adds for `user`; `None` when the user is unknown.
    pub fn supplementary(&self, user: &str) -> Result<Option<Arc<Vec<u32>>>, ServiceError> {
        if !plausible_lookup_name(user, self.settings.policy.max_len) {
            return Ok(None);
        }
        self.cached(
            CacheKey::Supplementary(user.to_owned()),
            |v| match v {
                CacheValue::Supplementary(s) => Some(s),
                _ => None,
            },
            CacheValue::Supplementary,
            |c| {
                let Some(row) = store::user_by_name(c, user)? else {
                    return Ok(None);
                };
                let gids = self.with_shared_group(store::supplementary_gids(c, row.uid)?);
                Ok(Some(Arc::new(gids)))
            },
        )
    }

    pub fn list_users(
        &self,
        after_uid: u32,
        limit: u32,
    ) -> Result<(Vec<PosixUser>, bool), ServiceError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let rows = store::users_page(&self.reader(), after_uid, limit)?;
        let done = rows.len() < limit as usize;
        Ok((rows.iter().map(|r| self.posix_user(r)).collect(), done))
    }

    pub fn list_groups(
        &self,
        after_gid: u32,
        limit: u32,
    ) -> Result<(Vec<PosixGroup>, bool), ServiceError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let reader = self.reader();
        let rows = store::groups_page(&reader, after_gid, limit)?;
        let done = rows.len() < limit as usize;
        let groups = rows
            .iter()
            .map(|r| self.posix_group(&reader, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((groups, done))
    }

    pub fn counts(&self) -> Result<(u64, u64), ServiceError> {
        let reader = self.reader();
        Ok((
            store::count(&reader, Table::Users)?,
            store::count(&reader, Table::Groups)?,
        ))
    }

    fn sync_high_water(&self) -> Result<(), ServiceError> {
        self.high_water.sync().map_err(|e| {
            ServiceError::FailedPrecondition(format!(
                "the account is saved, but the high-water mark cannot be written, so it is \
                 not confirmed: {e}"
            ))
        })
    }

    /// Why new accounts are refused, when the database is behind the
    /// high-water mark and nobody confirmed it yet.
    pub fn provisioning_held_back(&self) -> Option<String> {
        self.high_water.held_back_because()
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    /// After a committed change, before it is acknowledged: no cached or
    /// published answer may predate it.
    fn on_change(&self) {
        self.cache.invalidate();
        self.publisher.changed();
    }

    /// Every account and group as the NSS module's cache file holds them,
    /// read in one transaction so the snapshot is consistent.
    pub fn snapshot_records(
        &self,
    ) -> Result<(Vec<connect_memcache::User>, Vec<connect_memcache::Group>), ServiceError> {
        let mut reader = self.reader();
        let tx = reader.transaction()?;
        let mut supplementary: std::collections::HashMap<u32, Vec<u32>> =
            std::collections::HashMap::new();
        let mut members: std::collections::HashMap<u32, Vec<u32>> =
            std::collections::HashMap::new();
        for (uid, gid) in store::all_memberships(&tx)? {
            supplementary.entry(uid).or_default().push(gid);
            members.entry(gid).or_default().push(uid);
        }
        let rows = store::users_page(&tx, 0, u32::MAX)?;
        let names: std::collections::HashMap<u32, &str> =
            rows.iter().map(|r| (r.uid, r.name.as_str())).collect();
        let users = rows
            .iter()
            .map(|row| {
                let posix = self.posix_user(row);
                let groups =
                    self.with_shared_group(supplementary.remove(&row.uid).unwrap_or_default());
                connect_memcache::User {
                    name: posix.name,
                    uid: posix.uid,
                    gid: posix.gid,
                    gecos: posix.gecos,
                    home: posix.home,
                    shell: posix.shell,
                    groups,
                }
            })
            .collect();
        let groups = store::groups_page(&tx, 0, u32::MAX)?
            .into_iter()
            .map(|g| {
                let members = if self.shared.owned && g.gid == self.shared.gid {
                    rows.iter().map(|r| r.name.clone()).collect()
                } else {
                    members
                        .get(&g.gid)
                        .map(|uids| {
                            uids.iter()
                                .filter_map(|u| names.get(u).map(|n| (*n).to_owned()))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                connect_memcache::Group {
                    name: g.name,
                    gid: g.gid,
                    members,
                }
            })
            .collect();
        Ok((users, groups))
    }

    /// Builds and publishes the cache file if nothing changed meanwhile.
    pub fn publish_snapshot(&self) -> Result<bool, String> {
        let before = self.publisher.changes();
        let (users, groups) = self.snapshot_records().map_err(|e| e.to_string())?;
        self.publisher
            .publish(before, &users, &groups)
            .map_err(|e| format!("cannot write the cache file: {e}"))
    }

    // ----------------------------------------------------------------------
    // Provisioning
    // ----------------------------------------------------------------------

    pub fn ensure_user(&self, req: &EnsureRequest) -> Result<EnsureOutcome, ServiceError> {
        check_text("the identity's provider", &req.provider, MAX_PROVIDER_LEN)?;
        check_text(
            "the identity's unique id",
            &req.unique_id,
            MAX_UNIQUE_ID_LEN,
        )?;
        check_text("the username", &req.username, MAX_USERNAME_LEN)?;
        if req.groups.len() > MAX_GROUPS_PER_USER {
            return Err(ServiceError::InvalidArgument(format!(
                "{} groups sent; at most {MAX_GROUPS_PER_USER} are accepted per user",
                req.groups.len()
            )));
        }
        let local = self.local.current();
        let mut writer = lock(&self.writer);
        let marks_before = self.high_water.marks();
        let outcome = self.ensure_user_locked(&mut writer, req, &local);
        match &outcome {
            Ok(_) => self.high_water.publish(),
            // The transaction rolled back after raising the mark (a group
            // refused after the uid was picked): the counters catch up, or
            // the next start would think ids were lost. Only then: a
            // database held back behind the mark must stay behind it until
            // an administrator says otherwise.
            Err(_) if self.high_water.marks() == marks_before => {}
            Err(_) => {
                if let Err(e) = self.settle_counters(&mut writer) {
                    tracing::warn!(
                        "could not bring the id counters up to the high-water mark: {e}"
                    );
                }
            }
        }
        drop(writer);
        let outcome = outcome?;
        // Before any answer: the mark covers every id in the database.
        // Outside the writer lock, so other provisionings commit meanwhile
        // and one write covers them all.
        self.sync_high_water()?;
        Ok(outcome)
    }

    fn settle_counters(&self, writer: &mut Connection) -> Result<(), ServiceError> {
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        high_water::settle(&tx, &self.high_water.marks())?;
        tx.commit()?;
        self.high_water.publish();
        Ok(())
    }

    fn ensure_user_locked(
        &self,
        writer: &mut Connection,
        req: &EnsureRequest,
        local: &LocalAccounts,
    ) -> Result<EnsureOutcome, ServiceError> {
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;

        if let Some(local_user) = store::mapping(&tx, &req.provider, &req.unique_id)? {
            drop(tx);
            let account = self.mapped_account(&req.provider, &req.unique_id, &local_user, local)?;
            return Ok(EnsureOutcome {
                account,
                created: false,
                warnings: vec![format!(
                    "{local_user:?} is a local account mapped to this identity: its groups \
                     are managed in /etc/group, not from the identity provider"
                )],
            });
        }

        let desired = self.settings.policy.username(&req.username)?;
        if local.user(&desired).is_some() {
            return Err(NameError::LocalAccount { name: desired }.into());
        }
        let gecos = sanitise_gecos(if req.display_name.is_empty() {
            &req.username
        } else {
            &req.display_name
        });
        let now = unix_now();
        let mut warnings = Vec::new();
        let mut changed = false;
        let (row, created) = match store::user_by_identity(&tx, &req.provider, &req.unique_id)? {
            Some(mut row) => {
                if row.idp_username != req.username {
                    let name = self.pick_user_name(&tx, &desired, Some(row.uid), local)?;
                    if name != row.name {
                        tracing::info!(uid = row.uid, from = %row.name, to = %name, "renaming account after the identity provider renamed the user");
                        row.name = name;
                    }
                    row.idp_username = req.username.clone();
                    changed = true;
                }
                if row.gecos != gecos {
                    row.gecos = gecos;
                    changed = true;
                }
                if changed {
                    row.updated = now;
                    store::update_user(&tx, &row)?;
                }
                (row, false)
            }
            None => {
                let name = self.pick_user_name(&tx, &desired, None, local)?;
                if name != desired {
                    warnings.push(format!(
                        "{desired:?} is taken by another identity, so this one is {name:?}"
                    ));
                }
                let uid = allocate(
                    &tx,
                    IdKind::Uid,
                    &self.settings.uid_range,
                    &local.uids,
                    "UidRange",
                    &self.high_water,
                )?;
                let row = UserRow {
                    uid,
                    name,
                    provider: req.provider.clone(),
                    unique_id: req.unique_id.clone(),
                    idp_username: req.username.clone(),
                    gecos,
                    locked: false,
                    created: now,
                    updated: now,
                };
                store::insert_user(&tx, &row)?;
                changed = true;
                (row, true)
            }
        };
        changed |= self.sync_groups(
            &tx,
            &row,
            &req.provider,
            &req.groups,
            local,
            now,
            &mut warnings,
        )?;
        tx.commit()?;
        if changed {
            self.on_change();
        }
        if created {
            tracing::info!(uid = row.uid, name = %row.name, provider = %row.provider, "provisioned account");
        }
        for w in &warnings {
            tracing::warn!(name = %row.name, "{w}");
        }
        let account = self.account(writer, &row)?;
        Ok(EnsureOutcome {
            account,
            created,
            warnings,
        })
    }

    fn pick_user_name(
        &self,
        c: &Connection,
        desired: &str,
        own_uid: Option<u32>,
        local: &LocalAccounts,
    ) -> Result<String, ServiceError> {
        for n in 1..=MAX_SUFFIX {
            let candidate = with_suffix(desired, n, self.settings.policy.max_len);
            if n > 1
                && (local.user(&candidate).is_some()
                    || self.settings.policy.is_reserved(&candidate))
            {
                continue;
            }
            match store::user_by_name(c, &candidate)? {
                Some(other) if Some(other.uid) != own_uid => continue,
                _ => return Ok(candidate),
            }
        }
        Err(ServiceError::Exhausted(format!(
            "no free name derived from {desired:?} (tried {MAX_SUFFIX} suffixes)"
        )))
    }

    fn pick_group_name(
        &self,
        c: &Connection,
        desired: &str,
        own_gid: Option<u32>,
        local: &LocalAccounts,
    ) -> Result<String, ServiceError> {
        for n in 1..=MAX_SUFFIX {
            let candidate = with_suffix(desired, n, self.settings.policy.max_len);
            if local.group(&candidate).is_some() || self.settings.policy.is_reserved(&candidate) {
                continue;
            }
            match store::group_by_name(c, &candidate)? {
                Some(other) if Some(other.gid) != own_gid => continue,
                _ => return Ok(candidate),
            }
        }
        Err(ServiceError::Exhausted(format!(
            "no free group name derived from {desired:?} (tried {MAX_SUFFIX} suffixes)"
        )))
    }

    /// Makes the user's memberships exactly the groups the provider sent,
    /// creating groups seen for the first time. Returns whether anything changed.
    #[allow(clippy::too_many_arguments)]
    fn sync_groups(
        &self,
        c: &Connection,
        user: &UserRow,
        provider: &str,
        groups: &[IdpGroup],
        local: &LocalAccounts,
        now: i64,
        warnings: &mut Vec<String>,
    ) -> Result<bool, ServiceError> {
        let mut changed = false;
        let mut gids = Vec::with_capacity(groups.len());
        let mut seen = HashSet::new();
        for group in groups {
            let unique_id = if group.unique_id.is_empty() {
                &group.name
            } else {
                &group.unique_id
            };
            check_text("a group's unique id", unique_id, MAX_UNIQUE_ID_LEN)?;
            if group.name.contains('\0') || group.name.len() > MAX_UNIQUE_ID_LEN {
                return Err(ServiceError::InvalidArgument(format!(
                    "the name of group {unique_id:?} contains a NUL byte or is too long"
                )));
            }
            if !seen.insert(unique_id.clone()) {
                continue;
            }
            let display = if group.name.is_empty() {
                unique_id
            } else {
                &group.name
            };
            let Some(normalised) = self.settings.policy.group_name(display) else {
                warnings.push(format!(
                    "identity provider group {display:?} has no usable characters for a Unix \
                     group name; skipped"
                ));
                continue;
            };
            let gid = match store::group_by_identity(c, provider, unique_id)? {
                Some(row) => {
                    if row.idp_name != *display {
                        let name = self.pick_group_name(c, &normalised, Some(row.gid), local)?;
                        store::rename_group(c, row.gid, &name, display)?;
                        changed = true;
                    }
                    row.gid
                }
                None if self.high_water.is_held_back() => {
                    // The person keeps signing in; only the group waits.
                    warnings.push(format!(
                        "identity provider group {display:?} is new and is not created while \
                         new ids are held back (nameservicectl check-restore)"
                    ));
                    continue;
                }
                None => {
                    let name = self.pick_group_name(c, &normalised, None, local)?;
                    if name != normalised {
                        warnings.push(format!(
                            "identity provider group {display:?} is {name:?} because \
                             {normalised:?} is a local, reserved or other provider's group"
                        ));
                    }
                    let gid = allocate(
                        c,
                        IdKind::Gid,
                        &self.settings.gid_range,
                        &local.gids,
                        "GidRange",
                        &self.high_water,
                    )?;
                    store::insert_group(
                        c,
                        &GroupRow {
                            gid,
                            name,
                            provider: provider.to_owned(),
                            unique_id: unique_id.clone(),
                            idp_name: display.clone(),
                        },
                        now,
                    )?;
                    changed = true;
                    gid
                }
            };
            gids.push(gid);
        }
        gids.sort_unstable();
        gids.dedup();
        if store::supplementary_gids(c, user.uid)? != gids {
            store::set_memberships(c, user.uid, &gids)?;
            changed = true;
        }
        Ok(changed)
    }

    fn account(&self, c: &Connection, row: &UserRow) -> Result<Account, ServiceError> {
        let posix = self.posix_user(row);
        let mut groups: Vec<AccountGroup> = store::user_groups(c, row.uid)?
            .into_iter()
            .map(|g| AccountGroup {
                name: g.name,
                gid: g.gid,
            })
            .collect();
        if self.shared.owned {
            groups.insert(
                0,
                AccountGroup {
                    name: self.shared.name.clone(),
                    gid: self.shared.gid,
                },
            );
        }
        Ok(Account {
            identity: Some(Identity {
                provider: row.provider.clone(),
                unique_id: row.unique_id.clone(),
            }),
            name: posix.name,
            uid: posix.uid,
            gid: posix.gid,
            gecos: posix.gecos,
            home: posix.home,
            shell: posix.shell,
            locked: row.locked,
            mapped: false,
            groups,
            created_unix: row.created,
            updated_unix: row.updated,
            primary_group: self.shared.name.clone(),
        })
    }

    fn mapped_account(
        &self,
        provider: &str,
        unique_id: &str,
        local_user: &str,
        local: &LocalAccounts,
    ) -> Result<Account, ServiceError> {
        let user = local.user(local_user).ok_or_else(|| {
            ServiceError::FailedPrecondition(format!(
                "this identity is mapped to the local account {local_user:?}, which is no \
                 longer in /etc/passwd; recreate it or map the identity again"
            ))
        })?;
        Ok(Account {
            identity: Some(Identity {
                provider: provider.to_owned(),
                unique_id: unique_id.to_owned(),
            }),
            name: user.name.clone(),
            uid: user.uid,
            gid: user.gid,
            gecos: user.gecos.clone(),
            home: user.home.clone(),
            shell: user.shell.clone(),
            locked: false,
            mapped: true,
            groups: Vec::new(),
            created_unix: 0,
            updated_unix: 0,
            primary_group: local
                .group_by_gid(user.gid)
                .map(|g| g.name.clone())
                .unwrap_or_default(),
        })
    }

    /// Maps an identity onto an existing local account instead of
    /// provisioning one (for people who already have a login on the machine).
    pub fn map_user(
        &self,
        provider: &str,
        unique_id: &str,
        local_user: &str,
    ) -> Result<EnsureOutcome, ServiceError> {
        check_text("the identity's provider", provider, MAX_PROVIDER_LEN)?;
        check_text("the identity's unique id", unique_id, MAX_UNIQUE_ID_LEN)?;
        check_text("the local account", local_user, MAX_USERNAME_LEN)?;
        let local = self.local.current();
        let Some(user) = local.user(local_user) else {
            return Err(ServiceError::NotFound(format!(
                "{local_user:?} is not in /etc/passwd; only existing local accounts can be mapped"
            )));
        };
        if user.uid == 0 {
            return Err(ServiceError::InvalidArgument(format!(
                "{local_user:?} has uid 0; a federated identity is never mapped to root"
            )));
        }
        let writer = lock(&self.writer);
        if let Some(row) = store::user_by_identity(&writer, provider, unique_id)? {
            return Err(ServiceError::FailedPrecondition(format!(
                "this identity already has the provisioned account {:?} (uid {}); its files \
                 belong to that uid, so it cannot be remapped",
                row.name, row.uid
            )));
        }
        store::put_mapping(&writer, provider, unique_id, local_user, unix_now())?;
        drop(writer);
        tracing::info!(
            provider,
            unique_id,
            local_user,
            "mapped identity to a local account"
        );
        Ok(EnsureOutcome {
            account: self.mapped_account(provider, unique_id, local_user, &local)?,
            created: false,
            warnings: Vec::new(),
        })
    }

    fn find(&self, c: &Connection, selector: &Selector) -> Result<UserRow, ServiceError> {
        let row = match selector {
            Selector::Name(name) => store::user_by_name(c, name)?,
            Selector::Uid(uid) => store::user_by_uid(c, *uid)?,
            Selector::Identity {
                provider,
                unique_id,
            } => store::user_by_identity(c, provider, unique_id)?,
        };
        row.ok_or_else(|| ServiceError::NotFound("no such account in the nameservice".into()))
    }

    pub fn get_account(&self, selector: &Selector) -> Result<Account, ServiceError> {
        let reader = self.reader();
        let row = self.find(&reader, selector)?;
        self.account(&reader, &row)
    }

    pub fn set_locked(&self, selector: &Selector, locked: bool) -> Result<Account, ServiceError> {
        let mut writer = lock(&self.writer);
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut row = self.find(&tx, selector)?;
        if row.locked == locked {
            return self.account(&tx, &row);
        }
        row.locked = locked;
        row.updated = unix_now();
        store::update_user(&tx, &row)?;
        let account = self.account(&tx, &row)?;
        tx.commit()?;
        self.on_change();
        tracing::info!(uid = row.uid, name = %row.name, locked, "account lock changed");
        Ok(account)
    }

    pub fn list_accounts(
        &self,
        after_uid: u32,
        limit: u32,
    ) -> Result<(Vec<Account>, bool), ServiceError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let reader = self.reader();
        let rows = store::users_page(&reader, after_uid, limit)?;
        let done = rows.len() < limit as usize;
        let accounts = rows
            .iter()
            .map(|r| self.account(&reader, r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((accounts, done))
    }
}

/// Hands out the next id of `range` that neither the database nor the local
/// files use, above the high-water mark, advances the counter and raises
/// the mark, so it is never handed out again whatever happens to the
/// database (the caller syncs the mark before it answers).
fn allocate(
    c: &Connection,
    kind: IdKind,
    range: &std::ops::RangeInclusive<u32>,
    local_ids: &HashSet<u32>,
    key: &str,
    high_water: &HighWater,
) -> Result<u32, ServiceError> {
    if high_water
        .check_allowed()
        .map_err(ServiceError::FailedPrecondition)?
    {
        // Just confirmed by an administrator: from now on the database
        // accounts for the ids it lost.
        high_water::settle(c, &high_water.marks())?;
    }
    let counter = store::next_id(c, kind)?;
    let mut next = match counter {
        Some(n) if range.contains(&n) => n,
        _ => *range.start(),
    };
    let Some(floor) = high_water.floor(kind) else {
        return Err(ServiceError::Exhausted(format!(
            "the high-water mark is at the last possible id; widen [Nameservice] {key}"
        )));
    };
    next = next.max(floor);
    loop {
        if !range.contains(&next) {
            return Err(ServiceError::Exhausted(format!(
                "the {key} {}-{} is exhausted: every id in it is taken; widen [Nameservice] \
                 {key} (keep the old ids inside it) and restart nameserviced",
                range.start(),
                range.end()
            )));
        }
        let taken = local_ids.contains(&next)
            || match kind {
                IdKind::Uid => store::user_by_uid(c, next)?.is_some(),
                IdKind::Gid => store::group_by_gid(c, next)?.is_some(),
            };
        if !taken {
            store::set_next_id(c, kind, u64::from(next) + 1)?;
            high_water.raise(kind, next);
            return Ok(next);
        }
        match next.checked_add(1) {
            Some(n) => next = n,
            None => {
                return Err(ServiceError::Exhausted(format!(
                    "the {key} is exhausted; widen [Nameservice] {key}"
                )))
            }
        }
    }
}
