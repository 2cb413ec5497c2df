//! Users: registration, lookup, search, password check.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

use super::names;
use super::{get, next_id, put, ChatStore, PasswordCost, User, UserId, UserSummary};
use crate::keys;
use crate::{Error, RangeOptions, Result};

/// What registration takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewUser {
    /// Unique name (case-insensitive).
    pub name: String,
    /// Optional unique phone number.
    pub phone: Option<String>,
    /// The password in clear; only its argon2 hash is stored.
    pub password: String,
}

fn argon2(cost: PasswordCost) -> Result<Argon2<'static>> {
    let params = argon2::Params::new(cost.memory_kib, cost.iterations, 1, None)
        .map_err(|e| Error::PasswordHash(e.to_string()))?;
    Ok(Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

impl ChatStore {
    /// A hash of a random password at this store's cost, computed once:
    /// what unknown names are verified against.
    fn dummy_hash(&self) -> Result<String> {
        if let Some(hash) = self.dummy_hash.get() {
            return Ok(hash.clone());
        }
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let hash = argon2(self.password_cost)?
            .hash_password(salt.as_str().as_bytes(), &salt)
            .map_err(|e| Error::PasswordHash(e.to_string()))?
            .to_string();
        Ok(self.dummy_hash.get_or_init(|| hash).clone())
    }

    /// Registers a user under the NFKC form of the name. Fails with
    /// [`Error::AlreadyExists`] when the name (in any case), a look-alike
    /// of it (same confusable skeleton), or the phone number is taken.
    pub fn register(&self, new: &NewUser) -> Result<User> {
        let limits = self.limits();
        let name = names::normalize(&new.name);
        limits.user_name(&name)?;
        limits.password(&new.password)?;
        if let Some(phone) = &new.phone {
            limits.phone(phone)?;
        }
        // Hash outside the transaction: it is slow and must not hold a lock.
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let hash = argon2(self.password_cost)?
            .hash_password(new.password.as_bytes(), &salt)
            .map_err(|e| Error::PasswordHash(e.to_string()))?
            .to_string();
        let lower = names::name_key(&name);
        let skeleton = names::skeleton(&name);
        let now = self.now();
        let shards = self.db().id_shards();
        // Idempotent: the salted hash is unique to this call, so a retry
        // after an unknown commit outcome recognises its own user by it and
        // answers the same instead of "name taken".
        self.db().run_idempotent(|tx| {
            if let Some(id) = get::<UserId, _>(tx, keys::USER_BY_NAME, &(&lower,))? {
                if let Some(user) = get::<User, _>(tx, keys::USER, &(id,))? {
                    if user.password_hash == hash {
                        return Ok(user);
                    }
                }
                return Err(Error::AlreadyExists { what: "user name" });
            }
            if tx
                .get(&keys::USER_BY_SKELETON.key(&(&skeleton,)))?
                .is_some()
            {
                return Err(Error::AlreadyExists {
                    what: "a look-alike of this user name",
                });
            }
            if let Some(phone) = &new.phone {
                if tx.get(&keys::USER_BY_PHONE.key(&(phone,)))?.is_some() {
                    return Err(Error::AlreadyExists {
                        what: "phone number",
                    });
                }
            }
            let id = next_id(tx, keys::meta::LAST_USER_ID, shards)?;
            let user = User {
                id,
                name: name.clone(),
                phone: new.phone.clone(),
                password_hash: hash.clone(),
                created_at: now,
                created_by: id,
                updated_at: now,
                updated_by: id,
            };
            put(tx, keys::USER, &(id,), &user)?;
            put(tx, keys::USER_BY_NAME, &(&lower,), &id)?;
            put(tx, keys::USER_BY_SKELETON, &(&skeleton,), &id)?;
            if let Some(phone) = &new.phone {
                put(tx, keys::USER_BY_PHONE, &(phone,), &id)?;
            }
            Ok(user)
        })
    }

    /// The user with this id.
    pub fn user(&self, id: UserId) -> Result<User> {
        self.db()
            .read(|tx| get::<User, _>(tx, keys::USER, &(id,)))?
            .ok_or(Error::NotFound { what: "user" })
    }

    /// The user with this name (any case), if registered.
    pub fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let lower = names::name_key(name);
        self.db().read(|tx| {
            let Some(id) = get::<UserId, _>(tx, keys::USER_BY_NAME, &(&lower,))? else {
                return Ok(None);
            };
            get(tx, keys::USER, &(id,))
        })
    }

    /// Registered users whose name starts with `prefix` (case-insensitive),
    /// in name order, at most `limit`, after the name `after` (paging).
    pub fn search_users(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UserSummary>> {
        let prefix = names::name_key(prefix);
        if prefix.is_empty() {
            return Err(Error::invalid("q", "must not be empty"));
        }
        let limit = self.limits().page(limit);
        let (mut begin, end) = keys::USER_BY_NAME.string_prefix_range(&prefix);
        if let Some(after) = after {
            let mut past = keys::USER_BY_NAME.key(&(names::name_key(after),));
            past.push(0x00);
            begin = begin.max(past);
        }
        self.db().read(|tx| {
            let rows = tx.get_range(&begin, &end, RangeOptions::forward(limit))?;
            let mut found = Vec::with_capacity(rows.len());
            for (_, value) in rows {
                let id: UserId = crate::codec::decode(keys::USER_BY_NAME.name, &value)?;
                if let Some(user) = get::<User, _>(tx, keys::USER, &(id,))? {
                    found.push(UserSummary::from(&user));
                }
            }
            Ok(found)
        })
    }

    /// Checks a name and password; the same error whether the user is
    /// unknown or the password wrong, so names cannot be probed. An unknown
    /// name is verified against a dummy hash of the same cost, so it takes
    /// as long as a wrong password.
    pub fn check_password(&self, name: &str, password: &str) -> Result<User> {
        let user = self.user_by_name(name)?;
        let Some(user) = user else {
            let dummy = self.dummy_hash()?;
            let parsed =
                PasswordHash::new(&dummy).map_err(|e| Error::PasswordHash(e.to_string()))?;
            let _ = argon2(self.password_cost)?.verify_password(password.as_bytes(), &parsed);
            return Err(Error::BadCredentials);
        };
        let parsed = PasswordHash::new(&user.password_hash)
            .map_err(|e| Error::PasswordHash(e.to_string()))?;
        argon2(self.password_cost)?
            .verify_password(password.as_bytes(), &parsed)
            .map_err(|_| Error::BadCredentials)?;
        Ok(user)
    }
}
