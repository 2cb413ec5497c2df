//! Upgrades a store written by an earlier schema version, at open, one
//! version at a time.
//!
//! - 2 → 3: schema 2 stored messages without kinds, replies, mentions or
//!   tombstones. Every `msg` row is rewritten in the schema-3 encoding (and
//!   indexed for search, as schema 3 did in the message's transaction).
//! - 3 → 4: the search index follows the log behind a per-conversation
//!   cursor, and no dedup row is written any more (the old ones are
//!   cleared). Schema 3 indexed every message when it was written, so each
//!   conversation's cursor starts at the last seq of its log.
//!
//! Each step works in bounded batches, one transaction each
//! (FoundationDB's transaction size and time limits), then records its
//! version. Every batch re-reads the version: if another node finished the
//! step meanwhile, the batch conflicts or sees the newer version and stops,
//! so a row already in the new layout is never rewritten as old.

use serde::{Deserialize, Serialize};

use super::{ConvId, Message, MessageKind, Millis, Seq, UserId};
use crate::codec::{decode, encode};
use crate::keys;
use crate::{Database, Error, RangeOptions, Result, Transaction};

/// Rows rewritten per transaction.
const BATCH: usize = 500;

/// A message as schema 2 stored it.
#[derive(Debug, Serialize, Deserialize)]
struct MessageV2 {
    conv_id: ConvId,
    seq: Seq,
    sender: UserId,
    client_msg_id: String,
    body: String,
    sent_at: Millis,
}

/// Brings a store from `found` up to [`keys::SCHEMA_VERSION`], or refuses
/// a version this build cannot read.
pub(crate) fn upgrade(db: &Database, found: u32) -> Result<()> {
    if !(2..keys::SCHEMA_VERSION).contains(&found) {
        return Err(Error::SchemaVersion {
            found,
            expected: keys::SCHEMA_VERSION,
        });
    }
    if found == 2 {
        rewrite(db, 2, keys::MSG, |tx, key, value| {
            let old: MessageV2 = decode(keys::MSG.name, value)?;
            let new = Message {
                conv_id: old.conv_id,
                seq: old.seq,
                sender: old.sender,
                client_msg_id: old.client_msg_id,
                body: old.body,
                sent_at: old.sent_at,
                kind: MessageKind::Text,
                reply_to: None,
                mentions: Vec::new(),
                edited_at: None,
                deleted_at: None,
                reply: None,
                reactions: Vec::new(),
            };
            tx.set(key, &encode(keys::MSG.name, &new)?)?;
            super::search::index(tx, &new).map(|_| ())
        })?;
    }
    // 3 -> 4: every message in the log so far is indexed.
    rewrite(db, 3, keys::CONV, |tx, key, _| {
        let (conv_id,): (ConvId,) = keys::CONV.unpack(key)?;
        let (begin, end) = keys::MSG.range(&(conv_id,));
        let Some((last, _)) = tx.get_range(&begin, &end, RangeOptions::reverse(1))?.pop() else {
            return Ok(());
        };
        let (_, seq): (ConvId, Seq) = keys::MSG.unpack(&last)?;
        super::put(tx, keys::SEARCH_CURSOR, &(conv_id,), &seq)
    })?;
    // Schema 4 writes no dedup rows (conversation actors keep recent ids
    // in memory, rebuilt from the log): the old ones are dead weight.
    let (begin, end) = keys::MSG_DEDUP.all();
    db.run(|tx| tx.clear_range(&begin, &end))?;
    tracing::info!("store migrated to schema {}", keys::SCHEMA_VERSION);
    Ok(())
}

/// One step: while the store is at version `from`, applies `row` to every
/// row of `family` in batches, then records version `from + 1`.
fn rewrite(
    db: &Database,
    from: u32,
    family: keys::Family,
    row: impl Fn(&mut dyn Transaction, &[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let version_key = keys::META.key(&(keys::meta::SCHEMA_VERSION,));
    let (mut begin, end) = family.all();
    loop {
        let next = db.run(|tx| {
            let version: u32 = match tx.get(&version_key)? {
                Some(bytes) => decode(keys::META.name, &bytes)?,
                None => return Ok(None),
            };
            if version != from {
                return Ok(None);
            }
            let rows = tx.get_range(&begin, &end, RangeOptions::forward(BATCH))?;
            let Some((last, _)) = rows.last() else {
                tx.set(&version_key, &encode(keys::META.name, &(from + 1))?)?;
                return Ok(None);
            };
            let mut after = last.clone();
            after.push(0);
            for (key, value) in &rows {
                row(tx, key, value)?;
            }
            Ok(Some(after))
        })?;
        match next {
            Some(after) => begin = after,
            None => return Ok(()),
        }
    }
}
