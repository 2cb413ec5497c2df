//! Long-lived internal tasks that are never silently gone.
//!
//! The node's writer, its membership loop and its index follower are plain
//! tokio tasks, not actors. A panic in one would end it quietly while the
//! node went on serving: no more commits, no more lease renewals, or an
//! index that stops following the log. [`supervise`] runs such a task
//! again after a panic, logs it as an error and counts it in
//! `parley_task_restarts_total`, so a fault is both survived and seen.

use std::future::Future;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinHandle;

/// How long a panicked task waits before it runs again: a task that
/// panics at once does not spin a core.
pub const RESTART_AFTER: Duration = Duration::from_millis(100);

/// Runs the task `start` makes until it returns; when it panics, logs the
/// panic under `name`, counts it in `restarts`, and after
/// [`RESTART_AFTER`] runs a fresh one from `start`. The handle ends when a
/// run returns (or is cancelled).
pub fn supervise<F, Fut>(name: &'static str, restarts: Counter, mut start: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(start()).await {
                Err(e) if e.is_panic() => {
                    restarts.inc();
                    tracing::error!(task = name, error = %e, "internal task panicked; restarting it");
                    tokio::time::sleep(RESTART_AFTER).await;
                }
                _ => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_panicked_task_runs_again_and_is_counted() {
        let runs = Arc::new(AtomicUsize::new(0));
        let restarts = Counter::default();
        let counted = runs.clone();
        let handle = supervise("test", restarts.clone(), move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if run < 2 {
                    panic!("injected failure {run}");
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("the third run returns")
            .expect("the supervisor itself does not panic");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(restarts.get(), 2);
    }
}
