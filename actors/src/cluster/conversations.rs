//! This node's conversation actors (activation on demand, one at a time
//! per conversation; the registry; handoff) and the registration of its
//! sessions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorRef};
use storage::chat::{ConvId, UserId};

use super::Cluster;
use crate::conversation::{ConvMsg, ConversationActor};
use crate::events::ClusterEvent;
use crate::frames::{ErrorCode, ServerFrame};
use crate::session::SessionMsg;
use crate::wire::ConvCommand;
use crate::Error;

impl Cluster {
    /// Hands a command to the local actor of the conversation, activating
    /// it on demand.
    pub(super) async fn deliver_to_conversation(&self, conv_id: ConvId, cmd: ConvCommand) {
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
    pub(super) fn convs(&self) -> std::sync::MutexGuard<'_, RunningConversations> {
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
        self.route(conv_id, ConvCommand::Changed(change)).await;
    }
}

/// The conversation actors running on this node, by conversation and by
/// actor: the supervisor names an actor that ended by its id.
#[derive(Default)]
pub(super) struct RunningConversations {
    by_conv: HashMap<ConvId, ActorRef<ConvMsg>>,
    by_actor: HashMap<ActorId, ConvId>,
}

impl RunningConversations {
    pub(super) fn get(&self, conv_id: &ConvId) -> Option<&ActorRef<ConvMsg>> {
        self.by_conv.get(conv_id)
    }

    /// Registers `actor` for `conv_id` (in place of a stopped one).
    pub(super) fn insert(&mut self, conv_id: ConvId, actor: ActorRef<ConvMsg>) {
        self.by_actor.insert(actor.get_id(), conv_id);
        if let Some(old) = self.by_conv.insert(conv_id, actor) {
            self.by_actor.remove(&old.get_id());
        }
    }

    /// Unregisters `actor`, if it is the one registered for its
    /// conversation: the conversation it ran.
    pub(super) fn remove_actor(&mut self, actor: ActorId) -> Option<ConvId> {
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

    pub(super) fn values(&self) -> impl Iterator<Item = &ActorRef<ConvMsg>> {
        self.by_conv.values()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&ConvId, &ActorRef<ConvMsg>)> {
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
