//! The sessions connected to this node, by id and by user.
//!
//! The host actor delivers frames through it; it is the node-local index
//! that the cluster-wide `user:{id}` process groups (used for presence)
//! do not give cheaply.

use std::collections::HashMap;
use std::sync::Mutex;

use ractor::{ActorId, ActorRef};
use storage::chat::{DeviceKey, UserId};

use crate::session::SessionMsg;

#[derive(Default)]
struct Maps {
    by_id: HashMap<u64, (UserId, ActorRef<SessionMsg>)>,
    login: HashMap<u64, DeviceKey>,
    by_user: HashMap<UserId, Vec<u64>>,
    /// The session id of each session actor: the supervisor names an
    /// actor that ended by its id, once per session that closes, and a
    /// scan of every session under this lock would hold up the fan-outs.
    by_actor: HashMap<ActorId, u64>,
}

/// The local sessions. Cheap operations under one short lock.
#[derive(Default)]
pub struct LocalSessions {
    maps: Mutex<Maps>,
}

impl LocalSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        // The maps stay consistent across a panic elsewhere: every update is
        // a pair of inserts or removes done together.
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session.
    pub fn insert(
        &self,
        session_id: u64,
        user_id: UserId,
        login: DeviceKey,
        actor: ActorRef<SessionMsg>,
    ) {
        let mut m = self.lock();
        m.by_actor.insert(actor.get_id(), session_id);
        m.by_id.insert(session_id, (user_id, actor));
        m.login.insert(session_id, login);
        m.by_user.entry(user_id).or_default().push(session_id);
    }

    /// Removes a session; whether it was there.
    pub fn remove(&self, session_id: u64) -> bool {
        let mut m = self.lock();
        m.login.remove(&session_id);
        let Some((user_id, actor)) = m.by_id.remove(&session_id) else {
            return false;
        };
        m.by_actor.remove(&actor.get_id());
        if let Some(ids) = m.by_user.get_mut(&user_id) {
            ids.retain(|&id| id != session_id);
            if ids.is_empty() {
                m.by_user.remove(&user_id);
            }
        }
        true
    }

    /// The session id of a session actor, if it is registered.
    pub fn id_of(&self, actor: ActorId) -> Option<u64> {
        self.lock().by_actor.get(&actor).copied()
    }

    /// One session.
    pub fn get(&self, session_id: u64) -> Option<ActorRef<SessionMsg>> {
        self.lock().by_id.get(&session_id).map(|(_, a)| a.clone())
    }

    /// Every local session of the user.
    pub fn of_user(&self, user_id: UserId) -> Vec<ActorRef<SessionMsg>> {
        let m = self.lock();
        m.by_user
            .get(&user_id)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| m.by_id.get(id).map(|(_, a)| a.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The user's oldest sessions beyond the `keep` newest, in the order
    /// they registered: a node holds at most `keep` sessions of one user,
    /// so one account cannot make it hold a socket, an actor and a share of
    /// every fan-out per connection it cares to open. Empty when the user
    /// has `keep` or fewer.
    pub fn beyond(&self, user_id: UserId, keep: usize) -> Vec<ActorRef<SessionMsg>> {
        let m = self.lock();
        let Some(ids) = m.by_user.get(&user_id) else {
            return Vec::new();
        };
        let extra = ids.len().saturating_sub(keep);
        ids[..extra]
            .iter()
            .filter_map(|id| m.by_id.get(id).map(|(_, a)| a.clone()))
            .collect()
    }

    /// The local sessions opened with one login (token).
    pub fn of_login(&self, login: &DeviceKey) -> Vec<ActorRef<SessionMsg>> {
        let m = self.lock();
        m.login
            .iter()
            .filter(|(_, l)| *l == login)
            .filter_map(|(id, _)| m.by_id.get(id).map(|(_, a)| a.clone()))
            .collect()
    }

    /// Every local session.
    pub fn all(&self) -> Vec<ActorRef<SessionMsg>> {
        self.lock().by_id.values().map(|(_, a)| a.clone()).collect()
    }

    /// How many sessions are connected.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_actor::idle;

    fn device(name: &str) -> DeviceKey {
        DeviceKey::named(name).expect("a device id")
    }

    #[tokio::test]
    async fn sessions_are_found_by_actor_and_the_oldest_beyond_a_limit() {
        let sessions = LocalSessions::default();
        let mut actors = Vec::new();
        for id in 1..=4 {
            let actor = idle().await;
            sessions.insert(id, 7, device("phone"), actor.clone());
            actors.push(actor);
        }
        let other: ActorRef<SessionMsg> = idle().await;
        sessions.insert(9, 8, device("laptop"), other.clone());

        assert_eq!(sessions.id_of(actors[2].get_id()), Some(3));
        assert_eq!(sessions.id_of(other.get_id()), Some(9));
        // User 7 keeps its 2 newest: the first two registered go.
        let beyond: Vec<_> = sessions.beyond(7, 2).iter().map(|a| a.get_id()).collect();
        assert_eq!(beyond, vec![actors[0].get_id(), actors[1].get_id()]);
        assert!(sessions.beyond(7, 4).is_empty());
        assert!(sessions.beyond(8, 1).is_empty());

        // Removed, it is found by neither its id nor its actor.
        assert!(sessions.remove(1));
        assert!(!sessions.remove(1));
        assert_eq!(sessions.id_of(actors[0].get_id()), None);
        assert_eq!(sessions.beyond(7, 2).len(), 1);
        assert_eq!(sessions.len(), 4);
        for actor in actors.iter().chain([&other]) {
            actor.stop(None);
        }
    }
}
