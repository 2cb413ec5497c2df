//! The frames the server sends to WebSocket clients, and error codes.
//!
//! Actors produce them (a conversation actor acknowledges a send, fans out a
//! message, relays typing); the gateway writes them to the socket as JSON
//! text frames tagged by `type`.

use serde::{Deserialize, Serialize};
use storage::chat::{ConvId, Message, MessageKind, Millis, Quote, ReactionCount, Seq, UserId};

/// A machine-readable error class, shared by HTTP error bodies and `error`
/// frames. The gateway maps each to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed or invalid input.
    BadRequest,
    /// Missing, unknown or expired credentials.
    Unauthorized,
    /// Authenticated but not allowed (not a member, not an admin).
    Forbidden,
    /// The thing named does not exist.
    NotFound,
    /// A uniqueness rule would be broken.
    Conflict,
    /// A body, frame or message over its size limit.
    TooLarge,
    /// Over a rate limit; try again later.
    RateLimited,
    /// The cluster cannot serve it right now (a node is failing over); retry.
    Unavailable,
    /// The store's disk is full: nothing was written; reads still work.
    /// Retry later (the node recovers by itself once space is freed).
    StorageFull,
    /// A bug or a storage failure.
    Internal,
}

/// What a client is told when the store's disk is full.
pub const STORAGE_FULL: &str = "the server's storage is full: nothing was saved; retry later";

impl From<&storage::Error> for ErrorCode {
    fn from(e: &storage::Error) -> Self {
        use storage::Error as E;
        match e {
            E::Invalid { .. } => ErrorCode::BadRequest,
            E::NotFound { .. } => ErrorCode::NotFound,
            E::AlreadyExists { .. } => ErrorCode::Conflict,
            E::NotMember { .. } | E::Forbidden(_) => ErrorCode::Forbidden,
            E::BadCredentials | E::InvalidToken => ErrorCode::Unauthorized,
            E::StaleEpoch { .. } | E::SequenceMismatch { .. } | E::MaybeCommitted => {
                ErrorCode::Unavailable
            }
            e if e.is_retryable() => ErrorCode::Unavailable,
            e if e.is_storage_full() => ErrorCode::StorageFull,
            _ => ErrorCode::Internal,
        }
    }
}

/// A frame from the server to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The connection is authenticated and ready.
    Hello {
        /// The authenticated user.
        user_id: UserId,
        /// This connection's id on its node.
        session_id: u64,
        /// The node serving it.
        node: String,
    },
    /// A send was committed (or had been: a resend gets the original seq).
    Sent {
        /// The client's id for the message.
        client_msg_id: String,
        /// The conversation.
        conv_id: ConvId,
        /// Its sequence number.
        seq: Seq,
        /// When it was committed.
        sent_at: Millis,
    },
    /// A message of one of the user's conversations: a text message, or
    /// an event (edit, deletion, reaction) about an earlier one.
    Message {
        /// The conversation.
        conv_id: ConvId,
        /// Its sequence number: dedup by (conv_id, seq).
        seq: Seq,
        /// Who sent it.
        sender: UserId,
        /// The sender's id for it.
        client_msg_id: String,
        /// The text (an edit's new text; empty for deletions, reactions
        /// and deleted messages).
        body: String,
        /// When it was committed.
        sent_at: Millis,
        /// `text`, `edit`, `delete` or `reaction`.
        kind: FrameKind,
        /// An event's message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<Seq>,
        /// A reaction's emoji.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        emoji: Option<String>,
        /// A reaction: added (true) or removed (false).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        added: Option<bool>,
        /// The message this one replies to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<Seq>,
        /// The replied-to message as it is now, to show the quote.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply: Option<Quote>,
        /// Members the text mentions.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mentions: Vec<UserId>,
        /// When the text was last edited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        edited_at: Option<Millis>,
        /// A deleted message's tombstone.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deleted: bool,
        /// Who reacted with what (history reads; live and sync frames
        /// carry reaction events instead).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reactions: Vec<ReactionCount>,
    },
    /// Someone is typing in a conversation.
    Typing {
        /// The conversation.
        conv_id: ConvId,
        /// Who is typing.
        user_id: UserId,
        /// Show the indicator this long unless renewed.
        expires_in_ms: u64,
    },
    /// A contact went online or offline.
    Presence {
        /// Whose presence changed.
        user_id: UserId,
        /// Whether they have a live session anywhere.
        online: bool,
        /// When they were last online, if known.
        last_seen: Option<Millis>,
    },
    /// A member's watermarks moved.
    Receipt {
        /// The conversation.
        conv_id: ConvId,
        /// The member.
        user_id: UserId,
        /// Everything up to here reached one of their devices.
        delivered_seq: Seq,
        /// Everything up to here was displayed to them.
        seen_seq: Seq,
    },
    /// Someone joined a group.
    MemberJoined {
        /// The group.
        conv_id: ConvId,
        /// The new member.
        user_id: UserId,
        /// Who added them.
        by: UserId,
    },
    /// Someone left or was removed from a group.
    MemberLeft {
        /// The group.
        conv_id: ConvId,
        /// The former member.
        user_id: UserId,
        /// Who removed them (themself when they left).
        by: UserId,
    },
    /// A group's name or description changed, or it was deleted.
    GroupUpdated {
        /// The group.
        conv_id: ConvId,
        /// Its name.
        name: String,
        /// Its description.
        description: String,
        /// Whether it was deleted.
        deleted: bool,
    },
    /// A sync finished: every message of the user's conversations up to
    /// now was sent, in order per conversation. Live messages follow.
    Synced {
        /// Messages sent by the sync.
        messages: u64,
        /// The `ref` of the `sync` request it answers (none for the
        /// automatic sync at connect).
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        /// Conversations of the request that could not be synced (left,
        /// removed, deleted, unknown); every other one was.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        errors: Vec<ConvError>,
    },
    /// Answer to a `ping`.
    Pong,
    /// A request failed; the connection stays usable.
    Error {
        /// The error class.
        code: ErrorCode,
        /// What went wrong, for humans.
        message: String,
        /// Which request: its `ref`, else its `client_msg_id`, else its type.
        #[serde(rename = "ref")]
        reference: Option<String>,
    },
}

/// What a `message` frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// A text message.
    Text,
    /// An edit of `target`: its new text is this frame's body.
    Edit,
    /// The deletion of `target`.
    Delete,
    /// A reaction to `target` added or removed.
    Reaction,
}

impl FrameKind {
    /// The tag of a stored kind.
    pub fn of(kind: &MessageKind) -> Self {
        match kind {
            MessageKind::Text => FrameKind::Text,
            MessageKind::Edit { .. } => FrameKind::Edit,
            MessageKind::Delete { .. } => FrameKind::Delete,
            MessageKind::Reaction { .. } => FrameKind::Reaction,
        }
    }
}

/// Why one conversation of a `sync` request was not synced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvError {
    /// The conversation.
    pub conv_id: ConvId,
    /// The error class (`forbidden` for one the user is not in, `not_found`
    /// for one that does not exist or was deleted).
    pub code: ErrorCode,
    /// For humans.
    pub message: String,
}

impl ServerFrame {
    /// The frame that delivers a stored message.
    pub fn message(m: &Message) -> Self {
        let (emoji, added) = m.kind.reaction();
        ServerFrame::Message {
            conv_id: m.conv_id,
            seq: m.seq,
            sender: m.sender,
            client_msg_id: m.client_msg_id.clone(),
            body: m.body.clone(),
            sent_at: m.sent_at,
            kind: FrameKind::of(&m.kind),
            target: m.kind.target(),
            emoji,
            added,
            reply_to: m.reply_to,
            reply: m.reply.clone(),
            mentions: m.mentions.clone(),
            edited_at: m.edited_at,
            deleted: m.deleted_at.is_some(),
            reactions: m.reactions.clone(),
        }
    }

    /// An error frame for a failed request. Internal and transient
    /// failures are not explained to clients (storage engine text stays in
    /// the server's log); everything a client can fix is.
    pub fn error(code: ErrorCode, message: impl Into<String>, reference: Option<String>) -> Self {
        let message = match code {
            ErrorCode::Internal => "internal error".to_owned(),
            ErrorCode::Unavailable => "temporarily unavailable, retry".to_owned(),
            ErrorCode::StorageFull => STORAGE_FULL.to_owned(),
            _ => message.into(),
        };
        ServerFrame::Error {
            code,
            message,
            reference,
        }
    }

    /// The frame as JSON text. Our own types always serialize.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","code":"internal","message":"encoding: {e}","ref":null}}"#)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a conversation actor sends when the store fails: the class,
    /// never the engine's words.
    #[test]
    fn storage_failures_reach_clients_as_codes_only() {
        let busy = storage::Error::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked in /var/lib/parley/parley.sqlite".into()),
        ));
        let corrupt = storage::Error::Corrupt {
            family: "msg",
            reason: "unexpected end at byte 17".into(),
        };
        for (e, code) in [
            (busy, ErrorCode::Unavailable),
            (corrupt, ErrorCode::Internal),
        ] {
            let frame = ServerFrame::error(ErrorCode::from(&e), e.to_string(), Some("c1".into()));
            let json = frame.to_json();
            assert!(
                matches!(&frame, ServerFrame::Error { code: c, .. } if *c == code),
                "{json}"
            );
            for leak in ["sqlite", "locked", "byte 17", "msg"] {
                assert!(!json.contains(leak), "{leak} leaked: {json}");
            }
        }
    }
}
