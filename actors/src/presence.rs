//! PresenceActor: turns `user:{id}` process-group changes into `presence`
//! frames for the contacts connected to this node.
//!
//! A user is online while at least one of their sessions is alive anywhere
//! in the cluster. Every node watches the whole `users` scope; when a group
//! goes from empty to non-empty or back, the node tells its own local
//! sessions of that user's contacts. When a node dies, the transport drops
//! its sessions from the groups and the same path reports them offline.

use std::collections::HashMap;

use ractor::pg::GroupChangeMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use storage::chat::UserId;

use crate::frames::ServerFrame;
use crate::Cluster;

/// The presence actor; it only receives supervision events.
pub struct PresenceActor;

/// Who this node last knew to be online.
pub struct PresenceState {
    cluster: Cluster,
    online: HashMap<UserId, bool>,
}

impl Actor for PresenceActor {
    type Msg = ();
    type State = PresenceState;
    type Arguments = Cluster;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        cluster: Cluster,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::monitor_scope(cluster.users_scope().to_owned(), myself.get_cell());
        Ok(PresenceState {
            cluster,
            online: HashMap::new(),
        })
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ProcessGroupChanged(change) = event else {
            return Ok(());
        };
        let group = match &change {
            GroupChangeMessage::Join(_, group, _) | GroupChangeMessage::Leave(_, group, _) => group,
        };
        let Some(user_id) = crate::parse_user_group(group) else {
            return Ok(());
        };
        state.cluster.faults().check(crate::faults::Fault::Presence);
        let online = state.cluster.is_online(user_id);
        let was = state.online.insert(user_id, online).unwrap_or(false);
        if !online {
            state.online.remove(&user_id);
        }
        if was != online {
            tracing::debug!(user_id, online, "presence changed");
            let cluster = state.cluster.clone();
            tokio::spawn(async move { announce(cluster, user_id, online).await });
        }
        Ok(())
    }
}

/// Tells the local sessions of the user's contacts; the user's home node
/// also records last-seen when they go offline.
async fn announce(cluster: Cluster, user_id: UserId, online: bool) {
    let store = cluster.storage().clone();
    let now = store.store().now();
    let record = !online && cluster.is_user_home(user_id);
    let result = store
        .run(move |store| {
            if record {
                store.set_last_seen(user_id, now)?;
            }
            let last_seen = if online {
                store.last_seen(user_id)?
            } else {
                Some(now)
            };
            Ok::<_, storage::Error>((store.contacts(user_id)?, last_seen))
        })
        .await;
    let (contacts, last_seen) = match result {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(user_id, error = %e, "presence lookup failed");
            return;
        }
        Err(e) => {
            tracing::warn!(user_id, error = %e, "presence lookup failed");
            return;
        }
    };
    let frame = ServerFrame::Presence {
        user_id,
        online,
        last_seen,
    }
    .to_json();
    cluster.deliver_local(&contacts, vec![frame.into()]);
}
