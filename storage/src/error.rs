//! The one error type of the storage crate.
//!
//! Engine errors (SQLite, FoundationDB) are wrapped, not flattened, so the
//! retry loop can ask them whether trying again may help. Chat-layer errors
//! are typed so that the gateway can map each to an HTTP status or an error
//! frame without parsing strings.

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the storage crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded SQLite engine failed (busy, I/O, corruption, ...).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// The FoundationDB client failed.
    #[cfg(feature = "fdb")]
    #[error("foundationdb: {0}")]
    Fdb(#[from] foundationdb::FdbError),

    /// An operating-system failure outside the engine (starting a thread).
    #[error("i/o: {0}")]
    Io(String),

    /// A commit's outcome is unknown: it may or may not have been applied
    /// (FoundationDB's `commit_unknown_result`, error 1021, after a
    /// connection to the cluster failed mid-commit). [`crate::Database::run`]
    /// reports it instead of retrying a transaction that may already have
    /// taken effect; [`crate::Database::run_idempotent`] retries it.
    #[error("the commit's outcome is unknown: it may or may not have been applied")]
    MaybeCommitted,

    /// A retryable error kept happening until the retry budget ran out.
    #[error("transaction gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// How many times the transaction was tried.
        attempts: u32,
        /// The error of the last attempt.
        last: Box<Error>,
    },

    /// A stored value could not be decoded: a bug or a schema mismatch.
    #[error("corrupt value in {family}: {reason}")]
    Corrupt {
        /// The key family (subspace name) the value was read from.
        family: &'static str,
        /// What the decoder said.
        reason: String,
    },

    /// The store was written by an incompatible schema version.
    #[error("store has schema version {found}, this build understands {expected}")]
    SchemaVersion {
        /// The version recorded in the store.
        found: u32,
        /// The version this build writes.
        expected: u32,
    },

    /// Input that breaks a documented rule (empty name, over-long content...).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field, as the API names it.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// The referenced entity does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for ("user", "conversation", ...).
        what: &'static str,
    },

    /// A uniqueness rule would be broken (a taken name or phone number).
    #[error("{what} is already taken")]
    AlreadyExists {
        /// What collided ("user name", "phone number", ...).
        what: &'static str,
    },

    /// The acting user is not an active member of the conversation.
    #[error("user {user_id} is not a member of conversation {conv_id}")]
    NotMember {
        /// The conversation acted upon.
        conv_id: u64,
        /// The user who is not in it.
        user_id: u64,
    },

    /// The acting user lacks the role the operation needs.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),

    /// Login failed: unknown user or wrong password (never says which).
    #[error("wrong user name or password")]
    BadCredentials,

    /// The bearer token is unknown, revoked or expired.
    #[error("invalid or expired token")]
    InvalidToken,

    /// A conversation actor tried to append with an epoch that a newer
    /// activation has replaced: it must stop, it is no longer the owner.
    #[error("conversation {conv_id}: epoch {presented} is stale, current is {current}")]
    StaleEpoch {
        /// The conversation.
        conv_id: u64,
        /// The epoch the caller holds.
        presented: u64,
        /// The epoch in the store.
        current: u64,
    },

    /// An append did not continue the sequence where the store says it ends.
    #[error("conversation {conv_id}: expected next seq {expected}, got {presented}")]
    SequenceMismatch {
        /// The conversation.
        conv_id: u64,
        /// The next sequence number according to the store.
        expected: u64,
        /// The sequence number the caller tried to write.
        presented: u64,
    },

    /// Password hashing failed (not a wrong password: an internal failure).
    #[error("password hashing: {0}")]
    PasswordHash(String),
}

impl Error {
    /// Whether running the same transaction again may succeed.
    ///
    /// True for lock contention and optimistic-concurrency conflicts; false
    /// for everything the caller has to fix.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            // Maybe-committed is retryable only for idempotent
            // transactions, which the retry loop knows, not the error.
            #[cfg(feature = "fdb")]
            Error::Fdb(e) => e.is_retryable() && !e.is_maybe_committed(),
            _ => false,
        }
    }

    /// Whether the engine refused to write because its disk is full:
    /// nothing was written, reads still work, and the same write succeeds
    /// once space is freed. (A FoundationDB cluster short of space slows
    /// its clients down instead of failing them.)
    pub fn is_storage_full(&self) -> bool {
        match self {
            // SQLite reports a write that found no space (ENOSPC) as
            // SQLITE_FULL.
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            Error::RetriesExhausted { last, .. } => last.is_storage_full(),
            _ => false,
        }
    }

    /// Shorthand for an [`Error::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: std::ffi::c_int) -> Error {
        Error::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    #[test]
    fn a_full_disk_is_told_apart_from_other_failures() {
        assert!(sqlite(rusqlite::ffi::SQLITE_FULL).is_storage_full());
        let exhausted = Error::RetriesExhausted {
            attempts: 3,
            last: Box::new(sqlite(rusqlite::ffi::SQLITE_FULL)),
        };
        assert!(exhausted.is_storage_full());
        assert!(!sqlite(rusqlite::ffi::SQLITE_FULL).is_retryable());
        for other in [
            sqlite(rusqlite::ffi::SQLITE_IOERR),
            sqlite(rusqlite::ffi::SQLITE_BUSY),
            Error::NotFound { what: "user" },
        ] {
            assert!(!other.is_storage_full(), "{other}");
        }
    }
}
