//! The nameservice client that runs inside every program on the machine,
//! through libnss_connect.
//!
//! What that demands, and how it is met:
//! - **Bounded time.** A connect timeout, one request timeout of at most
//!   [`REQUEST_TIMEOUT`], no retry after a timeout, and then a
//!   [`FAIL_FAST_WINDOW`] in which every lookup answers "unavailable" at once,
//!   so a hung daemon cannot stall every process on the machine.
//! - **No threads, no global runtime.** Each thread that asks keeps its own
//!   current-thread tokio runtime and connection in a thread-local; it runs
//!   only while that thread is inside a lookup and is dropped with the thread.
//! - **Fork-safe.** A child inherits the parent's runtime, whose epoll
//!   instance and socket it shares with the parent. Touching them would
//!   disturb the parent, so a pid change makes the child forget (leak) the
//!   inherited state and connect afresh.
//! - **Safe at process exit** and on re-entry: if the thread-local is gone or
//!   already in use (tokio's own context is then unusable too), the lookup
//!   runs with a one-shot runtime on a scoped thread that is joined before
//!   the call returns.
//! - **No recursion into the daemon**: with `CONNECT_NSS_BYPASS=1` in the
//!   environment (nameserviced sets it on itself) every lookup is
//!   "unavailable" at once.
//!
//! - **Fast path.** Hits are answered from the memory-mapped cache file
//!   nameserviced publishes (see `connect-memcache`), mapped once per thread
//!   and re-checked by a stat at most once a second, or every 50 ms while it
//!   is retired or absent. Misses and doubts go to the daemon.
//!
//! Nothing here panics on bad input; errors are values.

use std::cell::RefCell;
use std::ffi::CStr;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use connect_proto::v1::lookup_client::LookupClient;
use connect_proto::v1::{
    GroupByGidRequest, GroupByNameRequest, ListGroupsRequest, ListUsersRequest,
    SupplementaryGroupsRequest, UserByNameRequest, UserByUidRequest,
};
pub use connect_proto::v1::{PosixGroup, PosixUser};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// How long to wait for the socket to accept.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
/// The whole budget of one lookup, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
/// After a timeout, lookups in this process fail at once for this long.
pub const FAIL_FAST_WINDOW: Duration = Duration::from_secs(5);
/// Entries per enumeration page.
const PAGE: u32 = 1000;

/// Why there is no answer. Both mean "NSS_STATUS_UNAVAIL" to glibc; the
/// distinction is for tests and for the benchmark harness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// `CONNECT_NSS_BYPASS=1`: this process is the daemon (or asked not to).
    Bypassed,
    /// A recent timeout: not trying again yet.
    FailingFast,
    /// The daemon did not answer within the budget.
    TimedOut,
    /// The socket is absent, refused, or the call failed.
    Failed(String),
}

/// `Ok(None)` is an authoritative "no such entry".
pub type Answer<T> = Result<Option<T>, Unavailable>;

/// Monotonic milliseconds; CLOCK_MONOTONIC never goes back, so a clock
/// change cannot extend or cancel the fail-fast window.
fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec as u64) / 1_000_000
}

/// Until when (monotonic ms) lookups fail fast. Process-wide on purpose:
/// every thread of a process should stop waiting on a hung daemon.
static FAIL_FAST_UNTIL: AtomicU64 = AtomicU64::new(0);

fn env_flag(name: &CStr) -> bool {
    // SAFETY: name is NUL-terminated; getenv returns NULL or a valid C string.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: non-null getenv results are valid NUL-terminated strings.
    !value.is_null() && unsafe { CStr::from_ptr(value) }.to_bytes() == b"1"
}

/// Read once per process: nameserviced sets it before it starts any thread,
/// and getenv on every lookup costs more than the rest of a cache hit.
fn bypassed() -> bool {
    static BYPASS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BYPASS.get_or_init(|| env_flag(c"CONNECT_NSS_BYPASS"))
}

extern "C" {
    /// glibc's getenv that returns NULL in setuid/setgid (AT_SECURE)
    /// processes; the `libc` crate does not bind it.
    fn secure_getenv(name: *const libc::c_char) -> *mut libc::c_char;
}

/// `CONNECT_NSS_SOCKET` through `secure_getenv` (so never in setuid
/// programs), if set and not empty.
fn socket_override() -> Option<PathBuf> {
    // SAFETY: the name is NUL-terminated; the result is NULL or a valid C string.
    let value = unsafe { secure_getenv(c"CONNECT_NSS_SOCKET".as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: non-null results are valid NUL-terminated strings.
    let bytes = unsafe { CStr::from_ptr(value) }.to_bytes();
    if bytes.is_empty() {
        return None;
    }
    use std::os::unix::ffi::OsStrExt;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

/// The lookup socket: the override, else the default. A setuid program
/// never lets its caller point it at another daemon.
fn socket_path() -> PathBuf {
    socket_override().unwrap_or_else(|| PathBuf::from(connect_proto::DEFAULT_LOOKUP_SOCKET))
}

// ---------------------------------------------------------------------------
// Fast path: the memory-mapped cache file nameserviced publishes.
// ---------------------------------------------------------------------------

/// How often a thread with a valid mapping checks that the path still names
/// the same file (a cheap stat; the retire counter covers the usual case).
const RECHECK_VALID_MS: u64 = 1000;
/// How often, while the file is absent or retired, a thread looks for a new one.
const RECHECK_STALE_MS: u64 = 50;

/// The cache path: `CONNECT_NSS_CACHE` through `secure_getenv` (so never in
/// setuid programs), `off` or empty to read none. Without it, the default
/// file, unless `CONNECT_NSS_SOCKET` points at another daemon: the default
/// cache belongs to the default daemon, and answering from it would mix two
/// daemons' accounts (a test pointed at its own daemon would see the
/// installed system's users), so the fast path is then off.
fn cache_path() -> Option<std::ffi::CString> {
    // SAFETY: NUL-terminated name; result is NULL or a valid C string.
    let value = unsafe { secure_getenv(c"CONNECT_NSS_CACHE".as_ptr()) };
    if value.is_null() {
        if socket_override().is_some() {
            return None;
        }
        return std::ffi::CString::new(connect_proto::DEFAULT_CACHE_FILE).ok();
    }
    // SAFETY: non-null results are valid NUL-terminated strings.
    let bytes = unsafe { CStr::from_ptr(value) };
    match bytes.to_bytes() {
        b"" | b"off" => None,
        _ => Some(bytes.to_owned()),
    }
}

fn coarse_now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is valid; CLOCK_MONOTONIC_COARSE is served from the vDSO.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec as u64) / 1_000_000
}

#[derive(Default)]
struct FastPath {
    /// The cache path, read from the environment once per thread.
    path: Option<Option<std::ffi::CString>>,
    mapped: Option<connect_memcache::mapped::Mapped>,
    next_check_ms: u64,
}

fn refresh(
    mapped: &mut Option<connect_memcache::mapped::Mapped>,
    next_check_ms: &mut u64,
    path: &CStr,
    now: u64,
) {
    if mapped.is_some() && now < *next_check_ms {
        return;
    }
    let on_disk = connect_memcache::mapped::file_id(path);
    let same = matches!((&*mapped, on_disk), (Some(m), Some(id)) if m.id == id);
    if !same {
        // Replaced, removed or never opened: map what is there now.
        *mapped = connect_memcache::mapped::Mapped::open(path).ok();
    }
    let valid = mapped.as_ref().is_some_and(|m| m.snapshot().is_ok());
    *next_check_ms = now
        + if valid {
            RECHECK_VALID_MS
        } else {
            RECHECK_STALE_MS
        };
}

impl FastPath {
    fn lookup<T>(
        &mut self,
        find: &dyn Fn(&connect_memcache::Snapshot<'_>) -> connect_memcache::Answer<T>,
    ) -> Option<T> {
        let path = self.path.get_or_insert_with(cache_path).as_deref()?;
        let now = coarse_now_ms();
        refresh(&mut self.mapped, &mut self.next_check_ms, path, now);
        let snapshot = match self.mapped.as_ref().map(|m| m.snapshot()) {
            Some(Ok(s)) => s,
            Some(Err(_)) => {
                // Retired: look for its successor soon, ask the daemon now.
                self.next_check_ms = self.next_check_ms.min(now + RECHECK_STALE_MS);
                return None;
            }
            None => return None,
        };
        match find(&snapshot) {
            connect_memcache::Answer::Hit(found) => Some(found),
            connect_memcache::Answer::Miss => None,
            connect_memcache::Answer::Doubt => {
                self.next_check_ms = self.next_check_ms.min(now + RECHECK_STALE_MS);
                None
            }
        }
    }
}

thread_local! {
    static FAST_PATH: RefCell<FastPath> = RefCell::new(FastPath::default());
}

/// A hit from the cache file, or `None` (miss, doubt, no file, or this
/// thread cannot use its thread-locals): then the daemon is asked.
fn from_cache<T>(
    find: impl Fn(&connect_memcache::Snapshot<'_>) -> connect_memcache::Answer<T>,
) -> Option<T> {
    FAST_PATH
        .try_with(|cell| cell.try_borrow_mut().ok()?.lookup(&find))
        .ok()
        .flatten()
}

fn posix_user(u: connect_memcache::User) -> PosixUser {
    PosixUser {
        name: u.name,
        uid: u.uid,
        gid: u.gid,
        gecos: u.gecos,
        home: u.home,
        shell: u.shell,
    }
}

fn posix_group(g: connect_memcache::Group) -> PosixGroup {
    PosixGroup {
        name: g.name,
        gid: g.gid,
        members: g.members,
    }
}

/// One thread's connection.
struct Connection {
    pid: libc::pid_t,
    runtime: tokio::runtime::Runtime,
    /// `None` after a failed dial: the runtime is kept, so a stopped daemon
    /// costs a connect() per lookup, not a new runtime.
    client: Option<LookupClient<Channel>>,
}

thread_local! {
    static CONNECTION: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

fn runtime() -> Result<tokio::runtime::Runtime, Unavailable> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Unavailable::Failed(format!("cannot create a runtime: {e}")))
}

/// One HTTP/2 connection to the daemon, as the service tonic's generated
/// client calls.
#[derive(Clone)]
struct Channel(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

type ResponseFuture = std::pin::Pin<
    Box<dyn Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>> + Send>,
>;

impl tower::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

async fn dial() -> Result<LookupClient<Channel>, Unavailable> {
    let path = socket_path();
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(&path))
        .await
        .map_err(|_| Unavailable::Failed("connect timed out".into()))?
        .map_err(|e| Unavailable::Failed(format!("cannot connect to {}: {e}", path.display())))?;
    let (send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| Unavailable::Failed(format!("HTTP/2 handshake failed: {e}")))?;
    // Driven only while this thread is inside a lookup (block_on), and
    // dropped with the thread's runtime.
    tokio::spawn(connection);
    Ok(LookupClient::with_origin(
        Channel(send),
        http::Uri::from_static("http://nameservice.invalid"),
    ))
}

/// A lookup: given a client, the request future.
type Call<'a, T> = Box<
    dyn FnMut(
            LookupClient<Channel>,
        )
            -> std::pin::Pin<Box<dyn Future<Output = Result<T, tonic::Status>> + Send + 'a>>
        + Send
        + 'a,
>;

enum Attempt<T> {
    Done(T),
    /// The connection failed before the daemon answered (not a timeout):
    /// worth one more try on a fresh connection when it was a reused one.
    Broken(String),
    TimedOut,
}

fn attempt<T>(
    runtime: &tokio::runtime::Runtime,
    client: LookupClient<Channel>,
    call: &mut Call<'_, T>,
    budget: Duration,
) -> Attempt<T> {
    // The timer must be created inside the runtime: build it in the block.
    let request = call(client);
    match runtime.block_on(async move { tokio::time::timeout(budget, request).await }) {
        Ok(Ok(value)) => Attempt::Done(value),
        Ok(Err(status)) => Attempt::Broken(status.to_string()),
        Err(_) => Attempt::TimedOut,
    }
}

fn timed_out<T>() -> Result<T, Unavailable> {
    FAIL_FAST_UNTIL.store(
        now_ms() + FAIL_FAST_WINDOW.as_millis() as u64,
        Ordering::Relaxed,
    );
    Err(Unavailable::TimedOut)
}

/// Runs `call` against the daemon within the time budget, on this thread's
/// connection when it can.
fn run<T: Send>(mut call: Call<'_, T>) -> Result<T, Unavailable> {
    if bypassed() {
        return Err(Unavailable::Bypassed);
    }
    if now_ms() < FAIL_FAST_UNTIL.load(Ordering::Relaxed) {
        return Err(Unavailable::FailingFast);
    }
    let shared = CONNECTION.try_with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => Some(run_on(&mut slot, &mut call)),
        // Re-entered from inside a lookup on this thread: use a one-shot path.
        Err(_) => None,
    });
    match shared {
        Ok(Some(result)) => result,
        // This thread cannot run a runtime: its thread-locals (ours and
        // tokio's) are being destroyed at thread or process exit, or a
        // lookup is already running on it. A short-lived thread has fresh
        // ones; it is joined before returning, so none is left behind.
        Ok(None) | Err(_) => std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("nss-connect".into())
                .spawn_scoped(scope, || one_shot(&mut call))
                .map_err(|e| Unavailable::Failed(format!("cannot start a lookup thread: {e}")))?
                .join()
                .unwrap_or_else(|_| Err(Unavailable::Failed("lookup thread panicked".into())))
        }),
    }
}

fn run_on<T>(slot: &mut Option<Connection>, call: &mut Call<'_, T>) -> Result<T, Unavailable> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if slot.as_ref().is_some_and(|c| c.pid != pid) {
        // Inherited across fork: the epoll instance and socket are shared
        // with the parent, and dropping them would deregister the parent's
        // socket. Leak them instead.
        if let Some(inherited) = slot.take() {
            std::mem::forget(inherited);
        }
    }
    let started = now_ms();
    if slot.is_none() {
        *slot = Some(Connection {
            pid,
            runtime: runtime()?,
            client: None,
        });
    }
    let Some(conn) = slot.as_mut() else {
        return Err(Unavailable::Failed("no connection".into()));
    };
    let reused = conn.client.is_some();
    if conn.client.is_none() {
        match dial_within_budget(&conn.runtime) {
            Ok(client) => conn.client = Some(client),
            // A timed-out dial may have left work in the runtime: drop it.
            Err(Unavailable::TimedOut) => {
                *slot = None;
                return Err(Unavailable::TimedOut);
            }
            // Refused or absent: nothing was left running in the runtime.
            Err(e) => return Err(e),
        }
    }
    let (Some(conn), Some(client)) = (slot.as_ref(), slot.as_ref().and_then(|c| c.client.clone()))
    else {
        return Err(Unavailable::Failed("no connection".into()));
    };
    let budget = REQUEST_TIMEOUT.saturating_sub(Duration::from_millis(now_ms() - started));
    match attempt(&conn.runtime, client, call, budget) {
        Attempt::Done(value) => Ok(value),
        Attempt::TimedOut => {
            *slot = None;
            timed_out()
        }
        Attempt::Broken(reason) => {
            *slot = None;
            if reused {
                // The daemon may have restarted since this connection was
                // made: one fresh try, within what is left of the budget.
                run_on(slot, call)
            } else {
                Err(Unavailable::Failed(reason))
            }
        }
    }
}

/// Dials within the request budget; a timeout starts the fail-fast window.
fn dial_within_budget(
    runtime: &tokio::runtime::Runtime,
) -> Result<LookupClient<Channel>, Unavailable> {
    match runtime.block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, dial()).await }) {
        Ok(result) => result,
        Err(_) => timed_out(),
    }
}

fn one_shot<T>(call: &mut Call<'_, T>) -> Result<T, Unavailable> {
    let runtime = runtime()?;
    let client = dial_within_budget(&runtime)?;
    match attempt(&runtime, client, call, REQUEST_TIMEOUT) {
        Attempt::Done(value) => Ok(value),
        Attempt::TimedOut => timed_out(),
        Attempt::Broken(reason) => Err(Unavailable::Failed(reason)),
    }
}

fn plausible(name: &str) -> bool {
    connect_proto::is_plausible_name(name, connect_proto::MAX_NAME_LEN)
}

pub fn user_by_name(name: &str) -> Answer<PosixUser> {
    if !plausible(name) {
        return Ok(None);
    }
    if bypassed() {
        return Err(Unavailable::Bypassed);
    }
    if let Some(user) = from_cache(|s| s.user_by_name(name)) {
        return Ok(Some(posix_user(user)));
    }
    let request = UserByNameRequest {
        name: name.to_owned(),
    };
    run(Box::new(move |mut c| {
        let request = request.clone();
        Box::pin(async move {
            c.get_user_by_name(request)
                .await
                .map(|r| r.into_inner().user)
        })
    }))
}

pub fn user_by_uid(uid: u32) -> Answer<PosixUser> {
    if bypassed() {
        return Err(Unavailable::Bypassed);
    }
    if let Some(user) = from_cache(|s| s.user_by_uid(uid)) {
        return Ok(Some(posix_user(user)));
    }
    run(Box::new(move |mut c| {
        Box::pin(async move {
            c.get_user_by_uid(UserByUidRequest { uid })
                .await
                .map(|r| r.into_inner().user)
        })
    }))
}

pub fn group_by_name(name: &str) -> Answer<PosixGroup> {
    if !plausible(name) {
        return Ok(None);
    }
    if bypassed() {
        return Err(Unavailable::Bypassed);
    }
    if let Some(group) = from_cache(|s| s.group_by_name(name)) {
        return Ok(Some(posix_group(group)));
    }
    let request = GroupByNameRequest {
        name: name.to_owned(),
    };
    run(Box::new(move |mut c| {
        let request = request.clone();
        Box::pin(async move {
            c.get_group_by_name(request)
                .await
                .map(|r| r.into_inner().group)
        })
    }))
}

pub fn group_by_gid(gid: u32) -> Answer<PosixGroup> {
    if bypassed() {
        return Err(Unavailable::Bypassed);
    }
    if let Some(group) = from_cache(|s| s.group_by_gid(gid)) {
        return Ok(Some(posix_group(group)));
    }
    run(Box::new(move |mut c| {
        Box::pin(async move {
            c.get_group_by_gid(GroupByGidRequest { gid })
                .await
                .map(|r| r.into_inner().group)
        })
    }))
}

/// The gids initgroups adds for `user`; `Ok(None)` when the user is unknown.
pub fn supplementary_groups(user: &str) -> Answer<Vec<u32>> {
    if !plausible(user) {
        return Ok(None);
    }
    if bypassed() {
        return Err(Unavailable::Bypassed);
    }
    if let Some(found) = from_cache(|s| s.user_by_name(user)) {
        return Ok(Some(found.groups));
    }
    let request = SupplementaryGroupsRequest {
        user: user.to_owned(),
    };
    run(Box::new(move |mut c| {
        let request = request.clone();
        Box::pin(async move {
            c.get_supplementary_groups(request).await.map(|r| {
                let r = r.into_inner();
                r.user_known.then_some(r.gids)
            })
        })
    }))
}

/// Every user, fetched page by page within one time budget.
pub fn all_users() -> Result<Vec<PosixUser>, Unavailable> {
    if bypassed() {
        return Err(Unavailable::Bypassed);
    }
    // The cache file holds every account the daemon publishes: no round
    // trips, no paging.
    if let Some(users) = from_cache(|s| s.all_users()) {
        return Ok(users.into_iter().map(posix_user).collect());
    }
    run(Box::new(|mut c| {
        Box::pin(async move {
            let mut all = Vec::new();
            let mut after_uid = 0;
            loop {
                let page = c
                    .list_users(ListUsersRequest {
                        after_uid,
                        limit: PAGE,
                    })
                    .await?
                    .into_inner();
                let last = page.users.last().map(|u| u.uid);
                all.extend(page.users);
                match last {
                    Some(uid) if !page.done && uid > after_uid => after_uid = uid,
                    _ => return Ok(all),
                }
            }
        })
    }))
}

/// Every group, fetched page by page within one time budget.
pub fn all_groups() -> Result<Vec<PosixGroup>, Unavailable> {
    if bypassed() {
        return Err(Unavailable::Bypassed);
    }
    if let Some(groups) = from_cache(|s| s.all_groups()) {
        return Ok(groups.into_iter().map(posix_group).collect());
    }
    run(Box::new(|mut c| {
        Box::pin(async move {
            let mut all = Vec::new();
            let mut after_gid = 0;
            loop {
                let page = c
                    .list_groups(ListGroupsRequest {
                        after_gid,
                        limit: PAGE,
                    })
                    .await?
                    .into_inner();
                let last = page.groups.last().map(|g| g.gid);
                all.extend(page.groups);
                match last {
                    Some(gid) if !page.done && gid > after_gid => after_gid = gid,
                    _ => return Ok(all),
                }
            }
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implausible_names_are_not_found_without_a_round_trip() {
        // No daemon is running for unit tests: a round trip would be
        // "unavailable", so Ok(None) proves none was made.
        for name in ["", "Root", "0", "../x", "a b", "é"] {
            assert_eq!(user_by_name(name), Ok(None), "{name:?}");
            assert_eq!(group_by_name(name), Ok(None), "{name:?}");
            assert_eq!(supplementary_groups(name), Ok(None), "{name:?}");
        }
    }

    #[test]
    fn a_missing_socket_is_unavailable_quickly() {
        // SAFETY: test-only; no other thread of this test binary reads this variable concurrently
        // in a way that matters (each test sets the same value).
        unsafe { std::env::set_var("CONNECT_NSS_SOCKET", "/nonexistent/connect/lookup.sock") };
        let started = std::time::Instant::now();
        let answer = user_by_name("alice");
        assert!(matches!(answer, Err(Unavailable::Failed(_))), "{answer:?}");
        // Below the connect timeout, with room for a loaded machine: a
        // client that waited on a timeout instead of failing at once fails.
        let took = started.elapsed();
        assert!(took < CONNECT_TIMEOUT * 4 / 5, "{took:?}");
    }

    #[test]
    fn another_daemons_socket_never_reads_the_default_cache_file() {
        // SAFETY: test-only; every test of this binary that sets it sets the same value.
        unsafe {
            std::env::set_var("CONNECT_NSS_SOCKET", "/nonexistent/connect/lookup.sock");
            std::env::remove_var("CONNECT_NSS_CACHE");
        }
        assert_eq!(cache_path(), None);
    }
}
