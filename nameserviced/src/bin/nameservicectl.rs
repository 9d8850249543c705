//! nameservicectl: the administrator's view of the Connect nameservice.
//!
//! Reads the socket paths from the same gcfg file as the daemon. Lookups and
//! `health` use the lookup socket; everything else the provisioning socket,
//! which only root and the service account may use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use connect_gcfg::{Config, Key};
use connect_proto::v1::lookup_client::LookupClient;
use connect_proto::v1::provisioning_client::ProvisioningClient;
use connect_proto::v1::*;
use nameserviced::client::connect;
use nameserviced::config::DEFAULT_CONFIG_PATH;

#[derive(Parser)]
#[command(
    version,
    about = "Inspect and manage accounts of the Connect nameservice"
)]
struct Cli {
    /// The gcfg file naming the sockets.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Timeout for each call.
    #[arg(long, default_value = "10", value_name = "SECONDS")]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List provisioned accounts with uid, primary group and supplementary groups.
    Users,
    /// Show one account, by name or uid.
    User { account: String },
    /// Provision (or refresh) the account of an identity.
    Provision {
        /// Identity provider, e.g. ldap, oauth2, saml.
        #[arg(long)]
        provider: String,
        /// The provider's stable unique id for the person.
        #[arg(long = "id")]
        unique_id: String,
        /// The username the provider reports.
        #[arg(long)]
        username: String,
        #[arg(long, default_value = "")]
        display_name: String,
        /// An identity-provider group, as NAME or NAME=UNIQUE_ID; repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Bind an identity to an existing account instead of provisioning one.
    Map {
        #[arg(long)]
        provider: String,
        #[arg(long = "id")]
        unique_id: String,
        /// An account the host resolves (`getent passwd NAME`): /etc/passwd,
        /// SSSD, extrausers… but not one this nameservice provisioned.
        #[arg(long)]
        local_user: String,
    },
    /// Undo a binding made by `map` or by a directory match.
    Unmap {
        #[arg(long)]
        provider: String,
        #[arg(long = "id")]
        unique_id: String,
    },
    /// Provision a first-seen identity under a uid you choose (e.g. the uid
    /// that already owns the person's files). Root only.
    SetUid {
        #[arg(long)]
        provider: String,
        #[arg(long = "id")]
        unique_id: String,
        #[arg(long)]
        username: String,
        #[arg(long, default_value = "")]
        display_name: String,
        uid: u32,
    },
    /// Read a directory account again from its directory now.
    Refresh { account: String },
    /// Make every cached directory entry due for a refresh and forget
    /// negative answers (entries keep answering until refreshed).
    FlushCache,
    /// Lock an account: it keeps its uid and files, its shell becomes the locked shell.
    Lock { account: String },
    /// Unlock an account.
    Unlock { account: String },
    /// Cache hit and miss counters.
    CacheStats,
    /// Is the daemon answering, and how much does it hold?
    Health,
    /// Copy the database (consistently, while the daemon runs) and the
    /// high-water mark into a new directory. Reads the state directory
    /// directly: run as root.
    Backup { destination: PathBuf },
    /// After restoring a backup: what the database lacks against the
    /// high-water mark (ids handed out since the backup was taken).
    CheckRestore,
    /// Accept the restored database as it is: new accounts are made again,
    /// all above the high-water mark.
    ConfirmRestore,
}

/// The daemon's settings, for the commands that work on the state
/// directory itself.
fn daemon_settings(config: &Path) -> Result<nameserviced::config::Settings, String> {
    let cfg = if config.exists() {
        Config::load(config).map_err(|e| e.to_string())?
    } else {
        Config::empty()
    };
    nameserviced::config::Settings::from_config(&cfg).map_err(|e| e.to_string())
}

/// The commands that need no daemon; `None` for the others.
fn offline(cli: &Cli) -> Option<Result<(), String>> {
    let settings = || daemon_settings(&cli.config);
    Some(match &cli.command {
        Command::Backup { destination } => settings().and_then(|s| {
            nameserviced::backup::backup(&s.state_dir, destination).map(|m| println!("{m}"))
        }),
        Command::CheckRestore => settings().and_then(|s| {
            let (report, behind) =
                nameserviced::backup::restore_report(&s.state_dir, &s.uid_range, &s.gid_range)?;
            print!("{report}");
            if behind {
                println!(
                    "new accounts are refused until `nameservicectl confirm-restore`; the ids \
                     above are never given again either way"
                );
            }
            Ok(())
        }),
        Command::ConfirmRestore => settings().and_then(|s| {
            let marks = nameserviced::backup::confirm_restore(&s.state_dir)?;
            println!(
                "confirmed: new accounts are made again, with uids above {} and gids above {}",
                marks
                    .uid
                    .map(|u| u.to_string())
                    .unwrap_or_else(|| "none".into()),
                marks
                    .gid
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "none".into())
            );
            Ok(())
        }),
        _ => return None,
    })
}

fn sockets(config: &Path) -> Result<(PathBuf, PathBuf), String> {
    let cfg = if config.exists() {
        Config::load(config).map_err(|e| e.to_string())?
    } else {
        Config::empty()
    };
    let get = |key, default: &str| {
        cfg.string(Key::new("Nameservice", key))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(default))
    };
    Ok((
        get("LookupSocket", connect_proto::DEFAULT_LOOKUP_SOCKET),
        get("ProvisionSocket", connect_proto::DEFAULT_PROVISION_SOCKET),
    ))
}

fn selector(account: &str) -> AccountSelector {
    let by = match account.parse::<u32>() {
        Ok(uid) => account_selector::By::Uid(uid),
        Err(_) => account_selector::By::Name(account.to_owned()),
    };
    AccountSelector { by: Some(by) }
}

fn groups_text(a: &Account) -> String {
    a.groups
        .iter()
        .map(|g| format!("{}({})", g.name, g.gid))
        .collect::<Vec<_>>()
        .join(",")
}

fn ago(unix: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format!("{} s ago", (now - unix).max(0))
}

fn print_account(a: &Account) {
    let id = a.identity.clone().unwrap_or_default();
    println!("name:          {}", a.name);
    println!("uid:           {}", a.uid);
    println!("primary group: {}({})", a.primary_group, a.gid);
    println!("groups:        {}", groups_text(a));
    println!("home:          {}", a.home);
    println!("shell:         {}", a.shell);
    println!("gecos:         {}", a.gecos);
    println!("locked:        {}", a.locked);
    println!("mapped:        {}", a.mapped);
    println!("source:        {}", a.source);
    if a.refreshed_unix > 0 {
        println!(
            "refreshed:     {} ({})",
            a.refreshed_unix,
            ago(a.refreshed_unix)
        );
    }
    if a.bound_unix > 0 {
        println!("bound:         {} ({})", a.bound_unix, ago(a.bound_unix));
    }
    println!("provider:      {}", id.provider);
    println!("unique id:     {}", id.unique_id);
}

/// The transport's error for a socket this user may not open reads like a
/// daemon that is not running: ask the socket directly first, and name a
/// permission problem as one.
fn refuse_if_denied(socket: &Path) -> Result<(), String> {
    match std::os::unix::net::UnixStream::connect(socket) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
            "permission denied on {}: only root and the nameservice's group may use it; \
             run nameservicectl as root (e.g. with sudo)",
            socket.display()
        )),
        // Other failures get the transport's own message below.
        _ => Ok(()),
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Some(result) = offline(&cli) {
        return result;
    }
    let (lookup_path, provision_path) = sockets(&cli.config)?;
    let timeout = Duration::from_secs(cli.timeout.max(1));
    let provisioning = || async {
        refuse_if_denied(&provision_path)?;
        connect(&provision_path, timeout)
            .await
            .map(ProvisioningClient::new)
            .map_err(|e| {
                format!(
                    "cannot reach nameserviced at {}: {e} (is it running? `systemctl status nameserviced`)",
                    provision_path.display()
                )
            })
    };
    let status = |s: tonic::Status| match s.code() {
        tonic::Code::PermissionDenied => {
            format!("permission denied: {} (run as root)", s.message())
        }
        _ => s.message().to_owned(),
    };
    match cli.command {
        Command::Users => {
            let mut client = provisioning().await?;
            println!(
                "{:<24} {:>10} {:<24} {:<6} {:<12} GROUPS",
                "NAME", "UID", "PRIMARY GROUP", "LOCKED", "PROVIDER"
            );
            let mut after = 0;
            loop {
                let page = client
                    .list_accounts(ListAccountsRequest {
                        after_uid: after,
                        limit: 500,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                for a in &page.accounts {
                    println!(
                        "{:<24} {:>10} {:<24} {:<6} {:<12} {}",
                        a.name,
                        a.uid,
                        format!("{}({})", a.primary_group, a.gid),
                        if a.locked { "yes" } else { "no" },
                        a.identity
                            .as_ref()
                            .map(|i| i.provider.as_str())
                            .unwrap_or(""),
                        groups_text(a)
                    );
                    after = a.uid;
                }
                if page.done || page.accounts.is_empty() {
                    break;
                }
            }
        }
        Command::User { account } => {
            let reply = provisioning()
                .await?
                .get_account(selector(&account))
                .await
                .map_err(status)?
                .into_inner();
            print_account(&reply.account.unwrap_or_default());
        }
        Command::Provision {
            provider,
            unique_id,
            username,
            display_name,
            groups,
        } => {
            let groups = groups
                .into_iter()
                .map(|g| match g.split_once('=') {
                    Some((name, id)) => IdpGroup {
                        name: name.to_owned(),
                        unique_id: id.to_owned(),
                    },
                    None => IdpGroup {
                        name: g.clone(),
                        unique_id: g,
                    },
                })
                .collect();
            let reply = provisioning()
                .await?
                .ensure_user(EnsureUserRequest {
                    identity: Some(Identity {
                        provider,
                        unique_id,
                    }),
                    username,
                    display_name,
                    groups,
                })
                .await
                .map_err(status)?
                .into_inner();
            for w in &reply.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}", if reply.created { "created" } else { "exists" });
            print_account(&reply.account.unwrap_or_default());
        }
        Command::Map {
            provider,
            unique_id,
            local_user,
        } => {
            let reply = provisioning()
                .await?
                .map_user(MapUserRequest {
                    identity: Some(Identity {
                        provider,
                        unique_id,
                    }),
                    local_user,
                })
                .await
                .map_err(status)?
                .into_inner();
            print_account(&reply.account.unwrap_or_default());
        }
        Command::Unmap {
            provider,
            unique_id,
        } => {
            let reply = provisioning()
                .await?
                .unmap_user(Identity {
                    provider,
                    unique_id,
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("unmapped from {} (uid {})", reply.account, reply.uid);
        }
        Command::SetUid {
            provider,
            unique_id,
            username,
            display_name,
            uid,
        } => {
            let reply = provisioning()
                .await?
                .set_uid(SetUidRequest {
                    user: Some(EnsureUserRequest {
                        identity: Some(Identity {
                            provider,
                            unique_id,
                        }),
                        username,
                        display_name,
                        groups: Vec::new(),
                    }),
                    uid,
                })
                .await
                .map_err(status)?
                .into_inner();
            print_account(&reply.account.unwrap_or_default());
        }
        Command::Refresh { account } => {
            let reply = provisioning()
                .await?
                .refresh_user(selector(&account))
                .await
                .map_err(status)?
                .into_inner();
            print_account(&reply.account.unwrap_or_default());
        }
        Command::FlushCache => {
            let reply = provisioning()
                .await?
                .flush_directory_cache(FlushDirectoryCacheRequest {})
                .await
                .map_err(status)?
                .into_inner();
            println!(
                "{} cached directory entries are refreshed next; negative answers forgotten",
                reply.expired
            );
        }
        Command::Lock { account } => {
            set_locked(provisioning().await?, &account, true, status).await?
        }
        Command::Unlock { account } => {
            set_locked(provisioning().await?, &account, false, status).await?
        }
        Command::CacheStats => {
            let s = provisioning()
                .await?
                .cache_stats(CacheStatsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let lookups = s.hits + s.negative_hits + s.misses;
            println!("hits:          {}", s.hits);
            println!("negative hits: {}", s.negative_hits);
            println!("misses:        {}", s.misses);
            println!("expired:       {}", s.expired);
            println!("invalidations: {}", s.invalidations);
            println!("entries:       {} of {}", s.entries, s.capacity);
            if lookups > 0 {
                println!(
                    "hit ratio:     {:.1}%",
                    100.0 * (s.hits + s.negative_hits) as f64 / lookups as f64
                );
            }
        }
        Command::Backup { .. } | Command::CheckRestore | Command::ConfirmRestore => {
            return Err("this command works on the state directory; it was not run".into());
        }
        Command::Health => {
            refuse_if_denied(&lookup_path)?;
            let channel = connect(&lookup_path, timeout).await.map_err(|e| {
                format!(
                    "cannot reach nameserviced at {}: {e}",
                    lookup_path.display()
                )
            })?;
            let h = LookupClient::new(channel)
                .health(HealthRequest {})
                .await
                .map_err(status)?
                .into_inner();
            println!("status:  {}", h.status);
            println!("version: {}", h.version);
            println!("users:   {}", h.users);
            println!("groups:  {}", h.groups);
            println!("uptime:  {}s", h.uptime_seconds);
            if h.status != "ok" {
                return Err(format!("unhealthy: {}", h.status));
            }
        }
    }
    Ok(())
}

async fn set_locked(
    mut client: ProvisioningClient<tonic::transport::Channel>,
    account: &str,
    locked: bool,
    status: impl Fn(tonic::Status) -> String,
) -> Result<(), String> {
    let reply = client
        .set_locked(SetLockedRequest {
            account: Some(selector(account)),
            locked,
        })
        .await
        .map_err(status)?
        .into_inner();
    print_account(&reply.account.unwrap_or_default());
    Ok(())
}

fn main() -> ExitCode {
    // nameservicectl never needs NSS for itself; keep it from asking the
    // daemon about the daemon's own state through the module.
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var(connect_proto::NSS_BYPASS_ENV, "1") };
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nameservicectl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nameservicectl: {e}");
            ExitCode::FAILURE
        }
    }
}
