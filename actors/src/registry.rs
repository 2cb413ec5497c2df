//! The sessions connected to this node, by id and by user.
//!
//! The host actor delivers frames through it; it is the node-local index
//! that the cluster-wide `user:{id}` process groups (used for presence)
//! do not give cheaply.

use std::collections::HashMap;
use std::sync::Mutex;

use ractor::ActorRef;
use storage::chat::{DeviceKey, UserId};

use crate::session::SessionMsg;

#[derive(Default)]
struct Maps {
    by_id: HashMap<u64, (UserId, ActorRef<SessionMsg>)>,
    login: HashMap<u64, DeviceKey>,
    by_user: HashMap<UserId, Vec<u64>>,
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
        m.by_id.insert(session_id, (user_id, actor));
        m.login.insert(session_id, login);
        m.by_user.entry(user_id).or_default().push(session_id);
    }

    /// Removes a session; whether it was there.
    pub fn remove(&self, session_id: u64) -> bool {
        let mut m = self.lock();
        m.login.remove(&session_id);
        let Some((user_id, _)) = m.by_id.remove(&session_id) else {
            return false;
        };
        if let Some(ids) = m.by_user.get_mut(&user_id) {
            ids.retain(|&id| id != session_id);
            if ids.is_empty() {
                m.by_user.remove(&user_id);
            }
        }
        true
    }

    /// The session id of a session actor, if it is registered.
    pub fn id_of(&self, actor: ractor::ActorId) -> Option<u64> {
        self.lock()
            .by_id
            .iter()
            .find(|(_, (_, a))| a.get_id() == actor)
            .map(|(id, _)| *id)
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
