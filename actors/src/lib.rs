//! Parley's actors: sessions, conversations, presence and push, and the
//! cluster machinery that places them on nodes.
//!
//! - [`session`]: one actor per WebSocket client, member of `user:{id}`;
//!   [`outbound`]: its byte-bounded queue to the socket; [`close`]: the
//!   server's decision to close that socket;
//! - [`conversation`]: one sequencer per active conversation, on its home node;
//!   [`recent_ids`]: its window of recent ids, which makes resends idempotent;
//! - [`presence`]: turns process-group changes into presence frames;
//! - [`push`]: notifications for users with no live session;
//! - [`committer`]: the node's one message writer (group commit);
//!   [`indexer`]: the search index, built after the commit;
//! - [`supervisor`]: cleans up after conversation and session actors that die;
//!   [`task`]: restarts the internal tasks that are not actors if they panic;
//! - [`host`]: each node's mailbox for its peers; [`wire`]: what they say;
//! - [`membership`]: leases and reconnection; [`placement`]: rendezvous hashing;
//! - [`events`]: what the node saw happen, for operators and the lab;
//!   [`conv_status`]: each conversation actor's epoch, last seq, backlog;
//! - [`Cluster`]: the handle tying them together; [`frames`]: what clients get.

pub mod close;
pub mod cluster;
pub mod committer;
pub mod config;
pub mod conv_status;
pub mod conversation;
pub mod error;
pub mod events;
pub mod faults;
pub mod frames;
pub mod host;
pub mod indexer;
pub mod lease_clock;
pub mod link_filter;
pub mod membership;
pub mod metrics;
pub mod outbound;
pub mod placement;
pub mod presence;
pub mod probe;
pub mod push;
pub mod recent_ids;
pub mod registry;
pub mod services;
pub mod session;
pub mod standby;
pub mod store_pool;
pub mod supervisor;
pub mod task;
#[cfg(test)]
mod test_actor;
pub mod tls;
pub mod wire;

use serde::{Deserialize, Serialize};
use storage::chat::{Conversation, UserId};

pub use cluster::{Cluster, ClusterRuntime};
pub use config::ClusterConfig;
pub use error::Error;
pub use metrics::Metrics;
pub use push::{PushConfig, PushService};
pub use store_pool::{PoolError, StorePool};

/// What changed about a conversation, told to its actor after the HTTP API
/// committed the change, so members' sessions hear about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ConvChange {
    /// A user was added to a group.
    MemberJoined {
        /// The new member.
        user_id: UserId,
        /// Who added them.
        by: UserId,
    },
    /// A user left or was removed.
    MemberLeft {
        /// The former member.
        user_id: UserId,
        /// Who removed them (themself when they left).
        by: UserId,
    },
    /// The group's name or description changed.
    Updated(Conversation),
    /// The group was deleted; `members` are the members it had.
    Deleted {
        /// Who was in it.
        members: Vec<UserId>,
    },
}

/// The process group of a user's sessions.
pub fn user_group(user_id: UserId) -> String {
    format!("user:{user_id}")
}

/// The user id of a `user:{id}` group name.
pub fn parse_user_group(group: &str) -> Option<UserId> {
    group.strip_prefix("user:")?.parse().ok()
}

/// The process group of a node's host actor.
pub fn host_group(node: &str) -> String {
    format!("host:{node}")
}
