//! The supervisor of a node's service actors: the host (peer traffic), the
//! presence actor and the probe.
//!
//! There is one of each per node and nothing else takes their place, so a
//! panic in one must not leave the node deaf to its peers or silent about
//! presence. They are spawned linked to this supervisor, which starts a
//! failed one again (logged as an error, counted in
//! `parley_task_restarts_total`, like the internal tasks of
//! [`crate::task`]). A restarted host or probe joins its process group
//! again; a restarted presence actor watches the users' groups again.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::host::HostActor;
use crate::presence::PresenceActor;
use crate::probe::{PeerHeard, ProbeActor, ProbeArgs};
use crate::Cluster;

/// One of the supervised services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Host,
    Presence,
    Probe,
}

/// What the supervisor needs to start its services.
pub struct ServicesArgs {
    /// The node's cluster handle.
    pub cluster: Cluster,
    /// Shared by the probe and the membership loop.
    pub heard: Arc<PeerHeard>,
}

/// The running services, by actor.
pub struct ServicesState {
    args: ServicesArgs,
    running: HashMap<ActorId, Service>,
}

/// The supervisor actor; it takes no messages of its own.
pub struct Services;

impl ServicesState {
    async fn spawn(
        &mut self,
        service: Service,
        supervisor: ActorCell,
    ) -> Result<(), ActorProcessingErr> {
        let cluster = self.args.cluster.clone();
        let cell = match service {
            Service::Host => Actor::spawn_linked(None, HostActor, cluster, supervisor)
                .await?
                .0
                .get_cell(),
            Service::Presence => Actor::spawn_linked(None, PresenceActor, cluster, supervisor)
                .await?
                .0
                .get_cell(),
            Service::Probe => {
                let args = ProbeArgs {
                    me: cluster.node_name().to_owned(),
                    scope: cluster.hosts_scope().to_owned(),
                    heard: self.args.heard.clone(),
                    links: cluster.links().clone(),
                };
                Actor::spawn_linked(None, ProbeActor, args, supervisor)
                    .await?
                    .0
                    .get_cell()
            }
        };
        tracing::debug!(?service, actor = %cell.get_id(), "service started");
        self.running.insert(cell.get_id(), service);
        Ok(())
    }
}

impl Actor for Services {
    type Msg = ();
    type State = ServicesState;
    type Arguments = ServicesArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ServicesArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = ServicesState {
            args,
            running: HashMap::new(),
        };
        for service in [Service::Host, Service::Presence, Service::Probe] {
            state.spawn(service, myself.get_cell()).await?;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself.stop_children(None);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, error) = event else {
            return Ok(());
        };
        let Some(service) = state.running.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.args.cluster.metrics().task_restarts.inc();
        tracing::error!(?service, %error, "service actor failed; starting it again");
        // At once, from this handler, as ractor's supervision example does
        // (a restart delayed here was seen to leave the new presence actor
        // deaf to process-group changes).
        state.spawn(service, myself.get_cell()).await
    }
}
