//! Receipts: per-member delivered and seen watermarks.
//!
//! One row per member, not per message per member: a message's status for a
//! reader is derived by comparing its seq with the reader's watermarks, and
//! "delivered/seen by all" is the minimum over the other members.

use serde::{Deserialize, Serialize};

use super::conversations::require_member;
use super::devices::{advance_cursor, DeviceKey};
use super::members::active_members;
use super::{get, put, ChatStore, ConvId, ConvMeta, Receipt, Seq, UserId};
use crate::keys;
use crate::{Error, Result, Transaction};

/// Which watermark an acknowledgement moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckKind {
    /// The message reached a device of the member.
    Delivered,
    /// The member displayed it. Seen implies delivered.
    Seen,
}

/// A message's status as far as one reader (or all of them) is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Committed, not yet on the reader's devices.
    Sent,
    /// On a device of the reader.
    Delivered,
    /// Displayed to the reader.
    Seen,
}

impl MessageStatus {
    /// The status of message `seq` for a reader with this receipt.
    pub fn of(seq: Seq, receipt: &Receipt) -> Self {
        if receipt.seen_seq >= seq {
            MessageStatus::Seen
        } else if receipt.delivered_seq >= seq {
            MessageStatus::Delivered
        } else {
            MessageStatus::Sent
        }
    }
}

/// One member's watermarks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReceipt {
    /// The member.
    pub user_id: UserId,
    /// Their watermarks.
    pub receipt: Receipt,
}

/// The receipts of every active member.
pub(crate) fn member_receipts(
    tx: &mut dyn Transaction,
    conv_id: ConvId,
) -> Result<Vec<MemberReceipt>> {
    let mut out = Vec::new();
    for m in active_members(tx, conv_id)? {
        let receipt = get(tx, keys::RECEIPT, &(conv_id, m.user_id))?.unwrap_or_default();
        out.push(MemberReceipt {
            user_id: m.user_id,
            receipt,
        });
    }
    Ok(out)
}

impl ChatStore {
    /// Moves the actor's watermark of `kind` up to `seq`. Watermarks never
    /// move back: an older ack changes nothing. An ack past the last message
    /// is an [`Error::Invalid`]. Returns the receipt and whether it moved.
    ///
    /// The acknowledging `device`'s cursor moves too (its next sync starts
    /// after `seq`); the member's own messages at or below a new seen
    /// watermark stop being subtracted from their unread count.
    pub fn ack(
        &self,
        actor: UserId,
        device: Option<&DeviceKey>,
        conv_id: ConvId,
        kind: AckKind,
        seq: Seq,
    ) -> Result<(Receipt, bool)> {
        let now = self.now();
        // Watermarks only move up: run again after its own commit, it
        // writes nothing more (and reports nothing moved).
        self.db()
            .run_idempotent(|tx| ack_in(tx, now, conv_id, actor, device, kind, seq))
    }

    /// Several acknowledgements of one conversation in one transaction,
    /// each as [`ack`](Self::ack) would do it, in order: what a
    /// conversation actor gathered while its previous store call ran. A
    /// refusal (not a member, past the last message) is that ack's answer
    /// and leaves the others alone; a storage failure fails them all.
    pub fn ack_all(&self, conv_id: ConvId, acks: &[AckRequest]) -> Result<AckResults> {
        let now = self.now();
        self.db()
            .run_idempotent(|tx| ack_all_in(tx, now, conv_id, acks))
    }

    /// Every active member's watermarks in a conversation the actor is in.
    pub fn receipts(&self, actor: UserId, conv_id: ConvId) -> Result<Vec<MemberReceipt>> {
        self.db().read(|tx| {
            require_member(tx, conv_id, actor)?;
            member_receipts(tx, conv_id)
        })
    }

    /// For message `seq`, each other member's status of it.
    pub fn message_status(
        &self,
        actor: UserId,
        conv_id: ConvId,
        seq: Seq,
    ) -> Result<Vec<(UserId, MessageStatus)>> {
        self.db().read(|tx| {
            require_member(tx, conv_id, actor)?;
            if tx.get(&keys::MSG.key(&(conv_id, seq)))?.is_none() {
                return Err(Error::NotFound { what: "message" });
            }
            Ok(member_receipts(tx, conv_id)?
                .into_iter()
                .filter(|r| r.user_id != actor)
                .map(|r| (r.user_id, MessageStatus::of(seq, &r.receipt)))
                .collect())
        })
    }
}

/// How many of `user_id`'s own messages lie above their seen watermark
/// (sent while they had not seen everything before): not unread for them.
pub(crate) fn own_unseen(
    tx: &mut dyn Transaction,
    conv_id: ConvId,
    user_id: UserId,
    seen: Seq,
) -> Result<u64> {
    let (_, end) = keys::OWN_UNSEEN.range(&(conv_id, user_id));
    let begin = keys::OWN_UNSEEN.key(&(conv_id, user_id, seen + 1));
    Ok(tx
        .get_range(&begin, &end, crate::RangeOptions::default())?
        .len() as u64)
}

/// One conversation's acks for [`ChatStore::commit_group`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckBatch {
    /// The conversation.
    pub conv_id: ConvId,
    /// Its acks, written in this order.
    pub acks: Vec<AckRequest>,
}

/// The answers to one conversation's acks, in their order: the receipt
/// and whether it moved, or that ack's refusal.
pub type AckResults = Vec<Result<(Receipt, bool)>>;

/// One acknowledgement of an [`ChatStore::ack_all`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRequest {
    /// The member acknowledging.
    pub user_id: UserId,
    /// The device whose cursor moves too, if any.
    pub device: Option<DeviceKey>,
    /// Which watermark.
    pub kind: AckKind,
    /// Up to which message.
    pub seq: Seq,
}

/// [`ChatStore::ack_all`] inside a transaction: the outer error is an
/// engine failure (the transaction must not commit), the inner ones are
/// refusals of single acks, which wrote nothing.
pub(crate) fn ack_all_in(
    tx: &mut dyn Transaction,
    now: super::Millis,
    conv_id: ConvId,
    acks: &[AckRequest],
) -> Result<AckResults> {
    let mut answers = Vec::with_capacity(acks.len());
    for a in acks {
        match ack_in(
            tx,
            now,
            conv_id,
            a.user_id,
            a.device.as_ref(),
            a.kind,
            a.seq,
        ) {
            // Refusals are decided before the ack writes anything.
            Err(e @ (Error::NotMember { .. } | Error::Invalid { .. } | Error::NotFound { .. })) => {
                answers.push(Err(e))
            }
            Err(e) => return Err(e),
            Ok(answer) => answers.push(Ok(answer)),
        }
    }
    Ok(answers)
}

/// [`ChatStore::ack`] inside a transaction. Every refusal is returned
/// before anything is written.
fn ack_in(
    tx: &mut dyn Transaction,
    now: super::Millis,
    conv_id: ConvId,
    actor: UserId,
    device: Option<&DeviceKey>,
    kind: AckKind,
    seq: Seq,
) -> Result<(Receipt, bool)> {
    require_member(tx, conv_id, actor)?;
    let meta: ConvMeta = get(tx, keys::CONV_META, &(conv_id,))?.unwrap_or_default();
    if seq > meta.last_seq {
        return Err(Error::invalid(
            "seq",
            format!("conversation {conv_id} ends at seq {}", meta.last_seq),
        ));
    }
    let mut receipt: Receipt = get(tx, keys::RECEIPT, &(conv_id, actor))?.unwrap_or_default();
    let mut moved = false;
    if receipt.delivered_seq < seq {
        receipt.delivered_seq = seq;
        receipt.delivered_at = Some(now);
        moved = true;
    }
    if kind == AckKind::Seen && receipt.seen_seq < seq {
        receipt.seen_seq = seq;
        receipt.seen_at = Some(now);
        moved = true;
        let (begin, _) = keys::OWN_UNSEEN.range(&(conv_id, actor));
        let end = keys::OWN_UNSEEN.key(&(conv_id, actor, seq + 1));
        tx.clear_range(&begin, &end)?;
        // The member's own messages right after it are seen too.
        loop {
            let next = keys::OWN_UNSEEN.key(&(conv_id, actor, receipt.seen_seq + 1));
            if tx.get(&next)?.is_none() {
                break;
            }
            tx.clear(&next)?;
            receipt.seen_seq += 1;
        }
        receipt.delivered_seq = receipt.delivered_seq.max(receipt.seen_seq);
    }
    if let Some(device) = device {
        advance_cursor(tx, actor, device, conv_id, seq)?;
    }
    if moved {
        put(tx, keys::RECEIPT, &(conv_id, actor), &receipt)?;
    }
    Ok((receipt, moved))
}
