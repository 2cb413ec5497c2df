//! Messages: fenced, gapless, idempotent appends; history and sync reads.
//!
//! Only a conversation's active actor appends. It first calls
//! [`ChatStore::activate_conversation`], which bumps the conversation's
//! epoch, and then presents that epoch and the sequence number it expects
//! to write next with every append. An actor that was replaced (its node
//! hung, another took over) gets [`Error::StaleEpoch`] and must stop; one
//! whose idea of the sequence drifted gets [`Error::SequenceMismatch`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::conversations::{load_conv, require_member};
use super::receipts::{AckBatch, AckResults};
use super::{
    get, put, ChatStore, ConvId, ConvMeta, Member, MemberStatus, Message, MessageKind,
    MessageSummary, Receipt, Seq, UserId,
};
use crate::keys;
use crate::{Error, RangeOptions, Result, Transaction};

/// The outcome of each conversation's batch of a group commit, in order:
/// its messages' outcomes, or why the whole batch was refused (fenced).
pub type AppendResults = Vec<Result<Vec<Result<AppendOutcome>>>>;

/// Characters of a message kept in the conversation's summary.
const PREVIEW_CHARS: usize = 100;

/// A message to append, before it has a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    /// Who sends it; must be an active member.
    pub sender: UserId,
    /// The sender's idempotency key for this message.
    pub client_msg_id: String,
    /// The text (of a text message or an edit; empty for the others).
    pub body: String,
    /// A text message, or an event about an earlier one.
    #[serde(default)]
    pub kind: MessageKind,
    /// For a text message: the earlier one it quotes.
    #[serde(default)]
    pub reply_to: Option<Seq>,
}

impl NewMessage {
    /// A plain text message.
    pub fn text(sender: UserId, client_msg_id: impl Into<String>, body: impl Into<String>) -> Self {
        Self {
            sender,
            client_msg_id: client_msg_id.into(),
            body: body.into(),
            kind: MessageKind::Text,
            reply_to: None,
        }
    }

    /// Checks the fields a client filled, before anything is read.
    fn check(&self, limits: &super::Limits) -> Result<()> {
        match self.kind {
            MessageKind::Text | MessageKind::Edit { .. } => {
                limits.message(&self.body, &self.client_msg_id)
            }
            // No text of their own: only the idempotency key to check.
            MessageKind::Delete { .. } | MessageKind::Reaction { .. } => {
                limits.message("-", &self.client_msg_id)
            }
        }
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Written under a new sequence number.
    Appended(Message),
    /// The sender had already sent this `client_msg_id`: the original
    /// message, nothing written.
    Duplicate(Message),
}

impl AppendOutcome {
    /// The stored message, new or original.
    pub fn message(&self) -> &Message {
        match self {
            AppendOutcome::Appended(m) | AppendOutcome::Duplicate(m) => m,
        }
    }
}

impl ChatStore {
    /// Claims the conversation for a new actor: bumps and returns its epoch
    /// together with its last sequence number.
    pub fn activate_conversation(&self, conv_id: ConvId) -> Result<ConvMeta> {
        self.db().run(|tx| {
            load_conv(tx, conv_id)?;
            let mut meta: ConvMeta = get(tx, keys::CONV_META, &(conv_id,))?.unwrap_or_default();
            meta.epoch += 1;
            put(tx, keys::CONV_META, &(conv_id,), &meta)?;
            Ok(meta)
        })
    }

    /// Appends one message as sequence number `next_seq`.
    pub fn append(
        &self,
        conv_id: ConvId,
        epoch: u64,
        next_seq: Seq,
        message: &NewMessage,
    ) -> Result<AppendOutcome> {
        let mut outcomes =
            self.append_batch(conv_id, epoch, next_seq, std::slice::from_ref(message))?;
        outcomes
            .pop()
            .unwrap_or_else(|| unreachable!("one outcome per message"))
    }

    /// Appends messages in one transaction, the first new one as `next_seq`
    /// and the rest after it without gaps.
    ///
    /// A stale epoch or a wrong `next_seq` fails the whole batch. A single
    /// message that is invalid or whose sender is not a member gets its own
    /// error in the returned list and takes no sequence number; a repeat of
    /// a `client_msg_id` earlier in the same batch returns the original.
    /// Resends of messages committed by earlier batches are not looked up
    /// here (no dedup row is written): the conversation actor drops them
    /// first, from its window of recent ids ([`ChatStore::recent_ids`]).
    /// The outer error means nothing was written.
    pub fn append_batch(
        &self,
        conv_id: ConvId,
        epoch: u64,
        next_seq: Seq,
        messages: &[NewMessage],
    ) -> Result<Vec<Result<AppendOutcome>>> {
        let now = self.now();
        let limits = self.limits().clone();
        let reads = append_reads(conv_id, messages, None);
        let outcomes = self.db().run_idempotent(|tx| {
            tx.prefetch(&reads)?;
            append_in(tx, &limits, now, conv_id, epoch, next_seq, messages, None)
        })?;
        if deletes_any(&outcomes) {
            self.scrub_after_deletion();
        }
        Ok(outcomes)
    }

    /// Appends the batches of several conversations in ONE transaction:
    /// a node's group commit across conversations, so many quiet
    /// conversations cost one commit instead of one each.
    ///
    /// Each request succeeds or fails on its own, as
    /// [`ChatStore::append_batch`] would (a fenced conversation writes
    /// nothing and does not hold the others back). The outer error (an
    /// engine failure) means nothing at all was written.
    pub fn append_many(&self, requests: &[AppendRequest]) -> Result<AppendResults> {
        self.commit_group(requests, &[]).map(|(appends, _)| appends)
    }

    /// [`ChatStore::append_many`] and, in the same transaction, the acks
    /// of several conversations, each batch as [`ChatStore::ack_all`] would
    /// write it (after the appends): members who acknowledge every message
    /// then cost the node's writer no commit of their own.
    pub fn commit_group(
        &self,
        requests: &[AppendRequest],
        acks: &[AckBatch],
    ) -> Result<(AppendResults, Vec<AckResults>)> {
        let now = self.now();
        let limits = self.limits().clone();
        let reads: Vec<Vec<u8>> = requests
            .iter()
            .flat_map(|r| append_reads(r.conv_id, &r.messages, r.pair))
            .collect();
        // Idempotent: see `append_in`; acks only move watermarks up.
        let (results, acked) = self.db().run_idempotent(|tx| {
            // Every conversation's point reads in one round trip (on
            // FoundationDB), instead of several per conversation in turn.
            tx.prefetch(&reads)?;
            let mut results = Vec::with_capacity(requests.len());
            for r in requests {
                let result = append_in(
                    tx,
                    &limits,
                    now,
                    r.conv_id,
                    r.epoch,
                    r.next_seq,
                    &r.messages,
                    r.pair,
                );
                match result {
                    // The fence refused before writing anything.
                    Err(e @ (Error::StaleEpoch { .. } | Error::SequenceMismatch { .. })) => {
                        results.push(Err(e))
                    }
                    Err(e) => return Err(e),
                    Ok(outcomes) => {
                        super::push::owe_pushes(tx, now, &r.push_to, &outcomes)?;
                        results.push(Ok(outcomes))
                    }
                }
            }
            let mut acked = Vec::with_capacity(acks.len());
            for batch in acks {
                acked.push(super::receipts::ack_all_in(
                    tx,
                    now,
                    batch.conv_id,
                    &batch.acks,
                )?);
            }
            Ok((results, acked))
        })?;
        if results.iter().flatten().any(|r| deletes_any(r)) {
            self.scrub_after_deletion();
        }
        Ok((results, acked))
    }

    /// A page of history, newest first: messages before `before_seq` (or the
    /// newest ones), at most `limit` (clamped to the page limit).
    pub fn history(
        &self,
        actor: UserId,
        conv_id: ConvId,
        before_seq: Option<Seq>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let limit = self.limits().page(limit);
        self.db().read(|tx| {
            require_member(tx, conv_id, actor)?;
            let (begin, mut end) = keys::MSG.range(&(conv_id,));
            if let Some(before) = before_seq {
                end = keys::MSG.key(&(conv_id, before));
            }
            let mut page =
                decode_messages(tx.get_range(&begin, &end, RangeOptions::reverse(limit))?)?;
            super::events::decorate(tx, &mut page, true)?;
            Ok(page)
        })
    }

    /// Messages after `after_seq`, oldest first, at most `limit`: what a
    /// reconnecting client missed.
    pub fn messages_after(
        &self,
        actor: UserId,
        conv_id: ConvId,
        after_seq: Seq,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let limit = self.limits().page(limit);
        self.db().read(|tx| {
            require_member(tx, conv_id, actor)?;
            let (_, end) = keys::MSG.range(&(conv_id,));
            let begin = keys::MSG.key(&(conv_id, after_seq.saturating_add(1)));
            let mut page =
                decode_messages(tx.get_range(&begin, &end, RangeOptions::forward(limit))?)?;
            super::events::decorate(tx, &mut page, false)?;
            Ok(page)
        })
    }

    /// The sender, `client_msg_id` and seq of the conversation's newest
    /// `limit` messages, oldest first: what its actor's window of recent
    /// ids starts from when it activates, so a resend whose `sent` was
    /// lost (the node that committed it died) still gets its original seq.
    pub fn recent_ids(&self, conv_id: ConvId, limit: usize) -> Result<Vec<(UserId, String, Seq)>> {
        self.db().read(|tx| {
            let (begin, end) = keys::MSG.range(&(conv_id,));
            let rows = tx.get_range(&begin, &end, RangeOptions::reverse(limit))?;
            let mut ids = decode_messages(rows)?
                .into_iter()
                .map(|m| (m.sender, m.client_msg_id, m.seq))
                .collect::<Vec<_>>();
            ids.reverse();
            Ok(ids)
        })
    }

    /// One message of a conversation the actor belongs to.
    pub fn message(&self, actor: UserId, conv_id: ConvId, seq: Seq) -> Result<Message> {
        self.db().read(|tx| {
            require_member(tx, conv_id, actor)?;
            let mut m = get::<Message, _>(tx, keys::MSG, &(conv_id, seq))?
                .ok_or(Error::NotFound { what: "message" })?;
            super::events::decorate(tx, std::slice::from_mut(&mut m), true)?;
            Ok(m)
        })
    }
}

/// Accounts for the sender's own new message `seq`. A sender who had
/// everything before it has it too: their watermark moves over it. One who
/// had not keeps their watermarks (sending proves nothing about messages a
/// device never received), and the message is recorded as their own so it
/// never counts as unread for them.
fn own_message(
    tx: &mut dyn Transaction,
    senders: &mut HashMap<UserId, Receipt>,
    conv_id: ConvId,
    sender: UserId,
    seq: Seq,
    now: u64,
    event: bool,
) -> Result<()> {
    let receipt = match senders.entry(sender) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(get(tx, keys::RECEIPT, &(conv_id, sender))?.unwrap_or_default())
        }
    };
    if receipt.delivered_seq + 1 == seq {
        receipt.delivered_seq = seq;
        receipt.delivered_at = Some(now);
    }
    if receipt.seen_seq + 1 == seq {
        receipt.seen_seq = seq;
        receipt.seen_at = Some(now);
    } else if !event {
        // (An event is never unread for anyone: `msg_event` covers it.)
        put(tx, keys::OWN_UNSEEN, &(conv_id, sender, seq), &())?;
    }
    Ok(())
}

/// Whether an append deleted a message (its text must then be scrubbed
/// from the engine's files: [`ChatStore::scrub_soon`]).
fn deletes_any(outcomes: &[Result<AppendOutcome>]) -> bool {
    outcomes.iter().flatten().any(
        |o| matches!(o, AppendOutcome::Appended(m) if matches!(m.kind, MessageKind::Delete { .. })),
    )
}

fn decode_messages(rows: Vec<crate::KeyValue>) -> Result<Vec<Message>> {
    rows.into_iter()
        .map(|(_, v)| crate::codec::decode(keys::MSG.name, &v))
        .collect()
}

/// One conversation's batch for [`ChatStore::append_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    /// The conversation.
    pub conv_id: ConvId,
    /// The epoch its actor holds.
    pub epoch: u64,
    /// The sequence number the first new message takes.
    pub next_seq: Seq,
    /// The messages, in order.
    pub messages: Vec<NewMessage>,
    /// Members with no live session: each new message owes them a push
    /// (its sender excepted), recorded in the push outbox by this same
    /// transaction.
    pub push_to: Vec<UserId>,
    /// For a conversation of two members, the two as its actor knows them:
    /// a direct chat's block check then reads their block rows with the
    /// transaction's other reads (one round trip on FoundationDB) instead
    /// of reading the members first. Checked against the member rows;
    /// without it (or when it does not match) the members are read.
    pub pair: Option<(UserId, UserId)>,
}

/// The outcomes of a batch that an earlier run of this very append
/// committed (see [`append_in`]), or `None` when the message stored at
/// `next_seq` is not one of the batch's. The batch's new messages sit at
/// `next_seq` and after, in order: one range read finds them.
fn already_appended(
    tx: &mut dyn Transaction,
    limits: &super::Limits,
    meta: &ConvMeta,
    conv_id: ConvId,
    next_seq: Seq,
    messages: &[NewMessage],
) -> Result<Option<Vec<Result<AppendOutcome>>>> {
    if next_seq > meta.last_seq {
        return Ok(None);
    }
    let begin = keys::MSG.key(&(conv_id, next_seq));
    let end = keys::MSG.key(&(conv_id, next_seq.saturating_add(messages.len() as u64)));
    let stored = decode_messages(tx.get_range(&begin, &end, RangeOptions::default())?)?;
    let Some(first) = stored.first() else {
        return Ok(None);
    };
    let ours = |m: &NewMessage| m.sender == first.sender && m.client_msg_id == first.client_msg_id;
    if !messages.iter().any(ours) {
        return Ok(None);
    }
    let mut by_id: HashMap<(UserId, &str), Message> = stored
        .iter()
        .map(|m| ((m.sender, m.client_msg_id.as_str()), m.clone()))
        .collect();
    let mut answered: HashMap<(UserId, &str), Message> = HashMap::new();
    let mut outcomes = Vec::with_capacity(messages.len());
    for m in messages {
        let key = (m.sender, m.client_msg_id.as_str());
        let outcome = if let Some(original) = answered.get(&key) {
            Ok(AppendOutcome::Duplicate(original.clone()))
        } else if let Some(new) = by_id.remove(&key) {
            answered.insert(key, new.clone());
            Ok(AppendOutcome::Appended(new))
        } else {
            // Not stored: the first run refused it; refuse it the same way.
            match m.check(limits) {
                Err(e) => Err(e),
                Ok(()) => Err(Error::NotMember {
                    conv_id,
                    user_id: m.sender,
                }),
            }
        };
        outcomes.push(outcome);
    }
    Ok(Some(outcomes))
}

/// The point reads [`append_in`] makes for a batch: the fence, the
/// conversation row, and per sender their membership and receipt; with a
/// `pair`, both member rows and both block rows (for
/// [`Transaction::prefetch`]).
fn append_reads(
    conv_id: ConvId,
    messages: &[NewMessage],
    pair: Option<(UserId, UserId)>,
) -> Vec<Vec<u8>> {
    let mut reads = vec![
        keys::CONV_META.key(&(conv_id,)),
        keys::CONV.key(&(conv_id,)),
    ];
    if let Some((a, b)) = pair {
        reads.push(keys::MEMBER.key(&(conv_id, a)));
        reads.push(keys::MEMBER.key(&(conv_id, b)));
        reads.push(keys::BLOCK.key(&(a, b)));
        reads.push(keys::BLOCK.key(&(b, a)));
    }
    let mut senders = std::collections::HashSet::new();
    for m in messages {
        if senders.insert(m.sender) {
            reads.push(keys::MEMBER.key(&(conv_id, m.sender)));
            reads.push(keys::RECEIPT.key(&(conv_id, m.sender)));
        }
    }
    reads
}

/// Whether `conv_id` is a direct chat whose two users have blocked one
/// another (either way). One read of the conversation row and, for direct
/// chats, of its two members (point reads of the `pair`'s rows when they
/// are its members, else a range read), per append batch.
fn direct_chat_blocked(
    tx: &mut dyn Transaction,
    conv_id: ConvId,
    pair: Option<(UserId, UserId)>,
) -> Result<bool> {
    let Some(conv) = get::<super::Conversation, _>(tx, keys::CONV, &(conv_id,))? else {
        return Ok(false);
    };
    if conv.kind != super::ConvKind::Direct {
        return Ok(false);
    }
    // A direct chat has exactly two member rows, for good: two users of the
    // hint that both have one are its pair.
    if let Some((a, b)) = pair.filter(|(a, b)| a != b) {
        let row_a: Option<Member> = get(tx, keys::MEMBER, &(conv_id, a))?;
        let row_b: Option<Member> = get(tx, keys::MEMBER, &(conv_id, b))?;
        if row_a.is_some() && row_b.is_some() {
            return super::blocks::either_blocked(tx, a, b);
        }
    }
    let (begin, end) = keys::MEMBER.range(&(conv_id,));
    let rows = tx.get_range(&begin, &end, crate::RangeOptions::forward(2))?;
    let mut users = Vec::with_capacity(2);
    for (k, _) in rows {
        let (_, user_id): (ConvId, UserId) = keys::MEMBER.unpack(&k)?;
        users.push(user_id);
    }
    match users[..] {
        [a, b] => super::blocks::either_blocked(tx, a, b),
        _ => Ok(false),
    }
}

/// The body of an append inside a caller's transaction: checks the fence
/// first (writing nothing when it refuses), then appends.
///
/// Idempotent: run again after its own commit (an unknown commit outcome,
/// retried), it finds the batch already stored from `next_seq` on and
/// answers what the first run did, writing nothing. Only the actor holding
/// `epoch` appends to the conversation, so messages of this batch stored at
/// `next_seq` can only be that earlier run's.
#[allow(clippy::too_many_arguments)]
fn append_in(
    tx: &mut dyn Transaction,
    limits: &super::Limits,
    now: super::Millis,
    conv_id: ConvId,
    epoch: u64,
    next_seq: Seq,
    messages: &[NewMessage],
    pair: Option<(UserId, UserId)>,
) -> Result<Vec<Result<AppendOutcome>>> {
    // No read of the conversation row: deleting a group bumps its
    // epoch, so the fence below also refuses appends to deleted
    // conversations (and an unknown one has epoch 0, never held).
    let mut meta: ConvMeta = get(tx, keys::CONV_META, &(conv_id,))?.unwrap_or_default();
    if meta.epoch != epoch || epoch == 0 {
        return Err(Error::StaleEpoch {
            conv_id,
            presented: epoch,
            current: meta.epoch,
        });
    }
    if meta.last_seq + 1 != next_seq {
        if let Some(outcomes) = already_appended(tx, limits, &meta, conv_id, next_seq, messages)? {
            return Ok(outcomes);
        }
        return Err(Error::SequenceMismatch {
            conv_id,
            expected: meta.last_seq + 1,
            presented: next_seq,
        });
    }
    let mut outcomes = Vec::with_capacity(messages.len());
    // Per-batch caches: each sender's membership is read once, and
    // each sender's receipt is written once, after the loop.
    let mut is_member: HashMap<UserId, bool> = HashMap::new();
    let mut senders: HashMap<UserId, Receipt> = HashMap::new();
    // No dedup row: a resend of an earlier batch is the caller's to catch
    // (the conversation actor's window of recent ids, rebuilt from the
    // log's tail: `ChatStore::recent_ids`); within a batch, here.
    let mut in_batch: HashMap<(UserId, &str), Message> = HashMap::new();
    // A direct chat between users who blocked one another carries nothing.
    let blocked = direct_chat_blocked(tx, conv_id, pair)?;
    for m in messages {
        let outcome = (|| {
            m.check(limits)?;
            let member = match is_member.get(&m.sender) {
                Some(&known) => known,
                None => {
                    let row: Option<Member> = get(tx, keys::MEMBER, &(conv_id, m.sender))?;
                    let active = row.is_some_and(|r| r.status == MemberStatus::Active);
                    is_member.insert(m.sender, active);
                    active
                }
            };
            if !member {
                return Err(Error::NotMember {
                    conv_id,
                    user_id: m.sender,
                });
            }
            // Deleting one's own earlier messages stays possible: a block
            // stops new words, not their erasure.
            if blocked && !matches!(m.kind, MessageKind::Delete { .. }) {
                return Err(Error::Forbidden(super::blocks::BLOCKED_DIRECT));
            }
            if let Some(original) = in_batch.get(&(m.sender, m.client_msg_id.as_str())) {
                return Ok(AppendOutcome::Duplicate(original.clone()));
            }
            let seq = meta.last_seq + 1;
            let (mentions, reply) = super::events::apply(
                tx, &mut meta, conv_id, m.sender, &m.kind, &m.body, m.reply_to, seq, now,
            )?;
            let event = m.kind != MessageKind::Text;
            let message = Message {
                conv_id,
                seq,
                sender: m.sender,
                client_msg_id: m.client_msg_id.clone(),
                body: match m.kind {
                    MessageKind::Text | MessageKind::Edit { .. } => m.body.clone(),
                    MessageKind::Delete { .. } | MessageKind::Reaction { .. } => String::new(),
                },
                sent_at: now,
                kind: m.kind.clone(),
                reply_to: if event { None } else { m.reply_to },
                mentions,
                edited_at: None,
                deleted_at: None,
                reply,
                reactions: Vec::new(),
            };
            put(tx, keys::MSG, &(conv_id, seq), &message)?;
            // The search index follows the log (`search::index_pending`).
            if event {
                put(tx, keys::MSG_EVENT, &(conv_id, seq), &())?;
            } else {
                super::events::note_mentions(tx, &message)?;
            }
            own_message(tx, &mut senders, conv_id, m.sender, seq, now, event)?;
            meta.last_seq = seq;
            if !event {
                meta.last_message = Some(MessageSummary {
                    seq,
                    sender: m.sender,
                    preview: m.body.chars().take(PREVIEW_CHARS).collect(),
                    sent_at: now,
                });
            }
            in_batch.insert((m.sender, m.client_msg_id.as_str()), message.clone());
            Ok(AppendOutcome::Appended(message))
        })();
        match outcome {
            // This message's own fault: reported, the batch goes on.
            Err(
                e @ (Error::Invalid { .. }
                | Error::NotMember { .. }
                | Error::Forbidden(_)
                | Error::NotFound { .. }),
            ) => outcomes.push(Err(e)),
            // Engine errors abort the transaction (and maybe retry it).
            Err(e) => return Err(e),
            Ok(o) => outcomes.push(Ok(o)),
        }
    }
    for (sender, receipt) in senders {
        put(tx, keys::RECEIPT, &(conv_id, sender), &receipt)?;
    }
    put(tx, keys::CONV_META, &(conv_id,), &meta)?;
    Ok(outcomes)
}
