//! `parley` processes for tests.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::store::TestStore;

/// Builds (once per test process) and returns the `parley` binary, so a
/// test never runs a stale one; with the FoundationDB feature when
/// [`TestStore::from_env`] says the nodes run on it.
pub fn parley_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("PARLEY_BIN") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "node", "--bin", "parley"])
            .args(TestStore::from_env().cargo_features())
            .status()
            .expect("running cargo build for the parley binary");
        assert!(status.success(), "cargo build -p node failed");
        // The test binary lives in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in target/<profile>/deps");
        profile_dir.join("parley")
    })
    .clone()
}

/// A port nobody listens on right now (bound then released; the kernel
/// does not hand it out again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Timing settings of a test cluster: short leases so failover is quick.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Lease renewal period.
    pub heartbeat_ms: u64,
    /// Lease lifetime.
    pub lease_ttl_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: 200,
            lease_ttl_ms: 1500,
        }
    }
}

/// One node process.
pub struct Node {
    /// Its configured name.
    pub name: String,
    /// Its gateway address.
    pub http: SocketAddr,
    /// Its cluster transport address.
    pub cluster_addr: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    cookie: String,
    timing: Timing,
    extra_env: Vec<(String, String)>,
    /// The network namespace it runs in, if not the test's own.
    netns: Option<String>,
    /// The CA of its gateway's certificate, when it serves HTTPS.
    https_ca: Option<PathBuf>,
    child: Option<Child>,
}

impl Node {
    /// Describes a node (not started yet) storing into `data_dir`.
    pub fn new(name: &str, data_dir: &Path, cookie: &str, timing: Timing) -> Self {
        Self {
            name: name.to_owned(),
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            cluster_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            data_dir: data_dir.to_owned(),
            log: data_dir.join(format!("{name}.log")),
            cookie: cookie.to_owned(),
            timing,
            extra_env: Vec::new(),
            netns: None,
            https_ca: None,
            child: None,
        }
    }

    /// The node's gateway serves HTTPS with a certificate from the CA in
    /// `ca` (configured by the caller: `[tls] gateway_cert`): its URLs
    /// say `https`/`wss` and the harness trusts that CA.
    pub fn https(mut self, ca: &Path) -> Self {
        self.https_ca = Some(ca.to_owned());
        self
    }

    /// An HTTP client for this node (trusting its CA when it serves HTTPS).
    pub fn http_client(&self) -> reqwest::Client {
        match &self.https_ca {
            Some(ca) => crate::client::https_client(ca),
            None => reqwest::Client::new(),
        }
    }

    /// Runs the node on `host` (a network namespace of [`crate::netns`]):
    /// its gateway and transport listen on the host's address.
    pub fn on_host(mut self, host: &crate::netns::Host) -> Self {
        self.http = SocketAddr::from((host.addr, free_port()));
        self.cluster_addr = SocketAddr::from((host.addr, free_port()));
        self.netns = Some(host.ns.clone());
        // A namespace's address is not loopback: plaintext between nodes
        // must be asked for (the TLS tests run on loopback).
        self.extra_env
            .push(("PARLEY_INSECURE_CLUSTER".into(), "true".into()));
        self
    }

    /// Adds an environment variable for the process (limits, settings).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.extra_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Drops an environment variable [`Node::env`] added, for the next
    /// start (a restart with other settings).
    pub fn remove_env(&mut self, key: &str) {
        self.extra_env.retain(|(k, _)| k != key);
    }

    /// Starts the process and waits until its gateway answers.
    ///
    /// [`free_port`] only finds ports that were free a moment ago: another
    /// test can take one before the node binds it. A node that exits at
    /// start because an address is in use is started again on fresh ports
    /// (at most three times).
    pub async fn start(&mut self) {
        for attempt in 1.. {
            let logged = std::fs::metadata(&self.log).map_or(0, |m| m.len());
            match self.start_once().await {
                Ok(()) => return,
                Err(status) => {
                    let log = self.log_text();
                    let this_start = log.get(logged as usize..).unwrap_or(&log);
                    if attempt < 3 && this_start.contains("Address already in use") {
                        self.http = SocketAddr::new(self.http.ip(), free_port());
                        self.cluster_addr = SocketAddr::new(self.cluster_addr.ip(), free_port());
                        continue;
                    }
                    panic!("{} exited at start ({status}); log:\n{log}", self.name);
                }
            }
        }
    }

    /// One start: `Err` with the exit status when the process ended
    /// before its gateway answered.
    async fn start_once(&mut self) -> Result<(), std::process::ExitStatus> {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        // `ip netns exec` execs the node in the namespace: same pid, so
        // signals reach the node itself.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(parley_bin());
                cmd
            }
            None => Command::new(parley_bin()),
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PARLEY_NODE_NAME", &self.name)
            .env("PARLEY_HTTP_ADDR", self.http.to_string())
            .env("PARLEY_CLUSTER_ADDR", self.cluster_addr.to_string())
            .env("PARLEY_DATA_DIR", &self.data_dir)
            .env("PARLEY_COOKIE", &self.cookie)
            .env("PARLEY_HEARTBEAT_MS", self.timing.heartbeat_ms.to_string())
            .env("PARLEY_LEASE_TTL_MS", self.timing.lease_ttl_ms.to_string())
            .env("PARLEY_LOG", "info,actors=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        for (k, v) in TestStore::from_env().node_env(&self.data_dir) {
            cmd.env(k, v);
        }
        if std::env::var_os("PARLEY_TEST_TLS").is_some() {
            for (k, v) in self.test_tls_env() {
                cmd.env(k, v);
            }
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawning parley"));
        let url = self.url("/healthz");
        let http = self.http_client();
        let name = self.name.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(status);
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not come up in 20 s; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// With `PARLEY_TEST_TLS` set, every node speaks mutual TLS to its
    /// peers with a certificate of a CA per data directory, made by
    /// `parley certs` (the test suites then run over TLS unchanged). The
    /// certificate names the node's own address, and loopback.
    fn test_tls_env(&self) -> Vec<(String, String)> {
        let dir = self.data_dir.join("test-certs");
        let (cert, key) = (
            dir.join(format!("{}.pem", self.name)),
            dir.join(format!("{}.key", self.name)),
        );
        if !cert.exists() {
            let host = self.cluster_addr.ip().to_string();
            let out = Command::new(parley_bin())
                .arg("certs")
                .arg("--dir")
                .arg(&dir)
                .args(["--name", &self.name, "--host", "127.0.0.1", "--host", &host])
                .output()
                .expect("running parley certs");
            assert!(
                out.status.success(),
                "parley certs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        vec![
            ("PARLEY_TLS_CERT".into(), path(cert)),
            ("PARLEY_TLS_KEY".into(), path(key)),
            ("PARLEY_TLS_CA".into(), path(dir.join("ca.pem"))),
        ]
    }

    /// The node's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{path}", self.http)
    }

    /// The node's `/metrics` page (Prometheus text). Panics if the node
    /// does not answer: tests read it from nodes they know are running.
    pub async fn metrics_text(&self) -> String {
        self.http_client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of the unlabelled sample `name` (a counter's name ends in
    /// `_total`), if the node reports it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        sample(&self.metrics_text().await, name)
    }

    /// The WebSocket URL with a token.
    pub fn ws_url(&self, token: &str) -> String {
        let scheme = if self.https_ca.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/ws?token={token}", self.http)
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "kill {signal} failed");
        }
    }

    /// `kill -9`: the process dies at once, nothing graceful.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `SIGTERM` and wait for a graceful exit.
    pub async fn stop(&mut self) {
        self.signal("-TERM");
        if let Some(mut child) = self.child.take() {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{} ignored SIGTERM for 15 s; log:\n{}",
                        self.name,
                        self.log_text()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// `SIGSTOP`: the process hangs, its sockets stay open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// `SIGCONT` after [`Node::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Several nodes sharing one temporary store (an embedded file in a temp
/// dir, or that dir's key prefix in FoundationDB: see [`TestStore`]).
pub struct TestCluster {
    /// The nodes, started.
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `n` nodes named `n1`..`nN` and waits until each sees all.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, Timing::default(), &[]).await
    }

    /// Like [`TestCluster::start`], every node reading `toml` as its
    /// configuration file (`PARLEY_CONFIG`).
    pub async fn start_with_config(n: usize, toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("parley.toml");
        std::fs::write(&path, toml).expect("writing the config file");
        let path = path.to_string_lossy().into_owned();
        Self::start_in(dir, n, Timing::default(), &[("PARLEY_CONFIG", &path)]).await
    }

    /// Like [`TestCluster::start`] with explicit timing and extra env.
    pub async fn start_with(n: usize, timing: Timing, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, n, timing, env).await
    }

    /// Like [`TestCluster::start_with`], node `i` on `hosts[i]` (network
    /// namespaces of [`crate::netns`]).
    pub async fn start_on(
        hosts: &[crate::netns::Host],
        timing: Timing,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_placed(dir, hosts.len(), Some(hosts), timing, env).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        n: usize,
        timing: Timing,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_placed(dir, n, None, timing, env).await
    }

    async fn start_placed(
        dir: tempfile::TempDir,
        n: usize,
        hosts: Option<&[crate::netns::Host]>,
        timing: Timing,
        env: &[(&str, &str)],
    ) -> Self {
        let cookie = format!("test-cookie-{}", free_port());
        let mut nodes = Vec::new();
        for i in 1..=n {
            let mut node = Node::new(&format!("n{i}"), dir.path(), &cookie, timing.clone());
            if let Some(host) = hosts.and_then(|h| h.get(i - 1)) {
                node = node.on_host(host);
            }
            for (k, v) in env {
                node = node.env(k, v);
            }
            node.start().await;
            nodes.push(node);
        }
        let cluster = Self { nodes, dir };
        cluster.await_full_mesh().await;
        cluster
    }

    /// Waits until every running node reports every running node live.
    pub async fn await_full_mesh(&self) {
        let running: Vec<&Node> = self.nodes.iter().filter(|n| n.is_running()).collect();
        let want = running.len() as f64;
        let http = reqwest::Client::new();
        for node in &running {
            let url = node.url("/metrics");
            crate::wait::until(
                &format!("{} to see {want} nodes", node.name),
                Duration::from_secs(20),
                || {
                    let http = http.clone();
                    let url = url.clone();
                    async move {
                        let text = http.get(&url).send().await.ok()?.text().await.ok()?;
                        let live = text
                            .lines()
                            .find(|l| l.starts_with("parley_live_nodes "))?
                            .rsplit(' ')
                            .next()?
                            .parse::<f64>()
                            .ok()?;
                        (live == want).then_some(())
                    }
                },
            )
            .await;
        }
    }

    /// The directory of the shared store and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("===== {} =====\n{}", n.name, n.log_text()))
            .collect()
    }
}

/// The value of the unlabelled sample `name` in a Prometheus text page.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_sample_is_found_by_its_whole_name() {
        let page = "# TYPE parley_conversations gauge\n\
                    parley_conversations_started_total 7\n\
                    parley_conversations 3\n";
        assert_eq!(super::sample(page, "parley_conversations"), Some(3.0));
        assert_eq!(
            super::sample(page, "parley_conversations_started_total"),
            Some(7.0)
        );
        assert_eq!(super::sample(page, "parley_conv"), None);
    }
}
