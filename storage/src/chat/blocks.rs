//! The block list: a user blocks another, who then can neither start a
//! direct chat with them, nor add them to a group, nor send to a direct
//! chat they share. Checked inside the same transactions that open chats,
//! add members and append messages, so every path (HTTP, WebSocket, any
//! node) is covered.

use super::{get, put, ChatStore, Millis, UserId};
use crate::chat::conversations::require_user;
use crate::{keys, Error, RangeOptions, Result, Transaction};

/// Why a direct chat refuses to open or to carry a message.
pub(crate) const BLOCKED_DIRECT: &str =
    "one of you has blocked the other: no direct chat between you";
/// Why a user cannot be added to a group.
pub(crate) const BLOCKED_ADD: &str = "this user has blocked you: you cannot add them";

/// Whether `blocker` has blocked `blocked`.
pub(crate) fn has_blocked(
    tx: &mut dyn Transaction,
    blocker: UserId,
    blocked: UserId,
) -> Result<bool> {
    Ok(tx.get(&keys::BLOCK.key(&(blocker, blocked)))?.is_some())
}

/// Whether either of two users has blocked the other.
pub(crate) fn either_blocked(tx: &mut dyn Transaction, a: UserId, b: UserId) -> Result<bool> {
    Ok(has_blocked(tx, a, b)? || has_blocked(tx, b, a)?)
}

/// One entry of a user's block list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Who is blocked.
    pub user_id: UserId,
    /// Since when, ms since the Unix epoch.
    pub since: Millis,
}

impl ChatStore {
    /// `blocker` blocks `blocked`. Blocking twice keeps the first date;
    /// blocking yourself or an unknown user is refused.
    pub fn block(&self, blocker: UserId, blocked: UserId) -> Result<Block> {
        if blocker == blocked {
            return Err(Error::invalid("user_id", "cannot block yourself"));
        }
        let now = self.now();
        self.db().run(|tx| {
            require_user(tx, blocked)?;
            if let Some(since) = get::<Millis, _>(tx, keys::BLOCK, &(blocker, blocked))? {
                return Ok(Block {
                    user_id: blocked,
                    since,
                });
            }
            put(tx, keys::BLOCK, &(blocker, blocked), &now)?;
            Ok(Block {
                user_id: blocked,
                since: now,
            })
        })
    }

    /// `blocker` unblocks `blocked`; [`Error::NotFound`] when they had not
    /// blocked them.
    pub fn unblock(&self, blocker: UserId, blocked: UserId) -> Result<()> {
        self.db().run(|tx| {
            let key = keys::BLOCK.key(&(blocker, blocked));
            if tx.get(&key)?.is_none() {
                return Err(Error::NotFound { what: "block" });
            }
            tx.clear(&key)
        })
    }

    /// Everyone `blocker` has blocked, by user id.
    pub fn blocked_users(&self, blocker: UserId) -> Result<Vec<Block>> {
        self.db().read(|tx| {
            let (begin, end) = keys::BLOCK.range(&(blocker,));
            let rows = tx.get_range(&begin, &end, RangeOptions::default())?;
            rows.into_iter()
                .map(|(k, v)| {
                    let (_, user_id): (UserId, UserId) = keys::BLOCK.unpack(&k)?;
                    let since: Millis = crate::codec::decode(keys::BLOCK.name, &v)?;
                    Ok(Block { user_id, since })
                })
                .collect()
        })
    }
}
