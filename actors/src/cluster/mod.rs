//! [`Cluster`]: this node's handle on the cluster, and [`ClusterRuntime`],
//! what starts and stops it.
//!
//! The handle routes conversation commands to their home node, fans frames
//! out to sessions on every node (one message per node), answers presence
//! questions from the `user:{id}` process groups, and keeps the registry of
//! this node's conversation actors. Everything the actors and the gateway
//! need is reached through it; nothing is global.
//!
//! One concern per file, each an `impl Cluster` block over the shared
//! state defined here:
//! - `lifecycle`: start-up, standing by, shutdown ([`ClusterRuntime`]);
//! - `routing`: which nodes serve, where a conversation lives, forwarding
//!   commands there;
//! - `conversations`: this node's conversation actors (activation, the
//!   registry, handoff) and the sessions' registration;
//! - `delivery`: frames to sessions here and on peers, replies, and what
//!   peers send this node.

mod conversations;
mod delivery;
mod lifecycle;
mod routing;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use storage::chat::{ChatStore, ConvId, UserId};

use crate::committer::Committer;
use crate::config::ClusterConfig;
use crate::conv_status::ConvStatuses;
use crate::events::Events;
use crate::faults::Faults;
use crate::indexer::Indexer;
use crate::metrics::Metrics;
use crate::push::PushService;
use crate::registry::LocalSessions;
use crate::standby::StandbyFlag;
use crate::store_pool::StorePool;
use crate::wire::SessionAddr;

use conversations::RunningConversations;
pub use lifecycle::ClusterRuntime;

struct Inner {
    config: ClusterConfig,
    /// What this node sees happen, for the admin view and the lab.
    events: Events,
    /// The running conversation actors' published numbers.
    conv_statuses: ConvStatuses,
    store: ChatStore,
    pool: StorePool,
    metrics: Arc<Metrics>,
    push: PushService,
    committer: Committer,
    /// The search index follower, told of conversations whose index lags.
    indexer: Indexer,
    sessions: LocalSessions,
    /// HTTP requests waiting for a conversation actor's answer, by the
    /// session id each borrowed for its reply address.
    waiters: std::sync::Mutex<HashMap<u64, tokio::sync::oneshot::Sender<String>>>,
    /// The running conversation actors. A short synchronous lock: never
    /// held across an await.
    conversations: std::sync::Mutex<RunningConversations>,
    /// One lock per conversation being activated, so two commands for it
    /// start one actor while activations of others run concurrently.
    activating: std::sync::Mutex<HashMap<ConvId, Arc<tokio::sync::Mutex<()>>>>,
    /// Names of the nodes with a live lease, as of the last heartbeat.
    live: RwLock<BTreeSet<String>>,
    /// The reachable live nodes at the last re-homing check.
    placed_on: RwLock<Vec<String>>,
    /// Names of peers as they stop serving (cut off, dead, gone): a
    /// connection answers at once the sends it routed to one of them.
    peers_lost: tokio::sync::broadcast::Sender<String>,
    incarnation: u64,
    /// Set when the node starts leaving: it serves no conversation any more.
    leaving: std::sync::atomic::AtomicBool,
    /// Set while the node must not serve conversations (a lost store,
    /// rejoining after being presumed dead): see [`crate::standby`].
    standby: StandbyFlag,
    /// Panics a test may inject (debug builds only).
    faults: Arc<Faults>,
    /// Peers this node's messages to are dropped (the lab's partitions).
    links: Arc<crate::link_filter::LinkFilter>,
    next_session: AtomicU64,
    /// The supervisor every conversation and session actor is linked to.
    supervisor: std::sync::OnceLock<ractor::ActorCell>,
    users_scope: String,
    hosts_scope: String,
}

/// This node's handle on the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.config.node_name)
            .finish()
    }
}

impl Cluster {
    /// The node's event channel.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// The in-process link filter (the lab's partitions).
    pub fn links(&self) -> &Arc<crate::link_filter::LinkFilter> {
        &self.inner.links
    }

    /// Tells of every peer that stops serving (cut off, dead, gone), by
    /// name. Rare events: a receiver per connection costs nothing while
    /// the cluster is whole.
    pub fn peers_lost(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.inner.peers_lost.subscribe()
    }

    /// The running conversation actors' epochs, last seqs and backlogs.
    pub fn conv_statuses(&self) -> &ConvStatuses {
        &self.inner.conv_statuses
    }

    /// The nodes whose lease this node saw renewed within the lease
    /// lifetime at its last heartbeat (reachable or not).
    pub fn live_nodes(&self) -> BTreeSet<String> {
        self.inner
            .live
            .read()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// This node's configured name.
    pub fn node_name(&self) -> &str {
        &self.inner.config.node_name
    }

    /// The runtime settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// The chat store, for calls that do not block (blocking ones go
    /// through [`Cluster::storage`]).
    pub fn store(&self) -> &ChatStore {
        &self.inner.store
    }

    /// The storage threads: every blocking store call runs there.
    pub fn storage(&self) -> &StorePool {
        &self.inner.pool
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The push sender.
    pub fn push(&self) -> &PushService {
        &self.inner.push
    }

    /// The node's message writer.
    pub fn committer(&self) -> &Committer {
        &self.inner.committer
    }

    /// The node's search index follower.
    pub fn indexer(&self) -> &Indexer {
        &self.inner.indexer
    }

    /// The sessions connected to this node.
    pub fn sessions(&self) -> &LocalSessions {
        &self.inner.sessions
    }

    /// The process-group scope of user sessions.
    pub fn users_scope(&self) -> &str {
        &self.inner.users_scope
    }

    /// The process-group scope of host actors.
    pub fn hosts_scope(&self) -> &str {
        &self.inner.hosts_scope
    }

    /// Random per process start.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// A fresh id for a session on this node.
    pub fn next_session_id(&self) -> u64 {
        self.inner.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// The address of a local session.
    pub fn session_addr(&self, session_id: u64) -> SessionAddr {
        SessionAddr {
            node: self.node_name().to_owned(),
            session_id,
        }
    }

    /// Whether the user has a live session anywhere in the cluster.
    pub fn is_online(&self, user_id: UserId) -> bool {
        !ractor::pg::get_scoped_members(&self.inner.users_scope, &crate::user_group(user_id))
            .is_empty()
    }

    /// The panics a test may inject into this node (debug builds only).
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }
}
