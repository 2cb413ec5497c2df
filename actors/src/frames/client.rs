//! The frames clients send over the WebSocket; the gateway parses them and
//! turns them into commands for the session and conversation actors.

use std::collections::BTreeMap;

use serde::Deserialize;
use storage::chat::{AckKind, ConvId, Seq, UserId};

/// A frame from a client: JSON text tagged by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Authenticates a connection opened without `?token=`.
    Auth {
        /// The bearer token from login.
        token: String,
        /// The client installation, stable across connections (optional:
        /// without it the token names the device).
        #[serde(default)]
        device_id: Option<String>,
    },
    /// Sends a message to a conversation, or to a user (their direct chat).
    Send {
        /// Echoed in an `error` frame about this request.
        #[serde(rename = "ref")]
        reference: Option<String>,
        /// The conversation; or give `to_user`.
        conv_id: Option<ConvId>,
        /// The other user of a direct chat, opened on first use.
        to_user: Option<UserId>,
        /// The client's idempotency key: a resend gets the original seq.
        client_msg_id: String,
        /// The text.
        body: String,
        /// An earlier message of the conversation this one quotes.
        #[serde(default)]
        reply_to: Option<Seq>,
    },
    /// Replaces the text of one of the user's own messages.
    Edit {
        /// Echoed in an `error` frame about this request.
        #[serde(rename = "ref")]
        reference: Option<String>,
        /// The conversation.
        conv_id: ConvId,
        /// The message to edit.
        seq: Seq,
        /// Idempotency key of the edit (an event with its own seq).
        client_msg_id: String,
        /// The new text.
        body: String,
    },
    /// Deletes a message for everyone (its author, or a group admin).
    Delete {
        /// Echoed in an `error` frame about this request.
        #[serde(rename = "ref")]
        reference: Option<String>,
        /// The conversation.
        conv_id: ConvId,
        /// The message to delete.
        seq: Seq,
        /// Idempotency key of the deletion.
        client_msg_id: String,
    },
    /// Adds (or with `remove`, removes) a reaction to a message.
    React {
        /// Echoed in an `error` frame about this request.
        #[serde(rename = "ref")]
        reference: Option<String>,
        /// The conversation.
        conv_id: ConvId,
        /// The message reacted to.
        seq: Seq,
        /// The emoji.
        emoji: String,
        /// Remove the reaction instead of adding it.
        #[serde(default)]
        remove: bool,
        /// Idempotency key of the reaction change.
        client_msg_id: String,
    },
    /// The user is typing in a conversation.
    Typing {
        /// Echoed in an `error` frame about this request.
        #[serde(rename = "ref")]
        reference: Option<String>,
        /// The conversation.
        conv_id: ConvId,
    },
    /// Moves the user's delivered or seen watermark.
    Ack {
        /// Echoed in an `error` frame about this request.
        #[serde(rename = "ref")]
        reference: Option<String>,
        /// The conversation.
        conv_id: ConvId,
        /// Up to which message.
        seq: Seq,
        /// `delivered` or `seen`.
        kind: AckKind,
    },
    /// Asks for every message after the given per-conversation sequence
    /// numbers (the client's word wins over what the server sent it);
    /// conversations left out catch up from what this connection sent.
    Sync {
        /// Echoed in an `error` frame about this request.
        #[serde(rename = "ref")]
        reference: Option<String>,
        /// Conversation id (a JSON object key, so a string) to the last
        /// seq the client has.
        #[serde(default)]
        watermarks: BTreeMap<String, Seq>,
    },
    /// Liveness check; answered with `pong`. (A struct variant, so that
    /// unknown fields are refused like on every other frame.)
    Ping {},
}

/// Reads sync watermarks, whose keys JSON carries as strings.
pub fn parse_watermarks(raw: BTreeMap<String, Seq>) -> Result<BTreeMap<ConvId, Seq>, String> {
    raw.into_iter()
        .map(|(k, v)| {
            k.parse::<ConvId>()
                .map(|conv_id| (conv_id, v))
                .map_err(|_| format!("watermark key {k:?} is not a conversation id"))
        })
        .collect()
}

/// The `ref` of a frame that failed to parse, else its `type`, so the
/// `error` frame names the request.
pub fn reference_of(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let pick = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .map(|s| s.chars().take(64).collect::<String>())
    };
    pick("ref")
        .or_else(|| pick("client_msg_id"))
        .or_else(|| pick("type"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_frame() {
        let frames = [
            r#"{"type":"auth","token":"t"}"#,
            r#"{"type":"send","conv_id":1,"client_msg_id":"c","body":"hi"}"#,
            r#"{"type":"send","to_user":2,"client_msg_id":"c","body":"hi","ref":"r1"}"#,
            r#"{"type":"send","conv_id":1,"client_msg_id":"c","body":"hi","reply_to":3}"#,
            r#"{"type":"edit","conv_id":1,"seq":3,"client_msg_id":"e","body":"hi"}"#,
            r#"{"type":"delete","conv_id":1,"seq":3,"client_msg_id":"d","ref":"x"}"#,
            r#"{"type":"react","conv_id":1,"seq":3,"client_msg_id":"r","emoji":"👍"}"#,
            r#"{"type":"react","conv_id":1,"seq":3,"client_msg_id":"r","emoji":"👍","remove":true}"#,
            r#"{"type":"typing","conv_id":1}"#,
            r#"{"type":"ack","conv_id":1,"seq":3,"kind":"seen"}"#,
            r#"{"type":"sync","watermarks":{"1":3,"7":0}}"#,
            r#"{"type":"sync"}"#,
            r#"{"type":"ping"}"#,
        ];
        for f in frames {
            serde_json::from_str::<ClientFrame>(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"dance"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"ping","x":1}"#).is_err());
        assert_eq!(
            reference_of(r#"{"type":"dance"}"#).as_deref(),
            Some("dance")
        );
        assert_eq!(
            reference_of(r#"{"type":"send","ref":"r9"}"#).as_deref(),
            Some("r9")
        );
        assert_eq!(reference_of("not json"), None);
        let raw = BTreeMap::from([("7".to_owned(), 3)]);
        assert_eq!(parse_watermarks(raw), Ok(BTreeMap::from([(7, 3)])));
        assert!(parse_watermarks(BTreeMap::from([("x".to_owned(), 3)])).is_err());
    }
}
