//! The delivery contract, checked live from what the simulated users see:
//! every acknowledged message reaches every member, once per (conv, seq)
//! identity, in order, and how long conversations went without service.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// An acknowledged message not received by every member after this long
/// counts as lost (until it arrives).
pub const LOST_AFTER: Duration = Duration::from_secs(10);

/// Entries delivered to everyone are forgotten after this long, bounding
/// memory; re-deliveries are checked against what is remembered.
const FORGET_AFTER: Duration = Duration::from_secs(120);

/// The counters, as the lab API and page show them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Distinct (conv_id, seq) acknowledged to senders.
    pub acked: u64,
    /// Acknowledged more than 10 s ago and not yet received by every member.
    pub lost: u64,
    /// Acknowledged less than 10 s ago and not yet received by every member.
    pub pending_delivery: u64,
    /// One client_msg_id acknowledged at two seqs, or one (conv_id, seq)
    /// delivered with two different senders or client_msg_ids.
    pub duplicated: u64,
    /// A new seq received below the highest one the client already had.
    pub out_of_order: u64,
    /// The longest a send waited from its first attempt to its `sent`.
    pub max_unavailable_ms: u64,
    /// The same per conversation (`conv_id` → ms).
    pub max_unavailable_ms_by_conv: BTreeMap<u64, u64>,
    /// Messages the generator created (each sent until acknowledged).
    pub messages_sent: u64,
    /// Connections re-established after a close, an error or a hung node.
    pub reconnects: u64,
    /// Sends waiting for their `sent` right now.
    pub unacked_sends: u64,
}

struct Entry {
    sender: u64,
    client_msg_id: String,
    acked_at: Option<Instant>,
    received_by: HashSet<usize>,
    complete_at: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    counters: Counters,
    /// conv_id → member client indexes.
    members: HashMap<u64, Vec<usize>>,
    entries: HashMap<(u64, u64), Entry>,
    /// client_msg_id → (conv_id, seq) acknowledged.
    acks: HashMap<String, (u64, u64)>,
    /// (client, conv_id) → highest seq received.
    highest: HashMap<(usize, u64), u64>,
    /// (client, conv_id) → seqs received (to tell new from re-delivered).
    seen: HashMap<(usize, u64), HashSet<u64>>,
}

/// The live invariant state, shared by the simulated users.
#[derive(Default)]
pub struct Invariants {
    inner: Mutex<Inner>,
}

impl Invariants {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Declares the members (client indexes) of a conversation.
    pub fn set_members(&self, conv_id: u64, members: Vec<usize>) {
        self.lock().members.insert(conv_id, members);
    }

    /// A new message was created by the generator.
    pub fn on_created(&self) {
        self.lock().counters.messages_sent += 1;
    }

    /// A reconnect happened.
    pub fn on_reconnect(&self) {
        self.lock().counters.reconnects += 1;
    }

    /// A `sent` frame: `client_msg_id` of `sender` is `(conv_id, seq)`,
    /// after `waited` since its first attempt.
    pub fn on_sent(
        &self,
        sender: u64,
        client_msg_id: &str,
        conv_id: u64,
        seq: u64,
        waited: Duration,
    ) {
        let mut g = self.lock();
        let inner = &mut *g;
        match inner.acks.get(client_msg_id) {
            Some(&(c, s)) if (c, s) != (conv_id, seq) => inner.counters.duplicated += 1,
            Some(_) => {}
            None => {
                inner.acks.insert(client_msg_id.to_owned(), (conv_id, seq));
            }
        }
        let waited_ms = waited.as_millis() as u64;
        let c = &mut inner.counters;
        c.max_unavailable_ms = c.max_unavailable_ms.max(waited_ms);
        let per = c.max_unavailable_ms_by_conv.entry(conv_id).or_insert(0);
        *per = (*per).max(waited_ms);
        let entry = Self::entry(
            &mut inner.entries,
            &mut inner.counters,
            conv_id,
            seq,
            sender,
            client_msg_id,
        );
        if entry.acked_at.is_none() {
            entry.acked_at = Some(Instant::now());
            inner.counters.acked += 1;
            Self::check_complete(&inner.members, conv_id, entry);
        }
    }

    /// A `message` frame received by client `client`.
    pub fn on_message(
        &self,
        client: usize,
        conv_id: u64,
        seq: u64,
        sender: u64,
        client_msg_id: &str,
    ) {
        let mut g = self.lock();
        let inner = &mut *g;
        let new = inner.seen.entry((client, conv_id)).or_default().insert(seq);
        if new {
            let highest = inner.highest.entry((client, conv_id)).or_insert(0);
            if seq < *highest {
                inner.counters.out_of_order += 1;
            }
            *highest = (*highest).max(seq);
        }
        let entry = Self::entry(
            &mut inner.entries,
            &mut inner.counters,
            conv_id,
            seq,
            sender,
            client_msg_id,
        );
        entry.received_by.insert(client);
        Self::check_complete(&inner.members, conv_id, entry);
    }

    /// The message at (`conv_id`, `seq`), first seen now or before; seen
    /// with another sender or client message id, it counts a duplicate
    /// (two messages at one seq).
    fn entry<'a>(
        entries: &'a mut HashMap<(u64, u64), Entry>,
        counters: &mut Counters,
        conv_id: u64,
        seq: u64,
        sender: u64,
        client_msg_id: &str,
    ) -> &'a mut Entry {
        let entry = entries.entry((conv_id, seq)).or_insert_with(|| Entry {
            sender,
            client_msg_id: client_msg_id.to_owned(),
            acked_at: None,
            received_by: HashSet::new(),
            complete_at: None,
        });
        if entry.sender != sender || entry.client_msg_id != client_msg_id {
            counters.duplicated += 1;
        }
        entry
    }

    fn check_complete(members: &HashMap<u64, Vec<usize>>, conv_id: u64, entry: &mut Entry) {
        if entry.complete_at.is_some() || entry.acked_at.is_none() {
            return;
        }
        let all = members
            .get(&conv_id)
            .is_some_and(|m| m.iter().all(|c| entry.received_by.contains(c)));
        if all {
            entry.complete_at = Some(Instant::now());
        }
    }

    /// The counters now (lost and pending recomputed), forgetting old
    /// completed entries. `unacked_sends` is the clients' pending sends.
    pub fn snapshot(&self, unacked_sends: u64) -> Counters {
        let mut g = self.lock();
        let inner = &mut *g;
        let now = Instant::now();
        let (mut lost, mut pending) = (0, 0);
        for entry in inner.entries.values() {
            if let (Some(acked), None) = (entry.acked_at, entry.complete_at) {
                if now.duration_since(acked) > LOST_AFTER {
                    lost += 1;
                } else {
                    pending += 1;
                }
            }
        }
        let before = inner.entries.len();
        inner.entries.retain(|_, e| {
            e.complete_at
                .is_none_or(|t| now.duration_since(t) < FORGET_AFTER)
        });
        if inner.entries.len() != before {
            let live: HashSet<&str> = inner
                .entries
                .values()
                .map(|e| e.client_msg_id.as_str())
                .collect();
            inner.acks.retain(|k, _| live.contains(k.as_str()));
            for ((_, conv), seqs) in inner.seen.iter_mut() {
                let conv = *conv;
                let entries = &inner.entries;
                seqs.retain(|s| entries.contains_key(&(conv, *s)));
            }
        }
        inner.counters.lost = lost;
        inner.counters.pending_delivery = pending;
        inner.counters.unacked_sends = unacked_sends;
        inner.counters.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_acks_deliveries_duplicates_and_disorder() {
        let inv = Invariants::default();
        inv.set_members(1, vec![0, 1]);
        inv.on_sent(10, "a", 1, 1, Duration::from_millis(5));
        inv.on_message(0, 1, 1, 10, "a");
        let c = inv.snapshot(0);
        assert_eq!((c.acked, c.pending_delivery, c.lost), (1, 1, 0));
        inv.on_message(1, 1, 1, 10, "a");
        inv.on_message(1, 1, 1, 10, "a");
        let c = inv.snapshot(0);
        assert_eq!((c.acked, c.pending_delivery, c.duplicated), (1, 0, 0));
        inv.on_message(0, 1, 3, 10, "c");
        inv.on_message(0, 1, 2, 10, "b");
        inv.on_sent(10, "a", 1, 4, Duration::from_millis(50));
        let c = inv.snapshot(0);
        assert_eq!(
            (c.out_of_order, c.duplicated, c.max_unavailable_ms),
            (1, 1, 50)
        );
    }
}
