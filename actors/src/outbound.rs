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

use bytes::Bytes;
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

/// A frame's JSON text, encoded once and shared by every socket it goes
/// to: cloning it is a reference count, not a copy. Built only from
/// strings, so it is always UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SharedText(Bytes);

impl SharedText {
    /// The text's bytes (UTF-8).
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text as a `str`.
    pub fn as_str(&self) -> &str {
        // Only ever built from `String`/`&str` (or checked bytes).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl From<String> for SharedText {
    fn from(text: String) -> Self {
        Self(Bytes::from(text))
    }
}

impl From<&str> for SharedText {
    fn from(text: &str) -> Self {
        Self(Bytes::copy_from_slice(text.as_bytes()))
    }
}

/// Carried in a [`crate::session::SessionMsg`], which must be encodable
/// for the cluster; it never crosses nodes in practice (peers get frames
/// through the host actor), and bytes that are not UTF-8 decode as empty.
impl ractor::BytesConvertable for SharedText {
    fn into_bytes(self) -> Vec<u8> {
        self.0.to_vec()
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(text) => text.into(),
            Err(_) => Self::default(),
        }
    }
}

/// A frame on its way to the socket with its share of the byte budget,
/// released once the writer is done with it.
#[derive(Debug)]
pub struct Queued {
    /// The JSON text.
    pub text: SharedText,
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
    fn cost(&self, text: &SharedText) -> u32 {
        text.len()
            .clamp(1, self.max_bytes)
            .try_into()
            .unwrap_or(u32::MAX)
    }

    /// Queues a frame now, or fails when the budget is spent.
    pub fn try_push(&self, text: impl Into<SharedText>) -> Result<(), QueueError> {
        let text = text.into();
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
    pub async fn push(
        &self,
        text: impl Into<SharedText>,
        patience: Duration,
    ) -> Result<(), QueueError> {
        let text = text.into();
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
        out.try_push("12345").expect("fits");
        out.try_push("1234").expect("fits");
        assert_eq!(out.try_push("12"), Err(QueueError::Full));
        assert_eq!(out.queued_bytes(), 9);
        let first = rx.recv().await.expect("queued");
        assert_eq!(first.text.as_str(), "12345");
        drop(first);
        out.try_push("12").expect("room again");
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
        out.try_push("a").expect("1");
        out.try_push("b").expect("2");
        assert_eq!(out.try_push("c"), Err(QueueError::Full));
    }
}
