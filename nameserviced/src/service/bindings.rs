//! Identities bound to accounts the nameservice did not provision: host
//! accounts (`nameservicectl map`) and directory entries, and the directory
//! cache the lookups answer from.
//!
//! Resolution order for one identity (see `directory::resolver`): an
//! existing binding or provisioned account, then an administrator's mapping,
//! then the directories, then provisioning if `AutoProvision` allows it.
//! Once bound, an identity stays bound until an administrator unmaps it.

use connect_proto::v1::{Account, AccountGroup, Identity};
use rusqlite::{Connection, TransactionBehavior};

use super::{check_text, lock, EnsureOutcome, Nameservice, ServiceError, MAX_PROVIDER_LEN};
use super::{MAX_UNIQUE_ID_LEN, MAX_USERNAME_LEN};
use crate::config::FORBIDDEN_RANGES;
use crate::store::bindings::{self as rows, Binding, BindingKind, DirGroupRow, DirUserRow};
use crate::store::{self, unix_now};

/// The `source` of a binding an administrator made.
pub const ADMIN_SOURCE: &str = "admin";

/// A directory entry: what a directory returns and, once checked, what
/// the service stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryAccount {
    /// The `[Nameservice "name"]` directory it came from.
    pub source: String,
    pub dn: String,
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    /// `None`: the configured `[Nameservice] Shell`.
    pub shell: Option<String>,
    pub link: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryGroup {
    pub source: String,
    pub dn: String,
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

impl Nameservice {
    pub fn binding(
        &self,
        provider: &str,
        unique_id: &str,
    ) -> Result<Option<Binding>, ServiceError> {
        Ok(rows::binding(&self.reader(), provider, unique_id)?)
    }

    pub fn is_provisioned(&self, provider: &str, unique_id: &str) -> Result<bool, ServiceError> {
        Ok(store::user_by_identity(&self.reader(), provider, unique_id)?.is_some())
    }

    /// The account a binding points at, as it is now.
    pub(super) fn bound_account(
        &self,
        c: &Connection,
        b: &Binding,
    ) -> Result<Account, ServiceError> {
        let identity = Some(Identity {
            provider: b.provider.clone(),
            unique_id: b.unique_id.clone(),
        });
        if b.kind == BindingKind::Directory {
            let uid = b.uid.unwrap_or(u32::MAX);
            let Some(row) = rows::dir_user_by_uid(c, uid)? else {
                return Err(ServiceError::FailedPrecondition(format!(
                    "this identity is bound to the directory account {:?} (uid {uid}), which \
                     is no longer in [Nameservice \"{}\"]; restore the entry, or unmap the \
                     identity (nameservicectl unmap)",
                    b.account, b.source
                )));
            };
            let mut account = self.directory_account(c, &row)?;
            account.identity = identity;
            account.bound_unix = b.created;
            return Ok(account);
        }
        self.host_account(b)
    }

    /// A host account's binding as it is now. Asks the host's NSS, which may
    /// be slow (SSSD, nslcd): never called with the writer held, except in
    /// the rare race where a binding appears inside a provisioning.
    pub(super) fn host_account(&self, b: &Binding) -> Result<Account, ServiceError> {
        let identity = Some(Identity {
            provider: b.provider.clone(),
            unique_id: b.unique_id.clone(),
        });
        let found = match b.uid {
            Some(uid) => self.host.user_by_uid(uid),
            None => self.host.user_by_name(&b.account),
        }
        .map_err(ServiceError::Unavailable)?;
        let Some(user) = found else {
            return Err(ServiceError::FailedPrecondition(format!(
                "this identity is mapped to the account {:?}{}, which the host no longer \
                 resolves; recreate it or map the identity again",
                b.account,
                b.uid.map(|u| format!(" (uid {u})")).unwrap_or_default()
            )));
        };
        // Bindings older than recorded uids follow the name: the account
        // behind it may have changed, so the checks run again.
        self.check_host_uid(user.uid, &user.name)
            .map_err(|e| ServiceError::FailedPrecondition(format!("{e}; unmap the identity")))?;
        let primary_group = self
            .host
            .group_name(user.gid)
            .map_err(ServiceError::Unavailable)?
            .unwrap_or_default();
        Ok(Account {
            identity,
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            gecos: user.gecos,
            home: user.home,
            shell: user.shell,
            locked: false,
            mapped: true,
            groups: self.shared_membership(),
            created_unix: b.created,
            updated_unix: b.refreshed,
            primary_group,
            source: "host".into(),
            refreshed_unix: 0,
            bound_unix: b.created,
        })
    }

    /// A sign-in of a bound identity: its account as it is now, the
    /// binding's recorded name kept current.
    pub(super) fn bound_outcome(&self, b: &Binding) -> Result<EnsureOutcome, ServiceError> {
        let account = match b.kind {
            BindingKind::Directory => self.bound_account(&self.reader(), b)?,
            BindingKind::Host => self.host_account(b)?,
        };
        if account.name != b.account {
            self.touch_binding(b, &account.name)?;
        }
        Ok(EnsureOutcome {
            warnings: vec![format!(
                "{:?} is an existing account ({}) bound to this identity: its groups come from \
                 where the account lives, not from the identity provider",
                account.name, account.source
            )],
            account,
            created: false,
        })
    }

    /// Bound accounts run content, so they are members of the shared group
    /// when the nameservice answers for it (else /etc/group decides).
    fn shared_membership(&self) -> Vec<AccountGroup> {
        if self.shared.owned {
            vec![AccountGroup {
                name: self.shared.name.clone(),
                gid: self.shared.gid,
            }]
        } else {
            Vec::new()
        }
    }

    /// A cached directory entry as an account (without its identity).
    pub(super) fn directory_account(
        &self,
        c: &Connection,
        row: &DirUserRow,
    ) -> Result<Account, ServiceError> {
        let mut groups = Vec::new();
        for gid in rows::dir_gids_of(c, &row.name)? {
            if let Some(g) = rows::dir_group_by_gid(c, gid)? {
                groups.push(AccountGroup { name: g.name, gid });
            }
        }
        let primary_group = match rows::dir_group_by_gid(c, row.gid)? {
            Some(g) => g.name,
            None => self
                .local
                .current()
                .group_by_gid(row.gid)
                .map(|g| g.name.clone())
                .unwrap_or_default(),
        };
        let binding = rows::binding_of_account(c, row.uid, &row.name)?;
        if binding.is_some() {
            groups.splice(0..0, self.shared_membership());
        }
        Ok(Account {
            identity: binding.as_ref().map(|b| Identity {
                provider: b.provider.clone(),
                unique_id: b.unique_id.clone(),
            }),
            name: row.name.clone(),
            uid: row.uid,
            gid: row.gid,
            gecos: row.gecos.clone(),
            home: row.home.clone(),
            shell: row.shell.clone(),
            locked: false,
            mapped: true,
            groups,
            created_unix: binding.as_ref().map(|b| b.created).unwrap_or(0),
            updated_unix: row.fetched,
            primary_group,
            source: format!("directory {}", row.source),
            refreshed_unix: row.fetched,
            bound_unix: binding.map(|b| b.created).unwrap_or(0),
        })
    }

    /// Refuses an account someone else already holds, here or on the host.
    fn check_unbound(
        &self,
        c: &Connection,
        uid: u32,
        name: &str,
        provider: &str,
        unique_id: &str,
    ) -> Result<(), ServiceError> {
        if let Some(other) = rows::binding_of_account(c, uid, name)? {
            if other.provider != provider || other.unique_id != unique_id {
                return Err(ServiceError::FailedPrecondition(format!(
                    "{name:?} (uid {uid}) is already bound to the identity {:?} of {:?}; \
                     unmap that one first (nameservicectl unmap)",
                    other.unique_id, other.provider
                )));
            }
        }
        if store::user_by_identity(c, provider, unique_id)?.is_some() {
            return Err(ServiceError::FailedPrecondition(
                "this identity already has a provisioned account; its files belong to that \
                 uid, so it is not bound to another"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Maps an identity onto an account the host resolves (files, SSSD,
    /// extrausers…), for people who already have a login on the machine.
    pub fn map_user(
        &self,
        provider: &str,
        unique_id: &str,
        account: &str,
    ) -> Result<EnsureOutcome, ServiceError> {
        check_text("the identity's provider", provider, MAX_PROVIDER_LEN)?;
        check_text("the identity's unique id", unique_id, MAX_UNIQUE_ID_LEN)?;
        check_text("the account", account, MAX_USERNAME_LEN)?;
        let user = self
            .host
            .user_by_name(account)
            .map_err(ServiceError::Unavailable)?
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "the host resolves no account {account:?} (getent passwd {account}); only \
                     existing accounts can be mapped, and never ones this nameservice provisions"
                ))
            })?;
        self.check_host_uid(user.uid, account)?;
        let mut writer = lock(&self.writer);
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(existing) = rows::binding(&tx, provider, unique_id)? {
            return Err(ServiceError::FailedPrecondition(format!(
                "this identity is already bound to {:?} (source {}); unmap it first",
                existing.account, existing.source
            )));
        }
        self.check_unbound(&tx, user.uid, &user.name, provider, unique_id)?;
        let now = unix_now();
        let binding = Binding {
            provider: provider.to_owned(),
            unique_id: unique_id.to_owned(),
            kind: BindingKind::Host,
            account: user.name.clone(),
            uid: Some(user.uid),
            source: ADMIN_SOURCE.into(),
            created: now,
            refreshed: now,
        };
        rows::put_binding(&tx, &binding)?;
        tx.commit()?;
        drop(writer);
        self.on_change();
        let account = self.host_account(&binding)?;
        tracing::info!(provider, unique_id, account = %user.name, uid = user.uid, "mapped identity to a host account");
        Ok(EnsureOutcome {
            account,
            created: false,
            warnings: Vec::new(),
        })
    }

    fn check_host_uid(&self, uid: u32, name: &str) -> Result<(), ServiceError> {
        if uid == 0 {
            return Err(ServiceError::InvalidArgument(format!(
                "{name:?} has uid 0; a federated identity is never mapped to root"
            )));
        }
        if uid < self.settings.minimum_uid {
            return Err(ServiceError::InvalidArgument(format!(
                "{name:?} has uid {uid}, a system account below [Nameservice] MinimumUid = {}",
                self.settings.minimum_uid
            )));
        }
        if let Some((_, what)) = FORBIDDEN_RANGES.iter().find(|(r, _)| r.contains(&uid)) {
            return Err(ServiceError::InvalidArgument(format!(
                "{name:?} has uid {uid}, which is kept for {what}"
            )));
        }
        if self.settings.uid_range.contains(&uid) {
            return Err(ServiceError::InvalidArgument(format!(
                "{name:?} has uid {uid}, inside [Nameservice] UidRange, which the nameservice \
                 hands out itself"
            )));
        }
        if self.local.current().subuid.iter().any(|r| r.contains(&uid)) {
            return Err(ServiceError::InvalidArgument(format!(
                "{name:?} has uid {uid}, inside an /etc/subuid range: its owner could become \
                 it in a user namespace"
            )));
        }
        Ok(())
    }

    pub fn unmap_user(&self, provider: &str, unique_id: &str) -> Result<Binding, ServiceError> {
        let mut writer = lock(&self.writer);
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(binding) = rows::binding(&tx, provider, unique_id)? else {
            return Err(ServiceError::NotFound(
                "this identity is not bound to a host or directory account".into(),
            ));
        };
        rows::delete_binding(&tx, provider, unique_id)?;
        tx.commit()?;
        drop(writer);
        self.on_change();
        tracing::info!(provider, unique_id, account = %binding.account, "unmapped identity");
        Ok(binding)
    }

    /// Checks an administrator's uid for [`Nameservice::set_uid`].
    pub(super) fn check_chosen_uid(&self, c: &Connection, uid: u32) -> Result<(), ServiceError> {
        // Also refuses UidRange: the high-water mark only covers ids the
        // counter handed out.
        self.check_host_uid(uid, &format!("uid {uid}"))?;
        if let Some(u) = self.local.current().user_by_uid(uid) {
            return Err(ServiceError::FailedPrecondition(format!(
                "uid {uid} belongs to the local account {:?}; map the identity onto it instead \
                 (nameservicectl map)",
                u.name
            )));
        }
        if let Some(row) = store::user_by_uid(c, uid)? {
            return Err(ServiceError::FailedPrecondition(format!(
                "uid {uid} is already the provisioned account {:?}",
                row.name
            )));
        }
        if let Some(row) = rows::dir_user_by_uid(c, uid)? {
            return Err(ServiceError::FailedPrecondition(format!(
                "uid {uid} is the directory account {:?} of [Nameservice \"{}\"]",
                row.name, row.source
            )));
        }
        if let Some(u) = self
            .host
            .user_by_uid(uid)
            .map_err(ServiceError::Unavailable)?
        {
            return Err(ServiceError::FailedPrecondition(format!(
                "the host already resolves uid {uid} as {:?}; map the identity onto it instead",
                u.name
            )));
        }
        Ok(())
    }

    /// Stores a checked directory entry and the groups it belongs to;
    /// returns warnings about groups it skipped.
    pub fn store_directory_user(
        &self,
        user: &DirectoryAccount,
        groups: &[DirectoryGroup],
    ) -> Result<Vec<String>, ServiceError> {
        let mut warnings = Vec::new();
        let mut writer = lock(&self.writer);
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(other) = store::user_by_name(&tx, &user.name)? {
            return Err(ServiceError::FailedPrecondition(format!(
                "its name {:?} is the provisioned account of uid {}; a directory entry never \
                 overrides it",
                user.name, other.uid
            )));
        }
        if let Some(other) = store::user_by_uid(&tx, user.uid)? {
            return Err(ServiceError::FailedPrecondition(format!(
                "its uidNumber {} is the provisioned account {:?}",
                user.uid, other.name
            )));
        }
        if let Some(why) = self.entry_collision(&tx, user)? {
            return Err(ServiceError::FailedPrecondition(why));
        }
        let now = unix_now();
        let row = DirUserRow {
            uid: user.uid,
            name: user.name.clone(),
            gid: user.gid,
            gecos: user.gecos.clone(),
            home: user.home.clone(),
            shell: user
                .shell
                .clone()
                .unwrap_or_else(|| self.settings.shell.clone()),
            source: user.source.clone(),
            dn: user.dn.clone(),
            link: user.link.clone(),
            fetched: now,
        };
        let before = rows::dir_user_by_uid(&tx, user.uid)?;
        if let Some(old) = before.as_ref().filter(|b| b.name != row.name) {
            // Renamed in the directory: its memberships move to the new name.
            rows::set_dir_memberships(&tx, &old.name, &[])?;
        }
        let mut changed = before.map(|b| DirUserRow { fetched: now, ..b }) != Some(row.clone());
        rows::put_dir_user(&tx, &row)?;
        let mut gids = Vec::new();
        for g in groups {
            if let Some(why) = self.group_collision(&tx, g)? {
                warnings.push(format!("directory group {:?} skipped: {why}", g.name));
                continue;
            }
            let before = rows::dir_group_by_gid(&tx, g.gid)?;
            changed |=
                before.map(|b| (b.name, b.source)) != Some((g.name.clone(), g.source.clone()));
            rows::put_dir_group(&tx, &group_row(g, now), None)?;
            gids.push(g.gid);
        }
        gids.sort_unstable();
        gids.dedup();
        changed |= rows::dir_gids_of(&tx, &user.name)? != gids;
        rows::set_dir_memberships(&tx, &user.name, &gids)?;
        tx.commit()?;
        drop(writer);
        if changed {
            self.on_change();
        }
        Ok(warnings)
    }

    /// Two directory entries never share a uid or a name: the first one
    /// cached keeps it (and the refusal of the other is logged). The same
    /// entry is recognised by its DN or, after a rename, its
    /// `IdentityAttribute` value; a name moving to another entry of the same
    /// directory is a rename there.
    fn entry_collision(
        &self,
        c: &Connection,
        user: &DirectoryAccount,
    ) -> Result<Option<String>, ServiceError> {
        if let Some(held) = rows::dir_user_by_uid(c, user.uid)? {
            let same_entry = held.source == user.source
                && (held.dn == user.dn || (held.link.is_some() && held.link == user.link));
            if !same_entry {
                return Ok(Some(format!(
                    "its uidNumber {} is already the entry {} of [Nameservice \"{}\"]; two \
                     entries never share a uid",
                    user.uid, held.dn, held.source
                )));
            }
        }
        if let Some(held) = rows::dir_user_by_name(c, &user.name)? {
            if held.uid != user.uid && held.source != user.source {
                return Ok(Some(format!(
                    "its name {:?} is already the entry {} of [Nameservice \"{}\"]",
                    user.name, held.dn, held.source
                )));
            }
        }
        Ok(None)
    }

    fn group_collision(
        &self,
        c: &Connection,
        g: &DirectoryGroup,
    ) -> Result<Option<String>, ServiceError> {
        let other_directory = |held: Option<DirGroupRow>| {
            held.filter(|h| h.source != g.source).map(|h| {
                format!(
                    "already the group {} of [Nameservice \"{}\"]",
                    h.dn, h.source
                )
            })
        };
        if let Some(why) = other_directory(rows::dir_group_by_gid(c, g.gid)?) {
            return Ok(Some(format!("its gidNumber is {why}")));
        }
        if let Some(why) = other_directory(rows::dir_group_by_name(c, &g.name)?) {
            return Ok(Some(format!("its name is {why}")));
        }
        if let Some(other) = store::group_by_name(c, &g.name)? {
            return Ok(Some(format!(
                "its name is the nameservice's group of gid {}",
                other.gid
            )));
        }
        if let Some(other) = store::group_by_gid(c, g.gid)? {
            return Ok(Some(format!(
                "its gidNumber is the nameservice's group {:?}",
                other.name
            )));
        }
        Ok(None)
    }

    /// Stores a group read in full, with its member list.
    pub fn store_directory_group(&self, g: &DirectoryGroup) -> Result<(), ServiceError> {
        let mut writer = lock(&self.writer);
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(why) = self.group_collision(&tx, g)? {
            return Err(ServiceError::FailedPrecondition(why));
        }
        let now = unix_now();
        // A directory group never lists the nameservice's own accounts.
        let mut members = Vec::with_capacity(g.members.len());
        for m in &g.members {
            if store::user_by_name(&tx, m)?.is_none() {
                members.push(m.clone());
            }
        }
        let before = rows::dir_group_by_gid(&tx, g.gid)?;
        let members_before = rows::dir_members(&tx, g.gid)?;
        let changed = before.map(|b| (b.name, b.source))
            != Some((g.name.clone(), g.source.clone()))
            || members_before != members;
        rows::put_dir_group(&tx, &group_row(g, now), Some(&members))?;
        tx.commit()?;
        drop(writer);
        if changed {
            self.on_change();
        }
        Ok(())
    }

    /// Drops a user the directory no longer has (its binding stays: the
    /// identity must not fall through to a new uid).
    pub fn forget_directory_user(&self, uid: u32) -> Result<(), ServiceError> {
        let writer = lock(&self.writer);
        let removed = rows::delete_dir_user(&writer, uid)?;
        drop(writer);
        if removed {
            self.on_change();
        }
        Ok(())
    }

    pub fn forget_directory_group(&self, gid: u32) -> Result<(), ServiceError> {
        let writer = lock(&self.writer);
        let removed = rows::delete_dir_group(&writer, gid)?;
        drop(writer);
        if removed {
            self.on_change();
        }
        Ok(())
    }

    /// Binds a first-seen identity to a checked directory account. `cached`:
    /// the entry is in the directory cache (the nameservice answers for it);
    /// otherwise the host resolves it and the binding is to a host account.
    pub fn bind_directory(
        &self,
        provider: &str,
        unique_id: &str,
        source: &str,
        name: &str,
        uid: u32,
        cached: bool,
    ) -> Result<EnsureOutcome, ServiceError> {
        let mut writer = lock(&self.writer);
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut created = false;
        let binding = match rows::binding(&tx, provider, unique_id)? {
            Some(existing) => existing,
            None => {
                created = true;
                self.check_unbound(&tx, uid, name, provider, unique_id)?;
                let now = unix_now();
                let b = Binding {
                    provider: provider.to_owned(),
                    unique_id: unique_id.to_owned(),
                    kind: if cached {
                        BindingKind::Directory
                    } else {
                        BindingKind::Host
                    },
                    account: name.to_owned(),
                    uid: Some(uid),
                    source: source.to_owned(),
                    created: now,
                    refreshed: now,
                };
                rows::put_binding(&tx, &b)?;
                tracing::info!(
                    provider,
                    unique_id,
                    account = name,
                    uid,
                    directory = source,
                    "bound identity to its directory account"
                );
                b
            }
        };
        let directory_account = match binding.kind {
            BindingKind::Directory => Some(self.bound_account(&tx, &binding)?),
            BindingKind::Host => None,
        };
        tx.commit()?;
        drop(writer);
        if created {
            self.on_change();
        }
        let account = match directory_account {
            Some(a) => a,
            None => self.host_account(&binding)?,
        };
        Ok(EnsureOutcome {
            account,
            created: false,
            warnings: if cached {
                Vec::new()
            } else {
                vec![format!(
                    "{name:?} is answered by the host's own NSS sources ([Nameservice \
                     \"{source}\"] AnswerLookups = false): the nameservice only binds it"
                )]
            },
        })
    }

    /// Directory users fetched at or before `before`, oldest first.
    pub fn stale_directory_users(
        &self,
        source: &str,
        before: i64,
        limit: u32,
    ) -> Result<Vec<DirUserRow>, ServiceError> {
        Ok(rows::stale_dir_users(
            &self.reader(),
            source,
            before,
            limit,
        )?)
    }

    pub fn stale_directory_groups(
        &self,
        source: &str,
        before: i64,
        limit: u32,
    ) -> Result<Vec<DirGroupRow>, ServiceError> {
        Ok(rows::stale_dir_groups(
            &self.reader(),
            source,
            before,
            limit,
        )?)
    }

    pub fn directory_user_by_name(&self, name: &str) -> Result<Option<DirUserRow>, ServiceError> {
        Ok(rows::dir_user_by_name(&self.reader(), name)?)
    }

    pub fn directory_user_by_uid(&self, uid: u32) -> Result<Option<DirUserRow>, ServiceError> {
        Ok(rows::dir_user_by_uid(&self.reader(), uid)?)
    }

    pub fn directory_user_by_link(
        &self,
        source: &str,
        link: &str,
    ) -> Result<Option<DirUserRow>, ServiceError> {
        Ok(rows::dir_user_by_link(&self.reader(), source, link)?)
    }

    pub fn expire_directory(&self) -> Result<u64, ServiceError> {
        Ok(rows::expire_directory(&lock(&self.writer))?)
    }

    /// Records that a bound identity's account was seen again.
    pub fn touch_binding(&self, b: &Binding, account: &str) -> Result<(), ServiceError> {
        Ok(rows::touch_binding(
            &lock(&self.writer),
            &b.provider,
            &b.unique_id,
            account,
            unix_now(),
        )?)
    }
}

fn group_row(g: &DirectoryGroup, now: i64) -> DirGroupRow {
    DirGroupRow {
        gid: g.gid,
        name: g.name.clone(),
        source: g.source.clone(),
        dn: g.dn.clone(),
        fetched: now,
    }
}
