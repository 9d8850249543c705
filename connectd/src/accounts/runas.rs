//! Which Unix account may run content, checked only through libc lookups
//! (`getpwnam_r`, `getgrnam_r`, `getgrouplist`), so that local accounts,
//! accounts the nameservice provisioned and directory-mapped accounts are
//! treated alike.
//!
//! Every account that runs content must be a member of
//! `Applications.SharedRunAsUnixGroup` (or, unset, of the RunAs account's
//! primary group); root and system accounts (below `Applications.MinimumUid`)
//! never run content, except the configured RunAs account itself.

use crate::accounts::unix::{self, Account};
use crate::config::Settings;

/// An account cleared to run content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAccount {
    pub account: Account,
    /// Supplementary groups (from `getgrouplist`), the primary group first.
    pub groups: Vec<u32>,
    pub shared_gid: u32,
}

/// Why an account may not run content. The text is for the log and, for a
/// viewer's own account, for the viewer: it says what an administrator does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountRefusal {
    #[error(
        "the Unix account {name:?} does not exist (getpwnam found nobody); create it, or \
         check that the nameservice or directory that provides it is running"
    )]
    Unknown { name: String },
    #[error("the Unix account {name:?} could not be looked up: {reason}")]
    Lookup { name: String, reason: String },
    #[error("the Unix account {name:?} (uid {uid}) may not run content: {why}")]
    Prohibited {
        name: String,
        uid: u32,
        why: &'static str,
    },
    #[error(
        "the Unix account {name:?} is not a member of the group {group} \
         (Applications.SharedRunAsUnixGroup), which every account that runs content must \
         belong to; add it with `usermod -aG {group_name} {name}` (or in the directory)"
    )]
    NotMember {
        name: String,
        group: String,
        group_name: String,
    },
}

/// The shared group: its name (for messages) and gid.
pub fn shared_group(settings: &Settings) -> Result<(String, u32), AccountRefusal> {
    if let Some(name) = &settings.shared_group {
        return match unix::lookup_group_gid(name) {
            Ok(Some(gid)) => Ok((name.clone(), gid)),
            Ok(None) => Err(AccountRefusal::Lookup {
                name: name.clone(),
                reason: format!(
                    "the group {name:?} named by Applications.SharedRunAsUnixGroup does not \
                     exist; create it or fix the setting"
                ),
            }),
            Err(e) => Err(AccountRefusal::Lookup {
                name: name.clone(),
                reason: e.to_string(),
            }),
        };
    }
    match unix::lookup_user(&settings.run_as) {
        Ok(Some(account)) => Ok((
            format!("{} (the primary group of {})", account.gid, settings.run_as),
            account.gid,
        )),
        Ok(None) => Err(AccountRefusal::Lookup {
            name: settings.run_as.clone(),
            reason: format!(
                "Applications.RunAs = {:?} does not exist, so there is no shared group; \
                 create the account or set Applications.SharedRunAsUnixGroup",
                settings.run_as
            ),
        }),
        Err(e) => Err(AccountRefusal::Lookup {
            name: settings.run_as.clone(),
            reason: e.to_string(),
        }),
    }
}

/// Resolves `name` and checks that it may run content.
pub fn check_account(settings: &Settings, name: &str) -> Result<RunAccount, AccountRefusal> {
    let account = match unix::lookup_user(name) {
        Ok(Some(account)) => account,
        Ok(None) | Err(unix::LookupError::BadName) => {
            return Err(AccountRefusal::Unknown {
                name: name.to_owned(),
            })
        }
        Err(e) => {
            return Err(AccountRefusal::Lookup {
                name: name.to_owned(),
                reason: e.to_string(),
            })
        }
    };
    let prohibited = |why| AccountRefusal::Prohibited {
        name: account.name.clone(),
        uid: account.uid,
        why,
    };
    if account.uid == 0 {
        return Err(prohibited("root never runs content"));
    }
    if account.gid == 0 {
        return Err(prohibited(
            "its primary group is root's, which never runs content",
        ));
    }
    if account.uid < settings.minimum_uid && account.name != settings.run_as {
        return Err(prohibited(
            "it is a system account (below Applications.MinimumUid)",
        ));
    }
    let (group, shared_gid) = shared_group(settings)?;
    let groups = unix::group_list(&account).map_err(|e| AccountRefusal::Lookup {
        name: account.name.clone(),
        reason: e.to_string(),
    })?;
    if groups.contains(&0) {
        return Err(prohibited(
            "it is a member of root's group (gid 0), which never runs content",
        ));
    }
    if !groups.contains(&shared_gid) {
        return Err(AccountRefusal::NotMember {
            name: account.name.clone(),
            group_name: settings
                .shared_group
                .clone()
                .unwrap_or_else(|| shared_gid.to_string()),
            group,
        });
    }
    Ok(RunAccount {
        account,
        groups,
        shared_gid,
    })
}
