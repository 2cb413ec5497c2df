//! Muting a conversation: no push for it (mentions excepted) until a time
//! or for ever, and a mark in the chat list.

use super::conversations::require_member;
use super::{get, put, ChatStore, ConvId, Millis, Mute, UserId};
use crate::keys;
use crate::{Error, Result};

impl ChatStore {
    /// Mutes `conv_id` for `user_id` until `until` (unix millis, in the
    /// future), or for ever when `None`. Members only; muting again
    /// replaces the earlier mute.
    pub fn mute(&self, user_id: UserId, conv_id: ConvId, until: Option<Millis>) -> Result<Mute> {
        let now = self.now();
        if until.is_some_and(|u| u <= now) {
            return Err(Error::invalid("until", "must be in the future"));
        }
        self.db().run(|tx| {
            require_member(tx, conv_id, user_id)?;
            let mute = Mute { until };
            put(tx, keys::MUTE, &(user_id, conv_id), &mute)?;
            Ok(mute)
        })
    }

    /// Ends a mute (a no-op when there is none). Members only.
    pub fn unmute(&self, user_id: UserId, conv_id: ConvId) -> Result<()> {
        self.db().run(|tx| {
            require_member(tx, conv_id, user_id)?;
            tx.clear(&keys::MUTE.key(&(user_id, conv_id)))
        })
    }

    /// The mute in force for `user_id` on `conv_id`, if any.
    pub fn mute_of(&self, user_id: UserId, conv_id: ConvId) -> Result<Option<Mute>> {
        let now = self.now();
        self.db().read(|tx| {
            let mute: Option<Mute> = get(tx, keys::MUTE, &(user_id, conv_id))?;
            Ok(mute.filter(|m| m.active(now)))
        })
    }
}
