//! The chat schema layer: typed operations over any backend.
//!
//! [`ChatStore`] owns a [`Database`] and the input [`Limits`]. Each public
//! operation is one transaction that validates its input and the acting
//! user's rights before it writes, so a rejected call writes nothing. The
//! operations are grouped by the entity they serve, one file each.

mod blocks;
mod chat_list;
mod conversations;
mod devices;
mod events;
mod leases;
pub mod limits;
mod members;
mod messages;
mod migrate;
pub mod model;
mod mute;
pub mod names;
mod presence;
mod push;
mod receipts;
mod search;
mod tokens;
mod users;

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use foundationdb_tuple::TuplePack;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use blocks::Block;
pub use chat_list::{ChatSummary, MessageStatus};
pub use devices::{DeviceKey, SyncStart, MAX_DEVICE_ID_BYTES};
pub use limits::Limits;
pub use messages::{AppendOutcome, AppendRequest, AppendResults, NewMessage};
pub use model::*;
pub use push::{subscription_id, PushRecipient};
pub use receipts::{AckBatch, AckKind, AckRequest, AckResults, MemberReceipt};
pub use search::{
    index_words, IndexStep, SearchHit, SearchPage, TextFragment, MAX_INDEXED_WORDS, MAX_TAIL_SCAN,
    MAX_WORD_BYTES,
};
pub use users::NewUser;

use crate::codec::{decode, encode};
use crate::keys::{self, Family};
use crate::{Database, Result, Transaction};

/// A source of wall-clock time, replaceable in tests (token expiry).
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    })
}

/// Typed chat operations over a [`Database`]. Cheap to clone.
///
/// Every method blocks on storage I/O (and the password methods on argon2):
/// call them from blocking threads in async code.
#[derive(Clone)]
pub struct ChatStore {
    db: Database,
    limits: Limits,
    clock: Clock,
    password_cost: PasswordCost,
    /// What unknown names are checked against at login (constant time).
    dummy_hash: Arc<OnceLock<String>>,
    /// The one background scrub after deletions ([`ChatStore::scrub_soon`]).
    scrub: Arc<ScrubState>,
}

/// Coalesces scrub requests: one thread at a time, run again if a deletion
/// came in meanwhile.
#[derive(Default)]
struct ScrubState {
    wanted: std::sync::atomic::AtomicBool,
    running: std::sync::atomic::AtomicBool,
}

/// Argon2 work factors. The default is the `argon2` crate's recommended one
/// (19 MiB, 2 passes); tests may lower it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self {
            memory_kib: argon2::Params::DEFAULT_M_COST,
            iterations: argon2::Params::DEFAULT_T_COST,
        }
    }
}

impl std::fmt::Debug for ChatStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatStore")
            .field("db", &self.db)
            .field("limits", &self.limits)
            .finish()
    }
}

impl ChatStore {
    /// Opens the chat schema on `db`: records the schema version in a new
    /// store, refuses a store written by another version.
    pub fn open(db: Database, limits: Limits) -> Result<Self> {
        limits.check_store_bounds()?;
        let version_key = keys::META.key(&(keys::meta::SCHEMA_VERSION,));
        db.run(|tx| {
            match tx.get(&version_key)? {
                None => tx.set(
                    &version_key,
                    &encode(keys::META.name, &keys::SCHEMA_VERSION)?,
                )?,
                Some(bytes) => {
                    let found: u32 = decode(keys::META.name, &bytes)?;
                    if found != keys::SCHEMA_VERSION {
                        return Ok(Some(found));
                    }
                }
            }
            Ok(None)
        })?
        .map_or(Ok(()), |found| migrate::upgrade(&db, found))?;
        names::index_existing(&db)?;
        Ok(Self {
            db,
            limits,
            clock: system_clock(),
            password_cost: PasswordCost::default(),
            dummy_hash: Arc::new(OnceLock::new()),
            scrub: Arc::default(),
        })
    }

    /// Replaces the clock (tests of expiry).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the argon2 work factors.
    pub fn with_password_cost(mut self, cost: PasswordCost) -> Self {
        self.password_cost = cost;
        self.dummy_hash = Arc::new(OnceLock::new());
        self
    }

    /// The underlying database, for operations outside the chat schema.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The input limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Makes a committed deletion's text unrecoverable from the engine's
    /// files before the deletion is acknowledged: one scrub now (on SQLite a
    /// WAL checkpoint, milliseconds when nothing reads old pages), and if
    /// readers are in the way, again in the background
    /// ([`ChatStore::scrub_soon`]). Deletions are rare; their commits pay
    /// for it, no other commit does.
    pub(crate) fn scrub_after_deletion(&self) {
        if let Err(e) = self.db.scrub() {
            tracing::debug!(error = %e, "scrub after a deletion: retrying in the background");
            self.scrub_soon();
        }
    }

    /// Has the engine make erased text unrecoverable from its files
    /// ([`Database::scrub`]), on a background thread. Requests that arrive
    /// while it runs make it run once more; a scrub that finds readers in
    /// the way is retried twice.
    pub(crate) fn scrub_soon(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let state = self.scrub.clone();
        state.wanted.store(true, SeqCst);
        if state.running.swap(true, SeqCst) {
            return;
        }
        let db = self.db.clone();
        let worker = state.clone();
        let spawned = std::thread::Builder::new()
            .name("parley-scrub".into())
            .spawn(move || loop {
                while worker.wanted.swap(false, SeqCst) {
                    for attempt in 1..=3 {
                        match db.scrub() {
                            Ok(()) => break,
                            Err(e) => {
                                tracing::debug!(attempt, error = %e, "scrub after a deletion");
                                std::thread::sleep(std::time::Duration::from_millis(500));
                            }
                        }
                    }
                }
                worker.running.store(false, SeqCst);
                // A request that saw `running` just before it was cleared
                // is ours to serve, unless another thread took it.
                if !worker.wanted.load(SeqCst) || worker.running.swap(true, SeqCst) {
                    return;
                }
            });
        if spawned.is_err() {
            state.running.store(false, SeqCst);
        }
    }

    /// The current time according to the store's clock.
    pub fn now(&self) -> Millis {
        (self.clock)()
    }
}

/// Reads and decodes one row.
pub(crate) fn get<T: DeserializeOwned, K: TuplePack>(
    tx: &mut dyn Transaction,
    family: Family,
    key: &K,
) -> Result<Option<T>> {
    match tx.get(&family.key(key))? {
        Some(bytes) => Ok(Some(decode(family.name, &bytes)?)),
        None => Ok(None),
    }
}

/// Encodes and writes one row.
pub(crate) fn put<T: Serialize, K: TuplePack>(
    tx: &mut dyn Transaction,
    family: Family,
    key: &K,
    value: &T,
) -> Result<()> {
    tx.set(&family.key(key), &encode(family.name, value)?)
}

/// Hands out the next id of a counter in the `meta` family, spread over
/// `shards` keys ([`Database::id_shards`]).
///
/// With one shard this is one counter: ids 1, 2, 3... With several, an
/// allocation picks a shard at random and hands out `n * shards + shard`
/// for that shard's next `n`: residues keep the shards' ids apart, and two
/// concurrent allocations touch the same key (and conflict) only when they
/// pick the same shard. This is the point of FoundationDB's high-contention
/// allocator without its window bookkeeping; ids are unique, not dense.
/// Sharded ids start above the single counter's last one, and the single
/// counter above every sharded id ([`crate::ID_SHARDS`] shards), so a
/// store that changes engines keeps every id it handed out.
pub(crate) fn next_id(tx: &mut dyn Transaction, counter: &str, shards: u64) -> Result<u64> {
    let single: u64 = get(tx, keys::META, &(counter,))?.unwrap_or(0);
    if shards <= 1 {
        // Shard rows exist only in a store an engine with concurrent
        // writers used: one empty range read otherwise.
        let (begin, end) = keys::META.range(&(counter,));
        let mut last = single;
        for (key, value) in tx.get_range(&begin, &end, crate::RangeOptions::default())? {
            let (_, shard): (String, u64) = keys::META.unpack(&key)?;
            let n: u64 = crate::codec::decode(keys::META.name, &value)?;
            last = last.max(n * crate::ID_SHARDS + shard);
        }
        let next = last + 1;
        put(tx, keys::META, &(counter,), &next)?;
        return Ok(next);
    }
    let shard = rand::Rng::gen_range(&mut rand::thread_rng(), 0..shards);
    let last: u64 = get(tx, keys::META, &(counter, shard))?.unwrap_or(0);
    let n = last.max(single / shards) + 1;
    put(tx, keys::META, &(counter, shard), &n)?;
    Ok(n * shards + shard)
}
