//! Push subscriptions: where to notify a user's devices while offline.

use sha2::{Digest, Sha256};

use super::conversations::require_user;
use super::{put, ChatStore, PushSubscription, UserId};
use crate::keys;
use crate::{Error, RangeOptions, Result, Transaction};

fn subscriptions(tx: &mut dyn Transaction, user_id: UserId) -> Result<Vec<PushSubscription>> {
    let (begin, end) = keys::PUSH_SUB.range(&(user_id,));
    tx.get_range(&begin, &end, RangeOptions::default())?
        .into_iter()
        .map(|(_, v)| crate::codec::decode(keys::PUSH_SUB.name, &v))
        .collect()
}

impl ChatStore {
    /// Registers a device's push endpoint. The id is derived from the
    /// endpoint, so registering the same device again updates it in place.
    pub fn add_push_subscription(
        &self,
        user_id: UserId,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
    ) -> Result<PushSubscription> {
        let limits = self.limits();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
            || endpoint.len() > limits.max_push_endpoint_bytes
        {
            return Err(Error::invalid(
                "endpoint",
                format!(
                    "must be an http(s) URL of at most {} bytes",
                    limits.max_push_endpoint_bytes
                ),
            ));
        }
        for (field, value) in [("p256dh", p256dh), ("auth", auth)] {
            if value.is_empty() || value.len() > 256 {
                return Err(Error::invalid(field, "must be 1 to 256 bytes"));
            }
        }
        let id = hex::encode(&Sha256::digest(endpoint.as_bytes())[..8]);
        let sub = PushSubscription {
            id: id.clone(),
            endpoint: endpoint.to_owned(),
            p256dh: p256dh.to_owned(),
            auth: auth.to_owned(),
            created_at: self.now(),
        };
        let max = limits.max_push_subscriptions;
        self.db().run(|tx| {
            require_user(tx, user_id)?;
            let existing = subscriptions(tx, user_id)?;
            if existing.len() >= max && !existing.iter().any(|s| s.id == id) {
                return Err(Error::invalid(
                    "endpoint",
                    format!("a user has at most {max} push subscriptions"),
                ));
            }
            put(tx, keys::PUSH_SUB, &(user_id, &id), &sub)?;
            Ok(sub.clone())
        })
    }

    /// Removes one of the user's push subscriptions.
    pub fn remove_push_subscription(&self, user_id: UserId, sub_id: &str) -> Result<()> {
        let key = keys::PUSH_SUB.key(&(user_id, sub_id));
        self.db().run(|tx| {
            if tx.get(&key)?.is_none() {
                return Err(Error::NotFound {
                    what: "push subscription",
                });
            }
            tx.clear(&key)
        })
    }

    /// The user's push subscriptions.
    pub fn push_subscriptions(&self, user_id: UserId) -> Result<Vec<PushSubscription>> {
        self.db().read(|tx| subscriptions(tx, user_id))
    }
}
