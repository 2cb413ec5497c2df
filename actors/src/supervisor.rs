//! The supervisor of a node's conversation and session actors.
//!
//! Every conversation and session actor is spawned linked to it, so when
//! one dies for any reason (a panic included, where its own `post_stop`
//! never runs) its registry entry and gauge are cleaned up here: the next
//! command for the conversation activates a fresh actor, and no fan-out
//! keeps aiming at a dead session.

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::Cluster;

/// The supervisor actor; it takes no messages of its own.
pub struct Supervisor;

impl Actor for Supervisor {
    type Msg = ();
    type State = Cluster;
    type Arguments = Cluster;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        cluster: Cluster,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(cluster)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        cluster: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::error!(actor = %cell.get_id(), %error, "actor failed; cleaning up after it");
                cluster.actor_gone(cell.get_id());
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => cluster.actor_gone(cell.get_id()),
            _ => {}
        }
        Ok(())
    }
}
