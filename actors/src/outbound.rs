//! A session's outbound queue: frames waiting for the socket, bounded in
//! frames *and* bytes.
//!
//! A client that does not read must not make the server hold more than a
//! fixed amount for it. Each queued frame counts against a per-connection
//! byte budget until the writer has put it on the socket. Live traffic that
//! finds the budget spent means the client reads too slowly (it is cut
//! off); a sync waits for room, for a bounded time, so it is paced by the
//! client's reading instead of piling up in memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

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

/// A frame on its way to the socket. Its bytes stay counted against the
/// budget until the writer drops it, that is until the socket took it.
#[derive(Debug)]
pub struct Queued<'a> {
    /// The JSON text.
    pub text: SharedText,
    cost: usize,
    shared: &'a Shared,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.bytes -= self.cost;
        self.shared.made_room(&state);
    }
}

/// The sending side, shared by the session actor and the connection.
#[derive(Debug)]
pub struct Outbound {
    shared: Arc<Shared>,
}

/// The receiving side: the connection's writer.
#[derive(Debug)]
pub struct Frames {
    shared: Arc<Shared>,
}

/// The queue itself. A `VecDeque` behind a mutex rather than a channel: a
/// channel allocates its first block of slots up front, for every
/// connection, and most connections are idle with nothing queued.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer: a frame was queued, or the last sender left.
    queued: Notify,
    /// Wakes senders waiting for room.
    room: Notify,
    max_frames: usize,
    max_bytes: usize,
}

#[derive(Debug)]
struct State {
    frames: VecDeque<(SharedText, usize)>,
    /// Bytes queued or being written.
    bytes: usize,
    /// Live [`Outbound`] handles.
    senders: usize,
    /// Senders waiting in [`Outbound::push`].
    waiting: usize,
    /// Whether the [`Frames`] side still exists.
    receiving: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What a frame costs: its length, and a frame larger than the whole
    /// budget takes all of it (it still goes, alone).
    fn cost(&self, text: &SharedText) -> usize {
        text.len().clamp(1, self.max_bytes)
    }

    /// Queues the frame if it fits now.
    fn try_queue(
        &self,
        state: &mut State,
        text: SharedText,
    ) -> Result<(), (QueueError, SharedText)> {
        let cost = self.cost(&text);
        if !state.receiving {
            return Err((QueueError::Closed, text));
        }
        if state.frames.len() >= self.max_frames || state.bytes + cost > self.max_bytes {
            return Err((QueueError::Full, text));
        }
        state.frames.push_back((text, cost));
        state.bytes += cost;
        Ok(())
    }

    /// Wakes waiting senders after bytes or a frame slot were freed.
    fn made_room(&self, state: &State) {
        if state.waiting > 0 {
            self.room.notify_waiters();
        }
    }
}

/// Creates a queue of at most `max_frames` frames and `max_bytes` bytes.
pub fn channel(max_frames: usize, max_bytes: usize) -> (Outbound, Frames) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            frames: VecDeque::new(),
            bytes: 0,
            senders: 1,
            waiting: 0,
            receiving: true,
        }),
        queued: Notify::new(),
        room: Notify::new(),
        max_frames: max_frames.max(1),
        max_bytes: max_bytes.max(1),
    });
    (
        Outbound {
            shared: shared.clone(),
        },
        Frames { shared },
    )
}

impl Clone for Outbound {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let last = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.shared.queued.notify_one();
        }
    }
}

impl Outbound {
    /// Queues a frame now, or fails when the budget is spent.
    pub fn try_push(&self, text: impl Into<SharedText>) -> Result<(), QueueError> {
        let queued = self.shared.try_queue(&mut self.shared.lock(), text.into());
        match queued {
            Ok(()) => {
                self.shared.queued.notify_one();
                Ok(())
            }
            Err((e, _)) => Err(e),
        }
    }

    /// Queues a frame, waiting up to `patience` for the client to read
    /// enough to make room.
    pub async fn push(
        &self,
        text: impl Into<SharedText>,
        patience: Duration,
    ) -> Result<(), QueueError> {
        let mut text = text.into();
        let waited = tokio::time::timeout(patience, async {
            loop {
                // Registered before looking, so room made in between wakes it.
                let room = self.shared.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                {
                    let mut state = self.shared.lock();
                    match self.shared.try_queue(&mut state, text) {
                        Ok(()) => break Ok(()),
                        Err((QueueError::Closed, _)) => break Err(QueueError::Closed),
                        Err((QueueError::Full, back)) => {
                            text = back;
                            state.waiting += 1;
                        }
                    }
                }
                let _waiting = Waiting(&self.shared);
                room.await;
            }
        })
        .await;
        let queued = waited.unwrap_or(Err(QueueError::Full));
        if queued.is_ok() {
            self.shared.queued.notify_one();
        }
        queued
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.shared.lock().bytes
    }
}

/// A sender counted as waiting for room while this lives (also when its
/// `push` is cancelled by its timeout).
struct Waiting<'a>(&'a Shared);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

impl Frames {
    /// The next frame, waiting for one; `None` once every sender is gone
    /// and nothing is left. Cancel-safe: a frame is taken only by the poll
    /// that returns it.
    pub async fn recv(&self) -> Option<Queued<'_>> {
        loop {
            // A frame queued between the look and the wait leaves a permit.
            let queued = self.shared.queued.notified();
            {
                let mut state = self.shared.lock();
                if let Some(frame) = self.take(&mut state) {
                    return Some(frame);
                }
                if state.senders == 0 {
                    return None;
                }
            }
            queued.await;
        }
    }

    /// The next frame if one is queued.
    pub fn try_recv(&self) -> Option<Queued<'_>> {
        self.take(&mut self.shared.lock())
    }

    fn take(&self, state: &mut State) -> Option<Queued<'_>> {
        let (text, cost) = state.frames.pop_front()?;
        self.shared.made_room(state);
        Some(Queued {
            text,
            cost,
            shared: &self.shared,
        })
    }
}

impl Drop for Frames {
    /// The socket is gone: senders get [`QueueError::Closed`], waiting ones
    /// too, and what was queued is dropped.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiving = false;
        state.frames.clear();
        state.bytes = 0;
        if state.waiting > 0 {
            self.shared.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_bound_the_queue_and_come_back_when_written() {
        let (out, rx) = channel(100, 10);
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
        while rx.try_recv().is_some() {}
        out.push("x".repeat(50), Duration::from_millis(20))
            .await
            .expect("alone it goes");
    }

    #[tokio::test]
    async fn a_waiting_push_goes_once_the_writer_took_enough() {
        let (out, rx) = channel(100, 10);
        out.try_push("1234567890").expect("fits");
        let waiting = tokio::spawn({
            let out = out.clone();
            async move { out.push("abc", Duration::from_secs(10)).await }
        });
        // Taken off the queue is not enough: the bytes count until the
        // socket took them (the frame is dropped).
        let first = rx.recv().await.expect("queued");
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        let pushed = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the room made")
            .expect("no panic");
        assert_eq!(pushed, Ok(()));
        assert_eq!(rx.recv().await.expect("second").text.as_str(), "abc");
        assert_eq!(out.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn senders_learn_the_socket_is_gone_and_the_writer_that_they_are() {
        let (out, rx) = channel(100, 4);
        out.try_push("1234").expect("fits");
        let waiting = tokio::spawn({
            let out = out.clone();
            async move { out.push("5", Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        drop(rx);
        let pushed = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken when the socket went")
            .expect("no panic");
        assert_eq!(pushed, Err(QueueError::Closed));
        assert_eq!(out.try_push("x"), Err(QueueError::Closed));

        let (out, rx) = channel(100, 100);
        out.try_push("last words").expect("fits");
        let clone = out.clone();
        drop(out);
        drop(clone);
        assert_eq!(
            rx.recv().await.expect("still delivered").text.as_str(),
            "last words"
        );
        assert!(rx.recv().await.is_none(), "no sender left");
    }

    #[tokio::test]
    async fn a_push_waiting_for_a_frame_slot_goes_once_one_is_taken() {
        let (out, rx) = channel(1, 1000);
        out.try_push("a").expect("fits");
        let waiting = tokio::spawn({
            let out = out.clone();
            async move { out.push("b", Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // Taking the frame frees its slot, though its bytes still count.
        let first = rx.recv().await.expect("queued");
        let pushed = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the slot freed")
            .expect("no panic");
        assert_eq!(pushed, Ok(()));
        assert_eq!(out.queued_bytes(), 2);
        drop(first);
        assert_eq!(rx.recv().await.expect("second").text.as_str(), "b");
    }

    #[tokio::test]
    async fn frames_bound_the_queue_too() {
        let (out, _rx) = channel(2, 1000);
        out.try_push("a").expect("1");
        out.try_push("b").expect("2");
        assert_eq!(out.try_push("c"), Err(QueueError::Full));
    }
}
