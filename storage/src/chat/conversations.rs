//! Conversations: the direct chat of a pair, groups and their settings.

use super::{
    get, next_id, put, ChatStore, ConvId, ConvKind, ConvMeta, Conversation, Member, MemberAction,
    MemberStatus, Receipt, Role, UserConv, UserId,
};
use crate::keys;
use crate::{Error, Result, Transaction};

/// The conversation, if it exists and is not deleted.
pub(crate) fn load_conv(tx: &mut dyn Transaction, conv_id: ConvId) -> Result<Conversation> {
    match get::<Conversation, _>(tx, keys::CONV, &(conv_id,))? {
        Some(conv) if !conv.deleted => Ok(conv),
        _ => Err(Error::NotFound {
            what: "conversation",
        }),
    }
}

/// The conversation and the acting user's active membership of it.
pub(crate) fn require_member(
    tx: &mut dyn Transaction,
    conv_id: ConvId,
    user_id: UserId,
) -> Result<(Conversation, Member)> {
    let conv = load_conv(tx, conv_id)?;
    match get::<Member, _>(tx, keys::MEMBER, &(conv_id, user_id))? {
        Some(m) if m.status == MemberStatus::Active => Ok((conv, m)),
        _ => Err(Error::NotMember { conv_id, user_id }),
    }
}

/// Fails with [`Error::NotFound`] unless the user exists.
pub(crate) fn require_user(tx: &mut dyn Transaction, user_id: UserId) -> Result<()> {
    if tx.get(&keys::USER.key(&(user_id,)))?.is_none() {
        return Err(Error::NotFound { what: "user" });
    }
    Ok(())
}

/// Writes a fresh conversation with its creator and first members.
fn create_conv(
    tx: &mut dyn Transaction,
    conv: &Conversation,
    members: &[(UserId, Role)],
) -> Result<()> {
    put(tx, keys::CONV, &(conv.id,), conv)?;
    put(tx, keys::CONV_META, &(conv.id,), &ConvMeta::default())?;
    for &(user_id, role) in members {
        super::members::activate_member(
            tx,
            conv.id,
            user_id,
            role,
            conv.created_by,
            conv.created_at,
            MemberAction::Added,
        )?;
    }
    Ok(())
}

impl ChatStore {
    /// The direct chat between `a` and `b`, created on first use. Idempotent:
    /// one conversation per pair, whichever of the two asks.
    pub fn open_direct(&self, a: UserId, b: UserId) -> Result<Conversation> {
        self.open_direct_created(a, b).map(|(conv, _)| conv)
    }

    /// The direct chat of two users, if they have one: a read, for the
    /// common case of a send to a user one already chats with.
    pub fn direct_chat(&self, a: UserId, b: UserId) -> Result<Option<ConvId>> {
        let pair = (a.min(b), a.max(b));
        self.db().read(|tx| get::<ConvId, _>(tx, keys::DM, &pair))
    }

    /// [`ChatStore::open_direct`], also saying whether this call created
    /// it (the two users just became contacts).
    pub fn open_direct_created(&self, a: UserId, b: UserId) -> Result<(Conversation, bool)> {
        if a == b {
            return Err(Error::invalid(
                "user_id",
                "cannot open a chat with yourself",
            ));
        }
        let pair = (a.min(b), a.max(b));
        let now = self.now();
        let shards = self.db().id_shards();
        self.db().run(|tx| {
            require_user(tx, a)?;
            require_user(tx, b)?;
            if super::blocks::either_blocked(tx, a, b)? {
                return Err(Error::Forbidden(super::blocks::BLOCKED_DIRECT));
            }
            if let Some(conv_id) = get::<ConvId, _>(tx, keys::DM, &pair)? {
                return Ok((load_conv(tx, conv_id)?, false));
            }
            let id = next_id(tx, keys::meta::LAST_CONV_ID, shards)?;
            let conv = Conversation {
                id,
                kind: ConvKind::Direct,
                name: String::new(),
                description: String::new(),
                created_at: now,
                created_by: a,
                updated_at: now,
                updated_by: a,
                deleted: false,
            };
            create_conv(tx, &conv, &[(a, Role::Member), (b, Role::Member)])?;
            put(tx, keys::DM, &pair, &id)?;
            Ok((conv, true))
        })
    }

    /// Creates a group with `creator` as its admin and `members` as members.
    /// Unknown member ids fail the whole call.
    pub fn create_group(
        &self,
        creator: UserId,
        name: &str,
        description: &str,
        members: &[UserId],
    ) -> Result<Conversation> {
        self.limits().group_name(name)?;
        self.limits().description(description)?;
        let mut initial = vec![(creator, Role::Admin)];
        for &m in members {
            if !initial.iter().any(|&(u, _)| u == m) {
                initial.push((m, Role::Member));
            }
        }
        if initial.len() > self.limits().max_group_members {
            return Err(Error::invalid(
                "members",
                format!(
                    "a group has at most {} members",
                    self.limits().max_group_members
                ),
            ));
        }
        let now = self.now();
        let shards = self.db().id_shards();
        self.db().run(|tx| {
            for &(user_id, _) in &initial {
                require_user(tx, user_id)?;
                if super::blocks::has_blocked(tx, user_id, creator)? {
                    return Err(Error::Forbidden(super::blocks::BLOCKED_ADD));
                }
            }
            let id = next_id(tx, keys::meta::LAST_CONV_ID, shards)?;
            let conv = Conversation {
                id,
                kind: ConvKind::Group,
                name: name.to_owned(),
                description: description.to_owned(),
                created_at: now,
                created_by: creator,
                updated_at: now,
                updated_by: creator,
                deleted: false,
            };
            create_conv(tx, &conv, &initial)?;
            Ok(conv)
        })
    }

    /// A conversation the acting user is a member of.
    pub fn conversation(&self, actor: UserId, conv_id: ConvId) -> Result<Conversation> {
        self.db()
            .read(|tx| require_member(tx, conv_id, actor).map(|(conv, _)| conv))
    }

    /// Changes a group's name and/or description. Any member may.
    pub fn edit_group(
        &self,
        actor: UserId,
        conv_id: ConvId,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<Conversation> {
        if let Some(name) = name {
            self.limits().group_name(name)?;
        }
        if let Some(description) = description {
            self.limits().description(description)?;
        }
        let now = self.now();
        self.db().run(|tx| {
            let (mut conv, _) = require_member(tx, conv_id, actor)?;
            if conv.kind != ConvKind::Group {
                return Err(Error::invalid("conv_id", "direct chats have no settings"));
            }
            if let Some(name) = name {
                conv.name = name.to_owned();
            }
            if let Some(description) = description {
                conv.description = description.to_owned();
            }
            conv.updated_at = now;
            conv.updated_by = actor;
            put(tx, keys::CONV, &(conv_id,), &conv)?;
            Ok(conv)
        })
    }

    /// Soft-deletes a group: admins only. Its rows stay (history is kept),
    /// but it leaves every member's chat list and refuses every operation.
    /// Returns the members it had, so their sessions can be told.
    pub fn delete_group(&self, actor: UserId, conv_id: ConvId) -> Result<Vec<UserId>> {
        let now = self.now();
        self.db().run(|tx| {
            let (mut conv, member) = require_member(tx, conv_id, actor)?;
            if conv.kind != ConvKind::Group {
                return Err(Error::invalid("conv_id", "direct chats cannot be deleted"));
            }
            if member.role != Role::Admin {
                return Err(Error::Forbidden("only a group's admins may delete it"));
            }
            conv.deleted = true;
            conv.updated_at = now;
            conv.updated_by = actor;
            put(tx, keys::CONV, &(conv_id,), &conv)?;
            // Fence out the conversation's actor: appends check the epoch.
            let mut meta: ConvMeta = get(tx, keys::CONV_META, &(conv_id,))?.unwrap_or_default();
            meta.epoch += 1;
            put(tx, keys::CONV_META, &(conv_id,), &meta)?;
            let members = super::members::active_members(tx, conv_id)?;
            let ids: Vec<UserId> = members.iter().map(|m| m.user_id).collect();
            for &user_id in &ids {
                tx.clear(&keys::USER_CONV.key(&(user_id, conv_id)))?;
            }
            Ok(ids)
        })
    }

    /// Sequencing and fencing state of a conversation.
    pub fn conv_meta(&self, conv_id: ConvId) -> Result<ConvMeta> {
        self.db().read(|tx| {
            load_conv(tx, conv_id)?;
            Ok(get(tx, keys::CONV_META, &(conv_id,))?.unwrap_or_default())
        })
    }
}

/// Writes the chat-list row and an empty receipt for a (re)joining member.
pub(crate) fn index_member(
    tx: &mut dyn Transaction,
    conv_id: ConvId,
    user_id: UserId,
    now: u64,
) -> Result<()> {
    let meta: ConvMeta = get(tx, keys::CONV_META, &(conv_id,))?.unwrap_or_default();
    let earlier: Option<Receipt> = get(tx, keys::RECEIPT, &(conv_id, user_id))?;
    // A member who comes back (re-added after leaving or being removed)
    // catches up from where they were (their delivered watermark): what
    // was said while they were away, deletions and edits of what they had
    // included, is delivered to their devices, counts as unread, and is
    // found by search, as their history shows it. A newcomer starts at the
    // point of joining.
    let joined_seq = earlier
        .as_ref()
        .map_or(meta.last_seq, |r| r.delivered_seq.min(meta.last_seq));
    put(
        tx,
        keys::USER_CONV,
        &(user_id, conv_id),
        &UserConv {
            joined_at: now,
            joined_seq,
        },
    )?;
    if earlier.is_none() {
        // A newcomer starts with everything before they joined already read:
        // old messages are history, not unread.
        let receipt = Receipt {
            delivered_seq: meta.last_seq,
            delivered_at: None,
            seen_seq: meta.last_seq,
            seen_at: None,
        };
        put(tx, keys::RECEIPT, &(conv_id, user_id), &receipt)?;
    }
    Ok(())
}
