//! The one error type of the actors crate.

/// What the actor runtime can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed or refused.
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// A message for a peer could not be encoded (a bug).
    #[error("encoding a cluster message: {0}")]
    Encode(String),
    /// A peer's bytes were not a valid cluster message.
    #[error("decoding a cluster message: {0}")]
    Decode(String),
    /// Starting an actor or the cluster transport failed.
    #[error("actor runtime: {0}")]
    Spawn(String),
    /// No node is live (not even this one: its lease is not written yet).
    #[error("no live node to serve the conversation")]
    NoLiveNode,
    /// Push notifications could not be set up (a key file, the VAPID key).
    #[error("push: {0}")]
    Push(String),
    /// A blocking task panicked or was cancelled.
    #[error("blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// A storage call did not run to its end (a panic, or shutdown).
    #[error(transparent)]
    Pool(#[from] crate::store_pool::PoolError),
    /// A membership heartbeat's store call (the lease renewal, the lease
    /// read) took a whole lease lifetime: the store is out of reach or
    /// stalled.
    #[error("a heartbeat's store call took a lease lifetime")]
    HeartbeatTimeout,
    /// A TLS certificate, key or CA could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
}

impl Error {
    /// The error class a client is shown.
    pub fn code(&self) -> crate::frames::ErrorCode {
        use crate::frames::ErrorCode;
        match self {
            Error::Storage(e) => ErrorCode::from(e),
            Error::NoLiveNode | Error::Spawn(_) => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }
}
