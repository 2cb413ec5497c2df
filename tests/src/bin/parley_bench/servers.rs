//! The servers under load: `parley` processes this generator starts (the
//! default), or one node already running on loopback (`--target`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::procs;

/// The open-files limit asked for every node (and the generator). Where the
/// hard limit is lower and cannot be raised (no CAP_SYS_RESOURCE), the
/// wrapper falls back to the hard limit.
pub const WANT_NOFILE: u64 = 1_048_576;

/// The node names, in order. Placement hashes them.
pub fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// Settings of the nodes the generator starts.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// `max_batch`: most messages per append transaction.
    pub max_batch: usize,
    /// The `parley` binary.
    pub bin: PathBuf,
    /// `PARLEY_LOG` of the nodes.
    pub log: String,
    /// The nodes' open-files limit (default: as many as allowed).
    pub nofile: Option<u64>,
    /// Keep the node's default abuse limits (throttles, hashing queue);
    /// else they are lifted, as the generator's users come from a few
    /// loopback addresses at rates no person reaches.
    pub default_limits: bool,
    /// CPUs to pin the nodes to (`taskset -c` list); none: unpinned.
    pub cpus: Option<String>,
    /// Mutual TLS between the nodes, HTTPS/WSS to them.
    pub tls: bool,
}

/// Where the generator's nodes keep their state.
#[derive(Debug, Clone)]
pub enum Store {
    /// One SQLite file in the run's directory, shared by the nodes (the
    /// default).
    Sqlite(PathBuf),
    /// The FoundationDB cluster that `PARLEY_FDB_CLUSTER_FILE` names (the
    /// nodes inherit it; build them with `-p node --features fdb` and the
    /// generator with `-p tests --features fdb`), under a key prefix of the
    /// run's own so runs never see each other's users.
    Fdb {
        /// The cluster file.
        cluster_file: PathBuf,
        /// `PARLEY_FDB_KEY_PREFIX` of the run's nodes.
        prefix: String,
    },
}

/// One node process.
pub struct NodeProc {
    /// Its name (`n1`, ...).
    pub name: String,
    /// Its gateway address.
    pub http: SocketAddr,
    cluster: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// The servers a run talks to.
pub struct Servers {
    /// The nodes (started by us), or the one target.
    pub nodes: Vec<NodeProc>,
    /// The target's pid when given (`--server-pid`).
    target_pid: Option<u32>,
    /// Our nodes' store, config and logs; `None` for a target.
    dir: Option<tempfile::TempDir>,
    /// Our nodes' FoundationDB key prefix, when they run on FoundationDB.
    fdb_prefix: Option<String>,
    keep: bool,
    http: reqwest::Client,
    /// The CA of the nodes' certificates, when they speak TLS.
    tls_ca: Option<PathBuf>,
    /// The store's own processes (`--store-pid`: a FoundationDB server),
    /// for their CPU and the bytes they write.
    pub store_pids: Vec<u32>,
}

/// Accepts only addresses in 127.0.0.0/8.
pub fn parse_target(target: &str) -> Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .with_context(|| format!("resolving --target {target}"))?
        .collect();
    let addr = addrs
        .iter()
        .find(|a| matches!(a.ip(), IpAddr::V4(ip) if ip.octets()[0] == 127))
        .copied();
    match addr {
        Some(addr)
            if addrs
                .iter()
                .all(|a| is_loopback_v4(a.ip()) || a.ip().is_loopback()) =>
        {
            Ok(addr)
        }
        _ => {
            bail!("--target {target} resolves to {addrs:?}: parley-bench only targets 127.0.0.0/8")
        }
    }
}

fn is_loopback_v4(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 127)
}

/// The default `parley` binary: `target/release/parley` beside this one.
pub fn default_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating parley-bench")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("parley-bench has no directory"))?;
    Ok(dir.join("parley"))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Servers {
    /// Describes `n` nodes sharing one fresh store (not started yet, so the
    /// store can be seeded first).
    pub fn prepare(n: usize, settings: &NodeSettings, keep: bool) -> Result<Self> {
        if !settings.bin.exists() {
            bail!(
                "{} not found: build it first with `cargo build --release -p node` (or pass --parley-bin)",
                settings.bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("parley-bench-")
            .tempdir()
            .context("temporary directory")?;
        let config = dir.path().join("bench.toml");
        let mut toml = config_toml(settings);
        let tls_ca = if settings.tls {
            let certs = dir.path().join("certs");
            let out = Command::new(&settings.bin)
                .arg("certs")
                .arg("--dir")
                .arg(&certs)
                .args(["--name", "bench", "--host", "127.0.0.1"])
                .output()
                .context("running parley certs")?;
            if !out.status.success() {
                bail!("parley certs: {}", String::from_utf8_lossy(&out.stderr));
            }
            let (cert, key) = (certs.join("bench.pem"), certs.join("bench.key"));
            toml.push_str(&format!(
                "\n[tls]\ncert = {cert:?}\nkey = {key:?}\nca = {:?}\ngateway_cert = {cert:?}\ngateway_key = {key:?}\n",
                certs.join("ca.pem")
            ));
            Some(certs.join("ca.pem"))
        } else {
            None
        };
        std::fs::write(&config, toml).context("writing the node config")?;
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = node_name(i);
            nodes.push(NodeProc {
                http: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                cluster: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
                log: dir.path().join(format!("{name}.log")),
                name,
                child: None,
            });
        }
        let fdb_prefix = std::env::var_os("PARLEY_FDB_CLUSTER_FILE").map(|_| {
            format!(
                "parley-bench/{}-{}/",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0)
            )
        });
        Ok(Self {
            nodes,
            target_pid: None,
            dir: Some(dir),
            fdb_prefix,
            keep,
            http: match &tls_ca {
                Some(ca) => https_client(ca)?,
                None => reqwest::Client::new(),
            },
            tls_ca,
            store_pids: Vec::new(),
        })
    }

    /// A connector for WSS clients of our nodes, when they speak TLS.
    pub fn tls_connector(&self) -> Result<Option<tokio_rustls::TlsConnector>> {
        self.tls_ca.as_deref().map(tls_connector).transpose()
    }

    /// A seeder through `addr`'s API, over HTTPS when our nodes speak TLS.
    pub fn api_seeder(&self, addr: SocketAddr) -> super::seed::Seeder {
        super::seed::Seeder::http_at(format!("{}://{addr}", self.scheme()), self.http.clone())
    }

    fn scheme(&self) -> &'static str {
        if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// A node someone else runs.
    pub fn target(addr: SocketAddr, pid: Option<u32>) -> Self {
        Self {
            nodes: vec![NodeProc {
                name: "target".into(),
                http: addr,
                cluster: addr,
                log: PathBuf::new(),
                child: None,
            }],
            target_pid: pid,
            dir: None,
            fdb_prefix: None,
            tls_ca: None,
            store_pids: Vec::new(),
            keep: false,
            http: reqwest::Client::new(),
        }
    }

    /// Whether the generator runs the nodes (and may seed their store).
    pub fn owned(&self) -> bool {
        self.dir.is_some()
    }

    /// The store the nodes share, for seeding before they start.
    pub fn store(&self) -> Option<Store> {
        let dir = self.dir.as_ref()?;
        Some(
            match (
                &self.fdb_prefix,
                std::env::var_os("PARLEY_FDB_CLUSTER_FILE"),
            ) {
                (Some(prefix), Some(cluster_file)) => Store::Fdb {
                    cluster_file: cluster_file.into(),
                    prefix: prefix.clone(),
                },
                _ => Store::Sqlite(dir.path().join("parley.sqlite")),
            },
        )
    }

    fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }

    /// Starts every node not running, and waits until each answers and
    /// sees all the others.
    pub async fn start_all(&mut self, settings: &NodeSettings) -> Result<()> {
        let Some(dir) = self.dir().map(Path::to_path_buf) else {
            return Ok(());
        };
        let cookie = format!("bench-{}-{}", std::process::id(), free_port()?);
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.start_node(i, settings, &dir, &cookie)?;
            }
        }
        for i in 0..self.nodes.len() {
            self.await_healthy(i).await?;
        }
        self.await_mesh().await
    }

    fn start_node(
        &mut self,
        i: usize,
        settings: &NodeSettings,
        dir: &Path,
        cookie: &str,
    ) -> Result<()> {
        let fdb_prefix = self.fdb_prefix.clone().unwrap_or_default();
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .context("node log")?;
        // Raise the open-files limit inside the command, then become parley
        // (exec: the pid we hold is the node's).
        let exec = match &settings.cpus {
            Some(cpus) => format!("exec taskset -c {cpus} \"$0\" \"$@\""),
            None => "exec \"$0\" \"$@\"".to_owned(),
        };
        let script = match settings.nofile {
            Some(n) => format!("ulimit -n {n}; {exec}"),
            None => format!(
                "ulimit -n {WANT_NOFILE} 2>/dev/null || ulimit -n \"$(ulimit -H -n)\"; {exec}"
            ),
        };
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(&settings.bin)
            .arg("--config")
            .arg(dir.join("bench.toml"))
            .env("PARLEY_NODE_NAME", &node.name)
            .env("PARLEY_HTTP_ADDR", node.http.to_string())
            .env("PARLEY_CLUSTER_ADDR", node.cluster.to_string())
            .env("PARLEY_DATA_DIR", dir)
            .env("PARLEY_COOKIE", cookie)
            .env("PARLEY_LOG", &settings.log)
            .env("PARLEY_FDB_KEY_PREFIX", fdb_prefix)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", settings.bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    async fn await_healthy(&mut self, i: usize) -> Result<()> {
        let url = format!("{}://{}/healthz", self.scheme(), self.nodes[i].http);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            let node = &mut self.nodes[i];
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    bail!(
                        "{} exited at start ({status}):\n{}",
                        node.name,
                        std::fs::read_to_string(&node.log).unwrap_or_default()
                    );
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{} did not answer /healthz within 30 s", node.name);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until every running node counts every running node live.
    pub async fn await_mesh(&self) -> Result<()> {
        let running: Vec<&NodeProc> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
        let want = running.len() as f64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for node in running {
            loop {
                let live = self
                    .metrics_of(node.http)
                    .await
                    .ok()
                    .and_then(|m| m.get("parley_live_nodes").copied());
                if live == Some(want) {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("{} sees {live:?} live nodes, not {want}", node.name);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The gateway addresses, in node order.
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.http).collect()
    }

    /// (name, pid) of every server whose pid we know.
    pub fn pids(&self) -> Vec<(String, u32)> {
        if !self.owned() {
            return self
                .target_pid
                .map(|p| vec![("target".to_owned(), p)])
                .unwrap_or_default();
        }
        self.nodes
            .iter()
            .filter_map(|n| n.pid().map(|p| (n.name.clone(), p)))
            .collect()
    }

    /// Resident memory of each server, KiB.
    pub fn rss(&self) -> Vec<(String, Option<u64>)> {
        self.pids()
            .into_iter()
            .map(|(n, p)| (n, procs::rss_kib(Some(p))))
            .collect()
    }

    /// Bytes the servers and the store's processes have caused to be
    /// written to storage so far.
    pub fn disk_write_bytes(&self) -> u64 {
        self.pids()
            .into_iter()
            .map(|(_, p)| p)
            .chain(self.store_pids.iter().copied())
            .filter_map(procs::write_bytes)
            .sum()
    }

    /// The open-files limit each server runs with.
    pub fn nofile(&self) -> Vec<(String, Option<u64>)> {
        self.pids()
            .into_iter()
            .map(|(n, p)| (n, procs::nofile_limit(p)))
            .collect()
    }

    /// `kill -9` node `i`; returns when it is gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A node's `/metrics`, unlabelled samples only.
    pub async fn metrics_of(&self, addr: SocketAddr) -> Result<HashMap<String, f64>> {
        let text = self
            .http
            .get(format!("{}://{addr}/metrics", self.scheme()))
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.contains('{'))
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_owned(), v.trim().parse().ok()?))
            })
            .collect())
    }

    /// The metrics of every running node, summed.
    pub async fn metrics_sum(&self) -> HashMap<String, f64> {
        let mut sum = HashMap::new();
        for node in &self.nodes {
            if self.owned() && node.child.is_none() {
                continue;
            }
            if let Ok(m) = self.metrics_of(node.http).await {
                for (k, v) in m {
                    *sum.entry(k).or_insert(0.0) += v;
                }
            }
        }
        sum
    }

    /// Where the logs are, when kept.
    pub fn log_dir(&self) -> Option<PathBuf> {
        self.dir().map(Path::to_path_buf)
    }

    /// The tail of every node's log (for errors).
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            if let Ok(text) = std::fs::read_to_string(&n.log) {
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(20);
                out.push_str(&format!(
                    "--- {} ---\n{}\n",
                    n.name,
                    lines[from..].join("\n")
                ));
            }
        }
        out
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if self.keep {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!("kept the store and logs in {}", path.display());
            }
        }
    }
}

/// The nodes' configuration: no per-user send or connection limits (the
/// generator's users send far more than a person, and `idle --users` puts
/// many sessions on one user), a deep outbound queue (a burst to a
/// 1000-member group must not look like a slow consumer), long idle
/// timeouts.
/// An HTTPS client trusting only the CA in `ca`.
fn https_client(ca: &std::path::Path) -> Result<reqwest::Client> {
    let pem = std::fs::read(ca).context("reading the CA")?;
    Ok(reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        .build()?)
}

/// A TLS connector trusting only the CA in `ca`.
fn tls_connector(ca: &std::path::Path) -> Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

fn config_toml(settings: &NodeSettings) -> String {
    if settings.default_limits {
        return format!(
            "# written by parley-bench: default limits\nmax_batch = {}\n",
            settings.max_batch
        );
    }
    format!(
        "# written by parley-bench\n\
         max_batch = {}\n\
         conversation_idle_secs = 3600\n\
         \n\
         [gateway]\n\
         sends_per_second = 0\n\
         send_burst = 0\n\
         outbound_queue = 65536\n\
         idle_timeout_secs = 600\n\
         logins_per_address_per_minute = 0\n\
         login_failures_per_minute = 0\n\
         registrations_per_address_per_minute = 0\n\
         writes_per_minute = 0\n\
         connects_per_user_per_minute = 0\n\
         max_sessions_per_user = 1000000\n\
         hash_queue = 1000000\n",
        settings.max_batch
    )
}

/// The difference of two metric snapshots, for the counters we report.
pub fn metrics_delta(
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
    key: &str,
) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}
