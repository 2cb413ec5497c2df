//! Upgrades a store written by an earlier schema version, at open.
//!
//! Schema 2 stored messages without kinds, replies, mentions or tombstones.
//! Migrating rewrites every `msg` row in the schema-3 encoding, a bounded
//! batch per transaction (FoundationDB's transaction size and time limits),
//! then records version 3. Every batch re-reads the version: if another
//! node finished the migration meanwhile, the batch conflicts or sees 3 and
//! stops, so a row already in the new encoding is never rewritten as old.

use serde::{Deserialize, Serialize};

use super::{ConvId, Message, MessageKind, Millis, Seq, UserId};
use crate::codec::{decode, encode};
use crate::keys;
use crate::{Database, Error, RangeOptions, Result};

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
    if found != 2 || keys::SCHEMA_VERSION != 3 {
        return Err(Error::SchemaVersion {
            found,
            expected: keys::SCHEMA_VERSION,
        });
    }
    let version_key = keys::META.key(&(keys::meta::SCHEMA_VERSION,));
    let (_, end) = keys::MSG.all();
    let (mut begin, _) = keys::MSG.all();
    loop {
        let next = db.run(|tx| {
            let version: u32 = match tx.get(&version_key)? {
                Some(bytes) => decode(keys::META.name, &bytes)?,
                None => return Ok(None),
            };
            if version != 2 {
                return Ok(None);
            }
            let rows = tx.get_range(&begin, &end, RangeOptions::forward(BATCH))?;
            let Some((last, _)) = rows.last() else {
                tx.set(
                    &version_key,
                    &encode(keys::META.name, &keys::SCHEMA_VERSION)?,
                )?;
                return Ok(None);
            };
            let mut after = last.clone();
            after.push(0);
            for (key, value) in &rows {
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
                super::search::index(tx, &new)?;
            }
            Ok(Some(after))
        })?;
        match next {
            Some(after) => begin = after,
            None => break,
        }
    }
    tracing::info!("store migrated to schema {}", keys::SCHEMA_VERSION);
    Ok(())
}
