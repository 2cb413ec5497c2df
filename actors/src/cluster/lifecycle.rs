//! Start-up, standing by and shutdown of a node's cluster machinery.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage};
use storage::chat::ChatStore;

use super::{Cluster, Inner, RunningConversations};
use crate::committer::Committer;
use crate::config::ClusterConfig;
use crate::conv_status::ConvStatuses;
use crate::events::Events;
use crate::faults::Faults;
use crate::indexer::Indexer;
use crate::metrics::Metrics;
use crate::probe::PeerHeard;
use crate::push::PushService;
use crate::registry::LocalSessions;
use crate::services::{Services, ServicesArgs};
use crate::session::SessionMsg;
use crate::standby::{Standby, StandbyFlag};
use crate::store_pool::StorePool;
use crate::supervisor::Supervisor;
use crate::Error;

/// Peer losses a connection may fall behind by before it answers all its
/// remotely routed sends at once (a lagging receiver).
const PEERS_LOST_BACKLOG: usize = 16;

/// The running cluster machinery of a node; [`ClusterRuntime::shutdown`]
/// stops it gracefully.
pub struct ClusterRuntime {
    cluster: Cluster,
    server: ActorRef<NodeServerMessage>,
    /// The host, presence and probe actors' supervisor.
    services: ActorRef<()>,
    stop_membership: tokio::sync::watch::Sender<bool>,
    membership: tokio::task::JoinHandle<()>,
    /// The TLS accept loop of the cluster port, if TLS is on.
    tls_accept: Option<tokio::task::JoinHandle<()>>,
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
                peers_lost: tokio::sync::broadcast::channel(PEERS_LOST_BACKLOG).0,
                incarnation: rand::random(),
                leaving: std::sync::atomic::AtomicBool::new(false),
                standby: StandbyFlag::default(),
                faults,
                links: Arc::default(),
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
        // With TLS the node accepts peers itself (handshakes bounded in
        // time and number: `tls::ClusterTls::serve`) and the transport's
        // own listener sits unused on an ephemeral loopback port, TLS too.
        // Peers are dialed from the leases, so transitive connections
        // (which ractor_cluster dials in plaintext) are off.
        let tls_listener = match &config.tls {
            Some(_) => Some(crate::tls::bind(config.listen).await?),
            None => None,
        };
        let server = match &config.tls {
            Some(tls) => NodeServer::new(
                0,
                config.cookie.clone(),
                config.node_name.clone(),
                hostname,
                Some(ractor_cluster::IncomingEncryptionMode::Tls(tls.acceptor())),
                Some(NodeConnectionMode::Isolated),
            )
            .with_listen_addr(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            None => NodeServer::new(
                config.listen.port(),
                config.cookie.clone(),
                config.node_name.clone(),
                hostname,
                None,
                Some(NodeConnectionMode::Transitive),
            )
            .with_listen_addr(config.listen.ip()),
        };
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| Error::Spawn(format!("cluster transport: {e}")))?;
        let tls_accept = match (&config.tls, tls_listener) {
            (Some(tls), Some(listener)) => {
                Some(tokio::spawn(tls.clone().serve(listener, server.clone())))
            }
            _ => None,
        };
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
            tls_accept,
        })
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
        // Event streams (the admin API's, the lab's) end now rather than
        // hold the gateway's connections open past the exit.
        cluster.events().close();
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
        if let Some(accept) = &self.tls_accept {
            accept.abort();
        }
        self.server.stop(None);
    }
}
