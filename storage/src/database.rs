//! [`Database`]: runs closures as transactions, retrying on conflict.
//!
//! This is FoundationDB's `db.run(|tx| ...)` loop. The closure may run more
//! than once, so it must not have side effects outside the transaction; when
//! it returns an error the transaction is rolled back and nothing it wrote is
//! kept.
//!
//! A commit can also end with its outcome unknown ([`Error::MaybeCommitted`]:
//! FoundationDB's `commit_unknown_result`). Like foundationdb-rs's
//! `TransactOption { is_idempotent }`, [`Database::run`] then reports it
//! rather than apply the transaction twice, and [`Database::run_idempotent`]
//! retries, for closures that find their own earlier commit and answer the
//! same (registration finds its own password hash, an append its own
//! messages). [`UnknownResults`] injects such outcomes in tests, on any
//! backend.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::kv::{Backend, Transaction, TxMode};
use crate::{Error, Result};

/// Counter keys per id family on engines with concurrent writers
/// ([`Database::id_shards`]): two allocations conflict one time in 16.
pub const ID_SHARDS: u64 = 16;

/// How hard [`Database::run`] tries before giving up on a retryable error:
/// within a time budget, and a number of attempts. Time is what a caller
/// waits on (an attempt on SQLite may itself wait out a busy timeout), so
/// it is the bound that matters.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Default 30.
    pub max_attempts: u32,
    /// No retry starts once this long has passed since the first attempt
    /// began (a running attempt is not cut short). Default 10 s.
    pub max_elapsed: Duration,
    /// Wait before the first retry; doubled each retry. Default 1 ms.
    pub initial_backoff: Duration,
    /// Ceiling of the wait between retries. Default 200 ms.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 30,
            max_elapsed: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// The jittered wait before retry number `retry` (0-based): a uniform
    /// draw from [backoff/2, backoff], so contending writers spread out.
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX);
        let full = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        let half = full / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_micros() as u64);
        half + Duration::from_micros(jitter)
    }
}

/// A test hook: makes the next commits report [`Error::MaybeCommitted`]
/// after they did commit, the harder of the two cases a real unknown result
/// can hide. Shared between the test and the [`Database`]
/// ([`Database::with_unknown_results`]).
#[derive(Debug, Default)]
pub struct UnknownResults {
    remaining: AtomicU32,
}

impl UnknownResults {
    /// Makes the next `n` successful commits report an unknown result.
    pub fn inject(&self, n: u32) {
        self.remaining.fetch_add(n, Ordering::SeqCst);
    }

    /// How many injections are still pending.
    pub fn pending(&self) -> u32 {
        self.remaining.load(Ordering::SeqCst)
    }

    /// Takes one pending injection, if any.
    fn take(&self) -> bool {
        self.remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// A handle on the store. Cheap to clone; share one per process.
///
/// Every call blocks the calling thread on storage I/O, so async code calls
/// it from a blocking thread (the node runs every call on its storage pool,
/// `actors::StorePool`).
#[derive(Clone)]
pub struct Database {
    backend: Arc<dyn Backend>,
    retry: RetryPolicy,
    unknown_results: Option<Arc<UnknownResults>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend.name())
            .field("retry", &self.retry)
            .finish()
    }
}

impl Database {
    /// Wraps a backend with the default retry policy.
    pub fn new(backend: impl Backend) -> Self {
        Self {
            backend: Arc::new(backend),
            retry: RetryPolicy::default(),
            unknown_results: None,
        }
    }

    /// Test hook: commits report an unknown result while `hook` says so.
    pub fn with_unknown_results(mut self, hook: Arc<UnknownResults>) -> Self {
        self.unknown_results = Some(hook);
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Whether the engine runs one write transaction at a time (SQLite):
    /// concurrent writers would only queue behind each other. FoundationDB
    /// runs them concurrently, with optimistic conflict checks.
    pub fn serializes_writers(&self) -> bool {
        self.backend.serializes_writers()
    }

    /// How many counter keys an id family is spread over: 1 on an engine
    /// that serializes writers anyway (ids stay dense: 1, 2, 3...),
    /// [`ID_SHARDS`] on an optimistic one, so concurrent registrations or
    /// group creations do not all conflict on one key.
    pub fn id_shards(&self) -> u64 {
        if self.backend.serializes_writers() {
            1
        } else {
            ID_SHARDS
        }
    }

    /// Asks the engine to make erased values unrecoverable from its files
    /// ([`Backend::scrub`]).
    pub fn scrub(&self) -> Result<()> {
        self.backend.scrub()
    }

    /// The backend's short name, for logs.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Runs `f` in a read-write transaction and commits it, retrying the
    /// whole closure on retryable errors (with jittered exponential backoff).
    /// A commit whose outcome is unknown is reported as
    /// [`Error::MaybeCommitted`], not retried.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnMut(&mut dyn Transaction) -> Result<T>,
    {
        self.run_mode(TxMode::Write, false, f)
    }

    /// Like [`Database::run`], also retrying after an unknown commit
    /// outcome: only for closures that, run again after their own commit,
    /// recognise it and return the same answer without writing again.
    pub fn run_idempotent<T, F>(&self, f: F) -> Result<T>
    where
        F: FnMut(&mut dyn Transaction) -> Result<T>,
    {
        self.run_mode(TxMode::Write, true, f)
    }

    /// Runs `f` in a read-only transaction (a consistent snapshot).
    ///
    /// Writes are still possible but may force a lock upgrade and a retry;
    /// use [`Database::run`] for anything that writes.
    pub fn read<T, F>(&self, f: F) -> Result<T>
    where
        F: FnMut(&mut dyn Transaction) -> Result<T>,
    {
        // A read-only transaction writes nothing: retrying it is harmless.
        self.run_mode(TxMode::Read, true, f)
    }

    fn run_mode<T, F>(&self, mode: TxMode, idempotent: bool, mut f: F) -> Result<T>
    where
        F: FnMut(&mut dyn Transaction) -> Result<T>,
    {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.attempt(mode, &mut f);
            match outcome {
                Ok(v) => return Ok(v),
                Err(e)
                    if e.is_retryable() || (idempotent && matches!(e, Error::MaybeCommitted)) =>
                {
                    let backoff = self.retry.backoff(attempt - 1);
                    if attempt >= self.retry.max_attempts
                        || started.elapsed() + backoff >= self.retry.max_elapsed
                    {
                        return Err(Error::RetriesExhausted {
                            attempts: attempt,
                            last: Box::new(e),
                        });
                    }
                    tracing::debug!(attempt, error = %e, "retrying transaction");
                    std::thread::sleep(backoff);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn attempt<T, F>(&self, mode: TxMode, f: &mut F) -> Result<T>
    where
        F: FnMut(&mut dyn Transaction) -> Result<T>,
    {
        let mut tx = self.backend.begin(mode)?;
        let value = f(tx.as_mut())?;
        tx.commit()?;
        if self.unknown_results.as_ref().is_some_and(|h| h.take()) {
            return Err(Error::MaybeCommitted);
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        for retry in 0..40 {
            let b = p.backoff(retry);
            assert!(b <= p.max_backoff, "retry {retry}: {b:?}");
        }
        assert!(p.backoff(0) <= Duration::from_millis(1));
        assert!(p.backoff(10) >= Duration::from_millis(100));
    }

    /// An engine that is always busy.
    struct Busy;

    impl Backend for Busy {
        fn name(&self) -> &'static str {
            "busy"
        }

        fn begin(&self, _mode: TxMode) -> Result<Box<dyn crate::kv::BackendTransaction + '_>> {
            Err(Error::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            )))
        }
    }

    #[test]
    fn retries_stop_at_the_time_budget() {
        let db = Database::new(Busy).with_retry(RetryPolicy {
            max_attempts: 1_000_000,
            max_elapsed: Duration::from_millis(100),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
        });
        match db.run(|_| Ok(())) {
            // Each wait is at least 5 ms: about 20 attempts fit in 100 ms.
            Err(Error::RetriesExhausted { attempts, .. }) => {
                assert!((2..=25).contains(&attempts), "{attempts} attempts")
            }
            other => panic!("expected the budget to run out: {other:?}"),
        }
    }
}
