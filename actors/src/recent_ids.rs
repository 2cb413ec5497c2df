//! A conversation actor's window of recent `client_msg_id`s: what makes a
//! resend idempotent now that the store writes no dedup row.
//!
//! A client that lost a `sent` (its connection or the node dropped) sends
//! the same `client_msg_id` again, and must get the original seq, not a
//! second copy. The conversation's one active actor sees every append, so
//! it remembers the newest [`RECENT_IDS`] ids of its conversation and
//! answers a resend from them; a new actor (after a failover, or an idle
//! stop) starts from the same ids read back from the log's tail
//! ([`ChatStore::recent_ids`](storage::chat::ChatStore::recent_ids)). A
//! resend older than the window is stored as a new message: clients resend
//! within seconds or minutes, well inside it.
//!
//! Memory: at most [`RECENT_IDS`] entries per running conversation, each
//! a user id, a seq and an id of at most `max_client_msg_id_bytes`.

use std::collections::{HashMap, VecDeque};

use storage::chat::{Seq, UserId};

/// Ids remembered per conversation, and read back from its log when its
/// actor starts.
pub const RECENT_IDS: usize = 1024;

/// The newest ids of one conversation, each with its seq.
#[derive(Debug, Default)]
pub struct RecentIds {
    by_sender: HashMap<UserId, HashMap<String, Seq>>,
    /// Oldest first: what goes when the window is full.
    order: VecDeque<(UserId, String)>,
}

impl RecentIds {
    /// A window holding `ids` (oldest first), as [`RecentIds::insert`]
    /// would after each.
    pub fn from_log(ids: Vec<(UserId, String, Seq)>) -> Self {
        let mut window = Self::default();
        for (sender, id, seq) in ids {
            window.insert(sender, id, seq);
        }
        window
    }

    /// The seq of `sender`'s message `id`, if it is in the window.
    pub fn get(&self, sender: UserId, id: &str) -> Option<Seq> {
        self.by_sender.get(&sender)?.get(id).copied()
    }

    /// Remembers a committed message, forgetting the oldest beyond
    /// [`RECENT_IDS`].
    pub fn insert(&mut self, sender: UserId, id: String, seq: Seq) {
        let ids = self.by_sender.entry(sender).or_default();
        if let std::collections::hash_map::Entry::Vacant(slot) = ids.entry(id) {
            self.order.push_back((sender, slot.key().clone()));
            slot.insert(seq);
        }
        while self.order.len() > RECENT_IDS {
            let Some((old_sender, old_id)) = self.order.pop_front() else {
                break;
            };
            if let Some(ids) = self.by_sender.get_mut(&old_sender) {
                ids.remove(&old_id);
                if ids.is_empty() {
                    self.by_sender.remove(&old_sender);
                }
            }
        }
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_per_sender_and_the_oldest_go_first() {
        let mut w = RecentIds::from_log(vec![(1, "a".into(), 1), (2, "a".into(), 2)]);
        assert_eq!(
            (w.get(1, "a"), w.get(2, "a"), w.get(3, "a")),
            (Some(1), Some(2), None)
        );
        for seq in 3..3 + RECENT_IDS as u64 {
            w.insert(7, format!("m{seq}"), seq);
        }
        assert_eq!(w.len(), RECENT_IDS);
        // The two oldest made room; the newest are all there.
        assert_eq!((w.get(1, "a"), w.get(2, "a")), (None, None));
        assert_eq!(w.get(7, "m3"), Some(3));
        let last = 2 + RECENT_IDS as u64;
        assert_eq!(w.get(7, &format!("m{last}")), Some(last));
        // The same id again keeps the first seq (the answer a resend
        // gets) and one entry.
        w.insert(7, "m3".into(), 99);
        assert_eq!((w.get(7, "m3"), w.len()), (Some(3), RECENT_IDS));
    }
}
