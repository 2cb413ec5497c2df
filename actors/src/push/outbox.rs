//! Taking pushes over from the outbox: the dispatcher claims the rows of
//! messages this node committed, and a periodic scan claims rows left by
//! nodes that died before they did. Claimed rows become deliveries.

use std::sync::{Arc, Weak};
use std::time::Duration;

use storage::chat::{ConvId, Seq};

use super::pipeline::Delivery;
use super::{Inner, Notification};

/// Most outbox rows claimed in one transaction.
const CLAIM_BATCH: usize = 256;

/// Starts the dispatcher and the scan. Both end when the service is dropped.
pub(crate) fn spawn(inner: &Arc<Inner>, mut owed: tokio::sync::mpsc::Receiver<(ConvId, Seq)>) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(CLAIM_BATCH);
        while owed.recv_many(&mut batch, CLAIM_BATCH).await > 0 {
            let Some(inner) = weak.upgrade() else { return };
            inner.take_over(std::mem::take(&mut batch)).await;
        }
    });
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let period = Duration::from_millis(inner.config.outbox_scan_ms.max(100));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            inner.scan().await;
        }
    });
}

impl Inner {
    /// Claims rows older than the grace period: their node never did.
    async fn scan(self: &Arc<Self>) {
        let store = self.store.clone();
        let before = store
            .store()
            .now()
            .saturating_sub(self.config.outbox_grace_ms);
        let found = store
            .run(move |store| store.unclaimed_pushes(before, CLAIM_BATCH))
            .await;
        match found {
            Ok(Ok(keys)) if !keys.is_empty() => {
                tracing::info!(rows = keys.len(), "push: taking over unclaimed outbox rows");
                self.metrics.push_recovered.inc_by(keys.len() as u64);
                self.take_over(keys).await;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "push: scanning the outbox"),
            Err(e) => tracing::warn!(error = %e, "push: outbox scan task failed"),
        }
    }

    /// Claims the rows of these messages and queues a delivery per device
    /// of each offline recipient.
    pub(crate) async fn take_over(self: &Arc<Self>, keys: Vec<(ConvId, Seq)>) {
        let store = self.store.clone();
        let claimed = match store.run(move |store| store.claim_pushes(&keys)).await {
            Ok(Ok(claimed)) => claimed,
            Ok(Err(e)) => {
                // The rows stay: the scan retries them.
                tracing::warn!(error = %e, "push: claiming outbox rows");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "push: claim task failed");
                return;
            }
        };
        let now = self.store.store().now();
        let max_age = self.config.max_age_secs.saturating_mul(1000);
        for (message, owed) in claimed {
            if now.saturating_sub(message.sent_at) > max_age {
                self.metrics.push_expired.inc();
                continue;
            }
            let preview = self.config.preview.then(|| {
                message
                    .body
                    .chars()
                    .take(self.config.preview_chars)
                    .collect()
            });
            for user_id in owed.recipients {
                if (self.online)(user_id) {
                    self.metrics.push_skipped.inc();
                    continue;
                }
                let store = self.store.clone();
                let (conv, seq) = (message.conv_id, message.seq);
                let recipient = store
                    .run(move |store| store.push_recipient(user_id, conv, seq))
                    .await;
                let recipient = match recipient {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        tracing::warn!(user_id, error = %e, "push: reading subscriptions");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(user_id, error = %e, "push: subscription task failed");
                        continue;
                    }
                };
                if recipient.seen {
                    self.metrics.push_skipped.inc();
                    continue;
                }
                let notification = Arc::new(Notification {
                    kind: "message",
                    user_id,
                    conv_id: message.conv_id,
                    seq: message.seq,
                    sender: message.sender,
                    sent_at: message.sent_at,
                    preview: preview.clone(),
                });
                for sub in recipient.subscriptions {
                    self.enqueue(Delivery {
                        user_id,
                        sub,
                        notification: notification.clone(),
                    });
                }
            }
        }
    }
}
