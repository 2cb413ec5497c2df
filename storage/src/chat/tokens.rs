//! Login tokens: opaque random bearer tokens, only their hash stored.

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::devices::DeviceKey;
use super::{get, ChatStore, Millis, TokenRecord, User, UserId};
use crate::keys;
use crate::{Error, Result};

/// The stored form of a token: its SHA-256, so a leaked store leaks no
/// usable tokens.
fn token_key(token: &str) -> Vec<u8> {
    keys::TOKEN.key(&(Sha256::digest(token.as_bytes()).to_vec(),))
}

impl ChatStore {
    /// Checks the password and issues a token valid for `ttl_ms`.
    pub fn login(&self, name: &str, password: &str, ttl_ms: Millis) -> Result<(User, String)> {
        let user = self.check_password(name, password)?;
        let token = self.issue_token(user.id, ttl_ms)?;
        Ok((user, token))
    }

    /// Issues a new token for `user_id`, valid for `ttl_ms`.
    pub fn issue_token(&self, user_id: UserId, ttl_ms: Millis) -> Result<String> {
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = hex::encode(raw);
        let now = self.now();
        let record = TokenRecord {
            user_id,
            created_at: now,
            expires_at: now.saturating_add(ttl_ms),
        };
        let key = token_key(&token);
        let device = DeviceKey::of_token(&token);
        self.db().run(|tx| {
            if get::<User, _>(tx, keys::USER, &(user_id,))?.is_none() {
                return Err(Error::NotFound { what: "user" });
            }
            tx.set(&key, &crate::codec::encode(keys::TOKEN.name, &record)?)?;
            // One login is one device: it receives everything from now on,
            // however late it first connects.
            self.register_device_in(tx, user_id, &device)
        })?;
        Ok(token)
    }

    /// The user a token belongs to; [`Error::InvalidToken`] when it is
    /// unknown, revoked or expired (an expired token is deleted).
    pub fn resolve_token(&self, token: &str) -> Result<UserId> {
        let key = token_key(token);
        let now = self.now();
        let record = self.db().read(|tx| match tx.get(&key)? {
            Some(bytes) => Ok(Some(crate::codec::decode::<TokenRecord>(
                keys::TOKEN.name,
                &bytes,
            )?)),
            None => Ok(None),
        })?;
        match record {
            Some(r) if r.expires_at > now => Ok(r.user_id),
            Some(_) => {
                self.db().run(|tx| tx.clear(&key))?;
                Err(Error::InvalidToken)
            }
            None => Err(Error::InvalidToken),
        }
    }

    /// Revokes a token (logout). Revoking an unknown token is an
    /// [`Error::InvalidToken`], so a client learns its logout did nothing.
    pub fn revoke_token(&self, token: &str) -> Result<()> {
        let key = token_key(token);
        let device = DeviceKey::of_token(token);
        self.db().run(|tx| {
            let Some(bytes) = tx.get(&key)? else {
                return Err(Error::InvalidToken);
            };
            let record: TokenRecord = crate::codec::decode(keys::TOKEN.name, &bytes)?;
            tx.clear(&key)?;
            // The login's device goes with it.
            super::devices::forget(tx, record.user_id, device.as_str())
        })
    }
}
