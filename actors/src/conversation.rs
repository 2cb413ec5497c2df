//! ConversationActor: the sequencer of one direct chat or group.
//!
//! At most one is active in the cluster per conversation, on its home node.
//! On start it claims the conversation by bumping its epoch in storage;
//! every append presents that epoch, so an actor that was replaced (its node
//! hung past its lease, the membership moved) cannot commit and stops.
//!
//! Sends are committed before they are acknowledged. Under load they group
//! themselves: a send queues a `Flush` behind whatever is already in the
//! mailbox, and while one append transaction runs the next sends pile up for
//! the following one. Acks (delivered, seen) group the same way behind a
//! `FlushAcks`, and fold: watermarks and cursors only move up, so of a
//! member's device's acks of one kind only the highest is written (and the
//! highest past this actor's last seq, which the store may know better:
//! `WaitingAcks`). A member who acks every message, or a client that floods
//! acks, costs the others one store call per batch, not one per ack.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use storage::chat::{
    AckBatch, AckKind, AckRequest, AppendOutcome, AppendRequest, ConvId, DeviceKey, NewMessage,
    Receipt, Seq, UserId,
};
use storage::Error as StoreError;
use tracing::Instrument;

use crate::conv_status::ConvStatus;
use crate::events::ClusterEvent;
use crate::frames::{ErrorCode, ServerFrame};
use crate::recent_ids::{RecentIds, RECENT_IDS};
use crate::wire::{ConvCommand, Outgoing, SessionAddr};
use crate::{Cluster, ConvChange, Error};

/// How long typing indicators are shown unless renewed.
pub const TYPING_TTL_MS: u64 = 5_000;

/// Messages a conversation actor handles. Local only: peers reach it
/// through their host actors.
pub enum ConvMsg {
    /// A routed command.
    Cmd(ConvCommand),
    /// Commit what is pending.
    Flush,
    /// Write the acks gathered since the last one.
    FlushAcks,
    /// Commit what is pending, then stop: the conversation moves to another
    /// node, or this one shuts down.
    Handoff,
    /// Stop if idle for long enough.
    IdleTick,
}

impl ractor::Message for ConvMsg {}

/// The actor's state.
pub struct ConvState {
    conv_id: ConvId,
    epoch: u64,
    next_seq: Seq,
    members: Vec<UserId>,
    /// The newest `client_msg_id`s and their seqs: resends are answered
    /// from here (the store keeps no dedup row).
    recent: RecentIds,
    /// Set when activation failed: commands are refused with it.
    unavailable: Option<(ErrorCode, String)>,
    pending: Vec<Pending>,
    flush_queued: bool,
    /// Acks waiting for the next `FlushAcks`, the highest per member,
    /// device and kind.
    acks: HashMap<AckKey, WaitingAcks>,
    acks_queued: bool,
    last_activity: Instant,
    cluster: Cluster,
    idle_timer: Option<tokio::task::JoinHandle<()>>,
    /// Epoch, last seq and backlog, published for the admin view.
    status: std::sync::Arc<ConvStatus>,
    /// `conv{conv_id}`: what its activation and its messages log is in it.
    span: tracing::Span,
}

/// A send or event waiting for the next commit.
struct Pending {
    /// Who gets the `sent` or `error`.
    from: SessionAddr,
    /// The request's `ref`, if the client gave one.
    reference: Option<String>,
    /// What to append.
    message: NewMessage,
}

impl Pending {
    /// What an `error` about it names: its `ref`, else its `client_msg_id`.
    fn reference(&self) -> &str {
        self.reference
            .as_deref()
            .unwrap_or(&self.message.client_msg_id)
    }
}

/// Whose ack it is: a member, the device whose cursor moves with it (if
/// any) and which watermark.
type AckKey = (UserId, Option<DeviceKey>, AckKind);

/// The acks of one [`AckKey`] not yet written: the highest at or below
/// the last seq this actor knows of, and the highest past it. This actor's
/// last seq can lag the store's (another actor of the conversation,
/// activated while this one's node hung, committed more before fencing
/// it), so an ack past it is the store's to accept or refuse; kept apart,
/// a refused one does not take the place of the good one below it.
#[derive(Default)]
struct WaitingAcks {
    within: Option<QueuedAck>,
    beyond: Option<QueuedAck>,
}

impl WaitingAcks {
    /// Both, in the order they are written.
    fn in_order(self) -> impl Iterator<Item = QueuedAck> {
        self.within.into_iter().chain(self.beyond)
    }
}

/// One ack not yet written.
struct QueuedAck {
    /// Up to which message.
    seq: Seq,
    /// Who gets an `error` if the store refuses it.
    from: SessionAddr,
    /// The request's `ref`, if the client gave one.
    reference: Option<String>,
}

impl QueuedAck {
    /// What an `error` about it names: its `ref`, else "ack".
    fn reference(&self) -> &str {
        self.reference.as_deref().unwrap_or("ack")
    }
}

/// The conversation actor.
pub struct ConversationActor;

impl Actor for ConversationActor {
    type Msg = ConvMsg;
    type State = ConvState;
    type Arguments = (Cluster, ConvId);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (cluster, conv_id): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let idle = cluster.config().conversation_idle;
        let idle_timer = myself.send_interval(idle / 2, || ConvMsg::IdleTick);
        let status = cluster.conv_statuses().start(conv_id);
        Ok(ConvState {
            conv_id,
            epoch: 0,
            next_seq: 0,
            members: Vec::new(),
            recent: RecentIds::default(),
            unavailable: None,
            pending: Vec::new(),
            flush_queued: false,
            acks: HashMap::new(),
            acks_queued: false,
            last_activity: Instant::now(),
            cluster,
            idle_timer: Some(idle_timer),
            status,
            span: tracing::info_span!("conv", conv_id),
        })
    }

    /// Claims the conversation (bumps its epoch) and reads its members.
    /// Here rather than in `pre_start`, so whoever spawned the actor does
    /// not wait on storage; commands wait in the mailbox meanwhile.
    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let span = state.span.clone();
        activate(myself, state).instrument(span).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let span = state.span.clone();
        handle(myself, message, state).instrument(span).await
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.idle_timer.take() {
            timer.abort();
        }
        state
            .cluster
            .conv_statuses()
            .stop(state.conv_id, &state.status);
        state
            .cluster
            .forget_conversation(state.conv_id, myself.get_id())
            .await;
        // Whatever is still pending was never acknowledged: route it again.
        for Pending {
            from,
            reference,
            message,
        } in state.pending.drain(..)
        {
            let cmd = ConvCommand::Send {
                from,
                reference,
                message,
            };
            state.cluster.route_hops(state.conv_id, 1, cmd).await;
        }
        // So is every ack not yet written (fenced out before its turn).
        for ((user_id, device, kind), waiting) in state.acks.drain() {
            for queued in waiting.in_order() {
                let cmd = ConvCommand::Ack {
                    from: queued.from,
                    reference: queued.reference,
                    user_id,
                    device: device.clone(),
                    kind,
                    seq: queued.seq,
                };
                state.cluster.route_hops(state.conv_id, 1, cmd).await;
            }
        }
        Ok(())
    }
}

/// Claims the conversation (bumps its epoch) and reads its members, inside
/// the conversation's span.
async fn activate(myself: ActorRef<ConvMsg>, state: &mut ConvState) {
    let store = state.cluster.storage().clone();
    let conv_id = state.conv_id;
    let claimed = store
        .run(move |store| {
            let meta = store.activate_conversation(conv_id)?;
            let members = store.member_ids(conv_id)?;
            let recent = store.recent_ids(conv_id, RECENT_IDS)?;
            Ok::<_, StoreError>((meta, members, recent))
        })
        .await
        .map_err(Error::from)
        .and_then(|r| r.map_err(Error::from));
    match claimed {
        Ok((meta, members, recent)) => {
            tracing::debug!(
                conv_id,
                epoch = meta.epoch,
                last_seq = meta.last_seq,
                "activated"
            );
            state.epoch = meta.epoch;
            state.next_seq = meta.last_seq + 1;
            // A crash may have left its newest messages unindexed.
            if meta.last_seq > 0 {
                state.cluster.indexer().mark([(conv_id, meta.last_seq, 0)]);
            }
            state.members = members;
            state.recent = RecentIds::from_log(recent);
            state.status.activated(meta.epoch, meta.last_seq);
            state
                .cluster
                .events()
                .emit(ClusterEvent::ConversationActivated {
                    conv_id,
                    epoch: meta.epoch,
                    last_seq: meta.last_seq,
                });
        }
        Err(e) => {
            // Refuse what is already queued, then stop (the tick goes
            // behind it); the next command activates it afresh.
            tracing::debug!(conv_id, error = %e, "activation failed");
            state.unavailable = Some((e.code(), e.to_string()));
            let _ = myself.cast(ConvMsg::IdleTick);
        }
    }
}

/// One message, inside the conversation's span.
async fn handle(
    myself: ActorRef<ConvMsg>,
    message: ConvMsg,
    state: &mut ConvState,
) -> Result<(), ActorProcessingErr> {
    if let Some((code, reason)) = &state.unavailable {
        match message {
            ConvMsg::Cmd(cmd) => state.cluster.refuse(&cmd, *code, reason).await,
            _ => myself.stop(Some("activation failed".into())),
        }
        return Ok(());
    }
    match message {
        ConvMsg::Cmd(cmd) => {
            state.last_activity = Instant::now();
            state.command(&myself, cmd).await;
            state
                .status
                .progress(state.next_seq.saturating_sub(1), state.pending.len());
        }
        ConvMsg::Flush => {
            state.flush_queued = false;
            state.flush(&myself).await;
            state
                .status
                .progress(state.next_seq.saturating_sub(1), state.pending.len());
        }
        ConvMsg::FlushAcks => {
            state.acks_queued = false;
            state.flush_acks().await;
        }
        ConvMsg::Handoff => {
            while !state.pending.is_empty() {
                if !state.flush(&myself).await {
                    break;
                }
            }
            state.flush_acks().await;
            state
                .cluster
                .events()
                .emit(ClusterEvent::ConversationHandedOff {
                    conv_id: state.conv_id,
                    to: state.cluster.home_of(state.conv_id),
                });
            myself.stop(Some("handoff".into()));
        }
        ConvMsg::IdleTick => {
            let idle = state.cluster.config().conversation_idle;
            if state.pending.is_empty()
                && state.acks.is_empty()
                && state.last_activity.elapsed() >= idle
            {
                tracing::debug!(conv_id = state.conv_id, "stopping idle conversation");
                state
                    .cluster
                    .events()
                    .emit(ClusterEvent::ConversationStopped {
                        conv_id: state.conv_id,
                    });
                myself.stop(Some("idle".into()));
            }
        }
    }
    Ok(())
}

impl ConvState {
    async fn command(&mut self, myself: &ActorRef<ConvMsg>, cmd: ConvCommand) {
        match cmd {
            ConvCommand::Send {
                from,
                reference,
                message,
            } => {
                self.pending.push(Pending {
                    from,
                    reference,
                    message,
                });
                if !self.flush_queued {
                    self.flush_queued = true;
                    let _ = myself.cast(ConvMsg::Flush);
                }
            }
            ConvCommand::Typing {
                from,
                reference,
                user_id,
            } => {
                if !self.members.contains(&user_id) {
                    let reference = reference.as_deref().unwrap_or("typing");
                    self.refuse(&from, ErrorCode::Forbidden, "not a member", reference)
                        .await;
                    return;
                }
                let frame = ServerFrame::Typing {
                    conv_id: self.conv_id,
                    user_id,
                    expires_in_ms: TYPING_TTL_MS,
                };
                let others: Vec<UserId> = self
                    .members
                    .iter()
                    .copied()
                    .filter(|&u| u != user_id)
                    .collect();
                self.cluster
                    .fanout(others, vec![frame.to_json().into()])
                    .await;
            }
            ConvCommand::Ack {
                from,
                reference,
                user_id,
                device,
                kind,
                seq,
            } => {
                self.queue_ack(myself, (user_id, device, kind), seq, from, reference)
                    .await
            }
            ConvCommand::Changed(change) => self.changed(myself, change).await,
        }
    }

    /// Keeps an ack for the next `FlushAcks` (queued if it is not yet),
    /// unless one at least as high is already waiting on the same side of
    /// this actor's last seq ([`WaitingAcks`]).
    async fn queue_ack(
        &mut self,
        myself: &ActorRef<ConvMsg>,
        key: AckKey,
        seq: Seq,
        from: SessionAddr,
        reference: Option<String>,
    ) {
        let last = self.next_seq.saturating_sub(1);
        let waiting = self.acks.entry(key).or_default();
        let slot = if seq > last {
            &mut waiting.beyond
        } else {
            &mut waiting.within
        };
        if slot.as_ref().is_none_or(|q| q.seq < seq) {
            *slot = Some(QueuedAck {
                seq,
                from,
                reference,
            });
        }
        if !self.acks_queued {
            self.acks_queued = true;
            let _ = myself.cast(ConvMsg::FlushAcks);
        }
    }

    /// Writes the waiting acks in one store call (the node's group commit,
    /// with whatever else is queued); the members get one
    /// `receipt` per member whose watermarks moved (the latest), the
    /// senders of refused acks an `error` each.
    async fn flush_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let mut queued: Vec<(UserId, QueuedAck)> = Vec::new();
        let mut requests: Vec<AckRequest> = Vec::new();
        for ((user_id, device, kind), waiting) in self.acks.drain() {
            for q in waiting.in_order() {
                requests.push(AckRequest {
                    user_id,
                    device: device.clone(),
                    kind,
                    seq: q.seq,
                });
                queued.push((user_id, q));
            }
        }
        let conv_id = self.conv_id;
        let result = self
            .cluster
            .committer()
            .acks(AckBatch {
                conv_id,
                acks: requests,
            })
            .await;
        let answers = match result {
            Ok(answers) => answers,
            Err(e) => {
                for (_, q) in &queued {
                    self.refuse(&q.from, e.code(), &e.to_string(), q.reference())
                        .await;
                }
                return;
            }
        };
        // In the transaction's order: a member's last moved receipt
        // includes every earlier ack of theirs.
        let mut moved: BTreeMap<UserId, Receipt> = BTreeMap::new();
        for ((user_id, q), answer) in queued.into_iter().zip(answers) {
            match answer {
                Ok((receipt, true)) => {
                    moved.insert(user_id, receipt);
                }
                Ok((_, false)) => {}
                Err(e) => {
                    let e = Error::from(e);
                    self.refuse(&q.from, e.code(), &e.to_string(), q.reference())
                        .await;
                }
            }
        }
        if moved.is_empty() {
            return;
        }
        let frames: Vec<Outgoing> = moved
            .into_iter()
            .map(|(user_id, receipt)| {
                ServerFrame::Receipt {
                    conv_id,
                    user_id,
                    delivered_seq: receipt.delivered_seq,
                    seen_seq: receipt.seen_seq,
                }
                .to_json()
                .into()
            })
            .collect();
        self.cluster.fanout(self.members.clone(), frames).await;
    }

    /// Commits up to one batch of pending sends. Returns false when the
    /// actor must stop (it was fenced out).
    async fn flush(&mut self, myself: &ActorRef<ConvMsg>) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        // At most `max_batch` messages, and (but for one) at most a group
        // commit's worth of writes: one batch always fits a transaction.
        let max = self.cluster.config().max_batch.max(1);
        let mut take = 0;
        let mut bytes = 0;
        for p in self.pending.iter().take(max) {
            bytes += crate::committer::message_write_bytes(&p.message);
            if take > 0 && bytes > crate::committer::MAX_COMMIT_BYTES {
                break;
            }
            take += 1;
        }
        let batch: Vec<Pending> = self.pending.drain(..take).collect();
        if !self.pending.is_empty() && !self.flush_queued {
            self.flush_queued = true;
            let _ = myself.cast(ConvMsg::Flush);
        }
        // Members with no live session now are owed a push for each new
        // message: recorded in the outbox by the append itself.
        let push_to: Vec<UserId> = self
            .members
            .iter()
            .copied()
            .filter(|&u| !self.cluster.is_online(u))
            .collect();
        // Resends of messages already committed are answered from the
        // window; the rest (a repeat within the batch included: the store
        // answers it with the original) are appended.
        let known: Vec<Option<Seq>> = batch
            .iter()
            .map(|p| self.recent.get(p.message.sender, &p.message.client_msg_id))
            .collect();
        let fresh: Vec<NewMessage> = batch
            .iter()
            .zip(&known)
            .filter(|(_, k)| k.is_none())
            .map(|(p, _)| p.message.clone())
            .collect();
        if fresh.is_empty() {
            let outcomes = self.originals(&batch, &known).await;
            self.committed(batch, outcomes, &[]).await;
            return true;
        }
        let request = AppendRequest {
            conv_id: self.conv_id,
            epoch: self.epoch,
            next_seq: self.next_seq,
            messages: fresh,
            push_to: push_to.clone(),
            pair: match self.members[..] {
                [a, b] => Some((a, b)),
                _ => None,
            },
        };
        let conv_id = self.conv_id;
        let result = self.cluster.committer().append(request).await;
        let metrics = self.cluster.metrics();
        match result {
            Ok(outcomes) => {
                let mut appended = outcomes.into_iter();
                let mut all = self.originals(&batch, &known).await;
                for (slot, k) in all.iter_mut().zip(&known) {
                    if k.is_none() {
                        if let Some(outcome) = appended.next() {
                            *slot = outcome;
                        }
                    }
                }
                self.committed(batch, all, &push_to).await;
                true
            }
            Err(Error::Storage(
                e @ (StoreError::StaleEpoch { .. } | StoreError::SequenceMismatch { .. }),
            )) => {
                metrics.fenced_appends.inc();
                self.cluster.events().emit(ClusterEvent::FencedAppend {
                    conv_id,
                    epoch: self.epoch,
                });
                tracing::warn!(conv_id, error = %e, "fenced out: another actor owns this conversation");
                // Put the batch back; post_stop routes it to the new owner.
                let rest = std::mem::take(&mut self.pending);
                self.pending = batch;
                self.pending.extend(rest);
                myself.stop(Some("fenced".into()));
                false
            }
            Err(e) => {
                tracing::error!(conv_id, error = %e, "append failed");
                for p in &batch {
                    self.refuse(&p.from, e.code(), &e.to_string(), p.reference())
                        .await;
                }
                true
            }
        }
    }

    /// The stored originals of the window's resends (`known` seqs), as
    /// duplicate outcomes; a placeholder error for the others, which the
    /// commit's outcomes replace. One store call for all of them.
    async fn originals(
        &self,
        batch: &[Pending],
        known: &[Option<Seq>],
    ) -> Vec<storage::Result<AppendOutcome>> {
        let wanted: Vec<(UserId, Seq)> = batch
            .iter()
            .zip(known)
            .filter_map(|(p, k)| k.map(|seq| (p.message.sender, seq)))
            .collect();
        let conv_id = self.conv_id;
        let found = if wanted.is_empty() {
            Ok(Vec::new())
        } else {
            let store = self.cluster.storage().clone();
            store
                .run(move |store| {
                    wanted
                        .iter()
                        .map(|&(sender, seq)| store.message(sender, conv_id, seq))
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(Error::from)
        };
        let mut found = match found {
            Ok(found) => found.into_iter(),
            Err(e) => {
                tracing::warn!(conv_id, error = %e, "reading the originals of resends");
                Vec::new().into_iter()
            }
        };
        known
            .iter()
            .zip(batch)
            .map(|(k, p)| match k {
                None => Err(StoreError::Invalid {
                    field: "client_msg_id",
                    reason: "not appended".into(),
                }),
                Some(_) => match found.next() {
                    // The window names a message of this sender with this id.
                    Some(Ok(m))
                        if m.sender == p.message.sender
                            && m.client_msg_id == p.message.client_msg_id =>
                    {
                        Ok(AppendOutcome::Duplicate(m))
                    }
                    Some(Err(e)) => Err(e),
                    _ => Err(StoreError::NotFound { what: "message" }),
                },
            })
            .collect()
    }

    /// Acknowledges, fans out and notifies after a commit.
    async fn committed(
        &mut self,
        batch: Vec<Pending>,
        outcomes: Vec<storage::Result<AppendOutcome>>,
        push_to: &[UserId],
    ) {
        let mut frames = Vec::new();
        let mut replies = Vec::new();
        let mut offline_pushes = Vec::new();
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            let from = pending.from.clone();
            match outcome {
                Ok(outcome) => {
                    let stored = outcome.message();
                    let sent = ServerFrame::Sent {
                        client_msg_id: stored.client_msg_id.clone(),
                        conv_id: stored.conv_id,
                        seq: stored.seq,
                        sent_at: stored.sent_at,
                    };
                    replies.push((from, sent.to_json()));
                    // A resend's original goes out again too: its first
                    // fan-out may have died with the node that committed
                    // it. Sessions that have it drop it.
                    frames.push(Outgoing::message(stored));
                    if let AppendOutcome::Appended(message) = outcome {
                        self.next_seq = message.seq + 1;
                        self.recent.insert(
                            message.sender,
                            message.client_msg_id.clone(),
                            message.seq,
                        );
                        self.cluster.metrics().messages_committed.inc();
                        // Events owe no push (`owe_pushes`).
                        if !message.is_event() {
                            offline_pushes.push(message);
                        }
                    }
                }
                Err(e) => {
                    let code = ErrorCode::from(&e);
                    self.refuse(&from, code, &e.to_string(), pending.reference())
                        .await;
                }
            }
        }
        // Members first, the sender's `sent` last: a sender that holds its
        // `sent` never has to resend, so the message must already be on its
        // way to everyone.
        if !frames.is_empty() {
            self.cluster.fanout(self.members.clone(), frames).await;
        }
        for (from, sent) in replies {
            self.cluster.reply(&from, sent).await;
        }
        // The append wrote an outbox row for each of these: take them over.
        for message in offline_pushes {
            if push_to.iter().any(|&u| u != message.sender) {
                self.cluster.push().owed(message.conv_id, message.seq);
            }
        }
    }

    /// Refreshes the member list after an HTTP change and tells everyone
    /// concerned, the departed included.
    async fn changed(&mut self, myself: &ActorRef<ConvMsg>, change: ConvChange) {
        let store = self.cluster.storage().clone();
        let conv_id = self.conv_id;
        let fresh = store.run(move |store| store.member_ids(conv_id)).await;
        let mut audience: BTreeSet<UserId> = self.members.iter().copied().collect();
        match fresh {
            Ok(Ok(members)) => {
                audience.extend(members.iter().copied());
                self.members = members;
            }
            Ok(Err(e)) => tracing::debug!(conv_id, error = %e, "members not readable"),
            Err(e) => tracing::warn!(conv_id, error = %e, "member refresh failed"),
        }
        let frame = match change {
            ConvChange::MemberJoined { user_id, by } => {
                self.introduce(user_id).await;
                ServerFrame::MemberJoined {
                    conv_id,
                    user_id,
                    by,
                }
            }
            ConvChange::MemberLeft { user_id, by } => {
                audience.insert(user_id);
                ServerFrame::MemberLeft {
                    conv_id,
                    user_id,
                    by,
                }
            }
            ConvChange::Updated(conv) => ServerFrame::GroupUpdated {
                conv_id,
                name: conv.name,
                description: conv.description,
                deleted: false,
            },
            ConvChange::Deleted { .. } => {
                // The members were told by the node that deleted it.
                myself.stop(Some("deleted".into()));
                return;
            }
        };
        self.cluster
            .fanout(audience.into_iter().collect(), vec![frame.to_json().into()])
            .await;
    }

    /// A new member and the others are now contacts.
    async fn introduce(&self, newcomer: UserId) {
        let others: Vec<UserId> = self
            .members
            .iter()
            .copied()
            .filter(|&u| u != newcomer)
            .collect();
        self.cluster.introduce(newcomer, &others).await;
    }

    async fn refuse(&self, to: &SessionAddr, code: ErrorCode, message: &str, reference: &str) {
        let frame = ServerFrame::error(code, message, Some(reference.to_owned()));
        self.cluster.reply(to, frame.to_json()).await;
    }
}

/// How long an idle conversation actor lives by default.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);
