//! What the API returns: response shapes of the storage entities.
//!
//! The storage types are the schema's rows (a `User` holds its password
//! hash); these are what a client may see, with OpenAPI schemas. Enums keep
//! storage's snake_case names, documented as strings.

use actors::frames::FrameKind;
use serde::Serialize;
use storage::chat::{
    ConvId, ConvKind, Conversation, Member, MemberAction, MemberEvent, MemberReceipt, MemberStatus,
    Message, MessageStatus, Millis, ReactionCount, Role, Seq, User, UserId, UserSummary,
};
use utoipa::ToSchema;

/// A user as others see them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct UserView {
    /// The user's id.
    #[schema(example = 7)]
    pub id: UserId,
    /// The user's name.
    #[schema(example = "alice")]
    pub name: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            name: u.name.clone(),
        }
    }
}

impl From<UserSummary> for UserView {
    fn from(u: UserSummary) -> Self {
        Self {
            id: u.id,
            name: u.name,
        }
    }
}

/// A direct chat or a group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ConversationView {
    /// The conversation's id.
    #[schema(example = 12)]
    pub id: ConvId,
    /// `direct` or `group`.
    #[schema(value_type = String, example = "group")]
    pub kind: ConvKind,
    /// The group's name; empty for a direct chat.
    #[schema(example = "climbing")]
    pub name: String,
    /// The group's description; empty for a direct chat.
    pub description: String,
    /// Creation time, ms since the Unix epoch.
    pub created_at: Millis,
    /// Who created it.
    pub created_by: UserId,
    /// Last change of name or description.
    pub updated_at: Millis,
    /// Who made that change.
    pub updated_by: UserId,
}

impl From<Conversation> for ConversationView {
    fn from(c: Conversation) -> Self {
        Self {
            id: c.id,
            kind: c.kind,
            name: c.name,
            description: c.description,
            created_at: c.created_at,
            created_by: c.created_by,
            updated_at: c.updated_at,
            updated_by: c.updated_by,
        }
    }
}

/// A user's membership of a conversation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct MemberView {
    /// The member.
    pub user_id: UserId,
    /// `admin` or `member`.
    #[schema(value_type = String, example = "member")]
    pub role: Role,
    /// `active`, `left` or `removed`.
    #[schema(value_type = String, example = "active")]
    pub status: MemberStatus,
    /// Who added them.
    pub added_by: UserId,
    /// When they were (last) added.
    pub added_at: Millis,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.user_id,
            role: m.role,
            status: m.status,
            added_by: m.added_by,
            added_at: m.added_at,
        }
    }
}

/// One entry of a group's membership history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct MemberEventView {
    /// Position in the history, from 1.
    pub version: u64,
    /// Whose membership changed.
    pub user_id: UserId,
    /// `added`, `left`, `removed` or `promoted`.
    #[schema(value_type = String, example = "added")]
    pub action: MemberAction,
    /// Who did it.
    pub by: UserId,
    /// When.
    pub at: Millis,
}

impl From<MemberEvent> for MemberEventView {
    fn from(e: MemberEvent) -> Self {
        Self {
            version: e.version,
            user_id: e.user_id,
            action: e.action,
            by: e.by,
            at: e.at,
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct MessageView {
    /// Its conversation.
    pub conv_id: ConvId,
    /// Its position in the conversation, from 1.
    pub seq: Seq,
    /// Who sent it.
    pub sender: UserId,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// The text: the latest version of a text message, an edit's new text,
    /// empty for deletions, reactions and deleted messages.
    pub body: String,
    /// When it was committed.
    pub sent_at: Millis,
    /// `text`, or an event about `target`: `edit`, `delete`, `reaction`.
    #[schema(value_type = String, example = "text")]
    pub kind: FrameKind,
    /// The message an event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Seq>,
    /// A reaction event's emoji.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    /// A reaction event: added (true) or removed (false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added: Option<bool>,
    /// The message this one replies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<Seq>,
    /// The replied-to message as it is now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<QuoteView>,
    /// Members the text mentions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<UserId>,
    /// When the text was last edited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<Millis>,
    /// Whether it was deleted (a tombstone: its text is gone).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Who reacted with what.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionView>,
}

/// A quoted message, as a reply shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct QuoteView {
    /// The quoted message.
    pub seq: Seq,
    /// Its sender.
    pub sender: UserId,
    /// Its first 100 characters now (empty once deleted).
    pub preview: String,
    /// Whether it was deleted.
    pub deleted: bool,
}

/// One emoji's reactions to a message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ReactionView {
    /// The emoji.
    pub emoji: String,
    /// How many members reacted with it.
    pub count: u64,
    /// Who, in user id order.
    pub users: Vec<UserId>,
}

impl From<ReactionCount> for ReactionView {
    fn from(r: ReactionCount) -> Self {
        Self {
            emoji: r.emoji,
            count: r.count,
            users: r.users,
        }
    }
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        let (emoji, added) = m.kind.reaction();
        Self {
            conv_id: m.conv_id,
            seq: m.seq,
            sender: m.sender,
            client_msg_id: m.client_msg_id,
            body: m.body,
            sent_at: m.sent_at,
            kind: FrameKind::of(&m.kind),
            target: m.kind.target(),
            emoji,
            added,
            reply_to: m.reply_to,
            reply: m.reply.map(|q| QuoteView {
                seq: q.seq,
                sender: q.sender,
                preview: q.preview,
                deleted: q.deleted,
            }),
            mentions: m.mentions,
            edited_at: m.edited_at,
            deleted: m.deleted_at.is_some(),
            reactions: m.reactions.into_iter().map(ReactionView::from).collect(),
        }
    }
}

/// A member's delivered and seen watermarks.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ReceiptView {
    /// The member.
    pub user_id: UserId,
    /// Every message up to this seq reached one of their devices.
    pub delivered_seq: Seq,
    /// When `delivered_seq` last advanced.
    pub delivered_at: Option<Millis>,
    /// They displayed every message up to this seq.
    pub seen_seq: Seq,
    /// When `seen_seq` last advanced.
    pub seen_at: Option<Millis>,
}

impl From<MemberReceipt> for ReceiptView {
    fn from(r: MemberReceipt) -> Self {
        Self {
            user_id: r.user_id,
            delivered_seq: r.receipt.delivered_seq,
            delivered_at: r.receipt.delivered_at,
            seen_seq: r.receipt.seen_seq,
            seen_at: r.receipt.seen_at,
        }
    }
}

/// How far a message got with one member.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct MemberStatusView {
    /// The member.
    pub user_id: UserId,
    /// `sent`, `delivered` or `seen`.
    #[schema(value_type = String, example = "delivered")]
    pub status: MessageStatus,
}
