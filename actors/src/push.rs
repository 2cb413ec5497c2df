//! Offline notifications: when a message is committed and a recipient has
//! no live session anywhere, POST a notification to each of their
//! registered push endpoints.
//!
//! The request is a JSON body (Web Push's transport without its payload
//! encryption, which needs VAPID keys this project does not manage yet).
//! Failures are counted and logged, never retried: the message itself is
//! safe in storage and syncs when the user comes back.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use storage::chat::{ChatStore, ConvId, Message, Millis, Seq, UserId};

use crate::metrics::Metrics;

/// Characters of the message body put in a notification.
const PREVIEW_CHARS: usize = 100;

/// The JSON a push endpoint receives.
#[derive(Debug, Serialize)]
pub struct PushPayload {
    /// Always "message".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The recipient.
    pub user_id: UserId,
    /// The conversation.
    pub conv_id: ConvId,
    /// The message's sequence number.
    pub seq: Seq,
    /// Who sent it.
    pub sender: UserId,
    /// Its first characters.
    pub preview: String,
    /// When it was committed.
    pub sent_at: Millis,
}

/// Sends push notifications in the background.
#[derive(Clone)]
pub struct PushNotifier {
    client: reqwest::Client,
    store: ChatStore,
    metrics: Arc<Metrics>,
}

impl PushNotifier {
    /// A notifier whose requests time out after `timeout`.
    pub fn new(store: ChatStore, metrics: Arc<Metrics>, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Self {
            client,
            store,
            metrics,
        }
    }

    /// Notifies every device of `users` about `message`, in the background.
    pub fn notify(&self, users: Vec<UserId>, message: Message) {
        let this = self.clone();
        tokio::spawn(async move {
            for user_id in users {
                let store = this.store.clone();
                let subs =
                    tokio::task::spawn_blocking(move || store.push_subscriptions(user_id)).await;
                let subs = match subs {
                    Ok(Ok(subs)) => subs,
                    Ok(Err(e)) => {
                        tracing::warn!(user_id, error = %e, "reading push subscriptions");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(user_id, error = %e, "reading push subscriptions");
                        continue;
                    }
                };
                let payload = PushPayload {
                    kind: "message",
                    user_id,
                    conv_id: message.conv_id,
                    seq: message.seq,
                    sender: message.sender,
                    preview: message.body.chars().take(PREVIEW_CHARS).collect(),
                    sent_at: message.sent_at,
                };
                for sub in subs {
                    let sent = this.client.post(&sub.endpoint).json(&payload).send().await;
                    match sent.and_then(|r| r.error_for_status()) {
                        Ok(_) => {
                            this.metrics.push_sent.inc();
                        }
                        Err(e) => {
                            this.metrics.push_failed.inc();
                            tracing::info!(user_id, endpoint = %sub.endpoint, error = %e, "push failed");
                        }
                    };
                }
            }
        });
    }
}
