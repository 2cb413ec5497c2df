//! The node's single writer of messages and acks: a group commit across
//! conversations.
//!
//! Each conversation actor already batches its own concurrent sends (and
//! folds its acks), but a node with many quiet conversations would still
//! pay one store commit per message, and members who acknowledge every
//! message one commit per ack. Conversation actors therefore hand their
//! batches to this one task, which takes everything queued at that moment
//! (up to a cap), commits it in one transaction with
//! [`ChatStore::commit_group`], and answers each actor. A fenced
//! conversation fails alone; an engine failure of the shared transaction
//! makes every request retry in a transaction of its own, so one bad batch
//! cannot fail its neighbours.
//!
//! A group commit also stays well inside FoundationDB's transaction limits
//! (10 MB of writes, 5 s): it stops taking batches at [`MAX_COMMIT_BYTES`]
//! of estimated writes, so a transaction writes at most that plus one
//! conversation's batch (itself bounded by `max_batch` messages of at most
//! `max_message_bytes` each, with at most 256 index rows each).

use std::sync::Arc;
use std::time::Instant;

use storage::chat::{AckBatch, AckResults, AppendOutcome, AppendRequest, ChatStore, NewMessage};
use storage::chat::{MAX_INDEXED_WORDS, MAX_WORD_BYTES};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::indexer::Indexer;
use crate::metrics::Metrics;
use crate::store_pool::StorePool;

/// The outcome of one conversation's batch.
pub type BatchResult = storage::Result<Vec<storage::Result<AppendOutcome>>>;

/// Payload bytes (bodies and client ids) after which a group commit takes no
/// further batches: a tenth of FoundationDB's 10 MB transaction limit, which
/// counts every key and value written, and small enough to commit far
/// inside FDB's 5 s. Each message counts as [`write_bytes`].
pub const MAX_COMMIT_BYTES: usize = 1_000_000;

/// How many times the writer yields before taking what is queued. In
/// `peers` (one core) four made commits at 180k deliveries/s carry 188-230
/// messages instead of 40-49 (p99 46-57 ms instead of 61-63), at 45k about
/// the same (2 messages, p99 12-13 ms instead of 13.5-14), and left 4.4k
/// as it was (p99 1.85-2.03 ms).
const YIELDS_BEFORE_COMMIT: usize = 4;

/// Key bytes of one search index row besides its word (prefix, tuple
/// encoding, conversation, time, seq).
const INDEX_ROW_BYTES: usize = 48;

/// What appending one message writes, at most, without tokenizing it: its
/// row and its dedup, receipt and meta rows (three times its payload covers
/// them), plus its search index rows: at most one per two bytes of text
/// (a word and a separator) and at most `MAX_INDEXED_WORDS`, each with a
/// word of at most `MAX_WORD_BYTES`.
pub(crate) fn message_write_bytes(m: &NewMessage) -> usize {
    let rows = m.body.len().div_ceil(2).min(MAX_INDEXED_WORDS);
    3 * (m.body.len() + m.client_msg_id.len()) + rows * (INDEX_ROW_BYTES + MAX_WORD_BYTES)
}

/// What one conversation's batch writes, at most.
fn write_bytes(request: &AppendRequest) -> usize {
    request.messages.iter().map(message_write_bytes).sum()
}

/// Bytes one ack counts for against [`MAX_COMMIT_BYTES`]: its receipt
/// and cursor rows, generously.
const ACK_WRITE_BYTES: usize = 256;

/// What a conversation hands the writer.
enum Job {
    /// A batch of sends and events.
    Append {
        request: AppendRequest,
        reply: oneshot::Sender<BatchResult>,
    },
    /// A batch of acks.
    Acks {
        batch: AckBatch,
        reply: oneshot::Sender<storage::Result<AckResults>>,
    },
}

impl Job {
    /// Messages it appends (what `max_messages` caps).
    fn messages(&self) -> usize {
        match self {
            Job::Append { request, .. } => request.messages.len(),
            Job::Acks { .. } => 0,
        }
    }

    /// What it writes, at most.
    fn write_bytes(&self) -> usize {
        match self {
            Job::Append { request, .. } => write_bytes(request),
            Job::Acks { batch, .. } => batch.acks.len() * ACK_WRITE_BYTES,
        }
    }
}

/// Handle on the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the writer; a transaction carries at most `max_messages`
    /// messages (one conversation's batch is never split). The
    /// conversations it commits to are marked for `indexer`.
    ///
    /// At most `pipeline` transactions are in flight at once. Each
    /// conversation waits for its batch's answer before it hands over the
    /// next, so concurrent transactions never carry the same conversation:
    /// a conversation's order holds, and a failed transaction fails only
    /// the batches it carried (their senders get errors and resend).
    pub fn start(
        store: StorePool,
        metrics: Arc<Metrics>,
        max_messages: usize,
        pipeline: usize,
        indexer: Indexer,
        faults: Arc<crate::faults::Faults>,
    ) -> Self {
        let (jobs, rx) = mpsc::channel(4096);
        let slots = Arc::new(Semaphore::new(pipeline.max(1)));
        // Shared so that a run restarted after a panic takes the same
        // queue up again (the panicked run's lock is released as it
        // unwinds); the jobs it held are dropped, and their conversations
        // answer their senders with an error.
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let restarts = metrics.task_restarts.clone();
        crate::task::supervise("writer", restarts, move || {
            run(
                store.clone(),
                metrics.clone(),
                max_messages.max(1),
                slots.clone(),
                indexer.clone(),
                rx.clone(),
                faults.clone(),
            )
        });
        Self { jobs }
    }

    /// Commits one conversation's batch, together with whatever other
    /// conversations have queued.
    pub async fn append(
        &self,
        request: AppendRequest,
    ) -> Result<Vec<storage::Result<AppendOutcome>>, crate::Error> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Append { request, reply }, answer).await
    }

    /// Writes one conversation's acks, together with whatever else is
    /// queued: each ack's answer, in order.
    pub async fn acks(&self, batch: AckBatch) -> Result<AckResults, crate::Error> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Acks { batch, reply }, answer).await
    }

    async fn submit<T>(
        &self,
        job: Job,
        answer: oneshot::Receiver<storage::Result<T>>,
    ) -> Result<T, crate::Error> {
        if self.jobs.send(job).await.is_err() {
            return Err(crate::Error::Spawn("the node's writer has stopped".into()));
        }
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(crate::Error::Spawn(
                "the node's writer dropped the batch".into(),
            )),
        }
    }
}

async fn run(
    store: StorePool,
    metrics: Arc<Metrics>,
    max_messages: usize,
    slots: Arc<Semaphore>,
    indexer: Indexer,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    faults: Arc<crate::faults::Faults>,
) {
    let mut rx = rx.lock().await;
    while let Some(first) = rx.recv().await {
        faults.check(crate::faults::Fault::Committer);
        // Wait for a free slot first: what queues meanwhile joins this
        // transaction (with one slot, this is one commit after another).
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Let every task that is ready run first (tokio defers a yielded
        // task until it has polled for I/O): under load they are sessions
        // and conversations about to queue batches, which then share this
        // commit; on an idle node nothing is ready and this costs nothing.
        for _ in 0..YIELDS_BEFORE_COMMIT {
            tokio::task::yield_now().await;
        }
        let mut size = first.messages();
        let mut bytes = first.write_bytes();
        let mut jobs = vec![first];
        while size < max_messages && bytes < MAX_COMMIT_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    size += job.messages();
                    bytes += job.write_bytes();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut appends = Vec::new();
        let mut append_replies = Vec::new();
        let mut acks = Vec::new();
        let mut ack_replies = Vec::new();
        for job in jobs {
            match job {
                Job::Append { request, reply } => {
                    appends.push(request);
                    append_replies.push(reply);
                }
                Job::Acks { batch, reply } => {
                    acks.push(batch);
                    ack_replies.push(reply);
                }
            }
        }
        let store = store.clone();
        let metrics = metrics.clone();
        let indexer = indexer.clone();
        tokio::spawn(async move {
            commit_and_answer(
                &store,
                &metrics,
                &indexer,
                (appends, append_replies),
                (acks, ack_replies),
            )
            .await;
            drop(slot);
        });
    }
}

/// Replies awaited by the conversations whose jobs a transaction carries.
type Replies<T> = Vec<oneshot::Sender<T>>;

/// Runs one group commit and answers every job it carried.
async fn commit_and_answer(
    store: &StorePool,
    metrics: &Metrics,
    indexer: &Indexer,
    (appends, append_replies): (Vec<AppendRequest>, Replies<BatchResult>),
    (acks, ack_replies): (Vec<AckBatch>, Replies<storage::Result<AckResults>>),
) {
    let convs: Vec<_> = appends.iter().map(|r| r.conv_id).collect();
    let started = Instant::now();
    let results = store.run(move |store| commit(store, appends, acks)).await;
    metrics.commit_batches.inc();
    let took = started.elapsed();
    metrics.commit_seconds.observe(took.as_secs_f64());
    metrics
        .commit_micros
        .inc_by(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    match results {
        Ok((appended, acked)) => {
            // What the index follower has to catch up with.
            indexer.mark(convs.into_iter().zip(&appended).filter_map(|(c, r)| {
                let new = r.iter().flatten().flatten();
                let seqs = new.into_iter().filter_map(|o| match o {
                    AppendOutcome::Appended(m) => Some(m.seq),
                    AppendOutcome::Duplicate(_) => None,
                });
                let (rows, up_to) = seqs.fold((0, 0), |(n, top), seq| (n + 1, seq.max(top)));
                (rows > 0).then_some((c, up_to, rows))
            }));
            for (reply, result) in append_replies.into_iter().zip(appended) {
                let _ = reply.send(result);
            }
            for (reply, result) in ack_replies.into_iter().zip(acked) {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "the writer's storage task failed");
            // The replies are dropped: each actor reports the failure.
        }
    }
}

/// One transaction for all; on an engine failure, one per request.
fn commit(
    store: &ChatStore,
    appends: Vec<AppendRequest>,
    acks: Vec<AckBatch>,
) -> (Vec<BatchResult>, Vec<storage::Result<AckResults>>) {
    if appends.len() + acks.len() > 1 {
        match store.commit_group(&appends, &acks) {
            Ok((appended, acked)) => return (appended, acked.into_iter().map(Ok).collect()),
            Err(e) => tracing::warn!(error = %e, "group commit failed; committing one by one"),
        }
    }
    // One request at a time, appends still through `append_many`: it also
    // writes the request's push outbox rows.
    let appended = appends
        .iter()
        .map(|r| match store.append_many(std::slice::from_ref(r)) {
            Ok(mut results) => results.pop().unwrap_or_else(|| Ok(Vec::new())),
            Err(e) => Err(e),
        })
        .collect();
    let acked = acks
        .iter()
        .map(|b| store.ack_all(b.conv_id, &b.acks))
        .collect();
    (appended, acked)
}
