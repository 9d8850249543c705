//! What a lookup answers: passwd and group records, initgroups, the
//! enumeration pages and the snapshot the cache file is built from.

use std::collections::HashSet;
use std::sync::Arc;

use connect_proto::v1::{PosixGroup, PosixUser};
use rusqlite::Connection;

use super::{Nameservice, ServiceError, MAX_PAGE};
use crate::cache::{CacheKey, CacheValue};
use crate::names::plausible_lookup_name;
use crate::store::bindings as directory_rows;
use crate::store::{self, DbError, GroupRow, Table, UserRow};

impl Nameservice {
    pub(super) fn posix_user(&self, row: &UserRow) -> PosixUser {
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

    pub(super) fn directory_posix_user(row: &directory_rows::DirUserRow) -> PosixUser {
        PosixUser {
            name: row.name.clone(),
            uid: row.uid,
            gid: row.gid,
            gecos: row.gecos.clone(),
            home: row.home.clone(),
            shell: row.shell.clone(),
        }
    }

    pub(super) fn directory_posix_group(
        c: &Connection,
        row: &directory_rows::DirGroupRow,
    ) -> Result<PosixGroup, DbError> {
        Ok(PosixGroup {
            name: row.name.clone(),
            gid: row.gid,
            members: directory_rows::dir_members(c, row.gid)?,
        })
    }

    /// A user's supplementary gids as initgroups sees them: when the
    /// nameservice answers for the shared group, that group lists every
    /// account as a member, so it comes first.
    pub(super) fn with_shared_group(&self, mut gids: Vec<u32>) -> Vec<u32> {
        if self.shared.owned {
            gids.insert(0, self.shared.gid);
        }
        gids
    }

    pub(super) fn posix_group(
        &self,
        c: &Connection,
        row: &GroupRow,
    ) -> Result<PosixGroup, DbError> {
        let members = if self.shared.owned && row.gid == self.shared.gid {
            if !self.settings.shared_group_members {
                Vec::new()
            } else {
                let mut names = store::all_user_names(c)?;
                names.extend(directory_rows::bound_names(c)?);
                names
            }
        } else {
            store::member_names(c, row.gid)?
        };
        Ok(PosixGroup {
            name: row.name.clone(),
            gid: row.gid,
            members,
        })
    }

    pub(super) fn cached<T>(
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
            |c| match store::user_by_name(c, name)? {
                Some(r) => Ok(Some(Arc::new(self.posix_user(&r)))),
                None => Ok(directory_rows::dir_user_by_name(c, name)?
                    .map(|r| Arc::new(Self::directory_posix_user(&r)))),
            },
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
            |c| match store::user_by_uid(c, uid)? {
                Some(r) => Ok(Some(Arc::new(self.posix_user(&r)))),
                None => Ok(directory_rows::dir_user_by_uid(c, uid)?
                    .map(|r| Arc::new(Self::directory_posix_user(&r)))),
            },
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
                None => match directory_rows::dir_group_by_name(c, name)? {
                    Some(row) => Ok(Some(Arc::new(Self::directory_posix_group(c, &row)?))),
                    None => Ok(None),
                },
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
                None => match directory_rows::dir_group_by_gid(c, gid)? {
                    Some(row) => Ok(Some(Arc::new(Self::directory_posix_group(c, &row)?))),
                    None => Ok(None),
                },
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
                if let Some(row) = store::user_by_name(c, user)? {
                    let gids = self.with_shared_group(store::supplementary_gids(c, row.uid)?);
                    return Ok(Some(Arc::new(gids)));
                }
                // Bound accounts run content, so they are in the shared
                // group like provisioned ones; other directory accounts
                // are only answered for.
                let bound = directory_rows::is_bound_name(c, user)?;
                let gids = match directory_rows::dir_user_by_name(c, user)? {
                    Some(_) => directory_rows::dir_gids_of(c, user)?,
                    None if bound => Vec::new(),
                    None => return Ok(None),
                };
                Ok(Some(Arc::new(if bound {
                    self.with_shared_group(gids)
                } else {
                    gids
                })))
            },
        )
    }

    pub fn list_users(
        &self,
        after_uid: u32,
        limit: u32,
    ) -> Result<(Vec<PosixUser>, bool), ServiceError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let reader = self.reader();
        // Provisioned and cached directory accounts, merged by uid, as the
        // cache file enumerates them.
        let provisioned = store::users_page(&reader, after_uid, limit)?;
        let directory = directory_rows::dir_users_page(&reader, after_uid, limit)?;
        let filled = [provisioned.len(), directory.len()];
        let users = provisioned
            .iter()
            .map(|r| self.posix_user(r))
            .chain(directory.iter().map(Self::directory_posix_user))
            .collect();
        Ok(merged_page(users, filled, limit, |u| u.uid))
    }

    pub fn list_groups(
        &self,
        after_gid: u32,
        limit: u32,
    ) -> Result<(Vec<PosixGroup>, bool), ServiceError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let reader = self.reader();
        let provisioned = store::groups_page(&reader, after_gid, limit)?;
        let directory = directory_rows::dir_groups_page(&reader, after_gid, limit)?;
        let filled = [provisioned.len(), directory.len()];
        let mut groups = provisioned
            .iter()
            .map(|r| self.posix_group(&reader, r))
            .collect::<Result<Vec<_>, _>>()?;
        for row in &directory {
            groups.push(Self::directory_posix_group(&reader, row)?);
        }
        Ok(merged_page(groups, filled, limit, |g| g.gid))
    }

    pub fn counts(&self) -> Result<(u64, u64), ServiceError> {
        let reader = self.reader();
        Ok((
            store::count(&reader, Table::Users)?,
            store::count(&reader, Table::Groups)?,
        ))
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
        let mut users: Vec<connect_memcache::User> = users;
        let mut directory_groups: std::collections::HashMap<String, Vec<u32>> =
            std::collections::HashMap::new();
        let mut directory_members: std::collections::HashMap<u32, Vec<String>> =
            std::collections::HashMap::new();
        for (gid, member) in directory_rows::all_dir_members(&tx)? {
            directory_groups
                .entry(member.clone())
                .or_default()
                .push(gid);
            directory_members.entry(gid).or_default().push(member);
        }
        let bound: HashSet<String> = directory_rows::bound_names(&tx)?.into_iter().collect();
        for row in directory_rows::all_dir_users(&tx)? {
            let posix = Self::directory_posix_user(&row);
            let groups = directory_groups.remove(&row.name).unwrap_or_default();
            users.push(connect_memcache::User {
                groups: if bound.contains(&row.name) {
                    self.with_shared_group(groups)
                } else {
                    groups
                },
                name: posix.name,
                uid: posix.uid,
                gid: posix.gid,
                gecos: posix.gecos,
                home: posix.home,
                shell: posix.shell,
            });
        }
        let mut groups: Vec<connect_memcache::Group> = store::groups_page(&tx, 0, u32::MAX)?
            .into_iter()
            .map(|g| {
                let members = if self.shared.owned && g.gid == self.shared.gid {
                    if !self.settings.shared_group_members {
                        return connect_memcache::Group {
                            name: g.name,
                            gid: g.gid,
                            members: Vec::new(),
                        };
                    }
                    rows.iter()
                        .map(|r| r.name.clone())
                        .chain(bound.iter().cloned())
                        .collect()
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
        for g in directory_rows::all_dir_groups(&tx)? {
            groups.push(connect_memcache::Group {
                members: directory_members.remove(&g.gid).unwrap_or_default(),
                name: g.name,
                gid: g.gid,
            });
        }
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
}

/// One enumeration page from two sources (provisioned and directory rows),
/// each asked for `limit` ids above the same one: merged by id and cut to
/// `limit`. Done when neither source filled its page and nothing was cut;
/// otherwise the next page starts after the last id kept.
fn merged_page<T>(
    mut items: Vec<T>,
    filled: [usize; 2],
    limit: u32,
    id: impl Fn(&T) -> u32,
) -> (Vec<T>, bool) {
    let limit = limit as usize;
    items.sort_unstable_by_key(id);
    let done = filled.iter().all(|n| *n < limit) && items.len() <= limit;
    items.truncate(limit);
    (items, done)
}
