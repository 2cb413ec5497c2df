//! Edits, deletions, reactions, replies and mentions: what a message of a
//! conversation's sequence does besides carrying text.
//!
//! Each event is appended like a message (its own seq, idempotent by
//! `client_msg_id`, fenced) and applied to its target in the same
//! transaction, so every member sees the same result in the same order,
//! live or by sync. The functions here run inside
//! [`super::messages`]' append transaction and return per-message errors
//! (not the author, unknown seq, bad emoji) that refuse that one event.

use std::collections::{BTreeMap, HashSet};

use super::conversations::require_member;
use super::{
    get, put, ChatStore, ConvId, ConvKind, ConvMeta, Conversation, Member, MemberStatus, Message,
    MessageKind, MessageVersion, Millis, Quote, ReactionCount, Role, Seq, UserId,
};
use crate::keys;
use crate::{Error, RangeOptions, Result, Transaction};

/// Characters of a quoted message shown with a reply (and in previews).
pub const QUOTE_CHARS: usize = 100;
/// Most edits of one message: each keeps the text it replaced.
pub const MAX_EDITS: usize = 50;
/// Most different emoji one member may put on one message.
pub const MAX_REACTIONS_PER_MEMBER: usize = 20;
/// Longest reaction, in bytes (a flag or a family emoji with modifiers
/// takes about 30).
pub const MAX_EMOJI_BYTES: usize = 32;
/// Most users one message may mention.
pub const MAX_MENTIONS: usize = 20;
/// Most `@name` candidates looked up per message (found or not): bounds
/// the reads a text full of `@`s costs.
pub const MAX_MENTION_LOOKUPS: usize = 50;

/// A text message of the conversation that is not deleted: what an edit,
/// a deletion, a reaction or a reply may point at.
fn live_text(tx: &mut dyn Transaction, conv_id: ConvId, seq: Seq) -> Result<Message> {
    match get::<Message, _>(tx, keys::MSG, &(conv_id, seq))? {
        Some(m) if !m.is_event() && m.deleted_at.is_none() => Ok(m),
        _ => Err(Error::NotFound { what: "message" }),
    }
}

/// The quote of `seq` for a reply, as the message is now.
fn quote(tx: &mut dyn Transaction, conv_id: ConvId, seq: Seq) -> Result<Option<Quote>> {
    Ok(
        get::<Message, _>(tx, keys::MSG, &(conv_id, seq))?.map(|m| Quote {
            seq,
            sender: m.sender,
            preview: m.body.chars().take(QUOTE_CHARS).collect(),
            deleted: m.deleted_at.is_some(),
        }),
    )
}

/// Checks a new text message's `reply_to` and returns its quote.
pub(crate) fn reply(tx: &mut dyn Transaction, conv_id: ConvId, seq: Seq) -> Result<Quote> {
    live_text(tx, conv_id, seq).map_err(|_| {
        Error::invalid(
            "reply_to",
            "must be a message of this conversation that is not deleted",
        )
    })?;
    quote(tx, conv_id, seq)?.ok_or(Error::NotFound { what: "message" })
}

/// The members named `@name` in a text, resolved to user ids: current
/// members only, the author left out, each once, at most
/// [`MAX_MENTIONS`].
pub(crate) fn mentions(
    tx: &mut dyn Transaction,
    conv_id: ConvId,
    author: UserId,
    body: &str,
) -> Result<Vec<UserId>> {
    let name_char = |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '-');
    let mut found = Vec::new();
    let mut lookups = 0;
    let mut prev: Option<char> = None;
    for (i, c) in body.char_indices() {
        let starts = c == '@' && !prev.is_some_and(name_char);
        prev = Some(c);
        if !starts {
            continue;
        }
        let rest = &body[i + 1..];
        let end = rest.find(|c: char| !name_char(c)).unwrap_or(rest.len());
        let name = &rest[..end];
        if name.is_empty() || name.chars().count() > 64 {
            continue;
        }
        // A sentence may end right after the name ("thanks @bob."): the
        // name as written first, then without its trailing dots and dashes.
        let trimmed = name.trim_end_matches(['.', '-']);
        let candidates = if trimmed.len() < name.len() {
            vec![name, trimmed]
        } else {
            vec![name]
        };
        let mut user = None;
        for candidate in candidates {
            if candidate.is_empty() || lookups == MAX_MENTION_LOOKUPS {
                break;
            }
            lookups += 1;
            let key = super::names::name_key(candidate);
            user = get::<UserId, _>(tx, keys::USER_BY_NAME, &(&key,))?;
            if user.is_some() {
                break;
            }
        }
        let Some(user_id) = user else {
            continue;
        };
        if user_id == author || found.contains(&user_id) {
            continue;
        }
        let member: Option<Member> = get(tx, keys::MEMBER, &(conv_id, user_id))?;
        if member.is_some_and(|m| m.status == MemberStatus::Active) {
            found.push(user_id);
            if found.len() == MAX_MENTIONS {
                break;
            }
        }
    }
    Ok(found)
}

/// Records who a message mentions, for their chat-list badge.
pub(crate) fn note_mentions(tx: &mut dyn Transaction, m: &Message) -> Result<()> {
    for &user_id in &m.mentions {
        put(tx, keys::MENTION, &(user_id, m.conv_id, m.seq), &())?;
    }
    Ok(())
}

fn forget_mentions(tx: &mut dyn Transaction, m: &Message) -> Result<()> {
    for &user_id in &m.mentions {
        tx.clear(&keys::MENTION.key(&(user_id, m.conv_id, m.seq)))?;
    }
    Ok(())
}

/// Keeps the chat list's preview in step with an edited or deleted
/// message when it is the newest.
fn refresh_preview(meta: &mut ConvMeta, target: &Message) {
    if let Some(last) = meta.last_message.as_mut().filter(|l| l.seq == target.seq) {
        last.preview = target.body.chars().take(QUOTE_CHARS).collect();
    }
}

/// Applies an edit by `author` of `target` (the edit itself is message
/// `seq`): keeps the replaced text, reindexes, re-resolves mentions (and
/// returns them, for the edit's own frame).
#[allow(clippy::too_many_arguments)]
pub(crate) fn edit(
    tx: &mut dyn Transaction,
    meta: &mut ConvMeta,
    conv_id: ConvId,
    target: Seq,
    author: UserId,
    body: &str,
    seq: Seq,
    now: Millis,
) -> Result<Vec<UserId>> {
    let mut m = live_text(tx, conv_id, target)?;
    if m.sender != author {
        return Err(Error::Forbidden("only its author can edit a message"));
    }
    let (begin, end) = keys::MSG_VERSION.range(&(conv_id, target));
    if tx
        .get_range(&begin, &end, RangeOptions::forward(MAX_EDITS))?
        .len()
        >= MAX_EDITS
    {
        return Err(Error::invalid(
            "seq",
            format!("a message can be edited at most {MAX_EDITS} times"),
        ));
    }
    let replaced = MessageVersion {
        body: std::mem::take(&mut m.body),
        since: m.edited_at.unwrap_or(m.sent_at),
    };
    // An indexed message is reindexed here; one the follower has not
    // reached yet it will index by the text it finds then.
    let indexed = super::search::is_indexed(tx, conv_id, target)?;
    if indexed {
        super::search::unindex(
            tx,
            &Message {
                body: replaced.body.clone(),
                ..m.clone()
            },
        )?;
    }
    put(tx, keys::MSG_VERSION, &(conv_id, target, seq), &replaced)?;
    forget_mentions(tx, &m)?;
    m.body = body.to_owned();
    m.edited_at = Some(now);
    m.mentions = mentions(tx, conv_id, author, body)?;
    note_mentions(tx, &m)?;
    if indexed {
        super::search::index(tx, &m)?;
    }
    put(tx, keys::MSG, &(conv_id, target), &m)?;
    refresh_preview(meta, &m);
    Ok(m.mentions)
}

/// Applies a deletion by `by` of `target`: the author, or an admin of a
/// group. Erases the text, every earlier text and the edits' own text,
/// the index rows, reactions and mentions; the tombstone keeps the seq.
pub(crate) fn delete(
    tx: &mut dyn Transaction,
    meta: &mut ConvMeta,
    conv_id: ConvId,
    target: Seq,
    by: UserId,
    now: Millis,
) -> Result<()> {
    let mut m = live_text(tx, conv_id, target)?;
    if m.sender != by {
        let conv: Option<Conversation> = get(tx, keys::CONV, &(conv_id,))?;
        let member: Option<Member> = get(tx, keys::MEMBER, &(conv_id, by))?;
        let admin = conv.is_some_and(|c| c.kind == ConvKind::Group)
            && member.is_some_and(|m| m.role == Role::Admin && m.status == MemberStatus::Active);
        if !admin {
            return Err(Error::Forbidden(
                "only its author or a group admin can delete a message",
            ));
        }
    }
    // Its words leave the index before the deletion is acknowledged; the
    // follower never indexes a deleted message.
    if super::search::is_indexed(tx, conv_id, target)? {
        super::search::unindex(tx, &m)?;
    }
    let (begin, end) = keys::MSG_VERSION.range(&(conv_id, target));
    for (key, _) in tx.get_range(&begin, &end, RangeOptions::default())? {
        let (_, _, edit_seq): (ConvId, Seq, Seq) = keys::MSG_VERSION.unpack(&key)?;
        tx.clear(&key)?;
        if let Some(mut edit) = get::<Message, _>(tx, keys::MSG, &(conv_id, edit_seq))? {
            // Who an edit mentioned goes with its text.
            edit.body.clear();
            edit.mentions.clear();
            put(tx, keys::MSG, &(conv_id, edit_seq), &edit)?;
        }
    }
    let (begin, end) = keys::REACTION.range(&(conv_id, target));
    tx.clear_range(&begin, &end)?;
    forget_mentions(tx, &m)?;
    // A push not sent yet would carry the text.
    tx.clear(&keys::PUSH_OUTBOX.key(&(conv_id, target)))?;
    // A tombstone is unread for nobody: counted like an event from now on
    // (and no longer as its author's own unseen message).
    put(tx, keys::MSG_EVENT, &(conv_id, target), &())?;
    tx.clear(&keys::OWN_UNSEEN.key(&(conv_id, m.sender, target)))?;
    m.body.clear();
    m.mentions.clear();
    m.reply_to = None;
    m.edited_at = None;
    m.deleted_at = Some(now);
    put(tx, keys::MSG, &(conv_id, target), &m)?;
    refresh_preview(meta, &m);
    Ok(())
}

/// Checks a reaction's emoji: short, and no letters, digits, spaces or
/// control characters (it is shown as a chip, not as text), nor the
/// invisible and bidirectional-override characters user and group names
/// refuse, but for the two that emoji are built with (the zero-width
/// joiner of family and profession emoji, and variation selectors); and
/// something visible besides those.
fn check_emoji(emoji: &str) -> Result<()> {
    let builds_emoji = |c: char| c == '\u{200D}' || ('\u{FE00}'..='\u{FE0F}').contains(&c);
    let ok = !emoji.is_empty()
        && emoji.len() <= MAX_EMOJI_BYTES
        && emoji.chars().any(|c| !builds_emoji(c))
        && !emoji.chars().any(|c| {
            c.is_alphanumeric()
                || c.is_whitespace()
                || c.is_control()
                || (super::names::is_deceptive(c) && !builds_emoji(c))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "emoji",
            format!("must be one emoji of at most {MAX_EMOJI_BYTES} bytes"),
        ))
    }
}

/// Adds or removes `user`'s `emoji` on `target`. Adding one already there
/// and removing one that is not change nothing (the event still records
/// the request, so clients converge).
pub(crate) fn react(
    tx: &mut dyn Transaction,
    conv_id: ConvId,
    target: Seq,
    user_id: UserId,
    emoji: &str,
    added: bool,
    now: Millis,
) -> Result<()> {
    check_emoji(emoji)?;
    live_text(tx, conv_id, target)?;
    let key = keys::REACTION.key(&(conv_id, target, user_id, emoji));
    if !added {
        return tx.clear(&key);
    }
    if tx.get(&key)?.is_some() {
        return Ok(());
    }
    let (begin, end) = keys::REACTION.range(&(conv_id, target, user_id));
    let mine = tx.get_range(
        &begin,
        &end,
        RangeOptions::forward(MAX_REACTIONS_PER_MEMBER),
    )?;
    if mine.len() >= MAX_REACTIONS_PER_MEMBER {
        return Err(Error::invalid(
            "emoji",
            format!("at most {MAX_REACTIONS_PER_MEMBER} different reactions per message"),
        ));
    }
    tx.set(&key, &crate::codec::encode(keys::REACTION.name, &now)?)
}

/// The reactions to the messages `from..=to` of a conversation, by seq.
fn reactions_between(
    tx: &mut dyn Transaction,
    conv_id: ConvId,
    from: Seq,
    to: Seq,
) -> Result<BTreeMap<Seq, Vec<ReactionCount>>> {
    let begin = keys::REACTION.key(&(conv_id, from));
    let end = keys::REACTION.key(&(conv_id, to.saturating_add(1)));
    let mut by_seq: BTreeMap<Seq, BTreeMap<String, Vec<UserId>>> = BTreeMap::new();
    for (key, _) in tx.get_range(&begin, &end, RangeOptions::default())? {
        let (_, seq, user_id, emoji): (ConvId, Seq, UserId, String) =
            keys::REACTION.unpack(&key)?;
        by_seq
            .entry(seq)
            .or_default()
            .entry(emoji)
            .or_default()
            .push(user_id);
    }
    Ok(by_seq
        .into_iter()
        .map(|(seq, emojis)| {
            let counts = emojis
                .into_iter()
                .map(|(emoji, mut users)| {
                    users.sort_unstable();
                    ReactionCount {
                        emoji,
                        count: users.len() as u64,
                        users,
                    }
                })
                .collect();
            (seq, counts)
        })
        .collect())
}

/// Fills what reads show besides the stored row: each reply's quote as the
/// quoted message is now, and (for history pages) each message's
/// reactions.
pub(crate) fn decorate(
    tx: &mut dyn Transaction,
    messages: &mut [Message],
    with_reactions: bool,
) -> Result<()> {
    for m in messages.iter_mut() {
        if let Some(seq) = m.reply_to {
            m.reply = quote(tx, m.conv_id, seq)?;
        }
    }
    let texts = messages.iter().filter(|m| !m.is_event());
    let (Some(from), Some(to)) = (
        texts.clone().map(|m| m.seq).min(),
        texts.map(|m| m.seq).max(),
    ) else {
        return Ok(());
    };
    if with_reactions {
        let conv_id = messages[0].conv_id;
        let mut all = reactions_between(tx, conv_id, from, to)?;
        for m in messages.iter_mut() {
            if let Some(r) = all.remove(&m.seq) {
                m.reactions = r;
            }
        }
    }
    Ok(())
}

/// Events (edits, deletions, reactions) among the seqs after `after` up
/// to `last`: subtracted from unread counts.
pub(crate) fn events_after(
    tx: &mut dyn Transaction,
    conv_id: ConvId,
    after: Seq,
    last: Seq,
) -> Result<u64> {
    if last <= after {
        return Ok(0);
    }
    let begin = keys::MSG_EVENT.key(&(conv_id, after + 1));
    let end = keys::MSG_EVENT.key(&(conv_id, last + 1));
    Ok(tx.get_range(&begin, &end, RangeOptions::default())?.len() as u64)
}

/// Unread messages after `seen` that mention `user_id`.
pub(crate) fn mentions_after(
    tx: &mut dyn Transaction,
    user_id: UserId,
    conv_id: ConvId,
    seen: Seq,
) -> Result<u64> {
    let begin = keys::MENTION.key(&(user_id, conv_id, seen + 1));
    let (_, end) = keys::MENTION.range(&(user_id, conv_id));
    Ok(tx.get_range(&begin, &end, RangeOptions::default())?.len() as u64)
}

/// One text of a message's edit history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRevision {
    /// The text.
    pub body: String,
    /// Since when it was the text.
    pub at: Millis,
    /// The edit that wrote it; `None` for the original.
    pub edit_seq: Option<Seq>,
}

impl ChatStore {
    /// Every text message `seq` has had, oldest first, the current one
    /// last. Members only; empty for a deleted message (its history is
    /// erased with it).
    pub fn edit_history(
        &self,
        actor: UserId,
        conv_id: ConvId,
        seq: Seq,
    ) -> Result<Vec<MessageRevision>> {
        self.db().read(|tx| {
            require_member(tx, conv_id, actor)?;
            let m = match get::<Message, _>(tx, keys::MSG, &(conv_id, seq))? {
                Some(m) if !m.is_event() => m,
                _ => return Err(Error::NotFound { what: "message" }),
            };
            if m.deleted_at.is_some() {
                return Ok(Vec::new());
            }
            let (begin, end) = keys::MSG_VERSION.range(&(conv_id, seq));
            let mut revisions = Vec::new();
            let mut written_by = None;
            for (key, value) in tx.get_range(&begin, &end, RangeOptions::default())? {
                let (_, _, edit_seq): (ConvId, Seq, Seq) = keys::MSG_VERSION.unpack(&key)?;
                let v: MessageVersion = crate::codec::decode(keys::MSG_VERSION.name, &value)?;
                revisions.push(MessageRevision {
                    body: v.body,
                    at: v.since,
                    edit_seq: written_by,
                });
                written_by = Some(edit_seq);
            }
            revisions.push(MessageRevision {
                body: m.body,
                at: m.edited_at.unwrap_or(m.sent_at),
                edit_seq: written_by,
            });
            Ok(revisions)
        })
    }

    /// Who reacted to message `seq` with what. Members only.
    pub fn reactions(
        &self,
        actor: UserId,
        conv_id: ConvId,
        seq: Seq,
    ) -> Result<Vec<ReactionCount>> {
        self.db().read(|tx| {
            require_member(tx, conv_id, actor)?;
            match get::<Message, _>(tx, keys::MSG, &(conv_id, seq))? {
                Some(m) if !m.is_event() => {}
                _ => return Err(Error::NotFound { what: "message" }),
            }
            Ok(reactions_between(tx, conv_id, seq, seq)?
                .remove(&seq)
                .unwrap_or_default())
        })
    }
}

/// Applies the event `kind` sent by `sender` as message `seq`, or checks a
/// text message's reply and resolves its mentions. Returns the mentions
/// (of a text message, or of an edit's new text) and a text message's
/// quote.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    tx: &mut dyn Transaction,
    meta: &mut ConvMeta,
    conv_id: ConvId,
    sender: UserId,
    kind: &MessageKind,
    body: &str,
    reply_to: Option<Seq>,
    seq: Seq,
    now: Millis,
) -> Result<(Vec<UserId>, Option<Quote>)> {
    match kind {
        MessageKind::Text => {
            let quote = reply_to.map(|r| reply(tx, conv_id, r)).transpose()?;
            Ok((mentions(tx, conv_id, sender, body)?, quote))
        }
        MessageKind::Edit { target } => {
            let mentions = edit(tx, meta, conv_id, *target, sender, body, seq, now)?;
            Ok((mentions, None))
        }
        MessageKind::Delete { target } => {
            delete(tx, meta, conv_id, *target, sender, now)?;
            Ok((Vec::new(), None))
        }
        MessageKind::Reaction {
            target,
            emoji,
            added,
        } => {
            react(tx, conv_id, *target, sender, emoji, *added, now)?;
            Ok((Vec::new(), None))
        }
    }
}

/// Users among `candidates` who muted the conversation at `now`.
pub(crate) fn muted(
    tx: &mut dyn Transaction,
    conv_id: ConvId,
    candidates: &[UserId],
    now: Millis,
) -> Result<HashSet<UserId>> {
    let mut out = HashSet::new();
    for &user_id in candidates {
        let mute: Option<super::Mute> = get(tx, keys::MUTE, &(user_id, conv_id))?;
        if mute.is_some_and(|m| m.active(now)) {
            out.insert(user_id);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::check_emoji;

    #[test]
    fn emoji_built_with_joiners_and_selectors_pass_hidden_characters_do_not() {
        for ok in ["👍", "❤️", "👨‍👩‍👧", "🇫🇷", "👋🏽", "🏳️‍🌈"]
        {
            assert!(check_emoji(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "\u{202E}👍",
            "👍\u{200B}",
            "\u{200D}",
            "\u{FE0F}",
            "a",
            "👍 👍",
        ] {
            assert!(check_emoji(bad).is_err(), "{bad:?}");
        }
    }
}
