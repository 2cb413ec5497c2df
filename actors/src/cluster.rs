//! [`Cluster`]: this node's handle on the cluster, and [`ClusterRuntime`],
//! what starts and stops it.
//!
//! The handle routes conversation commands to their home node, fans frames
//! out to sessions on every node (one message per node), answers presence
//! questions from the `user:{id}` process groups, and keeps the registry of
//! this node's conversation actors. Everything the actors and the gateway
//! need is reached through it; nothing is global.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorId, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage};
use storage::chat::{ChatStore, ConvId, Seq, UserId};

use crate::committer::Committer;
use crate::config::ClusterConfig;
use crate::conv_status::ConvStatuses;
use crate::conversation::{ConvMsg, ConversationActor};
use crate::events::{ClusterEvent, Events};
use crate::faults::Faults;
use crate::frames::{ErrorCode, ServerFrame};
use crate::host::HostMsg;
use crate::indexer::Indexer;
use crate::metrics::Metrics;
use crate::outbound::SharedText;
use crate::probe::PeerHeard;
use crate::push::PushService;
use crate::registry::LocalSessions;
use crate::services::{Services, ServicesArgs};
use crate::session::{FrameBatch, OrderedFrame, SessionMsg};
use crate::standby::{Standby, StandbyFlag};
use crate::store_pool::StorePool;
use crate::supervisor::Supervisor;
use crate::wire::{ClusterMsg, ConvCommand, Outgoing, SessionAddr};
use crate::{placement, Error};

/// Forwards allowed between nodes whose membership views disagree, before
/// a node serves a conversation itself (fencing keeps that safe).
const MAX_HOPS: u8 = 2;

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
    incarnation: u64,
    /// Set when the node starts leaving: it serves no conversation any more.
    leaving: std::sync::atomic::AtomicBool,
    /// Set while the node must not serve conversations (a lost store,
    /// rejoining after being presumed dead): see [`crate::standby`].
    standby: StandbyFlag,
    /// Panics a test may inject (debug builds only).
    faults: Arc<Faults>,
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

/// The running cluster machinery of a node; [`ClusterRuntime::shutdown`]
/// stops it gracefully.
pub struct ClusterRuntime {
    cluster: Cluster,
    server: ActorRef<NodeServerMessage>,
    /// The host, presence and probe actors' supervisor.
    services: ActorRef<()>,
    stop_membership: tokio::sync::watch::Sender<bool>,
    membership: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Starts the node's cluster machinery: writes its lease, opens the
    /// transport, spawns the host and presence actors and the membership
    /// loop.
    pub async fn start(
        config: ClusterConfig,
        store: ChatStore,
        metrics: Arc<Metrics>,
    ) -> Result<ClusterRuntime, Error> {
        let pool = StorePool::start(
            store.clone(),
            config.storage_threads,
            crate::store_pool::QUEUE,
            metrics.storage_queued.clone(),
        )
        .map_err(|e| Error::Spawn(format!("storage threads: {e}")))?;
        let faults = Arc::new(Faults::default());
        let indexer = Indexer::start(
            pool.clone(),
            metrics.clone(),
            config.index_delay,
            faults.clone(),
        );
        // One transaction at a time where the engine serializes writers
        // anyway (SQLite); several where they run concurrently.
        let pipeline = if store.db().serializes_writers() {
            1
        } else {
            config.commit_pipeline.max(1)
        };
        let committer = Committer::start(
            pool.clone(),
            metrics.clone(),
            config.max_batch,
            pipeline,
            indexer.clone(),
            faults.clone(),
        );
        let users_scope = format!("{}/users", config.cluster_name);
        let scope = users_scope.clone();
        let push = PushService::start(
            config.push.clone(),
            config.push_timeout,
            pool.clone(),
            metrics.clone(),
            Arc::new(move |user_id| {
                !ractor::pg::get_scoped_members(&scope, &crate::user_group(user_id)).is_empty()
            }),
        )
        .await?;
        let hosts_scope = format!("{}/hosts", config.cluster_name);
        let cluster = Cluster {
            inner: Arc::new(Inner {
                events: Events::new(&config.node_name),
                conv_statuses: ConvStatuses::default(),
                store,
                pool,
                metrics,
                push,
                committer,
                indexer,
                sessions: LocalSessions::default(),
                waiters: std::sync::Mutex::new(HashMap::new()),
                conversations: std::sync::Mutex::new(RunningConversations::default()),
                activating: std::sync::Mutex::new(HashMap::new()),
                live: RwLock::new(BTreeSet::from([config.node_name.clone()])),
                placed_on: RwLock::new(Vec::new()),
                incarnation: rand::random(),
                leaving: std::sync::atomic::AtomicBool::new(false),
                standby: StandbyFlag::default(),
                faults,
                // Random start: a restarted node does not reuse the ids of
                // its previous life, so a late reply cannot reach a stranger.
                next_session: AtomicU64::new(u64::from(rand::random::<u32>()) << 20),
                supervisor: std::sync::OnceLock::new(),
                users_scope,
                hosts_scope,
                config,
            }),
        };
        crate::membership::renew(&cluster).await?;

        let config = cluster.config();
        let hostname = config
            .advertise
            .rsplit_once(':')
            .map_or(config.advertise.as_str(), |(h, _)| h)
            .to_owned();
        let server = NodeServer::new(
            config.listen.port(),
            config.cookie.clone(),
            config.node_name.clone(),
            hostname,
            None,
            Some(NodeConnectionMode::Transitive),
        )
        .with_listen_addr(config.listen.ip());
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| Error::Spawn(format!("cluster transport: {e}")))?;
        let (supervisor, _) = Actor::spawn(None, Supervisor, cluster.clone())
            .await
            .map_err(|e| Error::Spawn(format!("supervisor: {e}")))?;
        let _ = cluster.inner.supervisor.set(supervisor.get_cell());
        let heard = Arc::new(PeerHeard::default());
        let services_args = ServicesArgs {
            cluster: cluster.clone(),
            heard: heard.clone(),
        };
        let (services, _) = Actor::spawn(None, Services, services_args)
            .await
            .map_err(|e| Error::Spawn(format!("service actors: {e}")))?;
        let (stop_membership, stop_rx) = tokio::sync::watch::channel(false);
        let membership = {
            let (cluster, server) = (cluster.clone(), server.clone());
            let restarts = cluster.metrics().task_restarts.clone();
            crate::task::supervise("membership loop", restarts, move || {
                crate::membership::run(
                    cluster.clone(),
                    server.clone(),
                    heard.clone(),
                    stop_rx.clone(),
                )
            })
        };
        Ok(ClusterRuntime {
            cluster,
            server,
            services,
            stop_membership,
            membership,
        })
    }

    /// The node's event channel.
    pub fn events(&self) -> &Events {
        &self.inner.events
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

    /// The nodes that can serve: a live lease and a reachable host actor
    /// (this node counts until it starts leaving, and not while it stands
    /// by). A killed peer drops out as soon as its connection closes,
    /// before its lease runs out.
    pub fn serving_nodes(&self) -> Vec<String> {
        let live = self
            .inner
            .live
            .read()
            .map(|l| l.clone())
            .unwrap_or_default();
        let me = self.node_name();
        let leaving = self.inner.leaving.load(Ordering::Relaxed);
        let standby = self.standby();
        let mut nodes: Vec<String> = live
            .into_iter()
            .filter(|n| {
                if n == me {
                    !leaving && standby.is_none()
                } else {
                    self.host_of(n).is_some()
                }
            })
            .collect();
        // Alone, a node serves everything, even while it leaves; but not
        // while it stands by (it would believe itself alone when it is
        // not, or it cannot commit anyway).
        if nodes.is_empty() && standby.is_none() {
            nodes.push(me.to_owned());
        }
        nodes.sort();
        nodes
    }

    /// The panics a test may inject into this node (debug builds only).
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Why this node serves no conversation for now, if it does not.
    pub fn standby(&self) -> Option<Standby> {
        self.inner.standby.get()
    }

    /// Enters or leaves standby (the membership loop decides).
    pub(crate) fn set_standby(&self, state: Option<Standby>) {
        let previous = self.inner.standby.set(state);
        if previous != state {
            match state {
                Some(s) => tracing::warn!(
                    reason = s.describe(),
                    "standing by: serving no conversation"
                ),
                None => tracing::info!("serving again"),
            }
        }
    }

    /// The store has been out of reach for a lease lifetime: the others
    /// have presumed this node dead and taken its conversations over, and
    /// it can commit nothing. It stands by, stops its conversation actors
    /// (each answers what it holds) and closes its clients with 1012, so
    /// that they reconnect to a node that can serve them.
    pub(crate) fn lose_store(&self) {
        if self.inner.standby.set(Some(Standby::StoreLost)) == Some(Standby::StoreLost) {
            return;
        }
        tracing::error!("the store has been out of reach for a lease lifetime: standing by, closing every client");
        let cluster = self.clone();
        tokio::spawn(async move {
            for session in cluster.sessions().all() {
                let _ = session.cast(SessionMsg::Close(
                    b"this node lost its store: reconnect to another node".to_vec(),
                ));
            }
            cluster.handoff_all().await;
        });
    }

    /// The node that should run the conversation's actor.
    pub fn home_of(&self, conv_id: ConvId) -> String {
        let nodes = self.serving_nodes();
        placement::conversation_home(conv_id, nodes.iter().map(String::as_str))
            .unwrap_or(self.node_name())
            .to_owned()
    }

    /// Whether this node records the user's last-seen (one node per user).
    pub fn is_user_home(&self, user_id: UserId) -> bool {
        let nodes = self.serving_nodes();
        placement::owner(
            crate::user_group(user_id).as_bytes(),
            nodes.iter().map(String::as_str),
        ) == Some(self.node_name())
    }

    fn host_of(&self, node: &str) -> Option<ActorRef<HostMsg>> {
        ractor::pg::get_scoped_members(&self.inner.hosts_scope, &crate::host_group(node))
            .into_iter()
            .next()
            .map(ActorRef::from)
    }

    /// Sends a message to another node's host actor. False when the node
    /// is unreachable.
    fn send_remote(&self, node: &str, msg: &ClusterMsg) -> bool {
        let Some(host) = self.host_of(node) else {
            return false;
        };
        match msg.encode() {
            Ok(bytes) => {
                let len = bytes.len() as u64;
                let sent = host.cast(HostMsg::Envelope(bytes)).is_ok();
                if sent {
                    self.inner.metrics.peer_bytes_sent.inc_by(len);
                }
                sent
            }
            Err(e) => {
                tracing::error!(error = %e, "encoding a cluster message");
                false
            }
        }
    }

    /// Routes a command to the conversation's actor, wherever it lives.
    pub async fn route(&self, conv_id: ConvId, cmd: ConvCommand) {
        self.route_hops(conv_id, 0, cmd).await
    }

    pub(crate) async fn route_hops(&self, conv_id: ConvId, hops: u8, cmd: ConvCommand) {
        let home = self.home_of(conv_id);
        // Past the hop limit a node serves the conversation itself, unless
        // it is leaving: then it must not start actors it would abandon.
        let leaving = self.inner.leaving.load(Ordering::Relaxed);
        if home == self.node_name() || (hops >= MAX_HOPS && !leaving) {
            return self.deliver_to_conversation(conv_id, cmd).await;
        }
        let msg = ClusterMsg::Conversation {
            conv_id,
            hops: hops + 1,
            cmd,
        };
        if !self.send_remote(&home, &msg) {
            // The home just became unreachable: serve it here; fencing
            // keeps it safe if the other one is still alive somewhere.
            if let ClusterMsg::Conversation { cmd, .. } = msg {
                self.deliver_to_conversation(conv_id, cmd).await;
            }
        }
    }

    /// Hands a command to the local actor of the conversation, activating
    /// it on demand.
    async fn deliver_to_conversation(&self, conv_id: ConvId, cmd: ConvCommand) {
        if let Some(standby) = self.standby() {
            // No node that serves could be reached for it.
            return self
                .refuse(&cmd, ErrorCode::Unavailable, standby.describe())
                .await;
        }
        let mut cmd = cmd;
        for _ in 0..2 {
            let actor = match self.local_conversation(conv_id).await {
                Ok(actor) => actor,
                Err(e) => {
                    self.refuse(&cmd, e.code(), &e.to_string()).await;
                    return;
                }
            };
            match actor.cast(ConvMsg::Cmd(cmd)) {
                Ok(()) => return,
                Err(ractor::MessagingErr::SendErr(ConvMsg::Cmd(back))) => {
                    // It stopped between lookup and send: start a new one.
                    self.forget_conversation(conv_id, actor.get_id()).await;
                    cmd = back;
                }
                Err(e) => {
                    tracing::warn!(conv_id, error = %e, "conversation actor unreachable");
                    return;
                }
            }
        }
    }

    /// The running conversation actors (poison-tolerant: every update is
    /// one insert or remove).
    fn convs(&self) -> std::sync::MutexGuard<'_, RunningConversations> {
        self.inner
            .conversations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    async fn local_conversation(&self, conv_id: ConvId) -> Result<ActorRef<ConvMsg>, Error> {
        let running = self.convs().get(&conv_id).cloned();
        if let Some(actor) = running {
            return Ok(actor);
        }
        let gate = {
            let mut activating = self
                .inner
                .activating
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            activating.entry(conv_id).or_default().clone()
        };
        let result = {
            let _only_one = gate.lock().await;
            let running = self.convs().get(&conv_id).cloned();
            match running {
                Some(actor) => Ok(actor),
                // Spawning returns once the actor exists; its storage I/O
                // runs in its own task (post_start), so neither this caller
                // nor the host actor waits on it.
                None => {
                    let spawned = self
                        .spawn_linked(ConversationActor, (self.clone(), conv_id))
                        .await;
                    spawned.map(|(actor, _)| {
                        self.convs().insert(conv_id, actor.clone());
                        self.inner.metrics.conversations.inc();
                        actor
                    })
                }
            }
        };
        let mut activating = self
            .inner
            .activating
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The last one through removes the gate.
        if Arc::strong_count(&gate) <= 2 {
            activating.remove(&conv_id);
        }
        result
    }

    /// Spawns an actor linked to the node's supervisor (unlinked if it is
    /// not up yet, which only happens during start-up).
    async fn spawn_linked<A: Actor>(
        &self,
        actor: A,
        args: A::Arguments,
    ) -> Result<(ActorRef<A::Msg>, tokio::task::JoinHandle<()>), Error> {
        let spawned = match self.inner.supervisor.get() {
            Some(sup) => Actor::spawn_linked(None, actor, args, sup.clone()).await,
            None => Actor::spawn(None, actor, args).await,
        };
        spawned.map_err(|e| Error::Spawn(e.to_string()))
    }

    /// Starts the session actor of a new connection, under the supervisor.
    /// The handle ends when the session does, for whatever reason.
    pub async fn spawn_session(
        &self,
        args: crate::session::SessionArgs,
    ) -> Result<(ActorRef<SessionMsg>, tokio::task::JoinHandle<()>), Error> {
        self.spawn_linked(crate::session::SessionActor, args).await
    }

    /// Closes the user's oldest sessions on this node beyond the `keep`
    /// newest (code 4001), after a new one registered; returns how many.
    pub fn supersede_oldest(&self, user_id: UserId, keep: usize) -> usize {
        let extra = self.inner.sessions.beyond(user_id, keep);
        for session in &extra {
            let _ = session.cast(SessionMsg::Superseded(Vec::new()));
        }
        extra.len()
    }

    /// Unregisters a session; decrements the gauge only if it was still
    /// registered, so a normal stop and the supervisor's cleanup count once.
    pub(crate) fn session_gone(&self, session_id: u64) {
        if self.inner.sessions.remove(session_id) {
            self.inner.metrics.sessions.dec();
            self.inner
                .events
                .emit(ClusterEvent::SessionClosed { session_id });
        }
    }

    /// An actor linked to the supervisor ended: drop whatever registry
    /// entry still names it.
    pub(crate) fn actor_gone(&self, actor: ActorId) {
        // Usually the actor's own `post_stop` has unregistered it already.
        // Both registries find an actor by an index: the supervisor asks
        // once for every actor that ends, most of them sessions, and a scan
        // under the lock that fan-outs (or routing) take held those up at
        // each disconnect.
        if let Some(session_id) = self.inner.sessions.id_of(actor) {
            self.session_gone(session_id);
            return;
        }
        let conv = self.convs().remove_actor(actor);
        if let Some(conv_id) = conv {
            self.inner.metrics.conversations.dec();
            self.inner.conv_statuses.forget(conv_id);
        }
    }

    /// Sends the refusal of a command to the session that sent it.
    pub(crate) async fn refuse(&self, cmd: &ConvCommand, code: ErrorCode, message: &str) {
        let (from, reference) = match cmd {
            ConvCommand::Send {
                from,
                reference,
                message,
            } => (
                from,
                reference
                    .clone()
                    .unwrap_or_else(|| message.client_msg_id.clone()),
            ),
            ConvCommand::Typing {
                from, reference, ..
            } => (from, reference.clone().unwrap_or_else(|| "typing".into())),
            ConvCommand::Ack {
                from, reference, ..
            } => (from, reference.clone().unwrap_or_else(|| "ack".into())),
            ConvCommand::Changed(_) => return,
        };
        let frame = ServerFrame::error(code, message, Some(reference));
        self.reply(from, frame.to_json()).await;
    }

    /// Removes a stopped conversation actor from the registry.
    pub(crate) async fn forget_conversation(&self, conv_id: ConvId, actor: ActorId) {
        let mut convs = self.convs();
        if convs.get(&conv_id).is_some_and(|a| a.get_id() == actor) {
            convs.remove_actor(actor);
            self.inner.metrics.conversations.dec();
        }
    }

    /// Asks every local conversation actor to commit what it has and stop,
    /// and waits (up to 5 s) until they have.
    pub async fn handoff_all(&self) {
        let mut told: std::collections::HashSet<ActorId> = std::collections::HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let actors: Vec<ActorRef<ConvMsg>> = {
                let convs = self.convs();
                convs.values().cloned().collect()
            };
            if actors.is_empty() {
                return;
            }
            // Tell the ones started since the last look too.
            for actor in actors {
                if told.insert(actor.get_id()) {
                    let _ = actor.cast(ConvMsg::Handoff);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("some conversations did not stop within 5 s");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Records the live members and moves away the conversations whose
    /// home is no longer this node.
    pub(crate) async fn set_live(&self, live: BTreeSet<String>) {
        if let Ok(mut l) = self.inner.live.write() {
            *l = live;
        }
        let serving = self.serving_nodes();
        self.inner.metrics.live_nodes.set(serving.len() as i64);
        let previous = match self.inner.placed_on.write() {
            Ok(mut placed) if *placed != serving => {
                std::mem::replace(&mut *placed, serving.clone())
            }
            _ => return,
        };
        for peer in serving.iter().filter(|n| !previous.contains(n)) {
            self.inner
                .events
                .emit(ClusterEvent::NodeJoined { peer: peer.clone() });
        }
        for peer in previous.iter().filter(|n| !serving.contains(n)) {
            self.inner
                .events
                .emit(ClusterEvent::NodeLost { peer: peer.clone() });
        }
        tracing::info!(nodes = ?serving, "membership changed");
        let convs: Vec<(ConvId, ActorRef<ConvMsg>)> = {
            let convs = self.convs();
            convs.iter().map(|(k, v)| (*k, v.clone())).collect()
        };
        for (conv_id, actor) in convs {
            if self.home_of(conv_id) != self.node_name() {
                tracing::debug!(conv_id, "re-homing conversation");
                let _ = actor.cast(ConvMsg::Handoff);
            }
        }
    }

    /// Sends frames to every session of `users`: on this node, and on each
    /// serving peer that holds one of them (encoded once for all peers).
    pub async fn fanout(&self, users: Vec<UserId>, frames: Vec<Outgoing>) {
        if users.is_empty() || frames.is_empty() {
            return;
        }
        let hosting = self.peers_hosting(&users);
        if !hosting.is_empty() {
            let msg = ClusterMsg::Fanout {
                user_ids: users,
                frames,
            };
            match msg.encode() {
                Ok(bytes) => {
                    for host in &hosting {
                        if host.cast(HostMsg::Envelope(bytes.clone())).is_ok() {
                            self.inner
                                .metrics
                                .peer_bytes_sent
                                .inc_by(bytes.len() as u64);
                            self.metrics().peer_fanouts_sent.inc();
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "encoding a fan-out"),
            }
            if let ClusterMsg::Fanout { user_ids, frames } = msg {
                self.deliver_local(&user_ids, frames);
            }
        } else {
            self.deliver_local(&users, frames);
        }
    }

    /// The host actors of the serving peers that hold a session of one of
    /// `users`, as this node's view of the process groups has them. A
    /// session that just opened on a peer may be missing from this view for
    /// a moment; it reads the store again once that moment has passed
    /// ([`crate::session`]'s settle resync), so it misses nothing.
    fn peers_hosting(&self, users: &[UserId]) -> Vec<ActorRef<HostMsg>> {
        let mut nodes = BTreeSet::new();
        for &user_id in users {
            for cell in
                ractor::pg::get_scoped_members(&self.inner.users_scope, &crate::user_group(user_id))
            {
                if let ActorId::Remote { node_id, .. } = cell.get_id() {
                    nodes.insert(node_id);
                }
            }
        }
        if nodes.is_empty() {
            return Vec::new();
        }
        let me = self.node_name();
        self.serving_nodes()
            .iter()
            .filter(|n| n.as_str() != me)
            .filter_map(|n| self.host_of(n))
            .filter(|host| {
                matches!(host.get_id(), ActorId::Remote { node_id, .. } if nodes.contains(&node_id))
            })
            .collect()
    }

    /// Sends a frame to one session, local or remote.
    pub async fn reply(&self, to: &SessionAddr, frame: String) {
        if to.node == self.node_name() {
            self.reply_local(to.session_id, frame);
        } else {
            let msg = ClusterMsg::ToSession {
                session_id: to.session_id,
                frame,
            };
            if !self.send_remote(&to.node, &msg) {
                tracing::debug!(node = %to.node, "reply to an unreachable node dropped");
            }
        }
    }

    /// Hands an answer to the local session, or the HTTP request, it is
    /// addressed to (neither may still be there).
    fn reply_local(&self, session_id: u64, frame: String) {
        if let Some(session) = self.inner.sessions.get(session_id) {
            let _ = session.cast(SessionMsg::Frame(frame.into()));
            return;
        }
        let waiter = self
            .inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&session_id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(frame);
        }
    }

    /// Sends `message` to its conversation's actor on behalf of an HTTP
    /// request and waits for the answer the actor would give a WebSocket
    /// session: the JSON of a `sent` or an `error` frame. `None` when no
    /// answer came within `timeout` (the home node died mid-way; the
    /// client resends with the same `client_msg_id`).
    pub async fn send_and_wait(
        &self,
        conv_id: ConvId,
        message: storage::chat::NewMessage,
        timeout: std::time::Duration,
    ) -> Option<String> {
        let id = self.next_session_id();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        // Removes the entry however this ends, a dropped request included.
        struct Waiting<'a>(&'a Inner, u64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0
                    .waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.1);
            }
        }
        let _waiting = Waiting(&self.inner, id);
        let from = self.session_addr(id);
        let cmd = ConvCommand::Send {
            from,
            reference: None,
            message,
        };
        self.route(conv_id, cmd).await;
        let answer = tokio::time::timeout(timeout, rx).await;
        answer.ok().and_then(Result::ok)
    }

    /// Writes frames to this node's sessions of `users`. Each frame's text
    /// is shared by all of them (a reference count each, no copy).
    pub fn deliver_local(&self, users: &[UserId], frames: Vec<Outgoing>) {
        let frames: Vec<(Option<(ConvId, Seq)>, SharedText)> = frames
            .into_iter()
            .map(|f| (f.order, SharedText::from(f.json)))
            .collect();
        for &user_id in users {
            for session in self.inner.sessions.of_user(user_id) {
                let msg = match frames.as_slice() {
                    [(Some((conv_id, seq)), json)] => SessionMsg::Message(OrderedFrame {
                        conv_id: *conv_id,
                        seq: *seq,
                        json: json.clone(),
                    }),
                    [(None, json)] => SessionMsg::Frame(json.clone()),
                    // One mailbox message for all of them: at 5k msgs/s to
                    // groups of 100 a conversation's commit carries 12-20.
                    _ => SessionMsg::Batch(FrameBatch(frames.clone())),
                };
                let _ = session.cast(msg);
            }
        }
    }

    /// Ends every session opened with a login, on every node: its token
    /// was revoked.
    pub async fn revoke_login(&self, login: storage::chat::DeviceKey) {
        let me = self.node_name().to_owned();
        let msg = ClusterMsg::Revoked { login };
        for node in self.serving_nodes() {
            if node != me {
                self.send_remote(&node, &msg);
            }
        }
        self.dispatch_local(msg).await;
    }

    /// Has every local session send what the store holds past what it sent:
    /// after this node was presumed dead (its lease expired while it hung),
    /// the others fanned out without it.
    pub fn resync_sessions(&self) {
        for session in self.inner.sessions.all() {
            let _ = session.cast(SessionMsg::Resync);
        }
    }

    /// Handles a message from a peer (or from this node to itself).
    pub(crate) async fn dispatch_local(&self, msg: ClusterMsg) {
        match msg {
            ClusterMsg::Conversation { conv_id, hops, cmd } => {
                self.route_hops(conv_id, hops, cmd).await
            }
            ClusterMsg::Fanout { user_ids, frames } => {
                self.metrics().peer_fanouts_received.inc();
                self.deliver_local(&user_ids, frames)
            }
            ClusterMsg::Revoked { login } => {
                for session in self.inner.sessions.of_login(&login) {
                    let _ = session.cast(SessionMsg::Revoked(Vec::new()));
                }
            }
            ClusterMsg::ToSession { session_id, frame } => self.reply_local(session_id, frame),
        }
    }

    /// `newcomer` just became a contact of `others` (a new direct chat, a
    /// new group member): tell each side whether the other is online, since
    /// presence transitions only reach existing contacts.
    pub async fn introduce(&self, newcomer: UserId, others: &[UserId]) {
        let presence = |user_id| {
            ServerFrame::Presence {
                user_id,
                online: self.is_online(user_id),
                last_seen: None,
            }
            .to_json()
        };
        let about_others: Vec<Outgoing> = others.iter().map(|&u| presence(u).into()).collect();
        self.fanout(vec![newcomer], about_others).await;
        self.fanout(others.to_vec(), vec![presence(newcomer).into()])
            .await;
    }

    /// Tells the conversation's actor (wherever it lives) about a change
    /// the HTTP API committed.
    pub async fn conversation_changed(&self, conv_id: ConvId, change: crate::ConvChange) {
        if let crate::ConvChange::Deleted { members } = &change {
            // A deleted conversation cannot be activated to announce its own
            // deletion: tell the members from here, and stop its actor if
            // one is running.
            let frame = ServerFrame::GroupUpdated {
                conv_id,
                name: String::new(),
                description: String::new(),
                deleted: true,
            };
            self.fanout(members.clone(), vec![frame.to_json().into()])
                .await;
        }
        self.route(conv_id, ConvCommand::Changed(change)).await
    }
}

impl ClusterRuntime {
    /// The node's cluster handle.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Leaves the cluster gracefully: gives up the lease so the others
    /// re-home at once, commits and stops every conversation, then closes
    /// every client socket with a code that says "reconnect elsewhere".
    pub async fn shutdown(self) {
        let cluster = self.cluster;
        // From now on commands for conversations go to the other nodes,
        // so the handoff below does not race new local activations.
        cluster.inner.leaving.store(true, Ordering::Relaxed);
        let _ = self.stop_membership.send(true);
        let _ = self.membership.await;
        let store = cluster.storage().clone();
        let name = cluster.node_name().to_owned();
        match store.run(move |store| store.drop_lease(&name)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "dropping the lease"),
            Err(e) => tracing::warn!(error = %e, "dropping the lease"),
        }
        cluster.handoff_all().await;
        for session in cluster.sessions().all() {
            let _ = session.cast(SessionMsg::Close(
                b"node shutting down: reconnect to another node".to_vec(),
            ));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !cluster.sessions().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.services.stop_children(None);
        self.services.stop(None);
        self.server.stop(None);
    }
}

/// The conversation actors running on this node, by conversation and by
/// actor: the supervisor names an actor that ended by its id.
#[derive(Default)]
struct RunningConversations {
    by_conv: HashMap<ConvId, ActorRef<ConvMsg>>,
    by_actor: HashMap<ActorId, ConvId>,
}

impl RunningConversations {
    fn get(&self, conv_id: &ConvId) -> Option<&ActorRef<ConvMsg>> {
        self.by_conv.get(conv_id)
    }

    /// Registers `actor` for `conv_id` (in place of a stopped one).
    fn insert(&mut self, conv_id: ConvId, actor: ActorRef<ConvMsg>) {
        self.by_actor.insert(actor.get_id(), conv_id);
        if let Some(old) = self.by_conv.insert(conv_id, actor) {
            self.by_actor.remove(&old.get_id());
        }
    }

    /// Unregisters `actor`, if it is the one registered for its
    /// conversation: the conversation it ran.
    fn remove_actor(&mut self, actor: ActorId) -> Option<ConvId> {
        let conv_id = self.by_actor.remove(&actor)?;
        if self
            .by_conv
            .get(&conv_id)
            .is_some_and(|a| a.get_id() == actor)
        {
            self.by_conv.remove(&conv_id);
            return Some(conv_id);
        }
        None
    }

    fn values(&self) -> impl Iterator<Item = &ActorRef<ConvMsg>> {
        self.by_conv.values()
    }

    fn iter(&self) -> impl Iterator<Item = (&ConvId, &ActorRef<ConvMsg>)> {
        self.by_conv.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_actor::idle;

    #[tokio::test]
    async fn a_conversation_actor_is_found_and_removed_by_its_id() {
        let mut running = RunningConversations::default();
        let (first, second, other): (ActorRef<ConvMsg>, ActorRef<ConvMsg>, ActorRef<ConvMsg>) =
            (idle().await, idle().await, idle().await);
        running.insert(12, first.clone());
        running.insert(13, other.clone());
        // A newer actor of conversation 12 takes the place of the first.
        running.insert(12, second.clone());
        assert_eq!(running.get(&12).map(|a| a.get_id()), Some(second.get_id()));
        // The first ending later unregisters nothing.
        assert_eq!(running.remove_actor(first.get_id()), None);
        assert!(running.get(&12).is_some());
        assert_eq!(running.remove_actor(second.get_id()), Some(12));
        assert!(running.get(&12).is_none());
        assert_eq!(running.remove_actor(second.get_id()), None);
        assert_eq!(running.iter().count(), 1);
        for a in [first, second, other] {
            a.stop(None);
        }
    }
}
