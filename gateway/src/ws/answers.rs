//! Sends awaiting their answer, so that none is left hanging.
//!
//! A send travels to its conversation's actor, perhaps on another node,
//! and the answer (`sent` or `error`) travels back. A peer that hangs, a
//! cut link or a lost store can swallow either way. The reader notes every
//! send it routes; the writer strikes it off when its answer goes out; and
//! what is still waiting after the answer timeout is answered `unavailable`
//! by the reader ("no answer in time: resend with the same client_msg_id").
//! The real answer may still come after it: both are true (the outcome was
//! unknown), and a resend gets the original seq.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Deserialize;

/// Sends tracked at once per connection: the send budget (20/s, burst 40)
/// keeps an honest client far below it over a 10 s timeout. Past it the
/// oldest is forgotten (and left to the client's own timer).
const MAX_TRACKED: usize = 512;

/// One send without an answer yet.
#[derive(Debug)]
struct Waiting {
    client_msg_id: String,
    reference: String,
    deadline: Instant,
    /// The peer the send went to, if it left this node.
    via: Option<String>,
}

/// The connection's sends awaiting an answer, oldest first (every send gets
/// the same timeout, so the oldest has the earliest deadline).
#[derive(Debug, Default)]
pub(crate) struct Unanswered {
    waiting: Mutex<VecDeque<Waiting>>,
    /// The queue's length, read without the lock by the writer: most
    /// frames it writes are not answers, or nothing waits.
    len: AtomicUsize,
}

/// The fields of a `sent` or `error` frame that name the send.
#[derive(Deserialize)]
struct Answer {
    client_msg_id: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

impl Unanswered {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a send about to be routed, answered in frames by
    /// `client_msg_id` (`sent`) or `reference` (`error`), due by
    /// `deadline`.
    pub(crate) fn expect(&self, client_msg_id: &str, reference: &str, deadline: Instant) {
        let mut waiting = self.lock();
        if waiting.len() >= MAX_TRACKED {
            waiting.pop_front();
        }
        waiting.push_back(Waiting {
            client_msg_id: client_msg_id.to_owned(),
            reference: reference.to_owned(),
            deadline,
            via: None,
        });
        self.len.store(waiting.len(), Ordering::Relaxed);
    }

    /// Notes that the send `reference` went to the peer `via`, if it is
    /// still waiting.
    pub(crate) fn routed_via(&self, reference: &str, via: String) {
        let mut waiting = self.lock();
        if let Some(w) = waiting.iter_mut().rev().find(|w| w.reference == reference) {
            w.via = Some(via);
        }
    }

    /// Takes the sends that went to `peer` (to any peer, with `None`): a
    /// peer that stopped serving will not answer them. Their references,
    /// to answer.
    pub(crate) fn lost(&self, peer: Option<&str>) -> Vec<String> {
        let mut waiting = self.lock();
        let mut gone = Vec::new();
        waiting.retain(|w| {
            let lost = match (&w.via, peer) {
                (Some(via), Some(peer)) => via == peer,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if lost {
                gone.push(w.reference.clone());
            }
            !lost
        });
        self.len.store(waiting.len(), Ordering::Relaxed);
        gone
    }

    /// Strikes off the sends a frame about to be written answers.
    pub(crate) fn answered(&self, frame: &str) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        // Frames are serialized with their tag first.
        let sent = frame.starts_with(r#"{"type":"sent""#);
        if !sent && !frame.starts_with(r#"{"type":"error""#) {
            return;
        }
        let Ok(answer) = serde_json::from_str::<Answer>(frame) else {
            return;
        };
        let mut waiting = self.lock();
        waiting.retain(|w| {
            let named = if sent {
                answer.client_msg_id.as_deref() == Some(&w.client_msg_id)
            } else {
                answer.reference.as_deref() == Some(&w.reference)
            };
            !named
        });
        self.len.store(waiting.len(), Ordering::Relaxed);
    }

    /// When the oldest waiting send is due, if any waits.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.lock().front().map(|w| w.deadline)
    }

    /// Takes the sends due by `now`: their references, to answer.
    pub(crate) fn expired(&self, now: Instant) -> Vec<String> {
        let mut waiting = self.lock();
        let mut due = Vec::new();
        while waiting.front().is_some_and(|w| w.deadline <= now) {
            if let Some(w) = waiting.pop_front() {
                due.push(w.reference);
            }
        }
        self.len.store(waiting.len(), Ordering::Relaxed);
        due
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_answer_strikes_off_its_send_and_the_rest_expire_in_order() {
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        let u = Unanswered::default();
        u.expect("m1", "m1", later(10));
        u.expect("m2", "r2", later(20));
        u.expect("m3", "m3", later(30));
        u.expect("m4", "r4", later(40));
        // A fan-out frame answers nothing; a `sent` names the client_msg_id,
        // an `error` the reference.
        u.answered(r#"{"type":"message","conv_id":1,"client_msg_id":"m1"}"#);
        u.answered(r#"{"type":"sent","client_msg_id":"m1","conv_id":1,"seq":1,"sent_at":0}"#);
        u.answered(r#"{"type":"error","code":"forbidden","message":"x","ref":"r4"}"#);
        u.answered(r#"{"type":"error","code":"forbidden","message":"x","ref":"m2"}"#);
        assert_eq!(u.next_deadline(), Some(later(20)));
        assert!(u.expired(later(19)).is_empty());
        assert_eq!(u.expired(later(35)), vec!["r2".to_owned(), "m3".to_owned()]);
        assert_eq!(u.next_deadline(), None);
    }

    #[test]
    fn the_sends_a_lost_peer_held_are_taken_at_once() {
        let later = Instant::now() + Duration::from_secs(10);
        let u = Unanswered::default();
        u.expect("m1", "m1", later);
        u.expect("m2", "m2", later);
        u.expect("m3", "m3", later);
        u.expect("m4", "m4", later);
        u.routed_via("m1", "n2".into());
        u.routed_via("m2", "n3".into());
        u.routed_via("m4", "n2".into());
        // m3 stayed on this node: no peer's loss concerns it.
        assert_eq!(u.lost(Some("n2")), vec!["m1".to_owned(), "m4".to_owned()]);
        assert!(u.lost(Some("n2")).is_empty());
        assert_eq!(u.lost(None), vec!["m2".to_owned()]);
        assert_eq!(u.expired(later), vec!["m3".to_owned()]);
    }

    #[test]
    fn past_the_bound_the_oldest_is_forgotten() {
        let t0 = Instant::now();
        let u = Unanswered::default();
        for i in 0..MAX_TRACKED + 3 {
            u.expect(&format!("m{i}"), &format!("m{i}"), t0);
        }
        let due = u.expired(t0);
        assert_eq!(due.len(), MAX_TRACKED);
        assert_eq!(due[0], "m3");
    }
}
