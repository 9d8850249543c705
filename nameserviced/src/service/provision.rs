//! How an identity becomes an account: names, uids, groups, all in one
//! transaction through the one writer.

use std::collections::HashSet;

use rusqlite::{Connection, TransactionBehavior};

use super::{check_text, lock, EnsureOutcome, EnsureRequest, IdpGroup, Nameservice, ServiceError};
use super::{
    MAX_GROUPS_PER_USER, MAX_PROVIDER_LEN, MAX_SUFFIX, MAX_UNIQUE_ID_LEN, MAX_USERNAME_LEN,
};
use crate::high_water::{self, HighWater};
use crate::local::LocalAccounts;
use crate::names::{sanitise_gecos, with_suffix, NameError};
use crate::store::bindings as directory_rows;
use crate::store::{self, unix_now, GroupRow, IdKind, UserRow};

impl Nameservice {
    // ----------------------------------------------------------------------
    // Provisioning
    // ----------------------------------------------------------------------

    pub fn ensure_user(&self, req: &EnsureRequest) -> Result<EnsureOutcome, ServiceError> {
        self.provision(req, None)
    }

    /// Provisions an identity seen for the first time under a uid an
    /// administrator chose (to match files that uid already owns).
    pub fn set_uid(&self, req: &EnsureRequest, uid: u32) -> Result<EnsureOutcome, ServiceError> {
        {
            let reader = self.reader();
            if let Some(row) = store::user_by_identity(&reader, &req.provider, &req.unique_id)? {
                return Err(ServiceError::FailedPrecondition(format!(
                    "this identity already has uid {} ({:?}); its files belong to that uid, so \
                     it is never renumbered",
                    row.uid, row.name
                )));
            }
            if let Some(b) = directory_rows::binding(&reader, &req.provider, &req.unique_id)? {
                return Err(ServiceError::FailedPrecondition(format!(
                    "this identity is bound to {:?}; unmap it first",
                    b.account
                )));
            }
        }
        let outcome = self.provision(req, Some(uid))?;
        tracing::info!(uid, name = %outcome.account.name, "provisioned account under a uid an administrator chose");
        Ok(outcome)
    }

    pub(super) fn provision(
        &self,
        req: &EnsureRequest,
        chosen_uid: Option<u32>,
    ) -> Result<EnsureOutcome, ServiceError> {
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
        if chosen_uid.is_none() {
            let bound = directory_rows::binding(&self.reader(), &req.provider, &req.unique_id)?;
            if let Some(binding) = bound {
                // Outside the writer: a host account is an NSS lookup.
                return self.bound_outcome(&binding);
            }
        }
        let local = self.local.current();
        let mut writer = lock(&self.writer);
        let marks_before = self.high_water.marks();
        let outcome = self.ensure_user_locked(&mut writer, req, &local, chosen_uid);
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

    pub(super) fn settle_counters(&self, writer: &mut Connection) -> Result<(), ServiceError> {
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;
        high_water::settle(&tx, &self.high_water.marks())?;
        tx.commit()?;
        self.high_water.publish();
        Ok(())
    }

    pub(super) fn ensure_user_locked(
        &self,
        writer: &mut Connection,
        req: &EnsureRequest,
        local: &LocalAccounts,
        chosen_uid: Option<u32>,
    ) -> Result<EnsureOutcome, ServiceError> {
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate)?;

        if let Some(binding) = directory_rows::binding(&tx, &req.provider, &req.unique_id)? {
            let account = self.bound_account(&tx, &binding)?;
            if account.name != binding.account {
                directory_rows::touch_binding(
                    &tx,
                    &binding.provider,
                    &binding.unique_id,
                    &account.name,
                    unix_now(),
                )?;
                tx.commit()?;
            }
            return Ok(EnsureOutcome {
                warnings: vec![format!(
                    "{:?} is an existing account ({}) bound to this identity: its groups come \
                     from where the account lives, not from the identity provider",
                    account.name, account.source
                )],
                account,
                created: false,
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
                let uid = match chosen_uid {
                    Some(uid) => {
                        self.check_chosen_uid(&tx, uid)?;
                        uid
                    }
                    None => allocate(
                        &tx,
                        IdKind::Uid,
                        &self.settings.uid_range,
                        &local.uids,
                        "UidRange",
                        &self.high_water,
                    )?,
                };
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

    pub(super) fn pick_user_name(
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
            // A directory account's name is never given to someone else.
            if directory_rows::dir_user_by_name(c, &candidate)?.is_some() {
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

    pub(super) fn pick_group_name(
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
            if directory_rows::dir_group_by_name(c, &candidate)?.is_some() {
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
    pub(super) fn sync_groups(
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
}

/// Hands out the next id of `range` that neither the database nor the local
/// files use, above the high-water mark, advances the counter and raises
/// the mark, so it is never handed out again whatever happens to the
/// database (the caller syncs the mark before it answers).
pub(super) fn allocate(
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
        // Directory and bound ids are refused inside the ranges, but an
        // older binding or a range widened later may still hold one.
        let taken = local_ids.contains(&next)
            || match kind {
                IdKind::Uid => {
                    store::user_by_uid(c, next)?.is_some()
                        || directory_rows::dir_user_by_uid(c, next)?.is_some()
                        || directory_rows::uid_bound(c, next)?
                }
                IdKind::Gid => {
                    store::group_by_gid(c, next)?.is_some()
                        || directory_rows::dir_group_by_gid(c, next)?.is_some()
                }
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
