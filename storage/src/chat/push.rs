//! Push: the devices to notify while a user is offline, the cluster's VAPID
//! key, and the outbox of pushes owed for committed messages.
//!
//! The outbox is what makes a push survive its node: the append transaction
//! that commits a message also records who was offline
//! ([`owe_pushes`]), and a node clears the row when it takes the push over
//! ([`ChatStore::claim_pushes`]). Claiming is a transaction, so exactly one
//! node gets each row: a device hears at most once about a message.

use sha2::{Digest, Sha256};

use super::conversations::require_user;
use super::messages::AppendOutcome;
use super::{
    get, put, ChatStore, ConvId, Message, Millis, PushOwed, PushSubscription, PushTarget, Receipt,
    Seq, UserId, VapidKey,
};
use crate::keys;
use crate::{Error, RangeOptions, Result, Transaction};

/// Longest FCM or APNs token, and longest Web Push key, in bytes.
const MAX_TOKEN_BYTES: usize = 4096;

fn subscriptions(tx: &mut dyn Transaction, user_id: UserId) -> Result<Vec<PushSubscription>> {
    let (begin, end) = keys::PUSH_SUB.range(&(user_id,));
    tx.get_range(&begin, &end, RangeOptions::default())?
        .into_iter()
        .map(|(_, v)| crate::codec::decode(keys::PUSH_SUB.name, &v))
        .collect()
}

/// The subscription id of a target: its kind and address, hashed.
pub fn subscription_id(target: &PushTarget) -> String {
    let mut h = Sha256::new();
    h.update(target.kind().as_bytes());
    h.update([0]);
    h.update(target.address().as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// Records the pushes owed for the messages an append wrote: one outbox
/// row per new message that has a recipient other than its sender. Called
/// inside the append transaction.
///
/// Events (edits, deletions, reactions) owe nothing. A member who muted the
/// conversation is owed a push only for a message that mentions them.
pub(crate) fn owe_pushes(
    tx: &mut dyn Transaction,
    now: Millis,
    offline: &[UserId],
    outcomes: &[Result<AppendOutcome>],
) -> Result<()> {
    if offline.is_empty() {
        return Ok(());
    }
    let mut muted = None;
    for outcome in outcomes {
        if let Ok(AppendOutcome::Appended(m)) = outcome {
            if m.is_event() {
                continue;
            }
            let muted = match &muted {
                Some(set) => set,
                None => muted.insert(super::events::muted(tx, m.conv_id, offline, now)?),
            };
            let recipients: Vec<UserId> = offline
                .iter()
                .copied()
                .filter(|&u| u != m.sender && (!muted.contains(&u) || m.mentions.contains(&u)))
                .collect();
            if recipients.is_empty() {
                continue;
            }
            let owed = PushOwed {
                sender: m.sender,
                recipients,
                sent_at: m.sent_at,
            };
            put(tx, keys::PUSH_OUTBOX, &(m.conv_id, m.seq), &owed)?;
        }
    }
    Ok(())
}

/// What a sender needs to decide about one recipient of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRecipient {
    /// Whether the recipient has already seen the message (on any device).
    pub seen: bool,
    /// The recipient's devices.
    pub subscriptions: Vec<PushSubscription>,
}

impl ChatStore {
    /// Registers a device. The id is derived from the target's kind and
    /// address, so registering the same device again updates it in place.
    /// Checks lengths only: the push layer checks the content first.
    pub fn add_push_subscription(
        &self,
        user_id: UserId,
        target: PushTarget,
    ) -> Result<PushSubscription> {
        let limits = self.limits();
        match &target {
            PushTarget::WebPush {
                endpoint,
                p256dh,
                auth,
            } => {
                if endpoint.is_empty() || endpoint.len() > limits.max_push_endpoint_bytes {
                    return Err(Error::invalid(
                        "endpoint",
                        format!(
                            "must be a URL of at most {} bytes",
                            limits.max_push_endpoint_bytes
                        ),
                    ));
                }
                for (field, value) in [("p256dh", p256dh), ("auth", auth)] {
                    if value.is_empty() || value.len() > 256 {
                        return Err(Error::invalid(field, "must be 1 to 256 bytes"));
                    }
                }
            }
            PushTarget::Fcm { token } | PushTarget::Apns { token } => {
                if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
                    return Err(Error::invalid(
                        "token",
                        format!("must be 1 to {MAX_TOKEN_BYTES} bytes"),
                    ));
                }
            }
        }
        let id = subscription_id(&target);
        let sub = PushSubscription {
            id: id.clone(),
            target,
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

    /// Removes a subscription the push service said is gone, unless the
    /// device registered again since (`registered_at` is when the gone one
    /// was registered). Returns whether it removed it.
    pub fn remove_gone_push_subscription(
        &self,
        user_id: UserId,
        sub_id: &str,
        registered_at: Millis,
    ) -> Result<bool> {
        self.db().run(|tx| {
            let Some(sub) = get::<PushSubscription, _>(tx, keys::PUSH_SUB, &(user_id, sub_id))?
            else {
                return Ok(false);
            };
            if sub.created_at != registered_at {
                return Ok(false);
            }
            tx.clear(&keys::PUSH_SUB.key(&(user_id, sub_id)))?;
            Ok(true)
        })
    }

    /// The user's push subscriptions.
    pub fn push_subscriptions(&self, user_id: UserId) -> Result<Vec<PushSubscription>> {
        self.db().read(|tx| subscriptions(tx, user_id))
    }

    /// The cluster's VAPID key: the stored one, or `candidate` stored as it
    /// if there is none yet. One transaction, so nodes starting together
    /// all end up with the same key.
    pub fn vapid_key_or_insert(&self, candidate: VapidKey) -> Result<VapidKey> {
        self.db().run(|tx| {
            if let Some(key) = get::<VapidKey, _>(tx, keys::PUSH_VAPID, &())? {
                return Ok(key);
            }
            put(tx, keys::PUSH_VAPID, &(), &candidate)?;
            Ok(candidate.clone())
        })
    }

    /// Takes over the owed pushes of these messages: returns those still in
    /// the outbox and clears them, in one transaction. A message another
    /// node already claimed is not returned.
    pub fn claim_pushes(&self, messages: &[(ConvId, Seq)]) -> Result<Vec<(Message, PushOwed)>> {
        self.db().run(|tx| {
            let mut claimed = Vec::new();
            for &(conv_id, seq) in messages {
                if let Some(owed) = get::<PushOwed, _>(tx, keys::PUSH_OUTBOX, &(conv_id, seq))? {
                    tx.clear(&keys::PUSH_OUTBOX.key(&(conv_id, seq)))?;
                    if let Some(message) = get::<Message, _>(tx, keys::MSG, &(conv_id, seq))? {
                        claimed.push((message, owed));
                    }
                }
            }
            Ok(claimed)
        })
    }

    /// Up to `limit` outbox rows for messages committed before `before`:
    /// pushes whose node died before it claimed them.
    pub fn unclaimed_pushes(&self, before: Millis, limit: usize) -> Result<Vec<(ConvId, Seq)>> {
        self.db().read(|tx| {
            let (begin, end) = keys::PUSH_OUTBOX.all();
            let mut out = Vec::new();
            for (k, v) in tx.get_range(&begin, &end, RangeOptions::forward(limit))? {
                let owed: PushOwed = crate::codec::decode(keys::PUSH_OUTBOX.name, &v)?;
                if owed.sent_at < before {
                    out.push(keys::PUSH_OUTBOX.unpack::<(ConvId, Seq)>(&k)?);
                }
            }
            Ok(out)
        })
    }

    /// Whether `user_id` has seen message `seq` of `conv_id` and where
    /// their devices are: read just before a push goes out.
    pub fn push_recipient(
        &self,
        user_id: UserId,
        conv_id: ConvId,
        seq: Seq,
    ) -> Result<PushRecipient> {
        self.db().read(|tx| {
            let receipt: Receipt = get(tx, keys::RECEIPT, &(conv_id, user_id))?.unwrap_or_default();
            Ok(PushRecipient {
                seen: receipt.seen_seq >= seq,
                subscriptions: subscriptions(tx, user_id)?,
            })
        })
    }
}
