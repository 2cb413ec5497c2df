//! The ordered key-value API every backend implements.
//!
//! It is deliberately FoundationDB's shape: byte keys in one ordered space,
//! point reads, bounded range reads in either direction, blind writes and
//! range clears, all inside a transaction that either commits whole or not at
//! all. Everything above (the chat schema) is written once against it.

use crate::Result;

/// One key with its value, as range reads return them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// How a range read walks the range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many pairs; `None` reads the whole range.
    pub limit: Option<usize>,
    /// Walk from the end of the range towards its start.
    pub reverse: bool,
}

impl RangeOptions {
    /// Forward, at most `limit` pairs.
    pub fn forward(limit: usize) -> Self {
        Self {
            limit: Some(limit),
            reverse: false,
        }
    }

    /// Backward from the end, at most `limit` pairs.
    pub fn reverse(limit: usize) -> Self {
        Self {
            limit: Some(limit),
            reverse: true,
        }
    }
}

/// Operations available inside a transaction.
///
/// Reads see the transaction's own earlier writes (read-your-writes). Nothing
/// is visible to others until the [`crate::Database`] commits it.
pub trait Transaction {
    /// The value under `key`, if any.
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Pairs with `begin <= key < end`, in key order (or reverse order).
    fn get_range(&mut self, begin: &[u8], end: &[u8], opts: RangeOptions) -> Result<Vec<KeyValue>>;

    /// Writes `value` under `key`, replacing what was there.
    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<()>;

    /// Removes `key`; a missing key is not an error.
    fn clear(&mut self, key: &[u8]) -> Result<()>;

    /// Removes every key with `begin <= key < end`.
    fn clear_range(&mut self, begin: &[u8], end: &[u8]) -> Result<()>;

    /// Reads `keys` ahead of the [`Transaction::get`]s that will ask for
    /// them. An engine that pays a network round trip per read
    /// (FoundationDB) fetches them all at once and answers those gets from
    /// what it fetched (kept exact under the transaction's own writes); a
    /// local engine has nothing to gain and ignores it (the default).
    ///
    /// The keys count as read (conflicts) whether or not they are asked
    /// for later, so prefetch only what the transaction is about to read.
    fn prefetch(&mut self, keys: &[Vec<u8>]) -> Result<()> {
        let _ = keys;
        Ok(())
    }
}

/// Whether a transaction intends to write.
///
/// Backends may use it to take locks early (SQLite's `BEGIN IMMEDIATE`) so
/// that writers queue instead of failing on a lock upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxMode {
    /// Reads only; may run concurrently with writers on a snapshot.
    Read,
    /// Reads and writes.
    Write,
}

/// A backend's transaction: the [`Transaction`] operations plus commit.
/// Dropping it without committing rolls it back.
pub trait BackendTransaction: Transaction {
    /// Makes every write of this transaction durable and visible at once.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// A storage engine that can start transactions.
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and test output ("sqlite", "foundationdb").
    fn name(&self) -> &'static str;

    /// Whether the engine runs one write transaction at a time (SQLite's
    /// file lock). Such an engine gains nothing from spreading hot keys
    /// (writers queue anyway); an optimistic one (FoundationDB) does, since
    /// writers touching one key conflict and retry. Default: false.
    fn serializes_writers(&self) -> bool {
        false
    }

    /// Starts a transaction.
    fn begin(&self, mode: TxMode) -> Result<Box<dyn BackendTransaction + '_>>;

    /// Makes what was overwritten or cleared unrecoverable from the
    /// engine's files, as far as the engine allows: called after a message
    /// is deleted for everyone. Default: nothing to do.
    fn scrub(&self) -> Result<()> {
        Ok(())
    }
}
