//! A FoundationDB server of a test's own: a one-process cluster on an
//! address the test chooses (a network namespace's, or loopback), with
//! TLS if asked, stopped on drop.
//!
//! Its binaries come from `FDB_HOME` (CI sets it), else `../shared/fdb`
//! beside the repository.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The certificate files of a FoundationDB server or client (FoundationDB
/// reads them from `FDB_TLS_*` in both).
#[derive(Debug, Clone)]
pub struct FdbTls {
    /// The certificate chain.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA the other side's certificate must chain to.
    pub ca: PathBuf,
}

impl FdbTls {
    /// The environment that gives a FoundationDB process these files.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            ("FDB_TLS_CERTIFICATE_FILE", path(&self.cert)),
            ("FDB_TLS_KEY_FILE", path(&self.key)),
            ("FDB_TLS_CA_FILE", path(&self.ca)),
        ]
    }
}

/// A running one-process FoundationDB cluster.
pub struct LocalFdb {
    child: Child,
    /// Its cluster file.
    pub cluster_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// Where the FoundationDB binaries are.
pub fn fdb_home() -> PathBuf {
    std::env::var_os("FDB_HOME").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fdb"),
        PathBuf::from,
    )
}

impl LocalFdb {
    /// Starts a server listening on `addr` (`IP:PORT`), inside the network
    /// namespace `netns` if given, speaking TLS with `tls` if given, and
    /// waits until the database accepts transactions.
    pub async fn start(netns: Option<&str>, addr: &str, tls: Option<&FdbTls>) -> Self {
        let home = fdb_home();
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster_file = dir.path().join("fdb.cluster");
        let listen = match tls {
            Some(_) => format!("{addr}:tls"),
            None => addr.to_owned(),
        };
        std::fs::write(&cluster_file, format!("local:test@{listen}\n")).expect("cluster file");
        for sub in ["data", "logs"] {
            std::fs::create_dir(dir.path().join(sub)).expect("fdb dirs");
        }
        let mut cmd = match netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns])
                    .arg(home.join("bin/fdbserver"));
                cmd
            }
            None => Command::new(home.join("bin/fdbserver")),
        };
        cmd.args(["-p", &listen, "-C"])
            .arg(&cluster_file)
            .arg("-d")
            .arg(dir.path().join("data"))
            .arg("-L")
            .arg(dir.path().join("logs"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in tls.map(FdbTls::env).unwrap_or_default() {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting fdbserver");
        let fdb = LocalFdb {
            child,
            cluster_file,
            _dir: dir,
        };
        let cli = home.join("bin/fdbcli");
        let file = fdb.cluster_file.clone();
        let env = tls.map(FdbTls::env).unwrap_or_default();
        crate::wait::until(
            "FoundationDB to accept transactions",
            Duration::from_secs(90),
            || {
                let (cli, file, env) = (cli.clone(), file.clone(), env.clone());
                async move {
                    tokio::task::spawn_blocking(move || {
                        let run = |cmd: &str| {
                            Command::new(&cli)
                                .arg("-C")
                                .arg(&file)
                                .args(["--timeout", "5", "--exec", cmd])
                                .envs(env.iter().map(|(k, v)| (k, v)))
                                .output()
                                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                                .unwrap_or_default()
                        };
                        let status = run("status minimal");
                        if status.contains("database is available") {
                            return Some(());
                        }
                        // A fresh server has no database yet (its status
                        // may just time out): create one; an existing one
                        // refuses and nothing changes.
                        run("configure new single memory");
                        std::thread::sleep(Duration::from_millis(500));
                        None
                    })
                    .await
                    .ok()
                    .flatten()
                }
            },
        )
        .await;
        fdb
    }
}

impl Drop for LocalFdb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
