//! Store-and-forward: everything a client missed, in order, per
//! conversation, and who of its contacts is online.

use std::collections::BTreeMap;

use actors::frames::ServerFrame;
use storage::chat::{ConvId, Seq, UserId};
use tokio::sync::mpsc;

use crate::{AppState, Error};

/// Messages read from storage per query while syncing.
const PAGE: usize = 200;

/// Sends every message after the client's watermarks: the given ones, and
/// for the user's other conversations the stored delivered watermark.
/// Waits for queue space (a sync is paced by the client's reading, never
/// dropped). Returns how many messages it sent.
pub(crate) async fn messages(
    state: &AppState,
    user_id: UserId,
    requested: &BTreeMap<ConvId, Seq>,
    out: &mpsc::Sender<String>,
) -> Result<u64, Error> {
    let mut from: BTreeMap<ConvId, Seq> = requested.clone();
    let chats = state.blocking(move |s| s.chat_list(user_id)).await?;
    for chat in chats {
        if from.contains_key(&chat.conv_id) || chat.unread == 0 && chat.last_message.is_none() {
            continue;
        }
        let conv_id = chat.conv_id;
        let receipts = state
            .blocking(move |s| s.receipts(user_id, conv_id))
            .await?;
        let delivered = receipts
            .iter()
            .find(|r| r.user_id == user_id)
            .map_or(0, |r| r.receipt.delivered_seq);
        from.insert(conv_id, delivered);
    }
    let mut sent = 0;
    for (conv_id, mut after) in from {
        loop {
            let page = state
                .blocking(move |s| s.messages_after(user_id, conv_id, after, PAGE))
                .await?;
            let full = page.len() == PAGE;
            for m in &page {
                if out.send(ServerFrame::message(m).to_json()).await.is_err() {
                    return Ok(sent);
                }
                after = m.seq;
                sent += 1;
            }
            if !full {
                break;
            }
        }
    }
    Ok(sent)
}

/// Sends the presence of each of the user's contacts.
pub(crate) async fn presence(
    state: &AppState,
    user_id: UserId,
    out: &mpsc::Sender<String>,
) -> Result<(), Error> {
    let contacts = state.blocking(move |s| s.contacts(user_id)).await?;
    for contact in contacts {
        // Read the slow part first and look at the process group last,
        // right before queueing: a transition announced meanwhile then
        // reaches the client after this snapshot, never before it.
        let last_seen = state.blocking(move |s| s.last_seen(contact)).await?;
        let online = state.cluster.is_online(contact);
        let last_seen = if online { None } else { last_seen };
        let frame = ServerFrame::Presence {
            user_id: contact,
            online,
            last_seen,
        };
        if out.send(frame.to_json()).await.is_err() {
            break;
        }
    }
    Ok(())
}
