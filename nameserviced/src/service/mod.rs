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
//! - Identities bound to accounts made elsewhere (host accounts, directory
//!   entries) and the directory cache are in [`bindings`].
//!
//! May import `config`, `local`, `names`, `host`, `store`, `cache`,
//! `publish`, `high_water` and `state_dir`; never `directory` or `server`.

mod bindings;
mod lookups;
mod provision;
pub use bindings::{DirectoryAccount, DirectoryGroup, ADMIN_SOURCE};
use provision::allocate;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use connect_proto::v1::{Account, AccountGroup, Identity};
use rusqlite::{Connection, TransactionBehavior};

use crate::cache::{CacheStats, LookupCache};
use crate::config::{Settings, SharedGroup};
use crate::high_water::{self, HighWater};
use crate::host::{HostAccounts, NssHost};
use crate::local::{LocalAccounts, LocalFiles, LocalWatcher};
use crate::names::NameError;
use crate::publish::Publisher;
use crate::state_dir::{lock_state_dir, prepare_state_dir};
use crate::store::bindings as directory_rows;
use crate::store::{self, unix_now, DbError, GroupRow, IdKind, UserRow, SYSTEM_PROVIDER};

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
    /// Something outside the nameservice (a directory, the host's NSS) did
    /// not answer: try again later.
    #[error("{0}")]
    Unavailable(String),
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
    /// The host's other NSS sources, for mapped accounts.
    host: Arc<dyn HostAccounts>,
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
            host: Arc::new(NssHost),
            started: Instant::now(),
            high_water,
        })
    }

    /// Replaces the host's account database (tests use a fake one).
    pub fn with_host_accounts(mut self, host: Arc<dyn HostAccounts>) -> Self {
        self.host = host;
        self
    }

    /// The local account files as last read.
    pub fn local_accounts(&self) -> Arc<LocalAccounts> {
        self.local.current()
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
            source: "provisioned".into(),
            refreshed_unix: 0,
            bound_unix: 0,
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
        match self.find(&reader, selector) {
            Ok(row) => return self.account(&reader, &row),
            Err(ServiceError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let directory = match selector {
            Selector::Name(name) => directory_rows::dir_user_by_name(&reader, name)?,
            Selector::Uid(uid) => directory_rows::dir_user_by_uid(&reader, *uid)?,
            Selector::Identity {
                provider,
                unique_id,
            } => {
                return match directory_rows::binding(&reader, provider, unique_id)? {
                    Some(b) => self.bound_account(&reader, &b),
                    None => Err(ServiceError::NotFound(
                        "no account in the nameservice for this identity".into(),
                    )),
                }
            }
        };
        match directory {
            Some(row) => self.directory_account(&reader, &row),
            None => Err(ServiceError::NotFound(
                "no such account in the nameservice".into(),
            )),
        }
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
