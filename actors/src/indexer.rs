//! The search index follower: builds the index after the commit.
//!
//! A message's own transaction no longer writes its search rows (two or
//! more scattered pages per message). Instead the node's writer marks the
//! conversations it committed to, and this task, a moment later
//! (`index_delay`, sooner once a conversation has [`ROWS_PER_CONV`]
//! waiting), indexes their new messages in one transaction per step
//! ([`ChatStore::index_pending`](storage::chat::ChatStore::index_pending)),
//! many conversations at once, moving each conversation's cursor with its
//! rows. Searches read the log above the cursor themselves, so nothing a
//! user sent is ever missing from a search while this task catches up.
//!
//! Crash safety lives in the store, not here: the cursor moves in the same
//! transaction as the rows it covers, so after a kill -9 the next step
//! starts where the last committed one ended. A conversation whose tail was
//! left unindexed by a crash is marked again when its actor activates.
//!
//! The task is restarted if it panics ([`crate::task::supervise`]), so the
//! index never silently stops following the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use storage::chat::{ConvId, Seq};
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::store_pool::StorePool;

/// Conversations per step, at most.
const CONVS_PER_STEP: usize = 128;

/// Log rows per step, about: on SQLite a step holds the one writer's lock
/// while it runs, so commits wait at most one short step (a few ms), not
/// a whole second's backlog.
const ROWS_PER_STEP: usize = 512;

/// Log rows per conversation per step; a conversation with more is
/// marked again and continues in the next step.
const ROWS_PER_CONV: usize = 256;

/// How long the follower waits after a failed step before trying again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// What the follower knows of a conversation it has to catch up with.
#[derive(Debug, Clone, Copy, Default)]
struct Waiting {
    /// The highest seq known committed: the step reads up to it, never
    /// past (see [`storage::chat::ChatStore::index_pending`]).
    up_to: Seq,
    /// Messages committed since the last step, about.
    rows: usize,
}

/// The conversations whose log has rows the index does not have yet.
#[derive(Default)]
struct Backlog {
    dirty: Mutex<HashMap<ConvId, Waiting>>,
    /// The first mark after a step.
    wake: Notify,
    /// A conversation's backlog reached [`ROWS_PER_CONV`]: do not wait out
    /// the gathering time (its searches would scan a long unindexed tail).
    full: Notify,
}

impl Backlog {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConvId, Waiting>> {
        match self.dirty.lock() {
            Ok(dirty) => dirty,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn take(&self) -> Vec<(ConvId, Waiting)> {
        self.lock().drain().collect()
    }

    /// Notes `rows` more messages of each conversation, committed up to
    /// the given seq; the number of conversations waiting, and whether one
    /// of them is full.
    fn mark(&self, convs: impl IntoIterator<Item = (ConvId, Seq, usize)>) -> (usize, bool) {
        let mut dirty = self.lock();
        let mut full = false;
        for (conv, up_to, rows) in convs {
            let waiting = dirty.entry(conv).or_default();
            waiting.up_to = waiting.up_to.max(up_to);
            waiting.rows = waiting.rows.saturating_add(rows);
            full |= waiting.rows >= ROWS_PER_CONV;
        }
        (dirty.len(), full)
    }
}

/// Handle on the node's index follower. Cheap to clone.
#[derive(Clone)]
pub struct Indexer {
    backlog: Arc<Backlog>,
    metrics: Arc<Metrics>,
}

impl Indexer {
    /// Starts the follower (and its restart-on-panic loop). After the first
    /// mark it lets `gather` pass, so one step covers many commits (and, on
    /// SQLite, takes the writer's turn once rather than after every commit).
    pub fn start(
        store: StorePool,
        metrics: Arc<Metrics>,
        gather: Duration,
        faults: Arc<crate::faults::Faults>,
    ) -> Self {
        let backlog = Arc::new(Backlog::default());
        let indexer = Self {
            backlog: backlog.clone(),
            metrics: metrics.clone(),
        };
        let restarts = metrics.task_restarts.clone();
        crate::task::supervise("index follower", restarts, move || {
            // After a panic: the conversations of the step it was on are
            // marked again by their next commit or activation (searches
            // read their unindexed tail meanwhile); marks made since are
            // in the backlog.
            backlog.wake.notify_one();
            run(
                store.clone(),
                metrics.clone(),
                backlog.clone(),
                gather,
                faults.clone(),
            )
        });
        indexer
    }

    /// Notes that each of `(conversation, up_to, rows)` committed `rows`
    /// messages, the newest at seq `up_to`, that the index lacks.
    pub fn mark(&self, convs: impl IntoIterator<Item = (ConvId, Seq, usize)>) {
        let (waiting, full) = self.backlog.mark(convs);
        self.metrics
            .index_backlog
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.backlog.wake.notify_one();
        if full {
            self.backlog.full.notify_one();
        }
    }
}

async fn run(
    store: StorePool,
    metrics: Arc<Metrics>,
    backlog: Arc<Backlog>,
    gather: Duration,
    faults: Arc<crate::faults::Faults>,
) {
    loop {
        backlog.wake.notified().await;
        tokio::select! {
            _ = tokio::time::sleep(gather) => {}
            _ = backlog.full.notified() => {}
        }
        faults.check(crate::faults::Fault::Indexer);
        let convs = backlog.take();
        metrics.index_backlog.set(0);
        for chunk in steps(&convs) {
            let work: Vec<(ConvId, Seq)> = chunk.iter().map(|(c, w)| (*c, w.up_to)).collect();
            let started = Instant::now();
            let result = store
                .run(move |store| store.index_pending(&work, ROWS_PER_CONV))
                .await;
            metrics.index_steps.inc();
            metrics
                .index_micros
                .inc_by(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
            let again: Vec<(ConvId, Seq)> = match result {
                Ok(Ok(steps)) => {
                    let rows: usize = steps.iter().map(|s| s.messages).sum();
                    metrics
                        .log_rows_indexed
                        .inc_by(u64::try_from(rows).unwrap_or(u64::MAX));
                    steps
                        .iter()
                        .zip(chunk)
                        .filter(|(s, _)| s.more)
                        .map(|(_, (c, w))| (*c, w.up_to))
                        .collect()
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "search index step failed; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                    chunk.iter().map(|(c, w)| (*c, w.up_to)).collect()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "search index step not run; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                    chunk.iter().map(|(c, w)| (*c, w.up_to)).collect()
                }
            };
            if !again.is_empty() {
                backlog.mark(
                    again
                        .into_iter()
                        .map(|(conv, up_to)| (conv, up_to, ROWS_PER_CONV)),
                );
                backlog.wake.notify_one();
                backlog.full.notify_one();
            }
        }
    }
}

/// Cuts the backlog into steps of about [`ROWS_PER_STEP`] rows and at most
/// [`CONVS_PER_STEP`] conversations (a conversation's part is never split).
fn steps(convs: &[(ConvId, Waiting)]) -> Vec<&[(ConvId, Waiting)]> {
    let mut out = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (i, (_, waiting)) in convs.iter().enumerate() {
        // What one step takes of a conversation, at most.
        let part = waiting.rows.min(ROWS_PER_CONV);
        if i > start && (rows + part > ROWS_PER_STEP || i - start == CONVS_PER_STEP) {
            out.push(&convs[start..i]);
            (start, rows) = (i, 0);
        }
        rows += part;
    }
    if start < convs.len() {
        out.push(&convs[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_hold_about_rows_per_step_and_never_split_a_conversation() {
        let w = |rows| Waiting { up_to: 1, rows };
        let convs: Vec<(ConvId, Waiting)> = vec![
            (1, w(300)),
            (2, w(200)),
            (3, w(100)),
            (4, w(5000)),
            (5, w(0)),
        ];
        let cut: Vec<Vec<ConvId>> = steps(&convs)
            .iter()
            .map(|s| s.iter().map(|(c, _)| *c).collect())
            .collect();
        // 256 (a conversation's most per step) + 200, then 100 + 256 + 0.
        assert_eq!(cut, [vec![1, 2], vec![3, 4, 5]]);
        let many: Vec<(ConvId, Waiting)> = (0..300).map(|c| (c, w(1))).collect();
        let sizes: Vec<usize> = steps(&many).iter().map(|s| s.len()).collect();
        assert_eq!(sizes, [128, 128, 44]);
        assert!(steps(&[]).is_empty());
    }
}
