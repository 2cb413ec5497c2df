//! The presence snapshot at connect: who of the user's contacts is online.
//! (Messages the device missed are the session actor's to send, in order
//! with live ones: `actors::session`.)

use std::time::Duration;

use actors::frames::ServerFrame;
use actors::outbound::Outbound;
use storage::chat::UserId;

use crate::{AppState, Error};

/// Sends the presence of each of the user's contacts.
pub(crate) async fn presence(
    state: &AppState,
    user_id: UserId,
    out: &Outbound,
) -> Result<(), Error> {
    let patience = Duration::from_secs(state.config.sync_patience_secs.max(1));
    // Every contact's last-seen time in one store call, then the process
    // group looked at last, right before queueing each: a transition
    // announced after that look reaches the client after this snapshot's
    // frame, never before it.
    let contacts = state
        .blocking(move |s| s.contacts_last_seen(user_id))
        .await?;
    for (contact, last_seen) in contacts {
        let online = state.cluster.is_online(contact);
        let last_seen = if online { None } else { last_seen };
        let frame = ServerFrame::Presence {
            user_id: contact,
            online,
            last_seen,
        };
        if out.push(frame.to_json(), patience).await.is_err() {
            break;
        }
    }
    Ok(())
}
