//! The resolver's rules against a fake directory and a real service
//! (SQLite in a temporary state directory).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use connect_gcfg::Config;

use super::fake::FakeDirectory;
use super::resolver::Resolver;
use crate::config::Settings;
use crate::host::{HostAccounts, HostUser};
use crate::local::{LocalFiles, LocalWatcher};
use crate::service::{EnsureRequest, Nameservice, ServiceError};

/// A host whose only accounts are those in the fake /etc/passwd.
struct NoOtherAccounts;

impl HostAccounts for NoOtherAccounts {
    fn user_by_name(&self, _: &str) -> Result<Option<HostUser>, String> {
        Ok(None)
    }
    fn user_by_uid(&self, _: u32) -> Result<Option<HostUser>, String> {
        Ok(None)
    }
    fn group_name(&self, _: u32) -> Result<Option<String>, String> {
        Ok(None)
    }
}

struct World {
    _dir: tempfile::TempDir,
    ns: Arc<Nameservice>,
    directory: Arc<FakeDirectory>,
    resolver: Arc<Resolver>,
}

/// A host whose SSSD (say) resolves ada.
struct HostWithAda;

impl HostAccounts for HostWithAda {
    fn user_by_name(&self, name: &str) -> Result<Option<HostUser>, String> {
        Ok((name == "ada")
            .then(|| self.user_by_uid(5001).ok().flatten())
            .flatten())
    }
    fn user_by_uid(&self, uid: u32) -> Result<Option<HostUser>, String> {
        Ok((uid == 5001).then(|| HostUser {
            name: "ada".into(),
            uid,
            gid: 5000,
            gecos: "Ada".into(),
            home: "/home/ada".into(),
            shell: "/bin/sh".into(),
        }))
    }
    fn group_name(&self, gid: u32) -> Result<Option<String>, String> {
        Ok((gid == 5000).then(|| "primary".into()))
    }
}

fn world(extra: &str) -> World {
    world_on(extra, Arc::new(NoOtherAccounts))
}

fn world_on(extra: &str, host: Arc<dyn HostAccounts>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(
        p("passwd"),
        "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(p("group"), "root:x:0:\nusers:x:100:\n").unwrap();
    std::fs::write(p("subuid"), "").unwrap();
    std::fs::write(p("subgid"), "").unwrap();
    let text = format!(
        "[Applications]\nSharedRunAsUnixGroup = connect-users\n\
         [Nameservice]\nUidRange = 2000000-2099999\nGidRange = 3000000-3099999\n\
         StateDirectory = {}\nCacheFile =\n{extra}\n\
         [Nameservice \"corp\"]\nURL = ldap://127.0.0.1:1\nUserSearchBaseDN = ou=people\n\
         IdentityProvider = ldap/corp\nNegativeCacheTtl = 1h\n",
        p("state").display()
    );
    let mut settings = Settings::from_config(&Config::parse(&text, "t.gcfg").unwrap()).unwrap();
    let files = LocalFiles {
        passwd: p("passwd"),
        group: p("group"),
        subuid: p("subuid"),
        subgid: p("subgid"),
    };
    let shared = settings
        .check(&LocalWatcher::new(files.clone()).unwrap().current())
        .unwrap();
    let ns = Arc::new(
        Nameservice::open(settings, shared, files, 1, false)
            .unwrap()
            .with_host_accounts(host),
    );
    let directory = Arc::new(FakeDirectory::default());
    directory.add_user("ada", 5001, 5000, "uuid-ada");
    directory.add_group("research", 5100, &["ada"]);
    let resolver = Arc::new(Resolver::with_directories(
        ns.clone(),
        vec![(
            Arc::new(ns.settings().directories[0].clone()),
            directory.clone() as Arc<dyn super::Directory>,
        )],
    ));
    World {
        _dir: dir,
        ns,
        directory,
        resolver,
    }
}

fn request(provider: &str, unique_id: &str, username: &str) -> EnsureRequest {
    EnsureRequest {
        provider: provider.into(),
        unique_id: unique_id.into(),
        username: username.into(),
        display_name: String::new(),
        groups: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_is_fetched_once_then_answered_from_the_rows() {
    let w = world("");
    let ada = w.resolver.user_by_name("ada").await.unwrap().unwrap();
    assert_eq!(
        (ada.uid, ada.gid, ada.home.as_str()),
        (5001, 5000, "/home/ada")
    );
    let asked = w.directory.questions();
    assert_eq!(w.ns.user_by_name("ada").unwrap().unwrap().uid, 5001);
    assert_eq!(
        w.ns.supplementary("ada").unwrap().unwrap().as_slice(),
        [5100]
    );
    let research = w.ns.group_by_gid(5100).unwrap().unwrap();
    assert_eq!(research.members, ["ada"]);
    assert_eq!(w.directory.questions(), asked, "the rows answer now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_entries_are_asked_for_once_per_negative_ttl() {
    let w = world("");
    assert!(w.resolver.user_by_name("ghost").await.unwrap().is_none());
    assert!(w.resolver.user_by_name("ghost").await.unwrap().is_none());
    assert_eq!(w.directory.questions(), 1);
    // Ids the directory may not hold are never asked for.
    assert!(w.resolver.user_by_uid(0).await.unwrap().is_none());
    assert!(w.resolver.user_by_uid(2_000_001).await.unwrap().is_none());
    assert_eq!(w.directory.questions(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_directory_is_skipped_while_known_entries_keep_answering() {
    let w = world("");
    w.resolver.user_by_name("ada").await.unwrap().unwrap();
    w.directory.down.store(true, Ordering::SeqCst);
    let asked = w.directory.questions();
    for _ in 0..3 {
        let err = w.resolver.user_by_name("bea").await.unwrap_err();
        assert!(matches!(err, ServiceError::Unavailable(_)), "{err}");
    }
    assert_eq!(
        w.directory.questions(),
        asked + 1,
        "backing off, not asking again"
    );
    assert_eq!(w.ns.user_by_name("ada").unwrap().unwrap().uid, 5001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_seen_identity_waits_for_its_directory_instead_of_a_new_uid() {
    let w = world("");
    w.directory.down.store(true, Ordering::SeqCst);
    let err = w
        .resolver
        .ensure(request("ldap/corp", "uuid-new", "newbie"))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Unavailable(_)), "{err}");
    assert_eq!(w.ns.counts().unwrap().0, 0, "nobody provisioned");
    // Nor anyone else new: "olga" may be a directory account's name.
    let err = w
        .resolver
        .ensure(request("oidc/x", "sub-1", "olga"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("\"olga\" may be a directory account"),
        "{err}"
    );
    w.directory.down.store(false, Ordering::SeqCst);
    let other = w
        .resolver
        .ensure(request("oidc/x", "sub-1", "olga"))
        .await
        .unwrap();
    assert!(other.created);
    assert_eq!(other.account.source, "provisioned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_provision_only_directory_accounts_are_given_out() {
    let w = world("AutoProvision = false");
    let err = w
        .resolver
        .ensure(request("ldap/corp", "uuid-nobody", "nobody-here"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("AutoProvision = false"), "{err}");
    let bound = w
        .resolver
        .ensure(request("ldap/corp", "uuid-ada", "ada"))
        .await
        .unwrap();
    assert_eq!(
        (bound.account.uid, bound.account.source.as_str()),
        (5001, "directory corp")
    );
    // Bound once, bound for good: a second sign-in asks nothing new.
    let again = w
        .resolver
        .ensure(request("ldap/corp", "uuid-ada", "ada-renamed"))
        .await
        .unwrap();
    assert_eq!(again.account.uid, 5001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_drops_vanished_entries_but_never_rebinds_the_identity() {
    let w = world("");
    w.resolver
        .ensure(request("ldap/corp", "uuid-ada", "ada"))
        .await
        .unwrap();
    w.directory.users.lock().unwrap().clear();
    w.ns.expire_directory().unwrap();
    w.resolver.refresh_pass().await;
    assert!(w.ns.user_by_name("ada").unwrap().is_none());
    let err = w
        .resolver
        .ensure(request("ldap/corp", "uuid-ada", "ada"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no longer in"), "{err}");
    assert_eq!(w.ns.counts().unwrap().0, 0, "not provisioned instead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrators_uid_is_checked_like_any_other() {
    let w = world("");
    w.resolver.user_by_name("ada").await.unwrap().unwrap();
    let req = request("oidc/x", "sub-2", "zed");
    for (uid, why) in [
        (0, "root"),
        (999, "MinimumUid"),
        (1000, "local account"),
        (5001, "directory account"),
        (65534, "kept for"),
        (2_000_050, "UidRange"),
    ] {
        let err = w.ns.set_uid(&req, uid).unwrap_err();
        assert!(err.to_string().contains(why), "{uid}: {err}");
    }
    let made = w.ns.set_uid(&req, 7000).unwrap();
    assert_eq!(made.account.uid, 7000);
    let err = w.ns.set_uid(&req, 7001).unwrap_err();
    assert!(err.to_string().contains("never renumbered"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_name_is_never_provisioned_to_someone_else() {
    let w = world("");
    // Not cached yet: the sign-in looks the name up first.
    let other = w
        .resolver
        .ensure(request("oidc/x", "sub-9", "ada@evil.example"))
        .await
        .unwrap();
    assert_eq!(other.account.name, "ada-2");
    assert_eq!(w.ns.user_by_name("ada").unwrap().unwrap().uid, 5001);
    // A provisioned user renaming themselves to a cached directory name.
    let mallory = w
        .resolver
        .ensure(request("oidc/x", "sub-10", "mallory"))
        .await
        .unwrap();
    let renamed = w
        .resolver
        .ensure(request("oidc/x", "sub-10", "ada"))
        .await
        .unwrap();
    assert_eq!(renamed.account.uid, mallory.account.uid);
    assert_ne!(renamed.account.name, "ada");
    // IdP groups do not take directory group names either.
    w.resolver.group_by_name("research").await.unwrap().unwrap();
    let mut with_group = request("oidc/x", "sub-11", "gus");
    with_group.groups.push(crate::service::IdpGroup {
        unique_id: "g1".into(),
        name: "research".into(),
    });
    let gus = w.resolver.ensure(with_group).await.unwrap();
    assert!(
        gus.account.groups.iter().all(|g| g.name != "research"),
        "{:?}",
        gus.account.groups
    );
    assert_eq!(w.ns.group_by_name("research").unwrap().unwrap().gid, 5100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_directory_cannot_take_over_a_cached_uid_or_name() {
    let w = world("");
    w.resolver.user_by_name("ada").await.unwrap().unwrap();
    // Another directory's entry with ada's uid, and one with her name.
    let partner = Arc::new(FakeDirectory::default());
    partner.add_user("mallory", 5001, 5000, "uuid-m");
    partner.add_user("ada", 6001, 5000, "uuid-a2");
    let mut settings = w.ns.settings().directories[0].clone();
    settings.name = "partner".into();
    let resolver = Arc::new(Resolver::with_directories(
        w.ns.clone(),
        vec![(Arc::new(settings), partner as Arc<dyn super::Directory>)],
    ));
    assert!(resolver.user_by_name("mallory").await.unwrap().is_none());
    assert!(resolver.user_by_uid(6001).await.unwrap().is_none());
    let ada = w.ns.user_by_uid(5001).unwrap().unwrap();
    assert_eq!(ada.name, "ada", "corp's ada keeps her uid and name");
    // Binding by the partner identity is refused, not given a new uid.
    let err = resolver
        .ensure(request("ldap/corp", "uuid-m", "mallory"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_the_host_answers_for_is_only_bound_to() {
    let w = world_on("", Arc::new(HostWithAda));
    let mut settings = w.ns.settings().directories[0].clone();
    settings.answer_lookups = false;
    let resolver = Arc::new(Resolver::with_directories(
        w.ns.clone(),
        vec![(
            Arc::new(settings),
            w.directory.clone() as Arc<dyn super::Directory>,
        )],
    ));
    // Lookups are the host's business: nothing is fetched or cached.
    assert!(resolver.user_by_name("ada").await.unwrap().is_none());
    assert_eq!(w.directory.questions(), 0);
    let bound = resolver
        .ensure(request("ldap/corp", "uuid-ada", "ada"))
        .await
        .unwrap();
    assert_eq!(
        (bound.account.uid, bound.account.source.as_str()),
        (5001, "host")
    );
    assert!(
        bound.warnings.iter().any(|w| w.contains("only binds")),
        "{:?}",
        bound.warnings
    );
    assert!(
        w.ns.directory_user_by_uid(5001).unwrap().is_none(),
        "not cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_group_can_be_answered_without_its_member_list() {
    for (extra, listed) in [("", true), ("SharedGroupMembers = false", false)] {
        let w = world(extra);
        let made = w
            .resolver
            .ensure(request("oidc/x", "sub-1", "olga"))
            .await
            .unwrap();
        let shared = w.ns.group_by_name("connect-users").unwrap().unwrap();
        assert_eq!(
            shared.members.contains(&"olga".to_owned()),
            listed,
            "{extra}"
        );
        // initgroups does not depend on it.
        let gids = w.ns.supplementary("olga").unwrap().unwrap();
        assert_eq!(gids.first(), Some(&shared.gid), "{extra}");
        assert_eq!(made.account.gid, shared.gid);
        let (_, snapshot_groups) = w.ns.snapshot_records().unwrap();
        let in_file = snapshot_groups
            .iter()
            .find(|g| g.gid == shared.gid)
            .unwrap();
        assert_eq!(in_file.members.is_empty(), !listed, "{extra}");
    }
}
