//! The FoundationDB backend (cargo feature `fdb`): a thin adapter from the
//! [`crate::kv`] API onto the `foundationdb` crate, for clusters that span
//! machines.
//!
//! It adds no logic of its own beyond mapping calls one to one, so that the
//! schema and the retry loop are tested through the embedded backend and this
//! file only has to be checked against the backend-conformance suite.
//!
//! Differences from the C client's usual loop, on purpose:
//! - retries are [`crate::Database`]'s: a retryable [`FdbError`] makes it
//!   begin a fresh transaction after [`crate::RetryPolicy`]'s jittered
//!   backoff, instead of FDB's `on_error` backoff;
//! - every transaction times out after [`TRANSACTION_TIMEOUT_MS`], so an
//!   unreachable cluster surfaces as a (non-retryable) error instead of a
//!   thread blocked forever.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use foundationdb::api::{FdbApiBuilder, NetworkAutoStop};
use foundationdb::options::{DatabaseOption, StreamingMode};
use foundationdb::{FdbError, KeySelector, RangeOption};
use futures::executor::block_on;
use futures::TryStreamExt;

use crate::kv::{Backend, BackendTransaction, KeyValue, RangeOptions, Transaction, TxMode};
use crate::{Error, Result};

/// How long one transaction (its reads and its commit) may take before FDB
/// fails it with `transaction_timed_out`. FDB refuses reads older than 5 s
/// anyway; the margin is for a slow commit.
pub const TRANSACTION_TIMEOUT_MS: i32 = 10_000;

/// FDB error code `network_cannot_be_restarted`.
const NETWORK_CANNOT_BE_RESTARTED: i32 = 2025;

/// Where the process-wide FDB client network stands.
enum Network {
    /// Not started yet.
    Unbooted,
    /// Running; dropping the guard stops and joins the network thread.
    Running {
        /// Held only to be dropped by [`shutdown_network`].
        _guard: NetworkAutoStop,
    },
    /// Starting failed; it cannot be tried again (the API version can be
    /// selected once per process), so later opens get the same error.
    Failed(FdbError),
    /// Stopped by [`shutdown_network`]; it can never run again.
    Stopped,
}

/// The one global of this crate, and it is unavoidable: FoundationDB's client
/// library allows exactly one network (one API-version selection, one network
/// thread) per process, shared by every database handle, so its guard cannot
/// belong to any one [`FdbBackend`]. It is a `Mutex` rather than a `OnceLock`
/// because booting is fallible and the guard must be taken out again by
/// [`shutdown_network`].
static NETWORK: Mutex<Network> = Mutex::new(Network::Unbooted);

/// Starts the FDB network thread on first use; later calls are no-ops.
fn ensure_network() -> Result<()> {
    // Every update is a single assignment, so a poisoned state is still valid.
    let mut state = NETWORK.lock().unwrap_or_else(PoisonError::into_inner);
    match &*state {
        Network::Running { .. } => Ok(()),
        Network::Failed(e) => Err(Error::Fdb(*e)),
        Network::Stopped => Err(Error::Fdb(FdbError::from_code(NETWORK_CANNOT_BE_RESTARTED))),
        Network::Unbooted => match boot_network() {
            Ok(guard) => {
                *state = Network::Running { _guard: guard };
                Ok(())
            }
            Err(e) => {
                *state = Network::Failed(e);
                Err(Error::Fdb(e))
            }
        },
    }
}

#[allow(unsafe_code)]
fn boot_network() -> Result<NetworkAutoStop, FdbError> {
    let builder = FdbApiBuilder::default().build()?;
    // SAFETY: `boot` is unsafe because the returned guard must be dropped
    // (stopping and joining the network thread) before the process exits. The
    // guard goes straight into `NETWORK`, the only place that holds it, and
    // `shutdown_network` drops it; processes that use this backend call that
    // before exiting. `ensure_network` holds the `NETWORK` lock and runs this
    // only from `Unbooted`, so the network is never booted twice.
    unsafe { builder.boot() }
}

/// Stops the FoundationDB client network and joins its thread.
///
/// FDB requires this before the process exits (exiting with the network
/// thread still running is undefined behaviour in its C client), so a binary
/// that opened an [`FdbBackend`] calls it once at the very end, after its last
/// transaction. The network cannot be restarted: opening or using an
/// [`FdbBackend`] afterwards fails with `network_cannot_be_restarted`. Does
/// nothing if the network never ran.
pub fn shutdown_network() {
    let mut state = NETWORK.lock().unwrap_or_else(PoisonError::into_inner);
    if matches!(*state, Network::Running { .. }) {
        // Dropping the guard stops the network and joins its thread.
        drop(std::mem::replace(&mut *state, Network::Stopped));
    }
}

/// The FoundationDB backend: one handle on a cluster, shared by all threads.
///
/// Every key lives under `prefix` (empty by default), so several
/// deployments, or parallel tests, can share one cluster without seeing each
/// other's keys; the layer above never sees the prefix.
pub struct FdbBackend {
    db: foundationdb::Database,
    prefix: Vec<u8>,
}

impl FdbBackend {
    /// Connects to the cluster named by `cluster_file`, or to the client's
    /// default one (`FDB_CLUSTER_FILE`, else `/etc/foundationdb/fdb.cluster`)
    /// when `None`. Starts the process's FDB network on first call.
    pub fn open(cluster_file: Option<&Path>) -> Result<Self> {
        Self::open_with_prefix(cluster_file, Vec::new())
    }

    /// Like [`FdbBackend::open`], keeping every key under `prefix`, which
    /// must not begin with `0xff` (FoundationDB's system keys).
    pub fn open_with_prefix(cluster_file: Option<&Path>, prefix: Vec<u8>) -> Result<Self> {
        if prefix.first() == Some(&0xff) {
            return Err(Error::invalid(
                "key prefix",
                "must not begin with 0xff (FoundationDB's system keys)",
            ));
        }
        let path = cluster_file
            .map(|p| {
                // The C client takes a NUL-terminated UTF-8 string.
                p.to_str().filter(|s| !s.contains('\0')).ok_or_else(|| {
                    Error::invalid(
                        "cluster file",
                        format!("{} is not a UTF-8 path without NUL bytes", p.display()),
                    )
                })
            })
            .transpose()?;
        ensure_network()?;
        let db = foundationdb::Database::new(path)?;
        db.set_option(DatabaseOption::TransactionTimeout(TRANSACTION_TIMEOUT_MS))?;
        Ok(Self { db, prefix })
    }
}

impl Backend for FdbBackend {
    fn name(&self) -> &'static str {
        "foundationdb"
    }

    /// Every FDB transaction reads one consistent snapshot and only conflicts
    /// at commit, so `mode` needs no different treatment: a read-only commit
    /// is free.
    fn begin(&self, _mode: TxMode) -> Result<Box<dyn BackendTransaction + '_>> {
        ensure_network()?;
        Ok(Box::new(FdbTransaction {
            tx: self.db.create_trx()?,
            prefix: &self.prefix,
            fetched: HashMap::new(),
        }))
    }
}

/// One FDB transaction. Dropping it uncommitted destroys (cancels) it.
///
/// The [`Transaction`] trait is synchronous, so each call blocks the calling
/// thread on the FDB future with [`block_on`] while the network thread does
/// the I/O; callers of [`crate::Database`] are on blocking threads already.
struct FdbTransaction<'a> {
    tx: foundationdb::Transaction,
    /// The backend's key prefix.
    prefix: &'a [u8],
    /// Values read by [`Transaction::prefetch`] (unprefixed keys), until
    /// this transaction writes the key (then FDB's own read-your-writes
    /// answers it).
    fetched: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl FdbTransaction<'_> {
    /// `key` as stored: under the backend's prefix.
    fn full(&self, key: &[u8]) -> Vec<u8> {
        [self.prefix, key].concat()
    }
}

impl Transaction for FdbTransaction<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(value) = self.fetched.get(key) {
            return Ok(value.clone());
        }
        let key = self.full(key);
        Ok(block_on(self.tx.get(&key, false))?.map(|v| v.to_vec()))
    }

    /// Every read in flight at once: one round trip instead of one each.
    fn prefetch(&mut self, keys: &[Vec<u8>]) -> Result<()> {
        let wanted: Vec<&Vec<u8>> = keys
            .iter()
            .filter(|k| !self.fetched.contains_key(k.as_slice()))
            .collect();
        let full: Vec<Vec<u8>> = wanted.iter().map(|k| self.full(k)).collect();
        let reads = full.iter().map(|k| self.tx.get(k, false));
        let values = block_on(futures::future::try_join_all(reads))?;
        for (key, value) in wanted.into_iter().zip(values) {
            self.fetched.insert(key.clone(), value.map(|v| v.to_vec()));
        }
        Ok(())
    }

    fn get_range(&mut self, begin: &[u8], end: &[u8], opts: RangeOptions) -> Result<Vec<KeyValue>> {
        // FDB reads a limit of 0 as "no limit" and rejects inverted ranges;
        // the API means "nothing" for both.
        if begin >= end || opts.limit == Some(0) {
            return Ok(Vec::new());
        }
        let (begin, end) = (self.full(begin), self.full(end));
        let range = RangeOption {
            begin: KeySelector::first_greater_or_equal(begin),
            end: KeySelector::first_greater_or_equal(end),
            limit: opts.limit,
            reverse: opts.reverse,
            // The whole result is returned at once, so fetch it in big batches.
            mode: StreamingMode::WantAll,
            ..RangeOption::default()
        };
        // The stream pages through the range until the limit or its end.
        let pairs = self
            .tx
            .get_ranges_keyvalues(range, false)
            .map_ok(|kv| {
                // Every key read is in [prefix+begin, prefix+end).
                let key = kv.key().get(self.prefix.len()..).unwrap_or_default();
                (key.to_vec(), kv.value().to_vec())
            })
            .try_collect();
        Ok(block_on(pairs)?)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        // Mutations are buffered client-side; bad keys fail at commit.
        self.fetched.remove(key);
        self.tx.set(&self.full(key), value);
        Ok(())
    }

    fn clear(&mut self, key: &[u8]) -> Result<()> {
        self.fetched.remove(key);
        self.tx.clear(&self.full(key));
        Ok(())
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) -> Result<()> {
        // An inverted range would fail the commit; the API makes it a no-op.
        if begin < end {
            self.fetched
                .retain(|k, _| k.as_slice() < begin || k.as_slice() >= end);
            self.tx.clear_range(&self.full(begin), &self.full(end));
        }
        Ok(())
    }
}

impl BackendTransaction for FdbTransaction<'_> {
    fn commit(self: Box<Self>) -> Result<()> {
        match block_on(self.tx.commit()).map_err(FdbError::from) {
            Ok(_) => Ok(()),
            Err(e) if e.is_maybe_committed() => Err(Error::MaybeCommitted),
            Err(e) => Err(e.into()),
        }
    }
}
