//! Bounded password hashing.
//!
//! An argon2 hash takes ~19 MiB and tens of milliseconds of one core.
//! Unbounded, a login burst runs one hash per blocking thread (up to 512):
//! gigabytes of memory and every core busy. The gate runs at most
//! `permits` hashes at once (one per core by default), lets at most `queue`
//! more wait, and refuses the rest at once with 503 and `Retry-After`, so
//! memory stays near `permits × 19 MiB` whatever the burst.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actors::Metrics;
use tokio::sync::Semaphore;

use crate::config::AbuseConfig;
use crate::Error;

/// The password-hashing gate of one node.
#[derive(Debug)]
pub struct HashGate {
    permits: Arc<Semaphore>,
    /// Requests holding or waiting for a permit.
    admitted: AtomicUsize,
    /// Most requests admitted at once: permits plus the queue.
    capacity: usize,
    metrics: Arc<Metrics>,
}

/// A place in the gate; dropping it lets the next request in.
struct Admission<'a>(&'a AtomicUsize);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HashGate {
    /// A gate per `config` (`hash_concurrency` 0 = one per core).
    pub fn new(config: &AbuseConfig, metrics: Arc<Metrics>) -> Self {
        let permits = match config.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            admitted: AtomicUsize::new(0),
            capacity: permits + config.hash_queue,
            metrics,
        }
    }

    /// Runs `op` (which hashes a password) on a blocking thread once a
    /// permit is free; [`Error::Overloaded`] when the queue is full.
    pub async fn run<T, F>(&self, op: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, Error> + Send + 'static,
    {
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel);
        let _admission = Admission(&self.admitted);
        if admitted >= self.capacity {
            self.metrics.hash_overloaded.inc();
            return Err(Error::Overloaded);
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Internal(format!("hash gate closed: {e}")))?;
        // The permit moves into the blocking task: a client that hangs up
        // while its hash runs does not free the slot before the hash ends.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            op()
        })
        .await?
    }
}
