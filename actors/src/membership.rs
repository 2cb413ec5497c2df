//! Cluster membership: leases in storage, and the transport kept in step.
//!
//! ractor_cluster notices a peer only when its TCP connection closes (a
//! killed process: milliseconds; a hung or partitioned one: never) and does
//! not reconnect by itself. So every node renews a lease in storage each
//! heartbeat; the live members are the nodes whose lease records this node
//! saw change within the lease lifetime, timed on its own monotonic clock
//! ([`LeaseClock`]: no comparison of clocks across machines). Each
//! heartbeat this loop also dials live peers it is not connected to
//! (restarts, healed partitions) and drops connections to peers whose lease
//! expired, which removes their sessions from the process groups (they go
//! offline) and their host from routing. A connected peer that answers no
//! probe for a lease lifetime (a cut or blackholed link: its lease still
//! renews) is dropped the same way ([`crate::probe`]); it is dialed again
//! like any live unconnected peer, and comes back once the link heals.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use storage::chat::NodeLease;

use crate::lease_clock::LeaseClock;
use crate::probe::PeerHeard;
use crate::Cluster;

/// How long to wait before dialing the same peer again.
const REDIAL_AFTER: Duration = Duration::from_secs(2);

/// How long a dial may take: a peer behind a blackholed route never
/// answers the TCP handshake, and the loop must go on renewing the lease.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Heartbeats at which this node's sessions catch up from the store after
/// the set of connected peers changed (or after this node found it was
/// presumed dead, once it is connected to every live peer again). A peer
/// that went away may have acknowledged messages it never fanned out; a
/// peer (re)connected fans out to this node's sessions only once process
/// groups are exchanged, a moment after the connection. Either way the
/// store has every acknowledged message, so reading it closes the gap.
const RESYNC_TICKS: u32 = 3;

/// Heartbeats after finding itself presumed dead during which a node keeps
/// its sessions catching up while some live peer is still unconnected: a
/// peer it cannot reach at all must not make it read the store for ever.
const REJOIN_TICKS: u32 = 30;

/// What one heartbeat found.
#[derive(Debug, Default)]
struct Beat {
    /// This node's lease had expired: the others presumed it dead.
    was_dead: bool,
    /// The peers this node holds a connection to.
    connected: BTreeSet<String>,
    /// Live peers it is not (yet) connected to.
    unconnected_live: usize,
}

/// Renews the lease and reconciles connections until `shutdown` fires.
pub async fn run(
    cluster: Cluster,
    server: ActorRef<NodeServerMessage>,
    heard: Arc<PeerHeard>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let heartbeat = cluster.config().heartbeat;
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dialed: HashMap<String, Instant> = HashMap::new();
    let mut clock = LeaseClock::new(cluster.config().lease_ttl);
    let mut resyncs_left = 0;
    // Heartbeats left while presumed dead and not yet connected to every
    // live peer again.
    let mut rejoining = 0;
    let mut peers: Option<BTreeSet<String>> = None;
    // The last heartbeat that went through (the lease was renewed).
    let mut last_beat = Instant::now();
    for seed in cluster.config().seeds.clone() {
        dial(cluster.config().tls.clone(), server.clone(), seed).await;
    }
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let ttl = cluster.config().lease_ttl;
        cluster.faults().check(crate::faults::Fault::Membership);
        match tick(&cluster, &server, &heard, &mut dialed, &mut clock).await {
            Ok(beat) => {
                last_beat = Instant::now();
                if beat.was_dead {
                    rejoining = REJOIN_TICKS;
                } else if beat.unconnected_live == 0 {
                    rejoining = 0;
                }
                // Presumed dead until now: serve nothing until connected to
                // every live peer again, lest we believe ourselves alone.
                let standby = (rejoining > 0 && beat.unconnected_live > 0)
                    .then_some(crate::standby::Standby::Rejoining);
                cluster.set_standby(standby);
                let changed = peers.as_ref().is_some_and(|p| *p != beat.connected);
                if changed {
                    tracing::info!(peers = ?beat.connected, "connected peers changed: sessions catch up");
                }
                if beat.was_dead || changed || rejoining > 0 {
                    resyncs_left = RESYNC_TICKS;
                }
                rejoining = rejoining.saturating_sub(1);
                peers = Some(beat.connected);
            }
            Err(e) => {
                tracing::warn!(error = %e, "membership heartbeat failed");
                // A full disk is not a lost store: reads go on, and every
                // node sharing it is in the same place.
                let full = matches!(&e, crate::Error::Storage(s) if s.is_storage_full());
                if !full && last_beat.elapsed() >= ttl {
                    // A process that was frozen (SIGSTOP, a paused VM) sees
                    // its store call time out the moment it runs again,
                    // though the store is fine: ask once more, briefly,
                    // before standing by. A read: the next heartbeat must
                    // still find the lease as it was (expired, if it was),
                    // to hand off and rejoin.
                    let store = cluster.storage().clone();
                    let again =
                        tokio::time::timeout(ttl / 4, store.run(|store| store.leases())).await;
                    if matches!(again, Ok(Ok(Ok(_)))) {
                        tracing::info!(
                            "the store answers: this process stalled, the store did not"
                        );
                        last_beat = Instant::now();
                    } else {
                        cluster.lose_store();
                    }
                }
            }
        }
        if resyncs_left > 0 {
            resyncs_left -= 1;
            cluster.resync_sessions();
        }
    }
}

/// Writes this node's lease once, so it is live before it serves anyone.
pub async fn renew(cluster: &Cluster) -> Result<Option<NodeLease>, crate::Error> {
    let store = cluster.storage().clone();
    let config = cluster.config();
    let lease = NodeLease {
        name: config.node_name.clone(),
        cluster_addr: config.advertise.clone(),
        http_addr: config.http_addr.clone(),
        public_url: config.public_url.clone(),
        incarnation: cluster.incarnation(),
        expires_at: cluster.store().now() + config.lease_ttl.as_millis() as u64,
    };
    Ok(store.run(move |store| store.renew_lease(&lease)).await??)
}

/// One heartbeat: renews the lease, drops expired peers, dials live ones.
async fn tick(
    cluster: &Cluster,
    server: &ActorRef<NodeServerMessage>,
    heard: &PeerHeard,
    dialed: &mut HashMap<String, Instant>,
    clock: &mut LeaseClock,
) -> Result<Beat, crate::Error> {
    // A store out of reach may hold a call for its whole timeout (10 s on
    // FoundationDB): a renewal that takes a lease lifetime failed.
    let ttl = cluster.config().lease_ttl;
    let previous = tokio::time::timeout(ttl, renew(cluster))
        .await
        .map_err(|_| crate::Error::HeartbeatTimeout)??;
    let mut was_dead = false;
    // Our own record against our own clock: no cross-machine comparison.
    let now = cluster.store().now();
    if let Some(prev) = previous {
        if prev.incarnation == cluster.incarnation() && prev.expires_at <= now {
            // We were silent past our lease (paused, starved): the others
            // have taken our conversations over. Our actors are fenced out
            // anyway; stop them now rather than on their next append.
            tracing::warn!(
                "our lease had expired: handing every conversation off; our sessions catch up"
            );
            cluster.handoff_all().await;
            was_dead = true;
        }
    }
    let store = cluster.storage().clone();
    let leases = tokio::time::timeout(ttl, store.run(move |store| store.leases()))
        .await
        .map_err(|_| crate::Error::HeartbeatTimeout)???;
    let me = cluster.node_name().to_owned();
    let liveness = clock.observe(&leases, Instant::now());
    let (live, expired): (BTreeSet<String>, BTreeSet<String>) = (liveness.live, liveness.expired);

    let sessions = ractor::call_t!(server, NodeServerMessage::GetSessions, 2_000)
        .map_err(|e| crate::Error::Spawn(format!("node server: {e}")))?;
    let mut connected = BTreeSet::new();
    let mut transports = HashMap::new();
    for info in sessions.values() {
        // The transport names a peer "{node name}@{host}"; leases use the
        // node name alone.
        let Some(name) = info
            .peer_name
            .as_ref()
            .map(|n| n.name.split('@').next().unwrap_or_default().to_owned())
        else {
            continue;
        };
        if expired.contains(&name) {
            tracing::warn!(peer = %name, "peer lease expired: dropping its connection");
            info.actor.stop(Some("lease expired".into()));
            continue;
        }
        transports.insert(name.clone(), info.actor.clone());
        connected.insert(name);
    }
    // Peers silent for a lease lifetime are cut off; the others are probed.
    let ttl = cluster.config().lease_ttl;
    for (peer, silent) in heard.track(&connected, Instant::now()) {
        if silent >= ttl {
            tracing::warn!(%peer, silent_ms = silent.as_millis() as u64,
                "peer answers no probe: dropping its connection");
            cluster.metrics().peers_cut_off.inc();
            if let Some(transport) = transports.get(&peer) {
                transport.stop(Some("no answer to probes".into()));
            }
            connected.remove(&peer);
            // Dialed again after the usual pause, not at once.
            dialed.insert(peer, Instant::now());
        } else if !cluster.links().is_cut(&peer) {
            crate::probe::ping(cluster.hosts_scope(), &me, &peer);
        }
    }
    cluster
        .metrics()
        .peers_connected
        .set(i64::try_from(connected.len()).unwrap_or(i64::MAX));
    let mut unconnected_live = 0;
    for lease in &leases {
        if lease.name == me || !live.contains(&lease.name) || connected.contains(&lease.name) {
            continue;
        }
        unconnected_live += 1;
        let due = dialed
            .get(&lease.name)
            .is_none_or(|t| t.elapsed() >= REDIAL_AFTER);
        if due {
            dialed.insert(lease.name.clone(), Instant::now());
            tracing::info!(peer = %lease.name, addr = %lease.cluster_addr, "dialing peer");
            // In the background: a peer that does not answer the handshake
            // must not hold up the heartbeat.
            tokio::spawn(dial(
                cluster.config().tls.clone(),
                server.clone(),
                lease.cluster_addr.clone(),
            ));
        }
    }
    cluster.set_live(live).await;
    Ok(Beat {
        was_dead,
        connected,
        unconnected_live,
    })
}

async fn dial(
    tls: Option<crate::tls::ClusterTls>,
    server: ActorRef<NodeServerMessage>,
    addr: String,
) {
    let dialed = async {
        match &tls {
            Some(tls) => tls.dial(&server, &addr).await,
            None => ractor_cluster::client_connect(&server, &addr)
                .await
                .map_err(|e| crate::Error::Spawn(e.to_string())),
        }
    };
    match tokio::time::timeout(DIAL_TIMEOUT, dialed).await {
        Ok(Ok(())) => {}
        // A refused certificate is the operator's to see (the dialing side
        // of "another CA"/"expired"); once per redial, not per heartbeat.
        Ok(Err(e @ crate::Error::Tls(_))) => tracing::warn!(%addr, error = %e, "dial failed"),
        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "dial failed"),
        Err(_) => tracing::debug!(%addr, "dial timed out"),
    }
}
