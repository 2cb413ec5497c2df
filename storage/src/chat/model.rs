//! The value types stored under the key families of [`crate::keys`].
//!
//! Each is one row of the seed schema. They are plain data: the rules that
//! keep them consistent live in the operations of [`crate::chat`].

use serde::{Deserialize, Serialize};

/// A user's id. Allocated from a counter, so it fits a JSON number.
pub type UserId = u64;
/// A conversation's (direct chat's or group's) id.
pub type ConvId = u64;
/// A message's position in its conversation: gapless, starting at 1.
pub type Seq = u64;
/// Wall-clock time as milliseconds since the Unix epoch.
pub type Millis = u64;

/// A registered user (seed entity User).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Unique id.
    pub id: UserId,
    /// Display and login name, unique case-insensitively.
    pub name: String,
    /// Phone number, unique when given.
    pub phone: Option<String>,
    /// Argon2 PHC string; the password itself is never stored.
    pub password_hash: String,
    /// When the user registered.
    pub created_at: Millis,
    /// Who created the row (the user themself for self-registration).
    pub created_by: UserId,
    /// Last change of the row.
    pub updated_at: Millis,
    /// Who made the last change.
    pub updated_by: UserId,
}

/// What the public sees of a user: no password hash, no phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSummary {
    /// The user's id.
    pub id: UserId,
    /// The user's name.
    pub name: String,
}

impl From<&User> for UserSummary {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            name: u.name.clone(),
        }
    }
}

/// A login session, stored under the SHA-256 of its bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Whose token it is.
    pub user_id: UserId,
    /// When it was issued.
    pub created_at: Millis,
    /// After this instant the token is refused.
    pub expires_at: Millis,
}

/// Direct chat or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvKind {
    /// Exactly two members, one per pair of users (seed UserChat).
    Direct,
    /// Any number of members, with admins (seed Group).
    Group,
}

/// A conversation (seed entities Group and UserChat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// Unique id.
    pub id: ConvId,
    /// Direct or group.
    pub kind: ConvKind,
    /// Group name; empty for direct chats.
    pub name: String,
    /// Group description; empty for direct chats.
    pub description: String,
    /// Creation time.
    pub created_at: Millis,
    /// Who created it.
    pub created_by: UserId,
    /// Last change of name or description.
    pub updated_at: Millis,
    /// Who made the last change.
    pub updated_by: UserId,
    /// Soft-deleted groups keep their rows but are gone for every reader.
    pub deleted: bool,
}

/// A member's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// May delete the group and remove others.
    Admin,
    /// May read, post, add members, edit the description, leave.
    Member,
}

/// Whether a membership is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// A current member.
    Active,
    /// Left by themself.
    Left,
    /// Removed by an admin.
    Removed,
}

/// A user's membership of a conversation (seed UserGroup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The conversation.
    pub conv_id: ConvId,
    /// The user.
    pub user_id: UserId,
    /// Admin or plain member.
    pub role: Role,
    /// Current or not.
    pub status: MemberStatus,
    /// Who added them (the creator adds themself).
    pub added_by: UserId,
    /// When they were (last) added.
    pub added_at: Millis,
    /// Who removed them, if they were removed or left.
    pub removed_by: Option<UserId>,
    /// When they were removed or left.
    pub removed_at: Option<Millis>,
    /// Bumped on every change of this row, starting at 1.
    pub version: u64,
}

/// What happened to a membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberAction {
    /// Joined (at creation or added later).
    Added,
    /// Left by themself.
    Left,
    /// Removed by an admin.
    Removed,
    /// Made admin (when the last admin left).
    Promoted,
}

/// One entry of a conversation's membership history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEvent {
    /// Position in the conversation's membership history, from 1.
    pub version: u64,
    /// Whose membership changed.
    pub user_id: UserId,
    /// What happened.
    pub action: MemberAction,
    /// Who did it.
    pub by: UserId,
    /// When.
    pub at: Millis,
}

/// A conversation in a user's chat list index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserConv {
    /// When the user joined (or rejoined) it.
    pub joined_at: Millis,
    /// The conversation's last seq when they joined: what came before is
    /// history, never synced to their devices as new (nor found by their
    /// searches). For a member added back: where their delivered
    /// watermark was, so they catch up on what was said while away.
    pub joined_seq: Seq,
}

/// One client installation of a user (a phone, a browser profile). Its
/// delivery cursors live in the `device_cursor` family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// When it first connected (or logged in).
    pub created_at: Millis,
    /// When it last connected: the least recently used device is the one
    /// forgotten when a user exceeds their device limit.
    pub last_connected_at: Millis,
}

/// The latest message of a conversation, kept for chat lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSummary {
    /// Its sequence number.
    pub seq: Seq,
    /// Who sent it.
    pub sender: UserId,
    /// Its first characters.
    pub preview: String,
    /// When it was committed.
    pub sent_at: Millis,
}

/// Sequencing and fencing state of a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvMeta {
    /// The highest sequence number written; 0 before the first message.
    pub last_seq: Seq,
    /// Bumped by each activation of the conversation's actor; appends must
    /// present the current value.
    pub epoch: u64,
    /// The newest message, for chat lists.
    pub last_message: Option<MessageSummary>,
    /// The conversation's membership history length.
    pub member_version: u64,
}

/// A message (seed PrivateMessage and GroupMessage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Its conversation.
    pub conv_id: ConvId,
    /// Its position in the conversation.
    pub seq: Seq,
    /// Who sent it.
    pub sender: UserId,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// The text: the latest version for a text message, the new text for
    /// an edit, empty for a deletion, a reaction or a deleted message.
    pub body: String,
    /// When it was committed.
    pub sent_at: Millis,
    /// A text message, or an event about an earlier one.
    pub kind: MessageKind,
    /// The earlier text message of the same conversation this one quotes.
    pub reply_to: Option<Seq>,
    /// Members named with `@name` in the text, resolved when it was sent
    /// (and again when it was edited).
    pub mentions: Vec<UserId>,
    /// When the text was last edited.
    pub edited_at: Option<Millis>,
    /// When the message was deleted for everyone: a tombstone keeps its seq
    /// so the sequence stays gapless, with its text and edits erased.
    pub deleted_at: Option<Millis>,
    /// Filled by reads, never stored: the quoted message as it is now.
    #[serde(skip)]
    pub reply: Option<Quote>,
    /// Filled by history reads, never stored: who reacted with what.
    #[serde(skip)]
    pub reactions: Vec<ReactionCount>,
}

impl Message {
    /// Whether this is an event about another message (an edit, a
    /// deletion, a reaction): events take a seq so that sync and order
    /// stay uniform, but are never unread and never pushed.
    pub fn is_event(&self) -> bool {
        self.kind != MessageKind::Text
    }
}

/// What a message of a conversation's sequence is.
///
/// Edits, deletions and reactions are events in the sequence (their own
/// seq, naming their `target`), so a device that syncs later sees them in
/// the same order as everyone else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    /// An ordinary message.
    #[default]
    Text,
    /// The author replaced the text of `target` with this event's body.
    Edit {
        /// The edited message.
        target: Seq,
    },
    /// The author (or a group admin) deleted `target` for everyone.
    Delete {
        /// The deleted message.
        target: Seq,
    },
    /// The sender added or removed a reaction to `target`.
    Reaction {
        /// The message reacted to.
        target: Seq,
        /// The emoji.
        emoji: String,
        /// Added (true) or removed (false).
        added: bool,
    },
}

impl MessageKind {
    /// A reaction's emoji and whether it was added; `(None, None)` for
    /// other kinds (how frames and views spell them out).
    pub fn reaction(&self) -> (Option<String>, Option<bool>) {
        match self {
            MessageKind::Reaction { emoji, added, .. } => (Some(emoji.clone()), Some(*added)),
            _ => (None, None),
        }
    }

    /// The message an event is about.
    pub fn target(&self) -> Option<Seq> {
        match self {
            MessageKind::Text => None,
            MessageKind::Edit { target }
            | MessageKind::Delete { target }
            | MessageKind::Reaction { target, .. } => Some(*target),
        }
    }
}

/// A quoted message, as a reply shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// The quoted message.
    pub seq: Seq,
    /// Its sender.
    pub sender: UserId,
    /// Its first characters now (empty once deleted).
    pub preview: String,
    /// Whether it was deleted.
    pub deleted: bool,
}

/// One emoji's reactions to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionCount {
    /// The emoji.
    pub emoji: String,
    /// How many members reacted with it.
    pub count: u64,
    /// Who, in user id order.
    pub users: Vec<UserId>,
}

/// An earlier text of an edited message (family `msg_version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageVersion {
    /// The text as it was.
    pub body: String,
    /// Since when it was the text (the send or the edit that wrote it).
    pub since: Millis,
}

/// A member's mute of a conversation (family `mute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mute {
    /// Muted until then; `None` for ever.
    pub until: Option<Millis>,
}

impl Mute {
    /// Whether the mute is in force at `now`.
    pub fn active(&self, now: Millis) -> bool {
        self.until.is_none_or(|u| u > now)
    }
}

/// A member's delivered and seen watermarks (seed GroupMessageDescription).
///
/// Message `seq` is delivered to this member when `delivered_seq >= seq`,
/// seen when `seen_seq >= seq`. Watermarks never move back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Every message up to this one reached one of the member's devices.
    pub delivered_seq: Seq,
    /// When `delivered_seq` last advanced.
    pub delivered_at: Option<Millis>,
    /// The member has displayed every message up to this one.
    pub seen_seq: Seq,
    /// When `seen_seq` last advanced.
    pub seen_at: Option<Millis>,
}

/// A device that wants notifications while its user is offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSubscription {
    /// Stable id derived from the kind and endpoint (or token): registering
    /// the same device twice updates it in place.
    pub id: String,
    /// Where and how to reach the device.
    pub target: PushTarget,
    /// When it was (last) registered.
    pub created_at: Millis,
}

/// The three ways of reaching a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushTarget {
    /// A browser's Web Push subscription (RFC 8030 / 8291).
    WebPush {
        /// The push service URL of the device.
        endpoint: String,
        /// The device's public key, base64url (uncompressed P-256 point).
        p256dh: String,
        /// The device's 16-byte auth secret, base64url.
        auth: String,
    },
    /// An Android (or other) app's Firebase Cloud Messaging registration token.
    Fcm {
        /// The registration token.
        token: String,
    },
    /// An Apple device token for APNs.
    Apns {
        /// The device token (hex).
        token: String,
    },
}

impl PushTarget {
    /// `webpush`, `fcm` or `apns`: the API's name of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            PushTarget::WebPush { .. } => "webpush",
            PushTarget::Fcm { .. } => "fcm",
            PushTarget::Apns { .. } => "apns",
        }
    }

    /// The endpoint URL (Web Push) or the token (FCM, APNs).
    pub fn address(&self) -> &str {
        match self {
            PushTarget::WebPush { endpoint, .. } => endpoint,
            PushTarget::Fcm { token } | PushTarget::Apns { token } => token,
        }
    }
}

/// The cluster's VAPID key pair (RFC 8292): generated once, shared by every
/// node so that any node can sign for subscriptions made with its public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VapidKey {
    /// The P-256 private scalar, 32 bytes.
    pub private: Vec<u8>,
    /// The uncompressed public point, 65 bytes (what browsers get as
    /// `applicationServerKey`).
    pub public: Vec<u8>,
    /// When it was created.
    pub created_at: Millis,
}

/// A push owed for a committed message: written in the message's append
/// transaction, cleared by the node that takes it over for delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushOwed {
    /// Who sent the message.
    pub sender: UserId,
    /// The members who had no live session when it was committed.
    pub recipients: Vec<UserId>,
    /// When the message was committed.
    pub sent_at: Millis,
}

/// A cluster node's lease: it is a live member while `expires_at` is ahead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLease {
    /// The node's configured name.
    pub name: String,
    /// Where peers reach its cluster transport.
    pub cluster_addr: String,
    /// Where clients reach its gateway.
    pub http_addr: String,
    /// The URL browsers reach its gateway at (`http(s)://host:port`): the
    /// web app's list of gateways to reconnect to.
    pub public_url: String,
    /// Random per process start: tells a restarted node from its past self.
    pub incarnation: u64,
    /// Until when the lease holds unless renewed.
    pub expires_at: Millis,
}
