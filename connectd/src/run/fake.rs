//! A fake [`Launcher`] for the scheduler's unit tests (after JupyterHub's
//! MockSpawner): it runs nothing, records every spec, and "listens" on a
//! real Unix socket (or, once told to, a real TCP port on 127.0.0.1, as a
//! pod launcher would hand out) so that readiness works as with a real
//! process. Tests tell it how the next start behaves, and make a running
//! one exit.

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::run::launcher::{
    BoxFuture, Endpoint, Exit, LaunchKind, LaunchSpec, Launcher, Mount, Running, StartError,
};

/// How the next started process behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Listens at once and runs until stopped or told to exit.
    Listen,
    /// Runs but never listens (InitTimeout must stop it).
    NeverListen,
    /// Exits with this code before it listens.
    ExitAtOnce(i32),
    /// The launcher refuses to start it, with this text.
    FailToStart(String),
}

/// A spec as started, without its log.
#[derive(Debug, Clone)]
#[allow(dead_code)] // Tests read the fields they care about.
pub struct Started {
    pub job: String,
    pub kind: LaunchKind,
    pub account: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub listen: Option<Endpoint>,
    pub pid: u32,
}

#[derive(Default)]
struct State {
    next: VecDeque<Behaviour>,
    started: Vec<Started>,
    /// Jobs their supervisor stopped, with the grace it gave.
    stopped: Vec<(String, Duration)>,
    /// How to make a running job exit.
    exits: HashMap<String, watch::Sender<Option<Exit>>>,
    /// Endpoints are TCP ports rather than Unix sockets.
    tcp: bool,
    /// The ports handed out and not started yet, bound so that no one else
    /// takes them meanwhile.
    ports: HashMap<String, TcpListener>,
}

pub struct FakeLauncher {
    sockets: tempfile::TempDir,
    next_pid: AtomicU32,
    state: Arc<Mutex<State>>,
}

impl FakeLauncher {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            sockets: tempfile::tempdir().expect("socket directory"),
            next_pid: AtomicU32::new(1000),
            state: Arc::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// How the next start behaves (then [`Behaviour::Listen`] again).
    pub fn next(&self, behaviour: Behaviour) {
        self.state().next.push_back(behaviour);
    }

    /// From now on, endpoints are TCP ports on 127.0.0.1.
    pub fn hand_out_tcp(&self) {
        self.state().tcp = true;
    }

    /// Every spec started so far, in order.
    pub fn started(&self) -> Vec<Started> {
        self.state().started.clone()
    }

    /// Jobs stopped by their supervisor, in order.
    pub fn stopped(&self) -> Vec<String> {
        self.state()
            .stopped
            .iter()
            .map(|(j, _)| j.clone())
            .collect()
    }

    pub fn grace_of(&self, job: &str) -> Option<Duration> {
        self.state()
            .stopped
            .iter()
            .find(|(j, _)| j == job)
            .map(|(_, g)| *g)
    }

    /// Makes a running job exit by itself with `code`, as a crash would.
    pub fn exit(&self, job: &str, code: i32) {
        let state = self.state();
        let sender = state.exits.get(job).expect("a job the fake started");
        sender.send_replace(Some(exited(code)));
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn exited(code: i32) -> Exit {
    Exit {
        code: Some(code),
        success: code == 0,
        status: Some(format!("exit status: {code}")),
        over_limit: None,
    }
}

impl Launcher for FakeLauncher {
    fn endpoint(&self, job: &str, _uid: u32, _gid: u32) -> Result<Endpoint, StartError> {
        let mut state = self.state();
        if !state.tcp {
            return Ok(Endpoint::Unix(
                self.sockets.path().join(format!("{job}.sock")),
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0").expect("the fake binds a port");
        let address = port.local_addr().expect("the port's address");
        state.ports.insert(job.to_owned(), port);
        Ok(Endpoint::Tcp(address))
    }

    fn start(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Box<dyn Running>, StartError>> {
        Box::pin(async move {
            let (behaviour, port) = {
                let mut state = self.state();
                let behaviour = state.next.pop_front().unwrap_or(Behaviour::Listen);
                (behaviour, state.ports.remove(&spec.job))
            };
            if let Behaviour::FailToStart(why) = &behaviour {
                return Err(StartError::Spawn(why.clone()));
            }
            let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
            // Any other behaviour closes the port: connections are refused.
            let listener = match (&behaviour, &spec.listen) {
                (Behaviour::Listen, Some(Endpoint::Unix(path))) => Some(Listener::Unix(
                    UnixListener::bind(path).expect("the fake binds its socket"),
                )),
                (Behaviour::Listen, Some(Endpoint::Tcp(_))) => port.map(Listener::Tcp),
                _ => None,
            };
            let (exit, exits) = watch::channel(None);
            if let Behaviour::ExitAtOnce(code) = behaviour {
                exit.send_replace(Some(exited(code)));
            }
            let mut state = self.state();
            state.exits.insert(spec.job.clone(), exit);
            state.started.push(Started {
                job: spec.job.clone(),
                kind: spec.kind,
                account: spec.account.clone(),
                uid: spec.uid,
                gid: spec.gid,
                groups: spec.groups.clone(),
                program: spec.program.clone(),
                args: spec
                    .args
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
                env: spec
                    .env
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string_lossy().into_owned(),
                            v.to_string_lossy().into_owned(),
                        )
                    })
                    .collect(),
                mounts: spec.mounts.clone(),
                listen: spec.listen.clone(),
                pid,
            });
            Ok(Box::new(FakeRunning {
                job: spec.job,
                pid,
                endpoint: spec.listen,
                listener,
                exits,
                state: self.state.clone(),
            }) as Box<dyn Running>)
        })
    }
}

/// Held open while the fake process "listens".
#[allow(dead_code)] // Only ever dropped.
enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

struct FakeRunning {
    job: String,
    pid: u32,
    endpoint: Option<Endpoint>,
    listener: Option<Listener>,
    exits: watch::Receiver<Option<Exit>>,
    /// The launcher's, to record stops.
    state: Arc<Mutex<State>>,
}

impl FakeRunning {
    fn close(&mut self) {
        self.listener = None;
        if let Some(Endpoint::Unix(path)) = &self.endpoint {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Running for FakeRunning {
    fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.as_ref()
    }

    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn wait(&mut self) -> BoxFuture<'_, Exit> {
        Box::pin(async move {
            let exit = loop {
                if let Some(exit) = self.exits.borrow_and_update().clone() {
                    break exit;
                }
                if self.exits.changed().await.is_err() {
                    break Exit {
                        code: None,
                        success: false,
                        status: None,
                        over_limit: None,
                    };
                }
            };
            self.close();
            exit
        })
    }

    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Exit> {
        Box::pin(async move {
            lock(&self.state).stopped.push((self.job.clone(), grace));
            // A process takes a moment to leave after SIGTERM; one that
            // vanished within the same timer tick would race whoever
            // stopped it.
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.close();
            Exit {
                code: None,
                success: false,
                status: Some("signal: 15 (SIGTERM)".to_owned()),
                over_limit: None,
            }
        })
    }
}
