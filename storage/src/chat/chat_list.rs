//! A user's chat list: every conversation with what a list row shows.

use serde::{Deserialize, Serialize};

use super::receipts::member_receipts;
use super::{
    get, ChatStore, ConvId, ConvKind, ConvMeta, Conversation, MessageSummary, Millis, UserConv,
    UserId, UserSummary,
};
use crate::keys;
use crate::{RangeOptions, Result};

pub use super::receipts::MessageStatus;

/// One row of a chat list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSummary {
    /// The conversation.
    pub conv_id: ConvId,
    /// Direct or group.
    pub kind: ConvKind,
    /// The group's name, or the other user's name for a direct chat.
    pub name: String,
    /// The other user of a direct chat.
    pub peer: Option<UserSummary>,
    /// The newest message.
    pub last_message: Option<MessageSummary>,
    /// The newest message's time, or when the user joined.
    pub last_activity_at: Millis,
    /// Other members' messages after the user's seen watermark.
    pub unread: u64,
    /// When the newest message is the user's own: how far it got with the
    /// others (the least advanced of them).
    pub last_message_status: Option<MessageStatus>,
    /// Unread messages that mention the user.
    pub mentions: u64,
    /// Whether the user muted the conversation (no push but mentions).
    pub muted: bool,
    /// Until when; `None` for ever (or when not muted).
    pub muted_until: Option<Millis>,
}

impl ChatStore {
    /// The user's conversations, most recently active first.
    pub fn chat_list(&self, user_id: UserId) -> Result<Vec<ChatSummary>> {
        let now = self.now();
        self.db().read(|tx| {
            let (begin, end) = keys::USER_CONV.range(&(user_id,));
            let rows = tx.get_range(&begin, &end, RangeOptions::default())?;
            let mut list = Vec::with_capacity(rows.len());
            for (key, value) in rows {
                let (_, conv_id): (UserId, ConvId) = keys::USER_CONV.unpack(&key)?;
                let entry: UserConv = crate::codec::decode(keys::USER_CONV.name, &value)?;
                let Some(conv) = get::<Conversation, _>(tx, keys::CONV, &(conv_id,))? else {
                    continue;
                };
                if conv.deleted {
                    continue;
                }
                let meta: ConvMeta = get(tx, keys::CONV_META, &(conv_id,))?.unwrap_or_default();
                let receipts = member_receipts(tx, conv_id)?;
                let mine = receipts.iter().find(|r| r.user_id == user_id);
                let seen = mine.map_or(0, |r| r.receipt.seen_seq);
                let unread = meta
                    .last_seq
                    .saturating_sub(seen)
                    .saturating_sub(super::receipts::own_unseen(tx, conv_id, user_id, seen)?)
                    .saturating_sub(super::events::events_after(
                        tx,
                        conv_id,
                        seen,
                        meta.last_seq,
                    )?);
                let mentions = super::events::mentions_after(tx, user_id, conv_id, seen)?;
                let mute: Option<super::Mute> = get(tx, keys::MUTE, &(user_id, conv_id))?;
                let mute = mute.filter(|m| m.active(now));
                let others = || receipts.iter().filter(|r| r.user_id != user_id);
                let last_message_status = meta
                    .last_message
                    .as_ref()
                    .filter(|m| m.sender == user_id)
                    .and_then(|m| others().map(|r| MessageStatus::of(m.seq, &r.receipt)).min());
                let peer = match conv.kind {
                    ConvKind::Direct => {
                        let mut peer = None;
                        for r in others() {
                            if let Some(u) = get::<super::User, _>(tx, keys::USER, &(r.user_id,))? {
                                peer = Some(UserSummary::from(&u));
                            }
                        }
                        peer
                    }
                    ConvKind::Group => None,
                };
                list.push(ChatSummary {
                    conv_id,
                    kind: conv.kind,
                    name: peer.as_ref().map_or(conv.name.clone(), |p| p.name.clone()),
                    peer,
                    last_activity_at: meta
                        .last_message
                        .as_ref()
                        .map_or(entry.joined_at, |m| m.sent_at.max(entry.joined_at)),
                    last_message: meta.last_message,
                    unread,
                    last_message_status,
                    mentions,
                    muted: mute.is_some(),
                    muted_until: mute.and_then(|m| m.until),
                });
            }
            list.sort_by(|a, b| {
                b.last_activity_at
                    .cmp(&a.last_activity_at)
                    .then(b.conv_id.cmp(&a.conv_id))
            });
            Ok(list)
        })
    }
}
