//! What operators watch, in Prometheus form (`GET /metrics`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The node's metrics. One per node, passed to whoever updates them.
pub struct Metrics {
    registry: Registry,
    /// Messages committed by this node's conversation actors.
    pub messages_committed: Counter,
    /// Transactions of the node's writer (each may carry many messages,
    /// and acks; with acking clients some carry only acks).
    pub commit_batches: Counter,
    /// Seconds per writer transaction.
    pub commit_seconds: Histogram,
    /// Microseconds spent in writer transactions, summed (the admin view's
    /// mean commit latency: the histogram's sum is not readable here).
    pub commit_micros: Counter,
    /// Steps of the search index follower (one transaction each).
    pub index_steps: Counter,
    /// Microseconds spent in index follower steps, summed.
    pub index_micros: Counter,
    /// Log rows (messages and events) the index follower went over.
    pub log_rows_indexed: Counter,
    /// Conversations waiting for the index follower.
    pub index_backlog: Gauge,
    /// Times an internal task (the writer, the membership loop, the index
    /// follower) panicked and was restarted.
    pub task_restarts: Counter,
    /// Frames queued to this node's WebSocket sessions.
    pub frames_delivered: Counter,
    /// Connected WebSocket sessions on this node.
    pub sessions: Gauge,
    /// Conversation actors active on this node.
    pub conversations: Gauge,
    /// Nodes with a live lease, as this node sees them.
    pub live_nodes: Gauge,
    /// Peers this node has an authenticated transport connection to (a
    /// peer whose certificate or cookie is refused never counts).
    pub peers_connected: Gauge,
    /// WebSocket sends answered `unavailable` at once because the peer
    /// they were routed to stopped serving (instead of at the answer
    /// timeout).
    pub answers_lost_with_peer: Counter,
    /// Replies to sessions on a node this one cannot reach, handed to
    /// another peer to pass on (a partition that is not transitive).
    pub replies_relayed: Counter,
    /// Connections to peers dropped because the peer answered no probe
    /// for a lease lifetime (a cut link: its lease still renews).
    pub peers_cut_off: Counter,
    /// Sessions disconnected for reading too slowly.
    pub slow_consumers: Counter,
    /// Sessions closed because their user opened more than
    /// `max_sessions_per_user` on this node (the oldest go).
    pub sessions_superseded: Counter,
    /// Peer messages that failed to decode.
    pub bad_peer_messages: Counter,
    /// Fan-outs sent to a peer (one per peer that holds a session of a
    /// recipient): the inter-node traffic that filtering keeps down.
    pub peer_fanouts_sent: Counter,
    /// Fan-outs received from peers.
    pub peer_fanouts_received: Counter,
    /// Bytes of cluster messages this node sent to peers (as encoded; the
    /// transport adds its own framing): the inter-node traffic per message.
    pub peer_bytes_sent: Counter,
    /// Store calls waiting for a storage thread: a queue that stays long
    /// means storage is the bottleneck.
    pub storage_queued: Gauge,
    /// Push notifications delivered to a push endpoint.
    pub push_sent: Counter,
    /// Push notifications that failed.
    pub push_failed: Counter,
    /// Push attempts retried (429, 5xx, network errors).
    pub push_retried: Counter,
    /// Push subscriptions removed because the service said gone.
    pub push_gone: Counter,
    /// Push endpoints refused by the SSRF guard.
    pub push_blocked: Counter,
    /// Pushes not sent: the user came online, saw the message or dropped the device.
    pub push_skipped: Counter,
    /// Pushes replaced by a newer one of the same conversation.
    pub push_coalesced: Counter,
    /// Pushes not queued because the queue was full.
    pub push_queue_full: Counter,
    /// Owed pushes dropped as older than push.max_age_secs.
    pub push_expired: Counter,
    /// Outbox rows taken over from a node that did not claim them.
    pub push_recovered: Counter,
    /// Appends refused because a newer actor owns the conversation.
    pub fenced_appends: Counter,
    /// WebSocket sends answered `unavailable` because no answer came from
    /// their conversation within the answer timeout (a hung or cut-off
    /// node, a lost store).
    pub answer_timeouts: Counter,
    /// HTTP requests refused by a throttle (login, registration, writes).
    pub throttled_requests: Counter,
    /// Logins and registrations shed because the hashing queue was full.
    pub hash_overloaded: Counter,
    /// Connections refused at the connection limit (beyond the headroom).
    pub connections_refused: Counter,
    /// Connections above the limit served only `/healthz` (overflow).
    pub connections_overflow: Counter,
    /// Open HTTP and WebSocket connections.
    pub connections_open: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set, registered under the `parley` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("parley");
        let m = Self {
            messages_committed: Counter::default(),
            commit_batches: Counter::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            commit_micros: Counter::default(),
            index_steps: Counter::default(),
            index_micros: Counter::default(),
            log_rows_indexed: Counter::default(),
            index_backlog: Gauge::default(),
            task_restarts: Counter::default(),
            frames_delivered: Counter::default(),
            sessions: Gauge::default(),
            conversations: Gauge::default(),
            live_nodes: Gauge::default(),
            peers_connected: Gauge::default(),
            answers_lost_with_peer: Counter::default(),
            replies_relayed: Counter::default(),
            slow_consumers: Counter::default(),
            sessions_superseded: Counter::default(),
            bad_peer_messages: Counter::default(),
            peer_fanouts_sent: Counter::default(),
            peer_fanouts_received: Counter::default(),
            storage_queued: Gauge::default(),
            push_sent: Counter::default(),
            push_failed: Counter::default(),
            push_retried: Counter::default(),
            push_gone: Counter::default(),
            push_blocked: Counter::default(),
            push_skipped: Counter::default(),
            push_coalesced: Counter::default(),
            push_queue_full: Counter::default(),
            push_expired: Counter::default(),
            push_recovered: Counter::default(),
            fenced_appends: Counter::default(),
            answer_timeouts: Counter::default(),
            peers_cut_off: Counter::default(),
            peer_bytes_sent: Counter::default(),
            throttled_requests: Counter::default(),
            hash_overloaded: Counter::default(),
            connections_refused: Counter::default(),
            connections_overflow: Counter::default(),
            connections_open: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "messages_committed",
            "Messages committed",
            m.messages_committed.clone(),
        );
        r.register(
            "commit_batches",
            "Transactions of the node's writer (messages and acks)",
            m.commit_batches.clone(),
        );
        r.register(
            "commit_seconds",
            "Seconds per append transaction",
            m.commit_seconds.clone(),
        );
        r.register(
            "commit_micros",
            "Microseconds spent in append transactions",
            m.commit_micros.clone(),
        );
        r.register(
            "index_steps",
            "Steps (transactions) of the search index follower",
            m.index_steps.clone(),
        );
        r.register(
            "index_micros",
            "Microseconds spent in search index follower steps",
            m.index_micros.clone(),
        );
        r.register(
            "log_rows_indexed",
            "Log rows the search index follower went over",
            m.log_rows_indexed.clone(),
        );
        r.register(
            "index_backlog",
            "Conversations waiting for the search index follower",
            m.index_backlog.clone(),
        );
        r.register(
            "task_restarts",
            "Times an internal task (writer, membership loop, index follower) panicked and was restarted",
            m.task_restarts.clone(),
        );
        r.register(
            "frames_delivered",
            "Frames queued to sessions",
            m.frames_delivered.clone(),
        );
        r.register(
            "sessions",
            "Connected WebSocket sessions",
            m.sessions.clone(),
        );
        r.register(
            "conversations",
            "Active conversation actors",
            m.conversations.clone(),
        );
        r.register(
            "live_nodes",
            "Nodes with a live lease",
            m.live_nodes.clone(),
        );
        r.register(
            "peers_connected",
            "Peers with an authenticated transport connection",
            m.peers_connected.clone(),
        );
        r.register(
            "answers_lost_with_peer",
            "WebSocket sends answered unavailable at once: their peer stopped serving",
            m.answers_lost_with_peer.clone(),
        );
        r.register(
            "replies_relayed",
            "Replies passed on through another peer: their node was out of reach",
            m.replies_relayed.clone(),
        );
        r.register(
            "slow_consumers",
            "Sessions dropped for reading too slowly",
            m.slow_consumers.clone(),
        );
        r.register(
            "sessions_superseded",
            "Sessions closed because their user opened more than the per-user limit on this node",
            m.sessions_superseded.clone(),
        );
        r.register(
            "bad_peer_messages",
            "Undecodable peer messages",
            m.bad_peer_messages.clone(),
        );
        r.register(
            "peer_fanouts_sent",
            "Fan-outs sent to peers holding a recipient's session",
            m.peer_fanouts_sent.clone(),
        );
        r.register(
            "peer_fanouts_received",
            "Fan-outs received from peers",
            m.peer_fanouts_received.clone(),
        );
        r.register(
            "storage_queued",
            "Store calls waiting for a storage thread",
            m.storage_queued.clone(),
        );
        r.register(
            "push_sent",
            "Push notifications delivered",
            m.push_sent.clone(),
        );
        r.register(
            "push_failed",
            "Push notifications failed",
            m.push_failed.clone(),
        );
        r.register(
            "push_retried",
            "Push attempts retried (429, 5xx, network errors)",
            m.push_retried.clone(),
        );
        r.register(
            "push_gone",
            "Push subscriptions removed because the service said gone",
            m.push_gone.clone(),
        );
        r.register(
            "push_blocked",
            "Push endpoints refused by the SSRF guard",
            m.push_blocked.clone(),
        );
        r.register(
            "push_skipped",
            "Pushes not sent: the user came online, saw the message or dropped the device",
            m.push_skipped.clone(),
        );
        r.register(
            "push_coalesced",
            "Pushes replaced by a newer one of the same conversation",
            m.push_coalesced.clone(),
        );
        r.register(
            "push_queue_full",
            "Pushes not queued because the queue was full",
            m.push_queue_full.clone(),
        );
        r.register(
            "push_expired",
            "Owed pushes dropped as older than push.max_age_secs",
            m.push_expired.clone(),
        );
        r.register(
            "push_recovered",
            "Outbox rows taken over from a node that did not claim them",
            m.push_recovered.clone(),
        );
        r.register(
            "fenced_appends",
            "Appends refused by the epoch fence",
            m.fenced_appends.clone(),
        );
        r.register(
            "peer_bytes_sent",
            "Bytes of cluster messages sent to peers (encoded)",
            m.peer_bytes_sent.clone(),
        );
        r.register(
            "peers_cut_off",
            "Peer connections dropped for answering no probe",
            m.peers_cut_off.clone(),
        );
        r.register(
            "answer_timeouts",
            "WebSocket sends answered unavailable for want of an answer in time",
            m.answer_timeouts.clone(),
        );
        m.register_abuse(r);
        Self { registry, ..m }
    }

    /// The abuse-resistance metrics (issue #10).
    fn register_abuse(&self, r: &mut Registry) {
        r.register(
            "throttled_requests",
            "HTTP requests refused by a rate limit",
            self.throttled_requests.clone(),
        );
        r.register(
            "hash_overloaded",
            "Logins and registrations shed with the hashing queue full",
            self.hash_overloaded.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused at the connection limit",
            self.connections_refused.clone(),
        );
        r.register(
            "connections_overflow",
            "Connections over the limit answered only /healthz",
            self.connections_overflow.clone(),
        );
        r.register(
            "connections_open",
            "Open HTTP and WebSocket connections",
            self.connections_open.clone(),
        );
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            out = format!("# encoding failed: {e}\n");
        }
        out
    }
}
