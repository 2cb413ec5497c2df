//! Last-seen times, persisted when a user's last session ends.

use super::{get, put, ChatStore, Millis, UserId};
use crate::keys;
use crate::Result;

impl ChatStore {
    /// Records that the user was last online at `at` (never moves back).
    pub fn set_last_seen(&self, user_id: UserId, at: Millis) -> Result<()> {
        self.db().run(|tx| {
            let previous: Option<Millis> = get(tx, keys::LAST_SEEN, &(user_id,))?;
            if previous.is_none_or(|p| p < at) {
                put(tx, keys::LAST_SEEN, &(user_id,), &at)?;
            }
            Ok(())
        })
    }

    /// When the user was last seen online, if ever.
    pub fn last_seen(&self, user_id: UserId) -> Result<Option<Millis>> {
        self.db().read(|tx| get(tx, keys::LAST_SEEN, &(user_id,)))
    }

    /// Every contact of `user_id` ([`ChatStore::contacts`]) with when they
    /// were last seen online, in one read: the presence snapshot a session
    /// gets at connect, which a member of a large group would otherwise pay
    /// for with a store call per contact.
    pub fn contacts_last_seen(&self, user_id: UserId) -> Result<Vec<(UserId, Option<Millis>)>> {
        self.db().read(|tx| {
            let contacts = super::members::contacts_in(tx, user_id)?;
            let mut out = Vec::with_capacity(contacts.len());
            for contact in contacts {
                out.push((contact, get(tx, keys::LAST_SEEN, &(contact,))?));
            }
            Ok(out)
        })
    }
}
