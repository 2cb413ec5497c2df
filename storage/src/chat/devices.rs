//! Devices and their delivery cursors: where each client installation's
//! sync starts.
//!
//! A user's receipts say how far *any* of their devices got; a device that
//! was offline while another one read must still receive everything it
//! missed. So every device keeps its own cursor per conversation, moved
//! only by that device's acknowledgements. A device is named by the client
//! (`device_id`) or, when it names none, by its login token: one login is
//! one installation.
//!
//! A device that is new starts where the user's delivered watermarks are
//! at that moment (older messages reached another device and are history
//! for this one); a conversation joined after the device appeared starts
//! at the point of joining.

use sha2::{Digest, Sha256};

use super::{get, put, ChatStore, ConvId, Device, Receipt, Seq, UserConv, UserId};
use crate::keys;
use crate::{Error, RangeOptions, Result, Transaction};

/// Longest client-chosen device id, in bytes.
pub const MAX_DEVICE_ID_BYTES: usize = 64;

/// The stored name of a device: `d:` and the client's id, or `t:` and a
/// digest of the login token when the client gives none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct DeviceKey(String);

impl DeviceKey {
    /// A device the client names: 1 to 64 of `A-Z a-z 0-9 _ -`.
    pub fn named(device_id: &str) -> Result<Self> {
        let ok = !device_id.is_empty()
            && device_id.len() <= MAX_DEVICE_ID_BYTES
            && device_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(Error::invalid(
                "device_id",
                format!("must be 1 to {MAX_DEVICE_ID_BYTES} of A-Z a-z 0-9 _ -"),
            ));
        }
        Ok(Self(format!("d:{device_id}")))
    }

    /// The device a login token stands for (the token itself is not kept).
    pub fn of_token(token: &str) -> Self {
        let digest = Sha256::digest(token.as_bytes());
        Self(format!("t:{}", hex::encode(&digest[..12])))
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a device's sync of one conversation starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStart {
    /// The conversation.
    pub conv_id: ConvId,
    /// The device has every message up to this seq.
    pub after: Seq,
    /// The conversation's last seq when this was read.
    pub last_seq: Seq,
}

/// Registers `device` if it is new (its cursors start at the user's
/// delivered watermarks) and marks it connected now. Forgets the least
/// recently connected device beyond `max_devices`.
fn touch_device(
    tx: &mut dyn Transaction,
    user_id: UserId,
    device: &DeviceKey,
    now: u64,
    max_devices: usize,
) -> Result<()> {
    let key = (user_id, device.as_str());
    if let Some(mut known) = get::<Device, _>(tx, keys::DEVICE, &key)? {
        known.last_connected_at = now;
        return put(tx, keys::DEVICE, &key, &known);
    }
    // New: start each conversation where the user's devices together are.
    let (begin, end) = keys::USER_CONV.range(&(user_id,));
    for (k, _) in tx.get_range(&begin, &end, RangeOptions::default())? {
        let (_, conv_id): (UserId, ConvId) = keys::USER_CONV.unpack(&k)?;
        let receipt: Receipt = get(tx, keys::RECEIPT, &(conv_id, user_id))?.unwrap_or_default();
        if receipt.delivered_seq > 0 {
            put(
                tx,
                keys::DEVICE_CURSOR,
                &(user_id, device.as_str(), conv_id),
                &receipt.delivered_seq,
            )?;
        }
    }
    put(
        tx,
        keys::DEVICE,
        &key,
        &Device {
            created_at: now,
            last_connected_at: now,
        },
    )?;
    // Bound what one user can make the store keep.
    let (begin, end) = keys::DEVICE.range(&(user_id,));
    let rows = tx.get_range(&begin, &end, RangeOptions::default())?;
    if rows.len() > max_devices.max(1) {
        let mut oldest: Option<(u64, String)> = None;
        for (k, v) in &rows {
            let (_, name): (UserId, String) = keys::DEVICE.unpack(k)?;
            let d: Device = crate::codec::decode(keys::DEVICE.name, v)?;
            if name != device.as_str()
                && oldest
                    .as_ref()
                    .is_none_or(|(t, _)| d.last_connected_at < *t)
            {
                oldest = Some((d.last_connected_at, name));
            }
        }
        if let Some((_, name)) = oldest {
            forget(tx, user_id, &name)?;
        }
    }
    Ok(())
}

/// Removes a device and its cursors.
pub(crate) fn forget(tx: &mut dyn Transaction, user_id: UserId, device: &str) -> Result<()> {
    tx.clear(&keys::DEVICE.key(&(user_id, device)))?;
    let (begin, end) = keys::DEVICE_CURSOR.range(&(user_id, device));
    tx.clear_range(&begin, &end)
}

/// Where `device`'s sync of `conv_id` starts: its cursor, or the point the
/// user joined.
fn start_of(
    tx: &mut dyn Transaction,
    user_id: UserId,
    device: &DeviceKey,
    conv_id: ConvId,
    joined: &UserConv,
) -> Result<Seq> {
    let cursor: Option<Seq> = get(
        tx,
        keys::DEVICE_CURSOR,
        &(user_id, device.as_str(), conv_id),
    )?;
    Ok(cursor.unwrap_or(0).max(joined.joined_seq))
}

/// Moves a device's cursor of a conversation up to `seq` (never back).
pub(crate) fn advance_cursor(
    tx: &mut dyn Transaction,
    user_id: UserId,
    device: &DeviceKey,
    conv_id: ConvId,
    seq: Seq,
) -> Result<()> {
    let key = (user_id, device.as_str(), conv_id);
    let cursor: Seq = get(tx, keys::DEVICE_CURSOR, &key)?.unwrap_or(0);
    if seq > cursor {
        put(tx, keys::DEVICE_CURSOR, &key, &seq)?;
    }
    Ok(())
}

impl ChatStore {
    /// Registers the device if it is new and returns where its sync starts
    /// in every conversation of the user (deleted ones left out).
    ///
    /// Read before the connection accepts any frame, so nothing the client
    /// does first (a send, an ack) can move these positions past messages
    /// it never received.
    pub fn open_device(&self, user_id: UserId, device: &DeviceKey) -> Result<Vec<SyncStart>> {
        let now = self.now();
        let max_devices = self.limits().max_devices;
        // Run again after its own commit, it finds the device and answers
        // the same positions.
        self.db().run_idempotent(|tx| {
            touch_device(tx, user_id, device, now, max_devices)?;
            let (begin, end) = keys::USER_CONV.range(&(user_id,));
            let mut starts = Vec::new();
            for (k, v) in tx.get_range(&begin, &end, RangeOptions::default())? {
                let (_, conv_id): (UserId, ConvId) = keys::USER_CONV.unpack(&k)?;
                let joined: UserConv = crate::codec::decode(keys::USER_CONV.name, &v)?;
                let Some(conv) = get::<super::Conversation, _>(tx, keys::CONV, &(conv_id,))? else {
                    continue;
                };
                if conv.deleted {
                    continue;
                }
                let meta: super::ConvMeta =
                    get(tx, keys::CONV_META, &(conv_id,))?.unwrap_or_default();
                starts.push(SyncStart {
                    conv_id,
                    after: start_of(tx, user_id, device, conv_id, &joined)?,
                    last_seq: meta.last_seq,
                });
            }
            Ok(starts)
        })
    }

    /// Where `device`'s sync of one conversation starts (a conversation the
    /// user joined after the device connected). [`Error::NotMember`] when
    /// the user is not an active member.
    pub fn device_start(
        &self,
        user_id: UserId,
        device: &DeviceKey,
        conv_id: ConvId,
    ) -> Result<Seq> {
        self.db().read(|tx| {
            super::conversations::require_member(tx, conv_id, user_id)?;
            let joined: UserConv = get(tx, keys::USER_CONV, &(user_id, conv_id))?
                .ok_or(Error::NotMember { conv_id, user_id })?;
            start_of(tx, user_id, device, conv_id, &joined)
        })
    }

    /// Forgets a device (its user logged it out).
    pub fn forget_device(&self, user_id: UserId, device: &DeviceKey) -> Result<()> {
        self.db()
            .run_idempotent(|tx| forget(tx, user_id, device.as_str()))
    }

    /// Registers a device at login, so that it receives everything from
    /// then on even if it connects only later.
    pub(crate) fn register_device_in(
        &self,
        tx: &mut dyn Transaction,
        user_id: UserId,
        device: &DeviceKey,
    ) -> Result<()> {
        touch_device(tx, user_id, device, self.now(), self.limits().max_devices)
    }
}
