//! The server's decision to close one socket, shared by the parts of a
//! connection that may take it (its session actor and its reader) and
//! awaited by the one that carries it out (its writer).
//!
//! It is set at most once: the first reason wins, later ones are ignored.
//! It is a flag and a wake-up, not a channel: a channel's first block of
//! slots would be allocated for every idle connection for a word said at
//! most once in its life.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// Why the server closes a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The WebSocket close code.
    pub code: u16,
    /// Human-readable reason (at most 123 bytes on the wire).
    pub reason: String,
}

/// One connection's close decision; clones share it.
#[derive(Debug, Clone, Default)]
pub struct CloseSignal(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    reason: Mutex<Option<CloseReason>>,
    decided: Notify,
}

impl CloseSignal {
    /// A signal nobody has set yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides to close with `reason`, unless a reason was given before.
    /// Returns whether this call decided it.
    pub fn close(&self, reason: CloseReason) -> bool {
        {
            let mut slot = self.0.reason.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_some() {
                return false;
            }
            *slot = Some(reason);
        }
        // One waiter (the writer); a permit is kept if it is not waiting yet.
        self.0.decided.notify_one();
        true
    }

    /// The reason, once one was given.
    pub fn reason(&self) -> Option<CloseReason> {
        self.0
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits for the decision. Cancel-safe: the reason stays set, so a
    /// `select!` that drops this future and calls it again still sees it.
    pub async fn closed(&self) -> CloseReason {
        loop {
            let decided = self.0.decided.notified();
            if let Some(reason) = self.reason() {
                return reason;
            }
            decided.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn reason(code: u16) -> CloseReason {
        CloseReason {
            code,
            reason: format!("code {code}"),
        }
    }

    #[tokio::test]
    async fn the_first_reason_wins_and_wakes_the_waiter() {
        let signal = CloseSignal::new();
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.closed().await }
        });
        tokio::task::yield_now().await;
        assert!(signal.clone().close(reason(1008)));
        assert!(!signal.close(reason(1012)));
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
        assert_eq!(got, reason(1008));
        // Asked again (a select! loop), it answers at once.
        assert_eq!(signal.closed().await, reason(1008));
    }

    #[tokio::test]
    async fn a_reason_given_before_anyone_waits_is_not_lost() {
        let signal = CloseSignal::new();
        assert_eq!(signal.reason(), None);
        signal.close(reason(1001));
        let got = tokio::time::timeout(Duration::from_secs(5), signal.closed())
            .await
            .expect("answered at once");
        assert_eq!(got.code, 1001);
    }
}
