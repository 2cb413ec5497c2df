//! Every key family of the store, in one place.
//!
//! Keys are FoundationDB tuples under the root `("parley", family, ...)`, so
//! they sort the same on every backend and one family is one contiguous
//! range. Values are serde types from [`crate::chat::model`] encoded with
//! bincode 2. Changing a key layout or a value type in an incompatible way
//! means bumping [`SCHEMA_VERSION`]; a store written by another version is
//! refused at open ([`crate::chat::ChatStore::open`]).
//!
//! | family | key | value |
//! |---|---|---|
//! | `meta` | (name) | `u32`/`u64` (schema version, id counters) |
//! | `user` | (user_id) | [`User`](crate::chat::model::User) |
//! | `user_by_name` | (lowercase name) | `u64` user id |
//! | `user_by_phone` | (phone) | `u64` user id |
//! | `token` | (sha256 of token) | [`TokenRecord`](crate::chat::model::TokenRecord) |
//! | `conv` | (conv_id) | [`Conversation`](crate::chat::model::Conversation) |
//! | `dm` | (low user_id, high user_id) | `u64` conv id |
//! | `member` | (conv_id, user_id) | [`Member`](crate::chat::model::Member) |
//! | `member_log` | (conv_id, version) | [`MemberEvent`](crate::chat::model::MemberEvent) |
//! | `user_conv` | (user_id, conv_id) | [`UserConv`](crate::chat::model::UserConv) |
//! | `conv_meta` | (conv_id) | [`ConvMeta`](crate::chat::model::ConvMeta) |
//! | `msg` | (conv_id, seq) | [`Message`](crate::chat::model::Message) |
//! | `msg_dedup` | (conv_id, sender, client_msg_id) | `u64` seq (schema 3 and before; cleared by the migration to 4) |
//! | `receipt` | (conv_id, user_id) | [`Receipt`](crate::chat::model::Receipt) |
//! | `push_sub` | (user_id, sub_id) | [`PushSubscription`](crate::chat::model::PushSubscription) |
//! | `push_vapid` | () | [`VapidKey`](crate::chat::model::VapidKey) |
//! | `push_outbox` | (conv_id, seq) | [`PushOwed`](crate::chat::model::PushOwed) |
//! | `last_seen` | (user_id) | `u64` unix millis |
//! | `node_lease` | (node name) | [`NodeLease`](crate::chat::model::NodeLease) |
//! | `device` | (user_id, device key) | [`Device`](crate::chat::model::Device) |
//! | `device_cursor` | (user_id, device key, conv_id) | `u64` seq: the device has every message up to it |
//! | `own_unseen` | (conv_id, user_id, seq) | `()`: the member's own message above their seen watermark |
//! | `user_by_skeleton` | (UTS #39 skeleton of the name) | `u64` user id |
//! | `block` | (blocker user_id, blocked user_id) | `u64` unix millis (when) |
//! | `msg_version` | (conv_id, target seq, edit seq) | [`MessageVersion`](crate::chat::model::MessageVersion): the text the edit replaced |
//! | `msg_event` | (conv_id, seq) | `()`: the seq is an event (edit, delete, reaction) or a deleted message: never unread |
//! | `reaction` | (conv_id, target seq, user_id, emoji) | `u64` unix millis (when) |
//! | `mention` | (user_id, conv_id, seq) | `()`: the message mentions the user |
//! | `mute` | (user_id, conv_id) | [`Mute`](crate::chat::model::Mute) |
//! | `search` | (conv_id, token, sent_at, seq) | `()`: inverted index of text messages |
//! | `search_cursor` | (conv_id) | `u64` seq: every message up to it is in `search` (or needs no row) |
//!
//! Schema 3 added the message kinds (edit, delete, reaction events),
//! replies, mentions and tombstones to [`Message`](crate::chat::model::Message)
//! and the six families above; a schema-2 store is migrated at open
//! ([`crate::chat::migrate`]).
//!
//! Schema 4 builds the search index after the commit instead of in the
//! message's own transaction: `search_cursor` says how far the follower
//! ([`crate::chat::ChatStore::index_pending`]) got. A schema-3 store indexed
//! every message in its transaction, so migrating sets each conversation's
//! cursor to the last seq of its log. Schema 4 also stops writing
//! `msg_dedup` rows: a message is one append.
//!
//! `user_by_skeleton` was added without a version bump: a store that lacks
//! it is indexed once at open (marker [`meta::SKELETONS_INDEXED`]).

use foundationdb_tuple::{Subspace, TuplePack};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 4;

/// The tuple element every Parley key starts with.
const ROOT: &str = "parley";

/// One key family: a named subspace.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The family's name, also its second tuple element.
    pub name: &'static str,
}

impl Family {
    fn subspace(&self) -> Subspace {
        Subspace::from(&(ROOT, self.name))
    }

    /// The key of `t` in this family.
    pub fn key<T: TuplePack>(&self, t: &T) -> Vec<u8> {
        self.subspace().pack(t)
    }

    /// The range holding every key of this family that starts with `prefix`.
    pub fn range<T: TuplePack>(&self, prefix: &T) -> (Vec<u8>, Vec<u8>) {
        self.subspace().subspace(prefix).range()
    }

    /// The whole family.
    pub fn all(&self) -> (Vec<u8>, Vec<u8>) {
        self.subspace().range()
    }

    /// Decodes a key of this family back into its tuple.
    pub fn unpack<'de, T: foundationdb_tuple::TupleUnpack<'de>>(
        &self,
        key: &'de [u8],
    ) -> crate::Result<T> {
        self.subspace()
            .unpack(key)
            .map_err(|e| crate::Error::Corrupt {
                family: self.name,
                reason: format!("bad key: {e}"),
            })
    }

    /// The range of keys whose first element is a string starting with
    /// `prefix` (used for name search). A packed string is `0x02`, its bytes,
    /// `0x00`; every string with the prefix therefore sorts between the
    /// prefix's bytes and the prefix's bytes followed by `0xff`.
    pub fn string_prefix_range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let mut begin = self.subspace().bytes().to_vec();
        begin.push(0x02);
        for b in prefix.bytes() {
            begin.push(b);
            if b == 0 {
                begin.push(0xff);
            }
        }
        let mut end = begin.clone();
        end.push(0xff);
        (begin, end)
    }
}

macro_rules! families {
    ($($(#[$doc:meta])* $const:ident = $name:literal;)*) => {
        $( $(#[$doc])* pub const $const: Family = Family { name: $name }; )*
        /// Every family, for tools that walk the whole schema.
        pub const ALL: &[Family] = &[$($const),*];
    };
}

families! {
    /// Store-wide metadata: schema version and id counters.
    META = "meta";
    /// Users by id.
    USER = "user";
    /// Lowercased user name to user id: uniqueness and prefix search.
    USER_BY_NAME = "user_by_name";
    /// Phone number to user id: uniqueness.
    USER_BY_PHONE = "user_by_phone";
    /// Login tokens by the SHA-256 of the token (the token itself is never stored).
    TOKEN = "token";
    /// Conversations (direct and group) by id.
    CONV = "conv";
    /// The direct chat of a pair of users, keyed (low id, high id).
    DM = "dm";
    /// Current membership of a conversation, one row per user ever added.
    MEMBER = "member";
    /// Membership history: every join, leave and removal, by version.
    MEMBER_LOG = "member_log";
    /// A user's conversations: the chat list index.
    USER_CONV = "user_conv";
    /// Per-conversation sequencing and fencing state.
    CONV_META = "conv_meta";
    /// Messages by (conversation, sequence number).
    MSG = "msg";
    /// Schema 3's idempotency index: (conversation, sender, client message
    /// id) to seq. No longer written (a message is one append; conversation
    /// actors catch resends from a window of recent ids rebuilt from the
    /// log); the migration to schema 4 clears it.
    MSG_DEDUP = "msg_dedup";
    /// Delivered and seen watermarks of each member.
    RECEIPT = "receipt";
    /// Push subscriptions of each user.
    PUSH_SUB = "push_sub";
    /// The cluster's one VAPID key pair, created by the first node that needs it.
    PUSH_VAPID = "push_vapid";
    /// Pushes owed for committed messages, until a node takes them over.
    PUSH_OUTBOX = "push_outbox";
    /// When each user was last seen online.
    LAST_SEEN = "last_seen";
    /// Cluster membership leases, by node name.
    NODE_LEASE = "node_lease";
    /// A user's devices (client installations), by device key.
    DEVICE = "device";
    /// How far each device of a user has acknowledged each conversation:
    /// where its next sync starts.
    DEVICE_CURSOR = "device_cursor";
    /// A member's own messages sent while they had not seen everything
    /// before them: subtracted from their unread count, never counted as
    /// seen.
    OWN_UNSEEN = "own_unseen";
    /// Confusable skeleton of each user name to the user id: refuses
    /// look-alike names (see [`crate::chat::names`]).
    USER_BY_SKELETON = "user_by_skeleton";
    /// Who blocked whom: (blocker, blocked) to when.
    BLOCK = "block";
    /// Earlier texts of edited messages: the edit history, erased with
    /// the message.
    MSG_VERSION = "msg_version";
    /// Seqs that are events (edits, deletions, reactions) or deleted
    /// messages: subtracted from unread counts.
    MSG_EVENT = "msg_event";
    /// Reactions: one row per (message, member, emoji), so a member holds
    /// each emoji at most once and their own count is one prefix range.
    REACTION = "reaction";
    /// Messages that mention a user: the chat list's mention badge.
    MENTION = "mention";
    /// Muted conversations of each user.
    MUTE = "mute";
    /// Full-text index: each word of each text message, per conversation,
    /// newest last, written after the commit by the index follower (up to
    /// [`SEARCH_CURSOR`]); edits and deletions of indexed messages update
    /// it in their own transaction.
    SEARCH = "search";
    /// How far the search index follower got in each conversation: every
    /// message at or below this seq is indexed. Searches scan the log
    /// above it directly, so a message is findable once committed.
    SEARCH_CURSOR = "search_cursor";
}

/// Names of the counters and markers in [`META`].
pub mod meta {
    /// The schema version the store was created with.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// The last user id handed out: `(name,)` holds it as a `u64` where
    /// ids come from one counter (SQLite); `(name, shard)` holds each
    /// shard's last `n` where they are spread (`chat::next_id`).
    pub const LAST_USER_ID: &str = "last_user_id";
    /// The last conversation id handed out (same layout as
    /// [`LAST_USER_ID`]).
    pub const LAST_CONV_ID: &str = "last_conv_id";
    /// Set once every existing user has a `user_by_skeleton` row.
    pub const SKELETONS_INDEXED: &str = "skeletons_indexed";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_disjoint_and_ordered_by_tuple() {
        let a = MSG.key(&(7u64, 1u64));
        let b = MSG.key(&(7u64, 2u64));
        let c = MSG.key(&(7u64, 300u64));
        assert!(a < b && b < c);
        let (begin, end) = MSG.range(&(7u64,));
        assert!(a >= begin && c < end);
        let other = MSG.key(&(8u64, 0u64));
        assert!(other >= end);
        let (ub, ue) = USER.all();
        assert!(!(a >= ub && a < ue));
    }

    #[test]
    fn string_prefix_range_covers_exactly_the_prefix() {
        let (b, e) = USER_BY_NAME.string_prefix_range("al");
        for name in ["al", "alice", "alz", "al\u{0}x"] {
            let k = USER_BY_NAME.key(&(name,));
            assert!(k >= b && k < e, "{name}");
        }
        for name in ["a", "ak", "am", "bob"] {
            let k = USER_BY_NAME.key(&(name,));
            assert!(!(k >= b && k < e), "{name}");
        }
    }
}
