//! The node's storage threads: every blocking store call of the actors and
//! the gateway runs here, on a fixed number of threads behind a bounded
//! queue, instead of on tokio's shared blocking pool.
//!
//! Store calls block on I/O (and, on SQLite, on the one write lock), so
//! they must not run on the async workers. A pool of their own bounds how
//! many run at once (each may hold an SQLite connection with its page
//! cache) and how many wait (a caller past the queue waits its turn before
//! queueing: back-pressure, not memory), and keeps a burst of store calls
//! from taking the threads password hashing and other blocking work use.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use prometheus_client::metrics::gauge::Gauge;
use storage::chat::ChatStore;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// Calls queued beyond the running ones before callers wait to queue (the
/// node's pool).
pub const QUEUE: usize = 4096;

/// A queued call, with its place in the queue: the place is given back
/// when a thread takes the call.
type Job = (Box<dyn FnOnce(&ChatStore) + Send>, OwnedSemaphorePermit);

/// Why a store call did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The queue refused the call. Its places are never withdrawn while a
    /// handle exists, so this does not happen today; it stands for the
    /// queue's own error rather than a panic.
    #[error("the storage pool is shut down")]
    Closed,
    /// The call panicked (a bug); its thread carries on.
    #[error("a storage call panicked")]
    Panicked,
}

/// What the callers and the threads share.
///
/// Idle threads wait on one condition variable, and a queued call wakes
/// exactly one of them. (A tokio channel behind a mutex, which this
/// replaced, woke two threads per call: the one that took the call and,
/// as it let go of the mutex, the next one to wait on the channel, which
/// on a one-core node preempted the first before it ran the call: the
/// storage threads switched 1 340 times a second in `peers` at 4.4k
/// deliveries/s, 770 with this.)
struct Queue {
    jobs: Mutex<Jobs>,
    /// Signalled once per queued call, and to every thread at shutdown.
    ready: Condvar,
}

struct Jobs {
    queue: VecDeque<Job>,
    /// Every handle is gone: threads leave once the queue is empty.
    closed: bool,
}

impl Queue {
    /// The queue, even if a thread panicked while holding it: the panic
    /// is caught around the call, never inside this lock.
    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The callers' side: when the last handle goes, the threads drain the
/// queue and stop.
struct Sender {
    queue: Arc<Queue>,
    /// One permit per free place in the queue.
    room: Arc<Semaphore>,
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }
}

/// Handle on the pool. Cheap to clone; the threads stop when every handle
/// is dropped and the queue is drained.
#[derive(Clone)]
pub struct StorePool {
    sender: Arc<Sender>,
    store: ChatStore,
    queued: Gauge,
}

impl std::fmt::Debug for StorePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorePool")
            .field("queued", &self.queued.get())
            .finish()
    }
}

impl StorePool {
    /// Starts `threads` (at least 1) threads running calls on `store`,
    /// with room for `queue` (at least 1) waiting calls; `queued` counts the
    /// calls waiting for a thread.
    pub fn start(
        store: ChatStore,
        threads: usize,
        queue: usize,
        queued: Gauge,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Queue {
            jobs: Mutex::new(Jobs {
                queue: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let sender = Arc::new(Sender {
            queue: shared.clone(),
            room: Arc::new(Semaphore::new(queue.max(1))),
        });
        for i in 0..threads.max(1) {
            let (shared, store, queued) = (shared.clone(), store.clone(), queued.clone());
            std::thread::Builder::new()
                .name(format!("storage-{i}"))
                .spawn(move || worker(&shared, &store, &queued))?;
        }
        Ok(Self {
            sender,
            store,
            queued,
        })
    }

    /// Runs `call` on a storage thread and waits for its result.
    pub async fn run<T, F>(&self, call: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&ChatStore) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Box::new(move |store: &ChatStore| {
            let _ = tx.send(call(store));
        });
        // Counted while it waits for a place too; counted out by the
        // thread that takes it, or here if it never gets a place (the pool
        // is closed, or the caller gave up waiting).
        self.queued.inc();
        let waiting = Waiting(&self.queued);
        let Ok(place) = self.sender.room.clone().acquire_owned().await else {
            return Err(PoolError::Closed);
        };
        std::mem::forget(waiting);
        self.sender.queue.lock().queue.push_back((job, place));
        self.sender.queue.ready.notify_one();
        // The job drops its sender without sending only when it panicked.
        rx.await.map_err(|_| PoolError::Panicked)
    }

    /// The store, for the few calls that need no thread (building keys,
    /// limits, the clock).
    pub fn store(&self) -> &ChatStore {
        &self.store
    }
}

/// A call waiting for a place in the queue: counted out of `queued` if it
/// is dropped before it gets one.
struct Waiting<'a>(&'a Gauge);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One storage thread: takes the next call and runs it, surviving its
/// panics; leaves when the pool is closed and nothing is queued.
fn worker(shared: &Queue, store: &ChatStore, queued: &Gauge) {
    loop {
        let (job, place) = {
            let mut jobs = shared.lock();
            loop {
                if let Some(job) = jobs.queue.pop_front() {
                    break job;
                }
                if jobs.closed {
                    return;
                }
                jobs = shared
                    .ready
                    .wait(jobs)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        drop(place);
        queued.dec();
        if std::panic::catch_unwind(AssertUnwindSafe(|| job(store))).is_err() {
            tracing::error!("a storage call panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (ChatStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = storage::Database::open_sqlite(dir.path().join("s.sqlite")).expect("open");
        let store = ChatStore::open(db, storage::chat::Limits::default()).expect("chat store");
        (store, dir)
    }

    /// Polls `cond` every millisecond; panics after 10 s.
    async fn until(cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "condition not reached"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Holds a one-thread pool's thread with a call that returns once
    /// `release` fires; returns once that call runs.
    async fn hold_the_thread(
        pool: &StorePool,
        queued: &Gauge,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<bool, PoolError>>,
    ) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (running, started) = std::sync::mpsc::channel::<()>();
        let holder = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(move |_| running.send(()).is_ok() && held.recv().is_ok())
                    .await
            })
        };
        until(|| started.try_recv().is_ok()).await;
        assert_eq!(queued.get(), 0, "the held call was taken off the queue");
        (release, holder)
    }

    #[tokio::test]
    async fn runs_calls_and_survives_a_panicking_one() {
        let (store, _dir) = store();
        let queued = Gauge::default();
        let pool = StorePool::start(store, 2, QUEUE, queued.clone()).expect("pool");
        let panicked = pool
            .run(|_| -> u32 { panic!("a bug in a storage call") })
            .await;
        assert!(matches!(panicked, Err(PoolError::Panicked)));
        // Both threads still serve, many calls at once.
        let calls: Vec<_> = (0..64u64)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.run(move |s| s.now() > 0 && i < 64).await })
            })
            .collect();
        for call in calls {
            assert!(call.await.expect("join").expect("run"));
        }
        assert_eq!(queued.get(), 0, "every queued call was counted out");
    }

    #[tokio::test]
    async fn the_threads_leave_when_the_last_handle_goes() {
        let (store, _dir) = store();
        let pool = StorePool::start(store, 3, QUEUE, Gauge::default()).expect("pool");
        let other = pool.clone();
        assert!(pool.run(|s| s.now() > 0).await.expect("run"));
        // Each thread holds the queue while it runs: once none does, all
        // three have returned.
        let queue = Arc::downgrade(&pool.sender.queue);
        drop(pool);
        assert!(other
            .run(|s| s.now() > 0)
            .await
            .expect("a clone still runs calls"));
        drop(other);
        until(|| queue.upgrade().is_none()).await;
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_waiting_for_a_place_is_counted_out() {
        let (store, _dir) = store();
        let queued = Gauge::default();
        let pool = StorePool::start(store, 1, 1, queued.clone()).expect("pool");
        let (release, holder) = hold_the_thread(&pool, &queued).await;
        // One call takes the one place; the next waits for it, then its
        // caller gives up.
        let queued_call = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|_| 1).await })
        };
        until(|| queued.get() == 1).await;
        let impatient = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|_| 2).await })
        };
        until(|| queued.get() == 2).await;
        impatient.abort();
        until(|| queued.get() == 1).await;
        release.send(()).expect("release");
        assert!(holder.await.expect("join").expect("run"));
        assert_eq!(queued_call.await.expect("join").expect("run"), 1);
        assert_eq!(queued.get(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_makes_callers_wait_not_fail() {
        let (store, _dir) = store();
        let queued = Gauge::default();
        let pool = StorePool::start(store, 1, 2, queued.clone()).expect("pool");
        let (release, holder) = hold_the_thread(&pool, &queued).await;
        // Two calls fill the queue; a third waits to get in.
        let waiting: Vec<_> = (0..3)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.run(move |_| i).await })
            })
            .collect();
        // All three are counted as waiting: none failed (a refused call
        // is counted out at once) and none ran (the thread is held).
        until(|| queued.get() == 3).await;
        assert!(waiting.iter().all(|w| !w.is_finished()));
        release.send(()).expect("release");
        assert!(holder.await.expect("join").expect("run"));
        for (i, w) in waiting.into_iter().enumerate() {
            assert_eq!(w.await.expect("join").expect("run"), i);
        }
        assert_eq!(queued.get(), 0);
    }
}
