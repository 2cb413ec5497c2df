//! Parley's storage: a transactional ordered key-value API in the
//! FoundationDB style, its backends, and the chat schema written against it.
//!
//! - [`kv`]: the API ([`Transaction`], [`Backend`]) every backend implements;
//! - [`Database`]: runs closures as transactions with retry on conflict;
//! - [`sqlite`]: the embedded default backend; `fdb` (cargo feature `fdb`):
//!   FoundationDB;
//! - [`keys`]: every key family of the schema, with its value type;
//! - [`chat`]: typed chat operations (users, conversations, messages,
//!   receipts, chat lists, push subscriptions) over any backend.

pub mod chat;
mod codec;
mod database;
mod error;
#[cfg(feature = "fdb")]
pub mod fdb;
pub mod keys;
pub mod kv;
pub mod sqlite;

pub use database::{Database, RetryPolicy, UnknownResults, ID_SHARDS};
pub use error::{Error, Result};
#[cfg(feature = "fdb")]
pub use fdb::FdbBackend;
pub use kv::{Backend, KeyValue, RangeOptions, Transaction, TxMode};
pub use sqlite::{SqliteBackend, SqliteOptions};

impl Database {
    /// Opens the embedded SQLite store at `path` with default options.
    pub fn open_sqlite(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Ok(Self::new(SqliteBackend::open(
            path,
            SqliteOptions::default(),
        )?))
    }

    /// Connects to the FoundationDB cluster named by `cluster_file` (the
    /// client's default cluster file when `None`): the production backend for
    /// nodes on several machines. The process must call
    /// [`fdb::shutdown_network`] before it exits.
    #[cfg(feature = "fdb")]
    pub fn open_fdb(cluster_file: Option<&std::path::Path>) -> Result<Self> {
        Ok(Self::new(FdbBackend::open(cluster_file)?))
    }

    /// Like [`Database::open_fdb`], keeping every key under `prefix` (see
    /// [`FdbBackend::open_with_prefix`]).
    #[cfg(feature = "fdb")]
    pub fn open_fdb_with_prefix(
        cluster_file: Option<&std::path::Path>,
        prefix: Vec<u8>,
    ) -> Result<Self> {
        Ok(Self::new(FdbBackend::open_with_prefix(
            cluster_file,
            prefix,
        )?))
    }
}
