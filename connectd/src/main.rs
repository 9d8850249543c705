//! `connectd --config /etc/connect/connect.gcfg`

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use connect_gcfg::Config;
use connectd::accounts::provision::Provisioner;
use connectd::config::{Settings, DEFAULT_CONFIG_PATH};
use connectd::deploy::Deployer;
use connectd::http::{router, AppState};
use connectd::identity::{self, login::Authenticator};
use connectd::run::local::LocalLauncher;
use connectd::run::scheduler::Scheduler;
use connectd::store::{SqliteStore, Store};

/// EX_CONFIG from sysexits.h: systemd and administrators read it as
/// "fix the configuration", and the unit does not restart in a loop.
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(version, about = "Connect content server")]
struct Args {
    /// The gcfg configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match Config::load(&args.config)
        .map_err(connectd::config::SettingsError::from)
        .and_then(|c| Settings::from_config(&c))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("connectd: refusing to start: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    connectd::logging::init(&settings.log_level);
    for key in &settings.unknown_keys {
        tracing::warn!("unknown configuration key ignored: {key}");
    }
    if args.check {
        println!("{}: configuration OK", args.config.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("connectd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("connectd: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&settings.data_dir)
        .map_err(|e| {
            format!(
                "cannot create [Server] DataDir {}: {e}",
                settings.data_dir.display()
            )
        })?;
    // Sessions and password hashes live here: nobody else may read it.
    let _ = std::fs::set_permissions(&settings.data_dir, std::fs::Permissions::from_mode(0o700));
    let db = settings.data_dir.join("connect.db");
    let node = node_name();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&db, &node)
            .map_err(|e| format!("cannot open the database {}: {e}", db.display()))?,
    );
    let settings = Arc::new(settings);
    let auth = Arc::new(Authenticator::new(
        settings.clone(),
        store.clone(),
        identity::from_settings(&settings, store.clone()).await?,
        Provisioner::new(settings.provision_socket.clone(), Duration::from_secs(5)),
    ));
    match store.end_unfinished_jobs() {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            "{n} content processes of an earlier run were not seen to end; their sockets are \
             removed and they get no more requests"
        ),
        Err(e) => tracing::warn!("could not close the records of earlier processes: {e}"),
    }
    let _ = std::fs::remove_dir_all(settings.data_dir.join("run"));
    let launcher = LocalLauncher::new(&settings)
        .map_err(|e| format!("cannot start the process spawner thread: {e}"))?;
    let scheduler = Scheduler::new(
        settings.clone(),
        store.clone(),
        auth.clone(),
        Arc::new(launcher),
    );
    tokio::spawn(scheduler.clone().reap_forever());
    let deployer = Deployer::new(settings.clone(), store.clone(), scheduler.clone());
    match deployer.end_interrupted_tasks() {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            "{n} deployments of an earlier run were not seen to finish; they are marked failed \
             and must be deployed again"
        ),
        Err(e) => tracing::warn!("could not close the records of earlier deployments: {e}"),
    }
    let state = Arc::new(AppState::new(
        settings.clone(),
        store.clone(),
        auth,
        scheduler.clone(),
        deployer,
    ));
    tokio::spawn(state.usage.clone().sample_forever(scheduler.clone()));
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on [HTTP] Listen {}: {e}", settings.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        address = %address,
        provider = settings.provider.as_str(),
        run_as_current_user = settings.run_as_current_user,
        "connectd listening"
    );
    let sweeper = store.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every.tick().await;
            if let Err(e) = sweeper.delete_expired_sessions() {
                tracing::warn!("could not delete expired sessions: {e}");
            }
        }
    });
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown())
    .await
    .map_err(|e| format!("server failed: {e}"))?;
    tracing::info!("stopping content processes");
    scheduler.stop_all().await;
    tracing::info!("connectd stopped");
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("stopping: finishing requests in flight");
}

/// The name this node's jobs and deployment tasks are recorded under: the
/// host name, as each node of a cluster has its own.
fn node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}
