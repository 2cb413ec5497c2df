//! A session's outbound queue: frames waiting for the socket, bounded in
//! frames *and* bytes.
//!
//! A client that does not read must not make the server hold more than a
//! fixed amount for it. Each queued frame holds permits of a per-connection
//! byte budget until the writer has put it on the socket. Live traffic that
//! finds the budget spent means the client reads too slowly (it is cut
//! off); a sync waits for room, for a bounded time, so it is paced by the
//! client's reading instead of piling up in memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The byte or frame budget is spent: the client reads too slowly.
    #[error("outbound queue full")]
    Full,
    /// The socket is gone.
    #[error("socket closed")]
    Closed,
}

/// A frame on its way to the socket with its share of the byte budget,
/// released once the writer is done with it.
#[derive(Debug)]
pub struct Queued {
    /// The JSON text.
    pub text: String,
    _budget: OwnedSemaphorePermit,
}

/// The sending side, shared by the session actor and the connection.
#[derive(Debug, Clone)]
pub struct Outbound {
    tx: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
    max_bytes: usize,
}

/// Creates a queue of at most `max_frames` frames and `max_bytes` bytes.
pub fn channel(max_frames: usize, max_bytes: usize) -> (Outbound, mpsc::Receiver<Queued>) {
    let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let (tx, rx) = mpsc::channel(max_frames.max(1));
    let budget = Arc::new(Semaphore::new(max_bytes));
    (
        Outbound {
            tx,
            budget,
            max_bytes,
        },
        rx,
    )
}

impl Outbound {
    /// What a frame costs: its length, and a frame larger than the whole
    /// budget takes all of it (it still goes, alone).
    fn cost(&self, text: &str) -> u32 {
        text.len()
            .clamp(1, self.max_bytes)
            .try_into()
            .unwrap_or(u32::MAX)
    }

    /// Queues a frame now, or fails when the budget is spent.
    pub fn try_push(&self, text: String) -> Result<(), QueueError> {
        let permit = match self.budget.clone().try_acquire_many_owned(self.cost(&text)) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(QueueError::Full),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(QueueError::Closed),
        };
        self.tx
            .try_send(Queued {
                text,
                _budget: permit,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => QueueError::Full,
                mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
            })
    }

    /// Queues a frame, waiting up to `patience` for the client to read
    /// enough to make room.
    pub async fn push(&self, text: String, patience: Duration) -> Result<(), QueueError> {
        let cost = self.cost(&text);
        let queued = tokio::time::timeout(patience, async {
            let permit = self
                .budget
                .clone()
                .acquire_many_owned(cost)
                .await
                .map_err(|_| QueueError::Closed)?;
            self.tx
                .send(Queued {
                    text,
                    _budget: permit,
                })
                .await
                .map_err(|_| QueueError::Closed)
        })
        .await;
        queued.unwrap_or(Err(QueueError::Full))
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.max_bytes - self.budget.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_bound_the_queue_and_come_back_when_written() {
        let (out, mut rx) = channel(100, 10);
        out.try_push("12345".into()).expect("fits");
        out.try_push("1234".into()).expect("fits");
        assert_eq!(out.try_push("12".into()), Err(QueueError::Full));
        assert_eq!(out.queued_bytes(), 9);
        let first = rx.recv().await.expect("queued");
        assert_eq!(first.text, "12345");
        drop(first);
        out.try_push("12".into()).expect("room again");
        // A frame larger than the budget waits for all of it.
        assert_eq!(
            out.push("x".repeat(50), Duration::from_millis(20)).await,
            Err(QueueError::Full)
        );
        while rx.try_recv().is_ok() {}
        out.push("x".repeat(50), Duration::from_millis(20))
            .await
            .expect("alone it goes");
    }

    #[tokio::test]
    async fn frames_bound_the_queue_too() {
        let (out, _rx) = channel(2, 1000);
        out.try_push("a".into()).expect("1");
        out.try_push("b".into()).expect("2");
        assert_eq!(out.try_push("c".into()), Err(QueueError::Full));
    }
}
