//! nameserviced: the Connect nameservice daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use connect_gcfg::Config;
use nameserviced::config::{Settings, DEFAULT_CONFIG_PATH};
use nameserviced::directory::resolver::Resolver;
use nameserviced::local::{LocalFiles, LocalWatcher};
use nameserviced::service::Nameservice;
use nameserviced::{logging, server};

/// Exit status for a configuration that cannot work (sysexits EX_CONFIG);
/// the systemd unit does not restart on it.
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    version,
    about = "Stable Unix accounts for federated identities, served to NSS"
)]
struct Args {
    /// The gcfg file shared with connectd.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Check the configuration against the local account files and exit.
    #[arg(long)]
    check: bool,
    /// Start from an empty database in a state directory that had one
    /// (after losing it, with no backup to restore). Ids up to the
    /// high-water mark are still never given again.
    #[arg(long)]
    start_over: bool,
}

fn main() -> ExitCode {
    // Before any thread exists: libnss_connect, if this process ever loads it,
    // answers UNAVAIL at once instead of asking this daemon about itself.
    // SAFETY: no other thread is running yet.
    unsafe { std::env::set_var(connect_proto::NSS_BYPASS_ENV, "1") };
    // glibc gives each thread that allocates its own arena (up to 8 per
    // core) and keeps freed memory in each: with the blocking pool's threads
    // building large snapshots that multiplied resident memory many times.
    // Two arenas are plenty for a daemon whose hot path is a cache lookup.
    // SAFETY: mallopt is called before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let args = Args::parse();

    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nameserviced: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let mut settings = match Settings::from_config(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nameserviced: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    logging::init(&settings.log_level);
    for key in &settings.unknown_keys {
        tracing::warn!("unknown key {key} is ignored; check its spelling");
    }
    let files = LocalFiles::default();
    let local = match LocalWatcher::new(files.clone()) {
        Ok(w) => w.current(),
        Err(e) => {
            tracing::error!("cannot read the local account files: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let shared = match settings.check(&local) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("refusing to start: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if args.check {
        println!(
            "{}: configuration is valid (shared group: {shared:?})",
            settings.origin
        );
        return ExitCode::SUCCESS;
    }
    let service_user = settings
        .service_account
        .as_deref()
        .map(|name| (name, local.user(name)));
    if let Some((name, None)) = service_user {
        tracing::warn!(
            "the service account {name:?} is not in /etc/passwd: only root may provision until it exists"
        );
    }
    let provision_gid = service_user.and_then(|(_, user)| user.map(|u| u.gid));
    let sockets = server::Sockets {
        lookup: settings.lookup_socket.clone(),
        provision: settings.provision_socket.clone(),
    };
    let ns = match Nameservice::open(settings, shared, files, 4, args.start_over) {
        Ok(ns) => Arc::new(ns),
        Err(e) => {
            tracing::error!("refusing to start: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    tracing::info!(
        shared_group = %ns.shared().name,
        shared_gid = ns.shared().gid,
        answered_here = ns.shared().owned,
        "nameservice ready"
    );

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The fast path: retire what an earlier daemon left, publish a first
    // snapshot, then keep it current after every change.
    let publisher = ns.publisher().clone();
    publisher.retire_leftover();
    match ns.publish_snapshot() {
        Ok(_) => {
            if let Some(path) = publisher.path() {
                tracing::info!(path = %path.display(), "published the NSS cache file");
            }
        }
        Err(e) => tracing::error!("{e}; lookups go to the daemon until a snapshot can be written"),
    }
    let builder = ns.clone();
    runtime.spawn(
        publisher
            .clone()
            .run(Arc::new(move || builder.publish_snapshot())),
    );
    let directories = match Resolver::new(ns.clone()) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            tracing::error!("refusing to start: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    for d in &ns.settings().directories {
        tracing::info!(
            directory = %d.name,
            urls = %d.urls.join(" "),
            answers_lookups = d.answer_lookups,
            "directory source configured{}",
            if d.answer_lookups {
                ""
            } else {
                " (the host resolves its accounts: the nameservice only binds identities to them)"
            }
        );
    }
    if !ns.settings().auto_provision {
        tracing::info!("AutoProvision = false: only mapped and directory accounts are given out");
    }
    runtime.spawn(directories.clone().run_refresh());
    let result = runtime.block_on(server::serve(
        ns,
        directories,
        sockets,
        provision_gid,
        shutdown_signal(),
    ));
    publisher.withdraw();
    // Do not wait on a snapshot being built: the next daemon rebuilds it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
