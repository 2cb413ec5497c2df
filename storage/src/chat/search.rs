//! Full-text search over the messages a user may read.
//!
//! The index is part of the key space (family `search`), so it works on
//! every backend. A row is `(conv_id, word, sent_at, seq)`, so within a
//! conversation and a word the rows run oldest to newest, and a reverse
//! range read gives the newest matches first.
//!
//! The index follows the message log instead of riding in each message's
//! transaction (that made a message touch two or more scattered pages
//! more): the node's follower calls [`ChatStore::index_pending`], which
//! indexes a conversation's messages above its `search_cursor` in batches
//! and moves the cursor in the same transaction (so a rerun after a crash
//! writes the same rows again, harmlessly). What users see does not lag:
//! - a search reads the index up to the cursor and scans the log above it,
//!   so a message is findable as soon as its `sent` arrives;
//! - every candidate is checked against the message as it is now, so an
//!   edited or deleted text is never found by its old words;
//! - an edit or deletion of an indexed message updates the index in its own
//!   transaction (a deletion erases the words before it is acknowledged);
//!   the follower never indexes a deleted message, and indexes an edited
//!   one by its current text.
//!
//! Words are maximal runs of letters and digits, in NFKC form and
//! lowercased: the same function makes index and query words, so `Ｈｅｌｌｏ`
//! finds `hello`. A query matches a message holding every one of its words.
//! Scripts written without spaces (Chinese, Japanese) index a whole run as
//! one word; a tokenizer for them is future work.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use super::{get, ChatStore, ConvId, Conversation, Message, Millis, Seq, UserConv, UserId};
use crate::keys;
use crate::{Error, RangeOptions, Result, Transaction};

/// Longest indexed word, in bytes; longer words are cut (at a character).
pub const MAX_WORD_BYTES: usize = 64;
/// Log rows a search scans above a conversation's cursor, at most: the
/// follower keeps the unindexed tail far shorter; past this many, the
/// newest are scanned and the page ends where the scan stopped.
pub const MAX_TAIL_SCAN: usize = 2_048;

/// Bytes of log read and index rows written after which one
/// [`ChatStore::index_pending`] step leaves the remaining conversations to
/// the next. One conversation's part can add at most `max_per_conv`
/// messages of at most [`MAX_INDEXED_WORDS`] rows each on top, so a step
/// stays far inside FoundationDB's 10 MB transactions.
pub const INDEX_STEP_BYTES: usize = 1024 * 1024;

/// Most distinct words indexed per message: bounds the index rows one
/// message can write (a 4 KiB message of one-letter words would otherwise
/// write a thousand).
pub const MAX_INDEXED_WORDS: usize = 256;
/// Most words in a query.
pub const MAX_QUERY_WORDS: usize = 8;
/// Longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 256;

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The message, as it is now.
    pub message: Message,
    /// Its text cut into pieces, the ones matching a query word marked.
    pub fragments: Vec<TextFragment>,
}

/// A piece of a result's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextFragment {
    /// The text.
    pub text: String,
    /// Whether it is a word of the query.
    pub matched: bool,
}

/// A page of results, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchPage {
    /// The matches.
    pub hits: Vec<SearchHit>,
    /// Pass it back for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// The words of a text with their byte ranges, normalized.
fn words(text: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let flush = |start: usize, end: usize, out: &mut Vec<(usize, usize, String)>| {
        let mut word: String = text[start..end].nfkc().collect::<String>().to_lowercase();
        if word.len() > MAX_WORD_BYTES {
            let mut cut = MAX_WORD_BYTES;
            while !word.is_char_boundary(cut) {
                cut -= 1;
            }
            word.truncate(cut);
        }
        out.push((start, end, word));
    };
    for (i, c) in text.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                flush(s, i, &mut out);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        flush(s, text.len(), &mut out);
    }
    out
}

/// The distinct words of a text, in order of first appearance, at most
/// [`MAX_INDEXED_WORDS`].
pub fn index_words(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    words(text)
        .into_iter()
        .map(|(_, _, w)| w)
        .filter(|w| seen.insert(w.clone()))
        .take(MAX_INDEXED_WORDS)
        .collect()
}

/// Indexes a text message (a no-op for events and tombstones); the bytes
/// of key it wrote.
pub(crate) fn index(tx: &mut dyn Transaction, m: &Message) -> Result<usize> {
    if m.is_event() || m.deleted_at.is_some() {
        return Ok(0);
    }
    let mut written = 0;
    for word in index_words(&m.body) {
        let key = keys::SEARCH.key(&(m.conv_id, &word, m.sent_at, m.seq));
        written += key.len();
        tx.set(&key, &[])?;
    }
    Ok(written)
}

/// How far the index follower got in `conv_id`: every message up to the
/// returned seq is indexed (0: none yet).
pub(crate) fn cursor(tx: &mut dyn Transaction, conv_id: ConvId) -> Result<Seq> {
    Ok(get(tx, keys::SEARCH_CURSOR, &(conv_id,))?.unwrap_or(0))
}

/// Whether message `seq` of `conv_id` is in the index already (so an edit
/// or deletion must update the index itself; otherwise the follower will
/// index the message as it is then).
pub(crate) fn is_indexed(tx: &mut dyn Transaction, conv_id: ConvId, seq: Seq) -> Result<bool> {
    Ok(seq <= cursor(tx, conv_id)?)
}

/// What one conversation's step of [`ChatStore::index_pending`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStep {
    /// The conversation.
    pub conv_id: ConvId,
    /// Log rows read (messages and events).
    pub messages: usize,
    /// Its cursor after the step (0 when the step left it for the next).
    pub cursor: Seq,
    /// Whether more of its log waits above the cursor.
    pub more: bool,
}

/// Removes a text message's words from the index (before an edit replaces
/// its text, or a deletion erases it).
pub(crate) fn unindex(tx: &mut dyn Transaction, m: &Message) -> Result<()> {
    for word in index_words(&m.body) {
        tx.clear(&keys::SEARCH.key(&(m.conv_id, &word, m.sent_at, m.seq)))?;
    }
    Ok(())
}

/// A result's place in the order of results: newest first, ties by
/// conversation then seq, descending.
type Position = (Millis, ConvId, Seq);

fn parse_cursor(cursor: &str) -> Result<Position> {
    let bad = || Error::invalid("cursor", "not a cursor this server gave");
    let mut parts = cursor.split('.');
    let mut next = || -> Result<u64> { parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad) };
    let position = (next()?, next()?, next()?);
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(position)
}

fn format_cursor((at, conv, seq): Position) -> String {
    format!("{at}.{conv}.{seq}")
}

/// The text cut at the query's words.
fn fragments(text: &str, query: &HashSet<String>) -> Vec<TextFragment> {
    let mut out: Vec<TextFragment> = Vec::new();
    let push = |piece: &str, matched: bool, out: &mut Vec<TextFragment>| {
        if piece.is_empty() {
            return;
        }
        match out.last_mut() {
            Some(last) if last.matched == matched && !matched => last.text.push_str(piece),
            _ => out.push(TextFragment {
                text: piece.to_owned(),
                matched,
            }),
        }
    };
    let mut at = 0;
    for (start, end, word) in words(text) {
        if query.contains(&word) {
            push(&text[at..start], false, &mut out);
            push(&text[start..end], true, &mut out);
            at = end;
        }
    }
    push(&text[at..], false, &mut out);
    out
}

impl ChatStore {
    /// The index follower's step: for each `(conversation, up_to)`,
    /// indexes at most `max_per_conv` of its log rows above its cursor and
    /// at or below `up_to` (a seq known committed), and moves the cursor
    /// over them, all in one transaction. Deleted messages and events
    /// write no row; an edited message is indexed by its current text.
    /// Idempotent: after a crash, the next step starts from the committed
    /// cursor.
    ///
    /// Reading only up to `up_to` keeps the step's reads off the keys that
    /// newer appends write, so on FoundationDB the two never conflict (an
    /// open-ended read of the log's tail would conflict with every append
    /// committed meanwhile). Edits of the rows read do conflict, as they
    /// must.
    ///
    /// A step stops taking conversations once it read and wrote
    /// [`INDEX_STEP_BYTES`]: the rest come back with `more` set and nothing
    /// done, so one step stays well inside FoundationDB's transaction
    /// limits.
    pub fn index_pending(
        &self,
        convs: &[(ConvId, Seq)],
        max_per_conv: usize,
    ) -> Result<Vec<IndexStep>> {
        let max = max_per_conv.max(1) as u64;
        self.db().run_idempotent(|tx| {
            let mut steps = Vec::with_capacity(convs.len());
            let mut read = 0;
            for &(conv_id, up_to) in convs {
                if read >= INDEX_STEP_BYTES {
                    steps.push(IndexStep {
                        conv_id,
                        messages: 0,
                        cursor: 0,
                        more: true,
                    });
                    continue;
                }
                let from = cursor(tx, conv_id)?;
                let last = up_to.min(from.saturating_add(max));
                let mut step = IndexStep {
                    conv_id,
                    messages: 0,
                    cursor: from,
                    more: false,
                };
                if last > from {
                    let begin = keys::MSG.key(&(conv_id, from + 1));
                    let end = keys::MSG.key(&(conv_id, last + 1));
                    let rows = tx.get_range(&begin, &end, RangeOptions::default())?;
                    step.messages = rows.len();
                    for (_, value) in &rows {
                        let m: Message = crate::codec::decode(keys::MSG.name, value)?;
                        read += value.len() + index(tx, &m)?;
                        step.cursor = step.cursor.max(m.seq);
                    }
                    // Only over rows it saw: an `up_to` past the log's end
                    // leaves the rest to a later step (and to the tail scan).
                    if step.cursor > from {
                        super::put(tx, keys::SEARCH_CURSOR, &(conv_id,), &step.cursor)?;
                    }
                }
                step.more = step.cursor < up_to && step.cursor > from;
                steps.push(step);
            }
            Ok(steps)
        })
    }

    /// Messages of the user's conversations holding every word of `query`,
    /// newest first, `limit` at most (clamped to the page limit), after
    /// `cursor` (the previous page's `next_cursor`).
    ///
    /// Only conversations the user is a member of now, and in each only
    /// what was sent since they (last) joined: what they could have
    /// received. Deleted messages are never found; edited ones by their
    /// current text.
    ///
    /// Work per call, per conversation of the user: its cursor, one
    /// reverse range read of at most `limit + 1` index rows (for the
    /// query's longest word) and one of the log above the cursor (at most
    /// [`MAX_TAIL_SCAN`] rows, usually none); then one read per candidate
    /// until the page is full.
    pub fn search(
        &self,
        user_id: UserId,
        query: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SearchPage> {
        if query.len() > MAX_QUERY_BYTES {
            return Err(Error::invalid(
                "q",
                format!("must be at most {MAX_QUERY_BYTES} bytes"),
            ));
        }
        let mut terms: Vec<String> = Vec::new();
        for (_, _, w) in words(query) {
            if !terms.contains(&w) {
                terms.push(w);
            }
        }
        if terms.is_empty() {
            return Err(Error::invalid("q", "must contain a word"));
        }
        if terms.len() > MAX_QUERY_WORDS {
            return Err(Error::invalid(
                "q",
                format!("must have at most {MAX_QUERY_WORDS} words"),
            ));
        }
        let cursor = cursor.map(parse_cursor).transpose()?;
        let limit = self.limits().page(limit);
        let driver = terms
            .iter()
            .max_by_key(|t| t.len())
            .cloned()
            .unwrap_or_default();
        let wanted: HashSet<String> = terms.iter().cloned().collect();
        self.db().read(|tx| {
            let (begin, end) = keys::USER_CONV.range(&(user_id,));
            let convs = tx.get_range(&begin, &end, RangeOptions::default())?;
            let scan = limit + 1;
            let mut candidates: Vec<Position> = Vec::new();
            // The oldest position examined in a conversation whose scan
            // stopped at `scan` rows: older candidates elsewhere could
            // skip past its unexamined rows, so this page stops there.
            let mut frontier: Option<Position> = None;
            for (key, value) in convs {
                let (_, conv_id): (UserId, ConvId) = keys::USER_CONV.unpack(&key)?;
                let joined: UserConv = crate::codec::decode(keys::USER_CONV.name, &value)?;
                match get::<Conversation, _>(tx, keys::CONV, &(conv_id,))? {
                    Some(c) if !c.deleted => {}
                    _ => continue,
                }
                let (begin, top) = keys::SEARCH.range(&(conv_id, &driver));
                let end = match cursor {
                    None => top,
                    Some((at, c, _)) if conv_id < c => {
                        keys::SEARCH.key(&(conv_id, &driver, at.saturating_add(1)))
                    }
                    Some((at, c, seq)) if conv_id == c => {
                        keys::SEARCH.key(&(conv_id, &driver, at, seq))
                    }
                    Some((at, _, _)) => keys::SEARCH.key(&(conv_id, &driver, at)),
                };
                let rows = tx.get_range(&begin, &end, RangeOptions::reverse(scan))?;
                let mut oldest = None;
                for (key, _) in &rows {
                    let (_, _, at, seq): (ConvId, String, Millis, Seq) =
                        keys::SEARCH.unpack(key)?;
                    oldest = Some((at, conv_id, seq));
                    if seq > joined.joined_seq {
                        candidates.push((at, conv_id, seq));
                    }
                }
                // Rows read newest first: the last one is the oldest
                // examined here. Of the conversations cut short, the one
                // cut at the newest position bounds the page.
                if rows.len() == scan {
                    frontier = frontier.max(oldest);
                }
                // The log above the cursor, not yet indexed: read-your-writes.
                let tail = unindexed_tail(tx, conv_id, &driver)?;
                if tail.cut_at.is_some() {
                    frontier = frontier.max(tail.cut_at);
                }
                candidates.extend(
                    tail.matches
                        .into_iter()
                        .filter(|&(_, _, seq)| seq > joined.joined_seq)
                        .filter(|&p| cursor.is_none_or(|c| p < c)),
                );
            }
            candidates.sort_unstable_by(|a, b| b.cmp(a));
            // A message both indexed and above the cursor (a cursor set
            // behind rows already written) is one result.
            candidates.dedup();
            let mut hits = Vec::new();
            let mut last = None;
            for position in candidates {
                if frontier.is_some_and(|f| position < f) || hits.len() == limit {
                    break;
                }
                let (_, conv_id, seq) = position;
                let Some(message) = get::<Message, _>(tx, keys::MSG, &(conv_id, seq))? else {
                    continue;
                };
                if message.deleted_at.is_some() {
                    continue;
                }
                let have: HashSet<String> = index_words(&message.body).into_iter().collect();
                if !wanted.iter().all(|w| have.contains(w)) {
                    continue;
                }
                last = Some(position);
                hits.push(SearchHit {
                    fragments: fragments(&message.body, &wanted),
                    message,
                });
            }
            let next_cursor = if hits.len() == limit {
                last.map(format_cursor)
            } else {
                frontier.map(format_cursor)
            };
            Ok(SearchPage { hits, next_cursor })
        })
    }
}

/// The part of a search done on the log above a conversation's cursor.
struct Tail {
    /// Positions of text messages holding the driving word.
    matches: Vec<Position>,
    /// Where the scan stopped when the tail was longer than
    /// [`MAX_TAIL_SCAN`]: older positions were not examined.
    cut_at: Option<Position>,
}

/// Scans the not-yet-indexed messages of `conv_id`, newest first, for
/// `driver` (one of the query's words; the caller checks the rest).
fn unindexed_tail(tx: &mut dyn Transaction, conv_id: ConvId, driver: &str) -> Result<Tail> {
    let from = cursor(tx, conv_id)?;
    let (_, end) = keys::MSG.range(&(conv_id,));
    let begin = keys::MSG.key(&(conv_id, from.saturating_add(1)));
    let rows = tx.get_range(&begin, &end, RangeOptions::reverse(MAX_TAIL_SCAN))?;
    let mut tail = Tail {
        matches: Vec::new(),
        cut_at: None,
    };
    let full = rows.len() == MAX_TAIL_SCAN;
    for (_, value) in &rows {
        let m: Message = crate::codec::decode(keys::MSG.name, value)?;
        let position = (m.sent_at, conv_id, m.seq);
        if full {
            tail.cut_at = Some(position);
        }
        if m.is_event() || m.deleted_at.is_some() {
            continue;
        }
        if words(&m.body).iter().any(|(_, _, w)| w == driver) {
            tail.matches.push(position);
        }
    }
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_normalized_runs_of_letters_and_digits() {
        let w: Vec<String> = words("Hello, ＷＯＲＬＤ! it's 42-ish naïve")
            .into_iter()
            .map(|(_, _, w)| w)
            .collect();
        assert_eq!(w, ["hello", "world", "it", "s", "42", "ish", "naïve"]);
        assert_eq!(index_words("a a b A"), ["a", "b"]);
        let long = "x".repeat(200);
        assert_eq!(index_words(&long)[0].len(), MAX_WORD_BYTES);
    }

    #[test]
    fn fragments_mark_the_query_words() {
        let q: HashSet<String> = ["world".to_owned()].into();
        let f = fragments("hello World, world!", &q);
        let text: Vec<(&str, bool)> = f.iter().map(|f| (f.text.as_str(), f.matched)).collect();
        assert_eq!(
            text,
            [
                ("hello ", false),
                ("World", true),
                (", ", false),
                ("world", true),
                ("!", false)
            ]
        );
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        assert_eq!(
            parse_cursor(&format_cursor((5, 6, 7))).ok(),
            Some((5, 6, 7))
        );
        for bad in ["", "1.2", "1.2.3.4", "a.b.c", "-1.2.3"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }
}
