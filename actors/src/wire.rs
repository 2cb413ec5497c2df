//! What nodes say to each other: [`ClusterMsg`], encoded with serde +
//! bincode 2 and carried as opaque bytes by each node's host actor.
//!
//! Everything crossing the transport is bytes that we decode ourselves, so
//! a malformed or hostile payload from a peer is a logged [`Error::Decode`],
//! never a panic inside the transport.

use serde::{Deserialize, Serialize};
use storage::chat::{AckKind, ConvId, DeviceKey, Message, NewMessage, Seq, UserId};

use crate::{ConvChange, Error};

/// Where a WebSocket session lives: its node and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionAddr {
    /// The configured name of the node holding the socket.
    pub node: String,
    /// The session's id on that node.
    pub session_id: u64,
}

/// A command for a conversation's actor, routed to its home node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ConvCommand {
    /// Append a message or an event (edit, deletion, reaction); the answer
    /// (`sent` or `error`) goes to `from`.
    Send {
        /// The session that sent it (or the HTTP request waiting for it).
        from: SessionAddr,
        /// The client's `ref` for this request, echoed in an error
        /// (else its `client_msg_id` is).
        reference: Option<String>,
        /// What to append; its `sender` is the authenticated user.
        message: NewMessage,
    },
    /// Relay a typing indicator to the other members.
    Typing {
        /// The session that sent it.
        from: SessionAddr,
        /// The client's `ref` for this request, echoed in an error.
        reference: Option<String>,
        /// Who is typing.
        user_id: UserId,
    },
    /// Move a member's delivered or seen watermark and tell the others.
    Ack {
        /// The session that sent it.
        from: SessionAddr,
        /// The client's `ref` for this request, echoed in an error.
        reference: Option<String>,
        /// The member.
        user_id: UserId,
        /// The device that acknowledged: its sync cursor moves too.
        device: Option<DeviceKey>,
        /// Which watermark.
        kind: AckKind,
        /// Up to which message.
        seq: Seq,
    },
    /// The HTTP API changed the conversation: refresh and tell the members.
    Changed(ConvChange),
}

/// A frame for sessions: its JSON text, and for a `message` frame the
/// (conversation, seq) that places it, so each session can deliver a
/// conversation's messages in order, drop the ones it already sent and
/// fetch any it missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    /// The JSON text frame.
    pub json: String,
    /// Set on `message` frames.
    pub order: Option<(ConvId, Seq)>,
}

impl Outgoing {
    /// The `message` frame of a stored message.
    pub fn message(m: &Message) -> Self {
        Self {
            json: crate::frames::ServerFrame::message(m).to_json(),
            order: Some((m.conv_id, m.seq)),
        }
    }
}

impl From<String> for Outgoing {
    fn from(json: String) -> Self {
        Self { json, order: None }
    }
}

/// A message between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClusterMsg {
    /// A command for a conversation; `hops` counts forwards between nodes
    /// whose views of the membership disagreed, to stop ping-pong.
    Conversation {
        /// The conversation.
        conv_id: ConvId,
        /// Forwards so far.
        hops: u8,
        /// The command.
        cmd: ConvCommand,
    },
    /// JSON frames for every local session of these users: one message per
    /// node, not per recipient.
    Fanout {
        /// Recipients.
        user_ids: Vec<UserId>,
        /// Frames, in order.
        frames: Vec<Outgoing>,
    },
    /// A login was revoked: close every session opened with it.
    Revoked {
        /// The login's device key.
        login: DeviceKey,
    },
    /// A JSON frame for one session.
    ToSession {
        /// The session's id on the receiving node.
        session_id: u64,
        /// The frame.
        frame: String,
    },
    /// A JSON frame for one session on a third node, which the sender
    /// cannot reach but the receiver may: the answer to a send reaches its
    /// client across a partition that is not transitive (A reaches B, B
    /// reaches C, C does not reach A). Relayed once, never further.
    RelayToSession {
        /// The node the session lives on.
        node: String,
        /// The session's id there.
        session_id: u64,
        /// The frame.
        frame: String,
    },
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl ClusterMsg {
    /// The bytes that cross the transport.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        bincode::serde::encode_to_vec(self, config()).map_err(|e| Error::Encode(e.to_string()))
    }

    /// Decodes a peer's bytes; never panics, whatever they contain.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let (msg, read) = bincode::serde::decode_from_slice(bytes, config())
            .map_err(|e| Error::Decode(e.to_string()))?;
        if read != bytes.len() {
            return Err(Error::Decode(format!(
                "{} trailing bytes",
                bytes.len() - read
            )));
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let msg = ClusterMsg::Conversation {
            conv_id: 7,
            hops: 1,
            cmd: ConvCommand::Send {
                from: SessionAddr {
                    node: "a".into(),
                    session_id: 3,
                },
                reference: Some("r1".into()),
                message: NewMessage {
                    reply_to: Some(2),
                    ..NewMessage::text(9, "c1", "héllo")
                },
            },
        };
        let bytes = msg.encode().expect("encode");
        let back = ClusterMsg::decode(&bytes).expect("decode");
        assert_eq!(format!("{msg:?}"), format!("{back:?}"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for len in 0..512 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect();
            let _ = ClusterMsg::decode(&bytes);
        }
        // A huge announced length must not allocate it.
        let _ = ClusterMsg::decode(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    }
}
