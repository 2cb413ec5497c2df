//! The lab's node processes: started from this same executable, each on
//! free loopback ports, sharing one fresh store; killed, paused, resumed,
//! stopped and restarted on request, and all stopped when the lab ends.
//!
//! Signals go through the system's `kill` command (as the test harness
//! does): the workspace denies `unsafe`, which `libc::kill` needs, and the
//! lab sends a handful of them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::LabError;

/// How long a node has to leave gracefully after `SIGTERM` before `SIGKILL`.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The lab's node configuration: short leases for a lively lab are in the
/// env; this lifts the per-address and per-user throttles that the
/// simulated users, all on 127.0.0.1, would hit.
const NODE_CONFIG: &str = "\
[gateway]
registrations_per_address_per_minute = 0
logins_per_address_per_minute = 0
login_failures_per_minute = 0
writes_per_minute = 0
sends_per_second = 0
connects_per_user_per_minute = 0
";

/// What a node process is doing, as far as the lab knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Started and not stopped.
    Running,
    /// Stopped with `SIGSTOP`: hung, its sockets open.
    Paused,
    /// Left gracefully after `SIGTERM`.
    Stopped,
    /// Killed with `SIGKILL`.
    Killed,
    /// Exited on its own (a crash, or it could not start).
    Exited,
}

/// A node as the lab API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    /// Its name, `node-1`...
    pub name: String,
    /// Its gateway, `http://127.0.0.1:PORT`.
    pub http: String,
    /// Its process id while it has a process.
    pub pid: Option<u32>,
    /// Its state.
    pub state: NodeState,
}

/// Why a node action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No node has that name.
    #[error("no node named {0}")]
    UnknownNode(String),
    /// The action is not one of kill, pause, resume, stop, restart.
    #[error("unknown action {0}: use kill, pause, resume, stop or restart")]
    UnknownAction(String),
    /// Signalling or starting the process failed.
    #[error("{0}")]
    Failed(String),
}

struct NodeProc {
    name: String,
    http: SocketAddr,
    cluster: SocketAddr,
    state: NodeState,
    child: Option<Child>,
}

impl NodeProc {
    fn info(&self) -> NodeInfo {
        NodeInfo {
            name: self.name.clone(),
            http: format!("http://{}", self.http),
            pid: self.child.as_ref().map(Child::id),
            state: self.state,
        }
    }
}

/// The lab's nodes. Dropping it stops them all.
pub struct Supervisor {
    exe: PathBuf,
    dir: tempfile::TempDir,
    config: PathBuf,
    cookie: String,
    token: String,
    nodes: Mutex<Vec<NodeProc>>,
}

fn free_addr() -> Result<SocketAddr, LabError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|source| LabError::Io {
            what: "finding a free port".into(),
            source,
        })
}

/// Sends `signal` (`STOP`, `CONT`, `TERM`) to `pid`.
fn signal(pid: u32, signal: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("running kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -s {signal} {pid} failed ({status})"))
    }
}

impl Supervisor {
    /// Creates the data dir and configuration and starts `n` nodes
    /// (`node-1`..`node-n`) from `exe`, with a fresh cookie; `token` is
    /// each node's admin token (`PARLEY_ADMIN_TOKEN`).
    pub fn start(exe: PathBuf, n: usize, token: &str) -> Result<Self, LabError> {
        let dir = tempfile::Builder::new()
            .prefix("parley-lab-")
            .tempdir()
            .map_err(|source| LabError::Io {
                what: "creating the lab's data dir".into(),
                source,
            })?;
        let config = dir.path().join("parley.toml");
        std::fs::write(&config, NODE_CONFIG).map_err(|source| LabError::Io {
            what: format!("writing {}", config.display()),
            source,
        })?;
        let mut nodes = Vec::with_capacity(n);
        for i in 1..=n {
            nodes.push(NodeProc {
                name: format!("node-{i}"),
                http: free_addr()?,
                cluster: free_addr()?,
                state: NodeState::Stopped,
                child: None,
            });
        }
        // The nodes speak mutual TLS to each other, as a deployment's
        // would, with throwaway certificates of a CA made for this lab.
        let certs = dir.path().join("certs");
        let ca = crate::certs::Authority::open_or_create(&certs)
            .map_err(|e| LabError::Certs(e.to_string()))?;
        let now = time::OffsetDateTime::now_utc();
        for node in &nodes {
            ca.issue(
                &certs,
                &node.name,
                &["127.0.0.1".to_owned(), "localhost".to_owned()],
                now - time::Duration::minutes(5),
                now + time::Duration::days(7),
            )
            .map_err(|e| LabError::Certs(e.to_string()))?;
        }
        let supervisor = Self {
            exe,
            dir,
            config,
            cookie: super::random_secret(),
            token: token.to_owned(),
            nodes: Mutex::new(nodes),
        };
        {
            let mut nodes = supervisor.lock();
            for node in nodes.iter_mut() {
                supervisor.spawn(node)?;
            }
        }
        Ok(supervisor)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<NodeProc>> {
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The shared data dir (the store and the nodes' logs).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&self, node: &mut NodeProc) -> Result<(), LabError> {
        let log_path = self.dir.path().join(format!("{}.log", node.name));
        let io_err = |source| LabError::Io {
            what: format!("opening {}", log_path.display()),
            source,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err)?;
        let log2 = log.try_clone().map_err(io_err)?;
        let certs = self.dir.path().join("certs");
        let mut cmd = Command::new(&self.exe);
        // The lab's own PARLEY_* settings (a config file, a data dir) are
        // not the nodes': only the log filter passes through.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("PARLEY_") && k != "PARLEY_LOG" {
                cmd.env_remove(&key);
            }
        }
        cmd.env("PARLEY_NODE_NAME", &node.name)
            .env("PARLEY_HTTP_ADDR", node.http.to_string())
            .env("PARLEY_CLUSTER_ADDR", node.cluster.to_string())
            .env("PARLEY_DATA_DIR", self.dir.path())
            .env("PARLEY_CONFIG", &self.config)
            .env("PARLEY_COOKIE", &self.cookie)
            .env("PARLEY_HEARTBEAT_MS", "500")
            .env("PARLEY_LEASE_TTL_MS", "2000")
            .env("PARLEY_ADMIN_TOKEN", &self.token)
            .env("PARLEY_TLS_CERT", certs.join(format!("{}.pem", node.name)))
            .env("PARLEY_TLS_KEY", certs.join(format!("{}.key", node.name)))
            .env("PARLEY_TLS_CA", certs.join("ca.pem"))
            .env(super::LAB_CHILD_ENV, "1")
            // A pipe the node never reads until it ends: when the lab
            // dies, even by SIGKILL, the node sees end of file and leaves.
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log2);
        let child = cmd.spawn().map_err(|source| LabError::Io {
            what: format!("starting {}", node.name),
            source,
        })?;
        tracing::info!(node = %node.name, pid = child.id(), http = %node.http, "node started");
        node.child = Some(child);
        node.state = NodeState::Running;
        Ok(())
    }

    /// Every node, in order.
    pub fn snapshot(&self) -> Vec<NodeInfo> {
        self.lock().iter().map(NodeProc::info).collect()
    }

    /// `(name, http URL)` of the nodes in state running.
    pub fn running(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .filter(|n| n.state == NodeState::Running)
            .map(|n| (n.name.clone(), format!("http://{}", n.http)))
            .collect()
    }

    /// Notices nodes that exited on their own; returns their names.
    pub fn reap(&self) -> Vec<String> {
        let mut gone = Vec::new();
        for node in self.lock().iter_mut() {
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    tracing::warn!(node = %node.name, %status, "node exited");
                    node.child = None;
                    node.state = NodeState::Exited;
                    gone.push(node.name.clone());
                }
            }
        }
        gone
    }

    /// Waits until every node answers `/healthz`.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), LabError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| LabError::NotReady(format!("HTTP client: {e}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(name) = self.reap().first() {
                return Err(LabError::NotReady(format!(
                    "{name} exited at start; see {}",
                    self.dir.path().join(format!("{name}.log")).display()
                )));
            }
            let mut all = true;
            for (_, url) in self.running() {
                let ok = http
                    .get(format!("{url}/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                all &= ok;
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::NotReady(format!(
                    "the nodes did not answer /healthz within {timeout:?}; logs in {}",
                    self.dir.path().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Applies `action` (kill, pause, resume, stop, restart) to node
    /// `name` and returns its new state.
    pub async fn act(&self, name: &str, action: &str) -> Result<NodeInfo, ActionError> {
        if !["kill", "pause", "resume", "stop", "restart"].contains(&action) {
            return Err(ActionError::UnknownAction(action.to_owned()));
        }
        if !self.lock().iter().any(|n| n.name == name) {
            return Err(ActionError::UnknownNode(name.to_owned()));
        }
        match action {
            "stop" => self.stop_node(name, NodeState::Stopped).await,
            "restart" => {
                self.stop_node(name, NodeState::Stopped).await;
                let mut nodes = self.lock();
                if let Some(node) = nodes.iter_mut().find(|n| n.name == name) {
                    self.spawn(node)
                        .map_err(|e| ActionError::Failed(e.to_string()))?;
                }
            }
            _ => {
                let mut nodes = self.lock();
                let Some(node) = nodes.iter_mut().find(|n| n.name == name) else {
                    return Err(ActionError::UnknownNode(name.to_owned()));
                };
                if let Some(child) = node.child.as_mut() {
                    match action {
                        "kill" => {
                            child
                                .kill()
                                .map_err(|e| ActionError::Failed(format!("SIGKILL: {e}")))?;
                            let _ = child.wait();
                            node.child = None;
                            node.state = NodeState::Killed;
                        }
                        "pause" => {
                            signal(child.id(), "STOP").map_err(ActionError::Failed)?;
                            node.state = NodeState::Paused;
                        }
                        _ => {
                            signal(child.id(), "CONT").map_err(ActionError::Failed)?;
                            node.state = NodeState::Running;
                        }
                    }
                    tracing::info!(node = %name, action, "node action");
                }
            }
        }
        self.snapshot()
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| ActionError::UnknownNode(name.to_owned()))
    }

    /// `SIGTERM` (after `SIGCONT`, should it be paused), waits up to 5 s,
    /// then `SIGKILL`; the node ends in `state` (or killed).
    async fn stop_node(&self, name: &str, state: NodeState) {
        let pid = {
            let nodes = self.lock();
            match nodes.iter().find(|n| n.name == name) {
                Some(n) => n.child.as_ref().map(Child::id),
                None => return,
            }
        };
        let Some(pid) = pid else { return };
        let _ = signal(pid, "CONT");
        let _ = signal(pid, "TERM");
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            {
                let mut nodes = self.lock();
                let Some(node) = nodes.iter_mut().find(|n| n.name == name) else {
                    return;
                };
                let Some(child) = node.child.as_mut() else {
                    return;
                };
                let done = matches!(child.try_wait(), Ok(Some(_)) | Err(_));
                if done || Instant::now() >= deadline {
                    let forced = !done;
                    if forced {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    node.child = None;
                    node.state = if forced { NodeState::Killed } else { state };
                    tracing::info!(node = %name, forced, "node stopped");
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops every node (in parallel, 5 s grace each).
    pub async fn stop_all(&self) {
        let names: Vec<String> = self.lock().iter().map(|n| n.name.clone()).collect();
        let stops = names.iter().map(|n| self.stop_node(n, NodeState::Stopped));
        futures_util::future::join_all(stops).await;
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let mut nodes = self.lock();
        for node in nodes.iter() {
            if let Some(child) = &node.child {
                let _ = signal(child.id(), "CONT");
                let _ = signal(child.id(), "TERM");
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for node in nodes.iter_mut() {
            if let Some(mut child) = node.child.take() {
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
