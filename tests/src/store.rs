//! Which store the test nodes use: the embedded SQLite file (default) or a
//! FoundationDB cluster.
//!
//! `PARLEY_TEST_STORE=fdb` (with `FDB_CLUSTER_FILE` naming a running
//! cluster, and `libfdb_c` on `LIBRARY_PATH`/`LD_LIBRARY_PATH`) runs every
//! harness node on FoundationDB: the binary is built with `--features fdb`,
//! and the nodes sharing a data directory share one key prefix in the
//! cluster, just as they would share the SQLite file in it. `.ci/run` runs
//! the cluster and chaos suites both ways.

use std::path::{Path, PathBuf};

/// The store of the test nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestStore {
    /// `parley.sqlite` in the node's data directory.
    Sqlite,
    /// The FoundationDB cluster named by this cluster file.
    Fdb {
        /// `FDB_CLUSTER_FILE`.
        cluster_file: PathBuf,
    },
}

impl TestStore {
    /// Reads `PARLEY_TEST_STORE` (`sqlite` or unset, or `fdb`). Panics on
    /// anything else, or on `fdb` without `FDB_CLUSTER_FILE`: a run that
    /// asked for FoundationDB never quietly runs on SQLite.
    pub fn from_env() -> Self {
        match std::env::var("PARLEY_TEST_STORE").as_deref() {
            Err(_) | Ok("") | Ok("sqlite") => Self::Sqlite,
            Ok("fdb") => {
                let cluster_file = std::env::var_os("FDB_CLUSTER_FILE").expect(
                    "PARLEY_TEST_STORE=fdb needs FDB_CLUSTER_FILE naming a running cluster",
                );
                Self::Fdb {
                    cluster_file: cluster_file.into(),
                }
            }
            Ok(other) => panic!("PARLEY_TEST_STORE={other}: expected sqlite or fdb"),
        }
    }

    /// The `cargo build` feature arguments for a `parley` binary that can
    /// use this store.
    pub fn cargo_features(&self) -> &'static [&'static str] {
        match self {
            Self::Sqlite => &[],
            Self::Fdb { .. } => &["--features", "fdb"],
        }
    }

    /// The environment of a node storing into `data_dir`.
    pub fn node_env(&self, data_dir: &Path) -> Vec<(String, String)> {
        match self {
            Self::Sqlite => Vec::new(),
            Self::Fdb { cluster_file } => {
                let mut env = vec![
                    (
                        "PARLEY_FDB_CLUSTER_FILE".to_owned(),
                        cluster_file.to_string_lossy().into_owned(),
                    ),
                    (
                        "PARLEY_FDB_KEY_PREFIX".to_owned(),
                        format!("parley-test{}/", data_dir.display()),
                    ),
                ];
                // The node links libfdb_c dynamically.
                if let Ok(path) = std::env::var("LD_LIBRARY_PATH") {
                    env.push(("LD_LIBRARY_PATH".to_owned(), path));
                }
                env
            }
        }
    }
}
