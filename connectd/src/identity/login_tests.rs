//! The sign-in through a fake provider: what is written, what is not, and
//! how each kind of refusal comes back, for both shapes of sign-in.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use connect_gcfg::Config;

use super::fake::{FakeProvider, FAKE_IDP};
use super::login::{Authenticator, LoginError};
use super::{AccountSource, AuthError, Callback, SignInMethod};
use crate::accounts::provision::Provisioner;
use crate::config::Settings;
use crate::roles::Role;
use crate::store::{SqliteStore, Store};

const SETTINGS: &str = "[Authentication]\nProvider = ldap\n[LDAP \"corp\"]\n\
    ServerAddress = 127.0.0.1:389\nUserSearchBaseDN = ou=people,dc=x\n\
    [Authorization]\nUserRoleGroupMapping = true\nPublisherRoleMapping = Data-Science\n";

fn authenticator(provider: FakeProvider) -> (Authenticator, Arc<dyn Store>, Arc<FakeProvider>) {
    let config = Config::parse(SETTINGS, "connect.gcfg").expect("parse");
    let settings = Arc::new(Settings::from_config(&config).expect("settings"));
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().expect("store"));
    let provider = Arc::new(provider);
    let auth = Authenticator::new(
        settings,
        store.clone(),
        provider.clone(),
        // RunAsCurrentUser is off: nothing is provisioned, and a socket
        // that does not exist would say so if something tried.
        Provisioner::new("/nonexistent/provision.sock".into(), Duration::from_secs(1)),
    );
    (auth, store, provider)
}

fn people() -> FakeProvider {
    FakeProvider::new(SignInMethod::Password)
        .with_person("alice", "alice-secret", &["Data-Science"])
        .with_person("bob", "bob-secret", &[])
}

fn user_count(store: &dyn Store) -> u64 {
    store.list_users(None, 0, 100).expect("list").1
}

#[tokio::test]
async fn a_known_person_is_recorded_with_their_mapped_role_and_groups() {
    let (auth, store, _) = authenticator(people());
    let alice = auth
        .with_password("alice", "alice-secret")
        .await
        .expect("alice signs in");
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.provider, "fake");
    assert_eq!(alice.unique_id, "id-alice");
    assert_eq!(alice.role, Role::Publisher, "from the Data-Science group");
    let groups: Vec<String> = store
        .groups_of(alice.id)
        .expect("groups")
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(groups, ["Data-Science"]);

    let bob = auth.with_password("bob", "bob-secret").await.expect("bob");
    assert_eq!(bob.role, Role::Viewer, "no group matches: the default");
    let again = auth
        .with_password("alice", "alice-secret")
        .await
        .expect("again");
    assert_eq!(again.id, alice.id, "the same identity is the same user");
    assert_eq!(user_count(store.as_ref()), 2);
}

#[tokio::test]
async fn a_refused_sign_in_writes_nothing() {
    let (auth, store, provider) = authenticator(people());
    let wrong = auth.with_password("alice", "guess").await;
    assert!(
        matches!(wrong, Err(LoginError::Auth(AuthError::InvalidCredentials))),
        "{wrong:?}"
    );
    let unknown = auth.with_password("mallory", "alice-secret").await;
    assert!(matches!(
        unknown,
        Err(LoginError::Auth(AuthError::InvalidCredentials))
    ));
    let forged = auth.with_password("alice\nINFO signed in", "x").await;
    assert!(matches!(
        forged,
        Err(LoginError::Auth(AuthError::InvalidCredentials))
    ));
    provider.down.store(true, Ordering::SeqCst);
    let down = auth.with_password("alice", "alice-secret").await;
    assert!(
        matches!(down, Err(LoginError::Auth(AuthError::Unavailable(_)))),
        "a provider that is down is not a wrong password: {down:?}"
    );
    assert_eq!(user_count(store.as_ref()), 0);
}

#[tokio::test]
async fn a_locked_user_is_refused_after_the_provider_said_yes() {
    let (auth, store, _) = authenticator(people());
    let alice = auth
        .with_password("alice", "alice-secret")
        .await
        .expect("alice");
    store.set_locked(alice.id, true).expect("lock");
    let locked = auth.with_password("alice", "alice-secret").await;
    assert!(matches!(locked, Err(LoginError::Locked)), "{locked:?}");
}

#[tokio::test]
async fn a_password_is_kept_only_when_the_provider_asks() {
    let (auth, _, _) = authenticator(people());
    let alice = auth
        .with_password("alice", "alice-secret")
        .await
        .expect("alice");
    assert_eq!(auth.forwarded_password(alice.id), None);

    let mut keeping = people();
    keeping.keeps_password = true;
    keeping.accounts = AccountSource::Host;
    let (auth, _, _) = authenticator(keeping);
    let alice = auth
        .with_password("alice", "alice-secret")
        .await
        .expect("alice");
    assert_eq!(
        auth.forwarded_password(alice.id).as_deref(),
        Some("alice-secret")
    );
}

fn redirect_people() -> FakeProvider {
    FakeProvider::new(SignInMethod::Redirect).with_person("alice", "", &["Data-Science"])
}

fn state_of(location: &str) -> &str {
    location
        .strip_prefix(FAKE_IDP)
        .and_then(|q| q.strip_prefix("?state="))
        .expect("the fake IdP's URL with a state")
}

#[tokio::test]
async fn a_redirect_sign_in_returns_where_it_started_once() {
    let (auth, store, provider) = authenticator(redirect_people());
    let redirect = auth
        .begin("/content/abc/", "browser-1")
        .await
        .expect("begin");
    let state = state_of(&redirect.location).to_owned();
    assert_eq!(provider.pending(), 1);

    let query = format!("state={state}&user=alice");
    let callback = Callback {
        query: &query,
        form: None,
        binding: "browser-1",
    };
    let (alice, return_to, _) = auth.finish(callback).await.expect("callback");
    assert_eq!(return_to, "/content/abc/");
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.role, Role::Publisher);
    assert_eq!(provider.pending(), 0, "the state is used up");

    let replay = auth.finish(callback).await;
    assert!(
        matches!(replay, Err(LoginError::Auth(AuthError::Flow(_)))),
        "a replayed callback is refused: {replay:?}"
    );
    assert_eq!(user_count(store.as_ref()), 1);
}

#[tokio::test]
async fn a_callback_without_a_state_we_issued_is_refused_and_writes_nothing() {
    let (auth, store, _) = authenticator(redirect_people());
    let _ = auth.begin("/", "browser-1").await.expect("begin");
    for query in ["user=alice", "state=forged&user=alice", "%zz", ""] {
        let result = auth
            .finish(Callback {
                query,
                form: None,
                binding: "browser-1",
            })
            .await;
        assert!(
            matches!(result, Err(LoginError::Auth(AuthError::Flow(_)))),
            "{query:?}: {result:?}"
        );
    }
    assert_eq!(user_count(store.as_ref()), 0);
}

#[tokio::test]
async fn each_shape_refuses_the_others_sign_in() {
    let (auth, _, _) = authenticator(redirect_people());
    let password = auth.with_password("alice", "").await;
    assert!(
        matches!(
            password,
            Err(LoginError::Auth(AuthError::InvalidCredentials))
        ),
        "a password sent to a redirect provider is just wrong: {password:?}"
    );
    let (auth, _, _) = authenticator(people());
    let begin = auth.begin("/", "browser-1").await;
    assert!(matches!(
        begin,
        Err(LoginError::Auth(AuthError::NotOffered))
    ));
}

#[tokio::test]
async fn a_callback_in_another_browser_is_refused_and_writes_nothing() {
    let (auth, store, provider) = authenticator(redirect_people());
    // The attacker starts a sign-in in their browser ...
    let redirect = auth.begin("/", "attacker-browser").await.expect("begin");
    let query = format!("state={}&user=alice", state_of(&redirect.location));
    // ... and sends the callback link to someone else's browser.
    for binding in ["victim-browser", ""] {
        let result = auth
            .finish(Callback {
                query: &query,
                form: None,
                binding,
            })
            .await;
        assert!(
            matches!(result, Err(LoginError::Auth(AuthError::Flow(_)))),
            "{binding:?}: {result:?}"
        );
    }
    assert_eq!(provider.pending(), 0, "the refused state is used up");
    assert_eq!(user_count(store.as_ref()), 0);
}
