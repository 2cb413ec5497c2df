//! HostActor: a node's single mailbox for its peers.
//!
//! Every node runs one, in the process group `host:{node name}`, and nodes
//! talk to each other only through it, with [`ClusterMsg`] encoded as bytes.
//! It decodes (refusing garbage without panicking) and hands the message to
//! the node's [`Cluster`] handle, which activates conversation actors on
//! demand and delivers frames to local sessions.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorClusterMessage;

use crate::wire::ClusterMsg;
use crate::Cluster;

/// Messages from peers: bincode-encoded [`ClusterMsg`].
#[derive(RactorClusterMessage)]
pub enum HostMsg {
    /// One encoded [`ClusterMsg`].
    Envelope(Vec<u8>),
}

/// The host actor. Its state is the node's cluster handle.
pub struct HostActor;

impl Actor for HostActor {
    type Msg = HostMsg;
    type State = Cluster;
    type Arguments = Cluster;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        cluster: Cluster,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join_scoped(
            cluster.hosts_scope().to_owned(),
            crate::host_group(cluster.node_name()),
            vec![myself.get_cell()],
        );
        Ok(cluster)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        cluster: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        cluster.faults().check(crate::faults::Fault::Host);
        let HostMsg::Envelope(bytes) = message;
        match ClusterMsg::decode(&bytes) {
            Ok(msg) => cluster.dispatch_local(msg).await,
            Err(e) => {
                cluster.metrics().bad_peer_messages.inc();
                tracing::warn!(error = %e, len = bytes.len(), "dropping a malformed peer message");
            }
        }
        Ok(())
    }
}
