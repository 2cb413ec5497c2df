//! Group membership: add, remove, leave, with a versioned history.

use super::conversations::{index_member, require_member, require_user};
use super::{
    get, put, ChatStore, ConvId, ConvKind, ConvMeta, Member, MemberAction, MemberEvent,
    MemberStatus, Millis, Role, UserId,
};
use crate::keys;
use crate::{Error, RangeOptions, Result, Transaction};

/// Every active member of a conversation, in user id order.
pub(crate) fn active_members(tx: &mut dyn Transaction, conv_id: ConvId) -> Result<Vec<Member>> {
    let (begin, end) = keys::MEMBER.range(&(conv_id,));
    let rows = tx.get_range(&begin, &end, RangeOptions::default())?;
    let mut members = Vec::with_capacity(rows.len());
    for (_, value) in rows {
        let m: Member = crate::codec::decode(keys::MEMBER.name, &value)?;
        if m.status == MemberStatus::Active {
            members.push(m);
        }
    }
    Ok(members)
}

/// Appends one event to the conversation's membership history.
fn log_event(
    tx: &mut dyn Transaction,
    conv_id: ConvId,
    user_id: UserId,
    action: MemberAction,
    by: UserId,
    at: Millis,
) -> Result<()> {
    let mut meta: ConvMeta = get(tx, keys::CONV_META, &(conv_id,))?.unwrap_or_default();
    meta.member_version += 1;
    let event = MemberEvent {
        version: meta.member_version,
        user_id,
        action,
        by,
        at,
    };
    put(
        tx,
        keys::MEMBER_LOG,
        &(conv_id, meta.member_version),
        &event,
    )?;
    put(tx, keys::CONV_META, &(conv_id,), &meta)
}

/// Makes `user_id` an active member (new or returning), logged as `action`.
pub(crate) fn activate_member(
    tx: &mut dyn Transaction,
    conv_id: ConvId,
    user_id: UserId,
    role: Role,
    by: UserId,
    now: Millis,
    action: MemberAction,
) -> Result<Member> {
    let previous: Option<Member> = get(tx, keys::MEMBER, &(conv_id, user_id))?;
    let member = Member {
        conv_id,
        user_id,
        role,
        status: MemberStatus::Active,
        added_by: by,
        added_at: now,
        removed_by: None,
        removed_at: None,
        version: previous.map_or(1, |p| p.version + 1),
    };
    put(tx, keys::MEMBER, &(conv_id, user_id), &member)?;
    index_member(tx, conv_id, user_id, now)?;
    log_event(tx, conv_id, user_id, action, by, now)?;
    Ok(member)
}

/// Ends a membership (left or removed) and drops it from the chat list.
fn deactivate_member(
    tx: &mut dyn Transaction,
    mut member: Member,
    status: MemberStatus,
    by: UserId,
    now: Millis,
) -> Result<Member> {
    member.status = status;
    member.removed_by = Some(by);
    member.removed_at = Some(now);
    member.version += 1;
    put(tx, keys::MEMBER, &(member.conv_id, member.user_id), &member)?;
    tx.clear(&keys::USER_CONV.key(&(member.user_id, member.conv_id)))?;
    let action = match status {
        MemberStatus::Left => MemberAction::Left,
        _ => MemberAction::Removed,
    };
    log_event(tx, member.conv_id, member.user_id, action, by, now)?;
    Ok(member)
}

impl ChatStore {
    /// Adds `user_id` to a group. Any member may add; adding a current
    /// member is an [`Error::AlreadyExists`].
    pub fn add_member(&self, actor: UserId, conv_id: ConvId, user_id: UserId) -> Result<Member> {
        let now = self.now();
        let max = self.limits().max_group_members;
        self.db().run(|tx| {
            let (conv, _) = require_member(tx, conv_id, actor)?;
            if conv.kind != ConvKind::Group {
                return Err(Error::invalid("conv_id", "direct chats have fixed members"));
            }
            require_user(tx, user_id)?;
            if super::blocks::has_blocked(tx, user_id, actor)? {
                return Err(Error::Forbidden(super::blocks::BLOCKED_ADD));
            }
            if let Some(m) = get::<Member, _>(tx, keys::MEMBER, &(conv_id, user_id))? {
                if m.status == MemberStatus::Active {
                    return Err(Error::AlreadyExists { what: "member" });
                }
            }
            if active_members(tx, conv_id)?.len() >= max {
                return Err(Error::invalid(
                    "user_id",
                    format!("a group has at most {max} members"),
                ));
            }
            activate_member(
                tx,
                conv_id,
                user_id,
                Role::Member,
                actor,
                now,
                MemberAction::Added,
            )
        })
    }

    /// Removes another member from a group: admins only.
    pub fn remove_member(&self, actor: UserId, conv_id: ConvId, user_id: UserId) -> Result<Member> {
        if actor == user_id {
            return Err(Error::invalid("user_id", "use leave to remove yourself"));
        }
        let now = self.now();
        self.db().run(|tx| {
            let (conv, me) = require_member(tx, conv_id, actor)?;
            if conv.kind != ConvKind::Group {
                return Err(Error::invalid("conv_id", "direct chats have fixed members"));
            }
            if me.role != Role::Admin {
                return Err(Error::Forbidden("only a group's admins may remove members"));
            }
            let target = match get::<Member, _>(tx, keys::MEMBER, &(conv_id, user_id))? {
                Some(m) if m.status == MemberStatus::Active => m,
                _ => return Err(Error::NotMember { conv_id, user_id }),
            };
            deactivate_member(tx, target, MemberStatus::Removed, actor, now)
        })
    }

    /// Leaves a group. When the last admin leaves, the longest-standing
    /// remaining member becomes admin, so no group is left unmanaged.
    pub fn leave(&self, actor: UserId, conv_id: ConvId) -> Result<Member> {
        let now = self.now();
        self.db().run(|tx| {
            let (conv, me) = require_member(tx, conv_id, actor)?;
            if conv.kind != ConvKind::Group {
                return Err(Error::invalid("conv_id", "direct chats cannot be left"));
            }
            let left = deactivate_member(tx, me, MemberStatus::Left, actor, now)?;
            let rest = active_members(tx, conv_id)?;
            if !rest.is_empty() && rest.iter().all(|m| m.role != Role::Admin) {
                if let Some(heir) = rest.iter().min_by_key(|m| (m.added_at, m.user_id)) {
                    let mut heir = heir.clone();
                    heir.role = Role::Admin;
                    heir.version += 1;
                    put(tx, keys::MEMBER, &(conv_id, heir.user_id), &heir)?;
                    log_event(
                        tx,
                        conv_id,
                        heir.user_id,
                        MemberAction::Promoted,
                        actor,
                        now,
                    )?;
                }
            }
            Ok(left)
        })
    }

    /// The active members of a conversation the actor belongs to.
    pub fn members(&self, actor: UserId, conv_id: ConvId) -> Result<Vec<Member>> {
        self.db().read(|tx| {
            require_member(tx, conv_id, actor)?;
            active_members(tx, conv_id)
        })
    }

    /// The active member ids of a conversation, without an acting user:
    /// for the conversation actor's fan-out.
    pub fn member_ids(&self, conv_id: ConvId) -> Result<Vec<UserId>> {
        self.db().read(|tx| {
            super::conversations::load_conv(tx, conv_id)?;
            Ok(active_members(tx, conv_id)?
                .into_iter()
                .map(|m| m.user_id)
                .collect())
        })
    }

    /// The whole membership history of a conversation, oldest first.
    pub fn member_history(&self, actor: UserId, conv_id: ConvId) -> Result<Vec<MemberEvent>> {
        self.db().read(|tx| {
            require_member(tx, conv_id, actor)?;
            let (begin, end) = keys::MEMBER_LOG.range(&(conv_id,));
            tx.get_range(&begin, &end, RangeOptions::default())?
                .into_iter()
                .map(|(_, v)| crate::codec::decode(keys::MEMBER_LOG.name, &v))
                .collect()
        })
    }
}

impl ChatStore {
    /// Whether `a` and `b` share a conversation (both active members), or
    /// are the same user: who may see the other's presence.
    pub fn are_contacts(&self, a: UserId, b: UserId) -> Result<bool> {
        if a == b {
            return Ok(true);
        }
        self.db().read(|tx| {
            let (begin, end) = keys::USER_CONV.range(&(a,));
            for (key, _) in tx.get_range(&begin, &end, RangeOptions::default())? {
                let (_, conv_id): (UserId, ConvId) = keys::USER_CONV.unpack(&key)?;
                let row: Option<Member> = get(tx, keys::MEMBER, &(conv_id, b))?;
                if row.is_some_and(|m| m.status == MemberStatus::Active) {
                    let me: Option<Member> = get(tx, keys::MEMBER, &(conv_id, a))?;
                    if me.is_some_and(|m| m.status == MemberStatus::Active) {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        })
    }

    /// Everyone who shares at least one conversation with `user_id`: whose
    /// sessions hear about the user's presence.
    pub fn contacts(&self, user_id: UserId) -> Result<Vec<UserId>> {
        self.db().read(|tx| contacts_in(tx, user_id))
    }
}

/// [`ChatStore::contacts`] inside a transaction, in user id order.
pub(crate) fn contacts_in(tx: &mut dyn Transaction, user_id: UserId) -> Result<Vec<UserId>> {
    let (begin, end) = keys::USER_CONV.range(&(user_id,));
    let mut contacts = std::collections::BTreeSet::new();
    for (key, _) in tx.get_range(&begin, &end, RangeOptions::default())? {
        let (_, conv_id): (UserId, ConvId) = keys::USER_CONV.unpack(&key)?;
        for m in active_members(tx, conv_id)? {
            if m.user_id != user_id {
                contacts.insert(m.user_id);
            }
        }
    }
    Ok(contacts.into_iter().collect())
}
