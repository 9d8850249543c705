//! A directory in memory for unit tests: entries, a switch that makes it
//! unreachable, and a count of the questions it was asked.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Directory, DirectoryAccount, DirectoryError, DirectoryGroup, GroupKey, UserKey};

#[derive(Default)]
pub struct FakeDirectory {
    pub users: Mutex<Vec<DirectoryAccount>>,
    pub groups: Mutex<Vec<DirectoryGroup>>,
    pub down: AtomicBool,
    pub asked: AtomicUsize,
}

impl FakeDirectory {
    pub fn add_user(&self, name: &str, uid: u32, gid: u32, link: &str) {
        self.users.lock().unwrap().push(DirectoryAccount {
            // Stamped by the resolver with the name it is configured under.
            source: String::new(),
            dn: format!("uid={name},ou=people"),
            name: name.into(),
            uid,
            gid,
            gecos: name.into(),
            home: format!("/home/{name}"),
            shell: None,
            link: Some(link.into()),
        });
    }

    pub fn add_group(&self, name: &str, gid: u32, members: &[&str]) {
        self.groups.lock().unwrap().push(DirectoryGroup {
            source: String::new(),
            dn: format!("cn={name},ou=groups"),
            name: name.into(),
            gid,
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        });
    }

    pub fn questions(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }

    fn ask(&self) -> Result<(), DirectoryError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(DirectoryError::Unavailable("fake directory is down".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Directory for FakeDirectory {
    async fn user(&self, key: UserKey<'_>) -> Result<Option<DirectoryAccount>, DirectoryError> {
        self.ask()?;
        let users = self.users.lock().unwrap();
        Ok(users
            .iter()
            .find(|u| match key {
                UserKey::Name(n) => u.name == n,
                UserKey::Uid(uid) => u.uid == uid,
                UserKey::Link(l) => u.link.as_deref() == Some(l),
            })
            .cloned())
    }

    async fn group(&self, key: GroupKey<'_>) -> Result<Option<DirectoryGroup>, DirectoryError> {
        self.ask()?;
        let groups = self.groups.lock().unwrap();
        Ok(groups
            .iter()
            .find(|g| match key {
                GroupKey::Name(n) => g.name == n,
                GroupKey::Gid(gid) => g.gid == gid,
            })
            .cloned())
    }

    async fn groups_of(
        &self,
        user: &DirectoryAccount,
    ) -> Result<Vec<DirectoryGroup>, DirectoryError> {
        self.ask()?;
        let groups = self.groups.lock().unwrap();
        Ok(groups
            .iter()
            .filter(|g| g.members.contains(&user.name))
            .cloned()
            .collect())
    }
}
