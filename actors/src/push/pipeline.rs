//! The delivery pipeline: per-device queues, bounded in total, each drained
//! by its own task one request at a time, with at most `max_in_flight`
//! requests on the node. A slow or failing device only ever holds its own
//! queue (and one in-flight slot for at most the request timeout), so the
//! others go on.
//!
//! While a device's notification waits (queued or between retries), a newer
//! message of the same conversation replaces it: the device is told about
//! the newest one, once (the `Topic` header does the same at the push
//! service for a device that is asleep).

use std::sync::Arc;
use std::time::Duration;

use storage::chat::{ConvId, PushSubscription, PushTarget, UserId};

use super::{guard, webpush, DeviceKey, Inner, Notification, SlotMap};

/// One notification for one device.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub user_id: UserId,
    pub sub: PushSubscription,
    pub notification: Arc<Notification>,
}

/// The pipeline's queues.
#[derive(Default)]
pub(crate) struct Slots {
    map: SlotMap,
    /// Deliveries waiting in `map`.
    queued: usize,
    /// Deliveries being sent (between their pop and their end).
    active: usize,
}

/// What one attempt came to.
#[derive(Debug)]
enum Attempt {
    /// The push service took it.
    Sent,
    /// The device is gone for good (404/410, unregistered).
    Gone,
    /// Try again, after this long if the service said.
    Retry(Option<Duration>),
    /// Refused for good.
    Failed(String),
    /// The SSRF guard refused the address; nothing was sent.
    Blocked(String),
}

impl Inner {
    fn lock_slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        match self.slots.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn queued(&self) -> usize {
        let s = self.lock_slots();
        s.queued + s.active
    }

    /// Queues a delivery; starts the device's worker if it has none.
    pub(crate) fn enqueue(self: &Arc<Self>, d: Delivery) {
        let key: DeviceKey = (d.user_id, d.sub.id.clone());
        let conv_id = d.notification.conv_id;
        let cap = self.config.queue_capacity.max(1);
        let mut s = self.lock_slots();
        let s = &mut *s;
        let full = s.queued + s.active >= cap;
        match s.map.get_mut(&key) {
            Some(pending) => match pending.get_mut(&conv_id) {
                Some(older) => {
                    if older.notification.seq < d.notification.seq {
                        *older = d;
                    }
                    self.metrics.push_coalesced.inc();
                }
                None if full => {
                    self.metrics.push_queue_full.inc();
                }
                None => {
                    pending.insert(conv_id, d);
                    s.queued += 1;
                }
            },
            None if full => {
                self.metrics.push_queue_full.inc();
            }
            None => {
                s.map.insert(key.clone(), [(conv_id, d)].into());
                s.queued += 1;
                let this = self.clone();
                tokio::spawn(async move { this.work(key).await });
            }
        }
    }

    /// A device's worker: sends its queue, one at a time, then ends.
    async fn work(self: Arc<Self>, key: DeviceKey) {
        loop {
            let next = {
                let mut s = self.lock_slots();
                let s = &mut *s;
                match s.map.get_mut(&key).and_then(|p| p.pop_first()) {
                    Some((_, d)) => {
                        s.queued -= 1;
                        s.active += 1;
                        d
                    }
                    None => {
                        s.map.remove(&key);
                        return;
                    }
                }
            };
            self.deliver(&key, next).await;
            self.lock_slots().active -= 1;
        }
    }

    /// A newer notification of this conversation waits for this device.
    fn superseded(&self, key: &DeviceKey, conv_id: ConvId) -> bool {
        self.lock_slots()
            .map
            .get(key)
            .is_some_and(|p| p.contains_key(&conv_id))
    }

    /// Whether the user still needs this notification: not online, has not
    /// seen the message, and still has the device.
    async fn still_owed(&self, d: &Delivery) -> bool {
        if (self.online)(d.user_id) {
            return false;
        }
        let store = self.store.clone();
        let (user, conv, seq) = (d.user_id, d.notification.conv_id, d.notification.seq);
        match store
            .run(move |store| store.push_recipient(user, conv, seq))
            .await
        {
            Ok(Ok(r)) => {
                !r.seen
                    && r.subscriptions
                        .iter()
                        .any(|s| s.id == d.sub.id && s.target == d.sub.target)
            }
            Ok(Err(e)) => {
                tracing::warn!(user_id = user, conv_id = conv, error = %e, "push: reading the recipient");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "push: recipient task failed");
                true
            }
        }
    }

    /// Sends one delivery, retrying as the service allows.
    async fn deliver(&self, key: &DeviceKey, d: Delivery) {
        let max_attempts = self.config.max_attempts.max(1);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            if !self.still_owed(&d).await {
                self.metrics.push_skipped.inc();
                return;
            }
            let outcome = {
                let _permit = self.in_flight.acquire().await;
                self.attempt(&d).await
            };
            let (conv_id, seq) = (d.notification.conv_id, d.notification.seq);
            match outcome {
                Attempt::Sent => {
                    self.metrics.push_sent.inc();
                    return;
                }
                Attempt::Gone => {
                    self.metrics.push_gone.inc();
                    tracing::info!(user_id = d.user_id, sub = %d.sub.id, "push: device gone, unsubscribing");
                    let store = self.store.clone();
                    let (user, id, at) = (d.user_id, d.sub.id.clone(), d.sub.created_at);
                    let removed = store
                        .run(move |store| store.remove_gone_push_subscription(user, &id, at))
                        .await;
                    if let Ok(Err(e)) = removed {
                        tracing::warn!(error = %e, "push: removing a gone subscription");
                    }
                    return;
                }
                Attempt::Blocked(why) => {
                    self.metrics.push_blocked.inc();
                    tracing::warn!(user_id = d.user_id, sub = %d.sub.id, reason = %why, "push: endpoint refused by the SSRF guard");
                    return;
                }
                Attempt::Failed(why) => {
                    self.metrics.push_failed.inc();
                    tracing::info!(user_id = d.user_id, conv_id, seq, sub = %d.sub.id, reason = %why, "push failed");
                    return;
                }
                Attempt::Retry(after) => {
                    if attempt >= max_attempts {
                        self.metrics.push_failed.inc();
                        tracing::info!(
                            user_id = d.user_id,
                            conv_id,
                            seq,
                            attempt,
                            "push failed, out of attempts"
                        );
                        return;
                    }
                    self.metrics.push_retried.inc();
                    let backoff = Duration::from_millis(
                        self.config
                            .retry_base_ms
                            .saturating_mul(1 << (attempt - 1).min(20)),
                    );
                    let delay = after.unwrap_or(backoff).min(self.config.retry_max());
                    tracing::debug!(user_id = d.user_id, conv_id, seq, ?delay, "push: retrying");
                    tokio::time::sleep(delay).await;
                    if self.superseded(key, conv_id) {
                        self.metrics.push_coalesced.inc();
                        return;
                    }
                }
            }
        }
    }

    fn payload(&self, n: &Notification) -> Vec<u8> {
        serde_json::to_vec(n).unwrap_or_default()
    }

    async fn attempt(&self, d: &Delivery) -> Attempt {
        let n = &d.notification;
        let ttl = self.config.ttl_secs;
        match &d.sub.target {
            PushTarget::WebPush {
                endpoint,
                p256dh,
                auth,
            } => {
                let url = match guard::check_endpoint(endpoint, &self.allow) {
                    Ok(url) => url,
                    Err(e) => return Attempt::Blocked(e.0),
                };
                let body = match webpush::encrypt(&self.payload(n), p256dh, auth) {
                    Ok(body) => body,
                    Err(e) => return Attempt::Failed(format!("encrypting: {e}")),
                };
                let sent = self
                    .web
                    .post(url.clone())
                    .header("ttl", ttl.to_string())
                    .header("urgency", "high")
                    .header("topic", webpush::topic(n.conv_id))
                    .header("content-encoding", "aes128gcm")
                    .header("content-type", "application/octet-stream")
                    .header("authorization", self.vapid.authorization(&url))
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) => classify(r.status().as_u16(), retry_after(&r), ""),
                    Err(e) => transport_error(e),
                }
            }
            PushTarget::Fcm { token } => {
                let Some(fcm) = &self.fcm else {
                    return Attempt::Failed("FCM is not configured".into());
                };
                match fcm.send(token, n, ttl).await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let after = retry_after(&r);
                        if status == 401 {
                            fcm.reset_token().await;
                            return Attempt::Retry(None);
                        }
                        let body = r.text().await.unwrap_or_default();
                        classify(status, after, &body)
                    }
                    Err(e) => transport_error(e),
                }
            }
            PushTarget::Apns { token } => {
                let Some(apns) = &self.apns else {
                    return Attempt::Failed("APNs is not configured".into());
                };
                match apns.send(token, n, ttl).await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let after = retry_after(&r);
                        let body = r.text().await.unwrap_or_default();
                        if status == 403 && body.contains("ExpiredProviderToken") {
                            return Attempt::Retry(None);
                        }
                        classify(status, after, &body)
                    }
                    Err(e) => transport_error(e),
                }
            }
        }
    }
}

/// Maps a push service's answer to what to do next. `body` is read for the
/// services that say "unregistered" with a 400 (APNs `BadDeviceToken`,
/// FCM `UNREGISTERED`).
fn classify(status: u16, after: Option<Duration>, body: &str) -> Attempt {
    match status {
        200..=299 => Attempt::Sent,
        404 | 410 => Attempt::Gone,
        400 if body.contains("BadDeviceToken")
            || body.contains("Unregistered")
            || body.contains("UNREGISTERED") =>
        {
            Attempt::Gone
        }
        429 | 500..=599 => Attempt::Retry(after),
        300..=399 => Attempt::Failed(format!("redirect ({status}) not followed")),
        _ => Attempt::Failed(format!("status {status}: {}", truncate(body))),
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn transport_error(e: reqwest::Error) -> Attempt {
    if guard::is_refusal(&e) {
        return Attempt::Blocked(e.to_string());
    }
    Attempt::Retry(None)
}

/// `Retry-After`, in either of its forms (RFC 9110 §10.2.3): seconds, or
/// an HTTP date (a date already past means at once). Unparseable: `None`,
/// and the usual backoff applies.
fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    let value = r.headers().get("retry-after")?.to_str().ok()?;
    parse_retry_after(value, std::time::SystemTime::now())
}

fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_actions() {
        assert!(matches!(classify(201, None, ""), Attempt::Sent));
        assert!(matches!(classify(410, None, ""), Attempt::Gone));
        assert!(matches!(classify(404, None, ""), Attempt::Gone));
        assert!(matches!(
            classify(400, None, r#"{"reason":"BadDeviceToken"}"#),
            Attempt::Gone
        ));
        assert!(matches!(classify(400, None, "nope"), Attempt::Failed(_)));
        assert!(matches!(
            classify(429, Some(Duration::from_secs(3)), ""),
            Attempt::Retry(Some(d)) if d == Duration::from_secs(3)
        ));
        assert!(matches!(classify(503, None, ""), Attempt::Retry(None)));
        assert!(matches!(classify(307, None, ""), Attempt::Failed(_)));
        assert!(matches!(classify(413, None, ""), Attempt::Failed(_)));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
