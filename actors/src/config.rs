//! Settings of the actor runtime and the cluster transport.

use std::time::Duration;

/// How this node joins and serves the cluster. The node's configuration
/// fills it; every field documents its default there.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster; its identity everywhere.
    pub node_name: String,
    /// Names the cluster; nodes only see process groups of their own
    /// cluster (it prefixes every process-group scope).
    pub cluster_name: String,
    /// The shared secret nodes authenticate each other with.
    pub cookie: String,
    /// Where the cluster transport listens.
    pub listen: std::net::SocketAddr,
    /// The address peers dial to reach this node (written in its lease).
    pub advertise: String,
    /// Where this node's gateway listens (written in its lease).
    pub http_addr: String,
    /// The URL browsers reach this node's gateway at (written in its lease).
    pub public_url: String,
    /// Peers to dial at start, besides those found through leases.
    pub seeds: Vec<String>,
    /// How often the lease is renewed and the membership re-read.
    pub heartbeat: Duration,
    /// How long a lease lasts without renewal: a node silent this long is
    /// dead to the others.
    pub lease_ttl: Duration,
    /// An idle conversation actor stops after this long.
    pub conversation_idle: Duration,
    /// Most messages committed in one append transaction.
    pub max_batch: usize,
    /// Transactions of the node's writer in flight at once, on engines with
    /// concurrent writers (FoundationDB); SQLite runs one at a time
    /// whatever this says.
    pub commit_pipeline: usize,
    /// How long the search index follower lets commits gather before it
    /// indexes them.
    pub index_delay: Duration,
    /// Threads running blocking store calls (the storage pool).
    pub storage_threads: usize,
    /// Timeout of one push notification request.
    pub push_timeout: Duration,
    /// Offline notifications.
    pub push: crate::push::PushConfig,
    /// Mutual TLS on the cluster transport; `None`: plaintext (loopback
    /// only, unless the operator insisted).
    pub tls: Option<crate::tls::ClusterTls>,
}
