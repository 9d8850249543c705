//! gRPC over two Unix sockets.
//!
//! - The lookup socket (mode 0666) serves only the read-only `Lookup`
//!   service: any local process may ask what `getent` could show anyway.
//! - The provisioning socket (mode 0660, group of the service account)
//!   serves `Provisioning`, and every call is checked against the caller's
//!   kernel-reported credentials (SO_PEERCRED): only root and the configured
//!   service account pass, whatever the file mode says.

use std::io;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use connect_proto::v1::lookup_server::{Lookup, LookupServer};
use connect_proto::v1::provisioning_server::{Provisioning, ProvisioningServer};
use connect_proto::v1::*;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use crate::directory::resolver::Resolver;
use crate::service::{self, EnsureRequest, Nameservice, Selector, ServiceError};

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::InvalidArgument(m) => Status::invalid_argument(m),
            ServiceError::NotFound(m) => Status::not_found(m),
            ServiceError::Exhausted(m) => Status::resource_exhausted(m),
            ServiceError::FailedPrecondition(m) => Status::failed_precondition(m),
            ServiceError::Unavailable(m) => {
                let mut status = Status::unavailable(m);
                status.metadata_mut().insert(
                    connect_proto::UPSTREAM_UNAVAILABLE,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                status
            }
            ServiceError::Database(e) => {
                tracing::error!("database error: {e}");
                Status::unavailable(format!("database error: {e}"))
            }
        }
    }
}

/// Lookups answer from the service's rows first; only what it does not
/// know goes to the directories (if any answer lookups).
pub struct LookupService {
    ns: Arc<Nameservice>,
    directories: Arc<Resolver>,
}

#[tonic::async_trait]
impl Lookup for LookupService {
    async fn get_user_by_name(
        &self,
        req: Request<UserByNameRequest>,
    ) -> Result<Response<UserReply>, Status> {
        let name = &req.get_ref().name;
        let user = match self.ns.user_by_name(name)? {
            Some(u) => Some(u),
            None => self.directories.user_by_name(name).await?,
        };
        Ok(Response::new(UserReply {
            user: user.map(|u| (*u).clone()),
        }))
    }

    async fn get_user_by_uid(
        &self,
        req: Request<UserByUidRequest>,
    ) -> Result<Response<UserReply>, Status> {
        let uid = req.get_ref().uid;
        let user = match self.ns.user_by_uid(uid)? {
            Some(u) => Some(u),
            None => self.directories.user_by_uid(uid).await?,
        };
        Ok(Response::new(UserReply {
            user: user.map(|u| (*u).clone()),
        }))
    }

    async fn get_group_by_name(
        &self,
        req: Request<GroupByNameRequest>,
    ) -> Result<Response<GroupReply>, Status> {
        let name = &req.get_ref().name;
        let group = match self.ns.group_by_name(name)? {
            Some(g) => Some(g),
            None => self.directories.group_by_name(name).await?,
        };
        Ok(Response::new(GroupReply {
            group: group.map(|g| (*g).clone()),
        }))
    }

    async fn get_group_by_gid(
        &self,
        req: Request<GroupByGidRequest>,
    ) -> Result<Response<GroupReply>, Status> {
        let gid = req.get_ref().gid;
        let group = match self.ns.group_by_gid(gid)? {
            Some(g) => Some(g),
            None => self.directories.group_by_gid(gid).await?,
        };
        Ok(Response::new(GroupReply {
            group: group.map(|g| (*g).clone()),
        }))
    }

    async fn get_supplementary_groups(
        &self,
        req: Request<SupplementaryGroupsRequest>,
    ) -> Result<Response<SupplementaryGroupsReply>, Status> {
        let user = &req.get_ref().user;
        let gids = match self.ns.supplementary(user)? {
            Some(g) => Some(g),
            None => self.directories.supplementary(user).await?,
        };
        Ok(Response::new(SupplementaryGroupsReply {
            user_known: gids.is_some(),
            gids: gids.map(|g| (*g).clone()).unwrap_or_default(),
        }))
    }

    async fn list_users(
        &self,
        req: Request<ListUsersRequest>,
    ) -> Result<Response<UserPage>, Status> {
        let (users, done) = self
            .ns
            .list_users(req.get_ref().after_uid, req.get_ref().limit)?;
        Ok(Response::new(UserPage { users, done }))
    }

    async fn list_groups(
        &self,
        req: Request<ListGroupsRequest>,
    ) -> Result<Response<GroupPage>, Status> {
        let (groups, done) = self
            .ns
            .list_groups(req.get_ref().after_gid, req.get_ref().limit)?;
        Ok(Response::new(GroupPage { groups, done }))
    }

    async fn health(&self, _req: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        let (status, users, groups) = match self.ns.counts() {
            Ok((u, g)) => match self.ns.provisioning_held_back() {
                None => ("ok".to_owned(), u, g),
                Some(why) => (format!("degraded: new accounts refused: {why}"), u, g),
            },
            Err(e) => (format!("database unreadable: {e}"), 0, 0),
        };
        Ok(Response::new(HealthReply {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            users,
            groups,
            uptime_seconds: self.ns.uptime().as_secs(),
            status,
        }))
    }
}

pub struct ProvisioningService {
    ns: Arc<Nameservice>,
    directories: Arc<Resolver>,
}

impl ProvisioningService {
    /// Refuses any caller that is not root or the service account, by the
    /// credentials the kernel recorded when it connected.
    fn authorise<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let cred = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred);
        let Some(cred) = cred else {
            return Err(Status::permission_denied(
                "the caller's credentials are unknown; provisioning is refused",
            ));
        };
        let uid = cred.uid();
        if uid == 0 || Some(uid) == self.ns.service_account_uid() {
            return Ok(());
        }
        tracing::warn!(uid, pid = ?cred.pid(), "refused a provisioning call from an unprivileged process");
        Err(Status::permission_denied(
            match &self.ns.settings().service_account {
                Some(account) => format!(
                    "uid {uid} may not provision accounts: only root and the service account \
                 {account:?} may ([Nameservice] ServiceAccount)"
                ),
                None => format!(
                    "uid {uid} may not provision accounts: only root may (name another account \
                 with [Nameservice] ServiceAccount)"
                ),
            },
        ))
    }

    /// Root only, whatever ServiceAccount says: choosing uids is an
    /// administrator's act.
    fn authorise_root<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.authorise(req)?;
        let uid = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .map(|c| c.uid());
        if uid == Some(0) {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "only root may choose an account's uid or bind existing accounts",
            ))
        }
    }

    /// Runs a database write off the async workers: a commit waits for fsync.
    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        F: FnOnce(&Nameservice) -> Result<T, ServiceError> + Send + 'static,
        T: Send + 'static,
    {
        let ns = self.ns.clone();
        tokio::task::spawn_blocking(move || f(&ns))
            .await
            .map_err(|e| Status::internal(format!("provisioning task failed: {e}")))?
            .map_err(Status::from)
    }
}

fn selector(s: Option<AccountSelector>) -> Result<Selector, Status> {
    match s.and_then(|s| s.by) {
        Some(account_selector::By::Name(n)) => Ok(Selector::Name(n)),
        Some(account_selector::By::Uid(u)) => Ok(Selector::Uid(u)),
        Some(account_selector::By::Identity(i)) => Ok(Selector::Identity {
            provider: i.provider,
            unique_id: i.unique_id,
        }),
        None => Err(Status::invalid_argument(
            "name the account by its name, uid or identity",
        )),
    }
}

fn ensure_request(id: Identity, req: EnsureUserRequest) -> EnsureRequest {
    EnsureRequest {
        provider: id.provider,
        unique_id: id.unique_id,
        username: req.username,
        display_name: req.display_name,
        groups: req
            .groups
            .into_iter()
            .map(|g| service::IdpGroup {
                unique_id: g.unique_id,
                name: g.name,
            })
            .collect(),
    }
}

fn identity(i: Option<Identity>) -> Result<Identity, Status> {
    i.ok_or_else(|| Status::invalid_argument("the identity (provider and unique id) is missing"))
}

#[tonic::async_trait]
impl Provisioning for ProvisioningService {
    async fn ensure_user(
        &self,
        req: Request<EnsureUserRequest>,
    ) -> Result<Response<EnsureUserReply>, Status> {
        self.authorise(&req)?;
        let req = req.into_inner();
        let id = identity(req.identity.clone())?;
        let request = ensure_request(id, req);
        let outcome = self.directories.ensure(request).await?;
        Ok(Response::new(EnsureUserReply {
            account: Some(outcome.account),
            created: outcome.created,
            warnings: outcome.warnings,
        }))
    }

    async fn map_user(
        &self,
        req: Request<MapUserRequest>,
    ) -> Result<Response<EnsureUserReply>, Status> {
        // Root only: a mapping can bind any account the host resolves.
        self.authorise_root(&req)?;
        let req = req.into_inner();
        let id = identity(req.identity)?;
        let outcome = self
            .blocking(move |ns| ns.map_user(&id.provider, &id.unique_id, &req.local_user))
            .await?;
        Ok(Response::new(EnsureUserReply {
            account: Some(outcome.account),
            created: outcome.created,
            warnings: outcome.warnings,
        }))
    }

    async fn set_locked(
        &self,
        req: Request<SetLockedRequest>,
    ) -> Result<Response<AccountReply>, Status> {
        self.authorise(&req)?;
        let req = req.into_inner();
        let sel = selector(req.account)?;
        let account = self
            .blocking(move |ns| ns.set_locked(&sel, req.locked))
            .await?;
        Ok(Response::new(AccountReply {
            account: Some(account),
        }))
    }

    async fn get_account(
        &self,
        req: Request<AccountSelector>,
    ) -> Result<Response<AccountReply>, Status> {
        self.authorise(&req)?;
        let sel = selector(Some(req.into_inner()))?;
        // A host account is looked up through NSS, which may be slow.
        let account = self.blocking(move |ns| ns.get_account(&sel)).await?;
        Ok(Response::new(AccountReply {
            account: Some(account),
        }))
    }

    async fn list_accounts(
        &self,
        req: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsReply>, Status> {
        self.authorise(&req)?;
        let (accounts, done) = self
            .ns
            .list_accounts(req.get_ref().after_uid, req.get_ref().limit)?;
        Ok(Response::new(ListAccountsReply { accounts, done }))
    }

    async fn unmap_user(&self, req: Request<Identity>) -> Result<Response<UnmapUserReply>, Status> {
        self.authorise_root(&req)?;
        let id = req.into_inner();
        let binding = self
            .blocking(move |ns| ns.unmap_user(&id.provider, &id.unique_id))
            .await?;
        Ok(Response::new(UnmapUserReply {
            account: binding.account,
            uid: binding.uid.unwrap_or_default(),
        }))
    }

    async fn set_uid(
        &self,
        req: Request<SetUidRequest>,
    ) -> Result<Response<EnsureUserReply>, Status> {
        self.authorise_root(&req)?;
        let req = req.into_inner();
        let user = req
            .user
            .ok_or_else(|| Status::invalid_argument("the user to provision is missing"))?;
        let id = identity(user.identity.clone())?;
        let request = ensure_request(id, user);
        let uid = req.uid;
        let outcome = self.blocking(move |ns| ns.set_uid(&request, uid)).await?;
        Ok(Response::new(EnsureUserReply {
            account: Some(outcome.account),
            created: outcome.created,
            warnings: outcome.warnings,
        }))
    }

    async fn refresh_user(
        &self,
        req: Request<AccountSelector>,
    ) -> Result<Response<AccountReply>, Status> {
        self.authorise(&req)?;
        let sel = selector(Some(req.into_inner()))?;
        let account = self.directories.refresh(sel).await?;
        Ok(Response::new(AccountReply {
            account: Some(account),
        }))
    }

    async fn flush_directory_cache(
        &self,
        req: Request<FlushDirectoryCacheRequest>,
    ) -> Result<Response<FlushDirectoryCacheReply>, Status> {
        self.authorise(&req)?;
        let directories = self.directories.clone();
        let expired = tokio::task::spawn_blocking(move || directories.flush())
            .await
            .map_err(|e| Status::internal(format!("flush failed: {e}")))??;
        Ok(Response::new(FlushDirectoryCacheReply { expired }))
    }

    async fn cache_stats(
        &self,
        req: Request<CacheStatsRequest>,
    ) -> Result<Response<CacheStatsReply>, Status> {
        self.authorise(&req)?;
        let s = self.ns.cache_stats();
        Ok(Response::new(CacheStatsReply {
            hits: s.hits,
            misses: s.misses,
            negative_hits: s.negative_hits,
            entries: s.entries,
            capacity: s.capacity,
            invalidations: s.invalidations,
            expired: s.expired,
        }))
    }
}

/// Binds a socket path, refusing to steal it from a live daemon and removing
/// a stale file left by one that died.
pub fn bind(path: &Path, mode: u32, gid: Option<u32>) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is served by a running nameserviced; stop it first",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(gid) = gid {
        chown(path, None, Some(gid))?;
    }
    Ok(listener)
}

pub struct Sockets {
    pub lookup: PathBuf,
    pub provision: PathBuf,
}

/// Serves both sockets until `shutdown` resolves, then removes the socket files.
pub async fn serve(
    ns: Arc<Nameservice>,
    directories: Arc<Resolver>,
    sockets: Sockets,
    provision_gid: Option<u32>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let lookup_listener = bind(&sockets.lookup, 0o666, None)?.into_std()?;
    let provision_listener = bind(&sockets.provision, 0o660, provision_gid)?;
    // Two stages: `drain` asks the servers to finish in-flight calls; `stop`
    // ends them regardless once the drain has had its time.
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Lookups are short and answered from memory: a thread of their own,
    // with a single-threaded runtime, answers each request where it arrives
    // instead of handing it between worker threads, whose wake-ups cost
    // more than the lookup itself.
    let (lookup_done_tx, lookup_done_rx) = tokio::sync::oneshot::channel::<Result<(), BoxError>>();
    let (lookup_drain, lookup_stop, lookup_ns) = (drain_rx.clone(), stop_rx.clone(), ns.clone());
    let lookup_directories = directories.clone();
    std::thread::Builder::new()
        .name("lookups".into())
        .spawn(move || {
            let result = (|| -> Result<(), BoxError> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(cpus())
                    .thread_name("lookup-worker")
                    .enable_all()
                    .on_thread_park(spin_before_sleep)
                    .build()?;
                runtime.block_on(async move {
                    let listener = UnixListener::from_std(lookup_listener)?;
                    let server = tonic::transport::Server::builder()
                        .add_service(LookupServer::new(LookupService {
                            ns: lookup_ns,
                            directories: lookup_directories,
                        }))
                        .serve_with_incoming_shutdown(
                            UnixListenerStream::new(listener),
                            signalled(lookup_drain),
                        );
                    tokio::select! {
                        result = server => result.map_err(BoxError::from),
                        () = signalled(lookup_stop) => Ok(()),
                    }
                })
            })();
            let _ = lookup_done_tx.send(result);
        })?;
    let lookup = async move { lookup_done_rx.await.unwrap_or(Ok(())) };

    let provisioning = async move {
        let server = tonic::transport::Server::builder()
            .add_service(ProvisioningServer::new(ProvisioningService {
                ns,
                directories,
            }))
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(provision_listener),
                signalled(drain_rx),
            );
        tokio::select! {
            result = server => result.map_err(BoxError::from),
            () = signalled(stop_rx) => Ok(()),
        }
    };
    tracing::info!(
        lookup = %sockets.lookup.display(),
        provision = %sockets.provision.display(),
        "serving"
    );
    let servers = async { tokio::try_join!(lookup, provisioning).map(|_| ()) };
    tokio::pin!(servers);
    let result = tokio::select! {
        // A server failed on its own (e.g. the listener broke).
        ended = &mut servers => ended,
        () = shutdown => {
            let _ = drain_tx.send(true);
            // Graceful shutdown waits for clients to close their connections,
            // but an NSS client's idle connection is only polled during a
            // lookup, so it may never close: drain briefly, then stop.
            match tokio::time::timeout(SHUTDOWN_DRAIN, &mut servers).await {
                Ok(ended) => ended,
                Err(_) => {
                    tracing::info!("closing idle client connections");
                    let _ = stop_tx.send(true);
                    servers.await
                }
            }
        }
    };
    let _ = std::fs::remove_file(&sockets.lookup);
    let _ = std::fs::remove_file(&sockets.provision);
    result
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long the lookup thread stays on its CPU after the last request
/// before sleeping in epoll. Waking an idle CPU is what makes a round trip
/// slow on virtual machines (tens of microseconds); a request that arrives
/// within this window is picked up without one. Costs at most this much CPU
/// per burst of lookups.
const LOOKUP_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn spin_before_sleep() {
    // On one CPU, spinning would only delay the client we wait for.
    if cpus() < 2 {
        return;
    }
    let started = std::time::Instant::now();
    while started.elapsed() < LOOKUP_SPIN {
        std::hint::spin_loop();
    }
}

/// Resolves once the flag is raised (or its sender is gone).
async fn signalled(mut flag: tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|raised| *raised).await;
}

/// How long in-flight calls get to finish after SIGTERM.
pub const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);
