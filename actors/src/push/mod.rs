//! Offline notifications: when a message is committed and a member has no
//! live session anywhere, each of their registered devices gets one
//! notification, through Web Push, FCM or APNs.
//!
//! The path of a push:
//! 1. the conversation actor's append transaction writes a row in the push
//!    outbox naming the offline members (`storage::chat::PushOwed`), so a
//!    push owed survives its node dying right after the commit;
//! 2. after the commit the actor hands the message to this node's
//!    [`PushService`] ([`PushService::owed`]); the dispatcher
//!    ([`outbox`]) claims the rows in one transaction (exactly one node
//!    gets each row) and turns them into deliveries, one per device;
//!    every node also scans the outbox for rows older than
//!    `outbox_grace_ms` and claims them: those of a node that died;
//! 3. the delivery pipeline ([`pipeline`]) sends them: bounded, one
//!    request at a time per device, retries with backoff on 429, 5xx and
//!    network errors, subscription removed on 404/410, coalesced per
//!    conversation, skipped when the user saw the message or came online
//!    in the meantime.
//!
//! Delivery is at most once per device and message: a row is claimed
//! before anything is sent, so a node dying mid-delivery loses that push
//! rather than repeating it after a restart (the message itself is safe
//! and syncs when the user comes back).

pub mod apns;
pub mod config;
pub mod fcm;
pub mod guard;
pub mod jwt;
mod outbox;
mod pipeline;
pub mod webpush;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use storage::chat::{ConvId, Millis, PushTarget, Seq, UserId};

pub use config::{ApnsConfig, FcmConfig, PushConfig};

use crate::metrics::Metrics;
use crate::store_pool::StorePool;
use crate::Error;

/// What a device is told, as JSON (inside the encrypted Web Push body, in
/// FCM's data, beside APNs' alert).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
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
    /// When it was committed.
    pub sent_at: Millis,
    /// Its first characters; absent when `push.preview` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
}

/// Whether a user has a live session anywhere in the cluster.
pub type OnlineCheck = Arc<dyn Fn(UserId) -> bool + Send + Sync>;

/// The node's push sender. Cheap to clone.
#[derive(Clone)]
pub struct PushService {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: PushConfig,
    store: StorePool,
    metrics: Arc<Metrics>,
    online: OnlineCheck,
    vapid: webpush::Vapid,
    allow: guard::AllowList,
    web: reqwest::Client,
    fcm: Option<fcm::Fcm>,
    apns: Option<apns::Apns>,
    owed_tx: tokio::sync::mpsc::Sender<(ConvId, Seq)>,
    slots: Mutex<pipeline::Slots>,
    in_flight: tokio::sync::Semaphore,
}

impl PushService {
    /// Loads (or creates, once per cluster) the VAPID key, reads the FCM
    /// and APNs credentials, and starts the dispatcher and the outbox scan.
    pub async fn start(
        config: PushConfig,
        timeout: Duration,
        store: StorePool,
        metrics: Arc<Metrics>,
        online: OnlineCheck,
    ) -> Result<Self, Error> {
        let key = store
            .run(move |s| {
                let candidate = webpush::Vapid::generate(s.now());
                s.vapid_key_or_insert(candidate)
            })
            .await??;
        let vapid =
            webpush::Vapid::from_stored(&key, &config.vapid_subject).map_err(Error::Push)?;
        let allow = guard::AllowList::new(&config.allow_insecure);
        let web = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(guard::GuardedResolver::new(allow.clone())))
            .build()
            .map_err(|e| Error::Push(format!("building the Web Push client: {e}")))?;
        let plain = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
        };
        let fcm = match &config.fcm {
            Some(c) => {
                let client = plain()
                    .build()
                    .map_err(|e| Error::Push(format!("building the FCM client: {e}")))?;
                Some(fcm::Fcm::new(c, client).map_err(Error::Push)?)
            }
            None => None,
        };
        let apns = match &config.apns {
            Some(c) => {
                let builder = if c.base_url.starts_with("http://") {
                    plain().http2_prior_knowledge()
                } else {
                    plain()
                };
                let client = builder
                    .build()
                    .map_err(|e| Error::Push(format!("building the APNs client: {e}")))?;
                Some(apns::Apns::new(c, client).map_err(Error::Push)?)
            }
            None => None,
        };
        let (owed_tx, owed_rx) = tokio::sync::mpsc::channel(config.queue_capacity.max(1));
        let in_flight = tokio::sync::Semaphore::new(config.max_in_flight.max(1));
        let inner = Arc::new(Inner {
            config,
            store,
            metrics,
            online,
            vapid,
            allow,
            web,
            fcm,
            apns,
            owed_tx,
            slots: Mutex::new(pipeline::Slots::default()),
            in_flight,
        });
        outbox::spawn(&inner, owed_rx);
        Ok(Self { inner })
    }

    /// The cluster's VAPID public key, base64url: what a browser passes as
    /// `applicationServerKey` when it subscribes.
    pub fn vapid_public_key(&self) -> &str {
        self.inner.vapid.public_key()
    }

    /// Checks a device registration before it is stored. Refusals are the
    /// store's `Invalid` (a 400 naming the field): bad input, nothing
    /// stored.
    pub fn check_target(&self, target: &PushTarget) -> Result<(), storage::Error> {
        match target {
            PushTarget::WebPush {
                endpoint,
                p256dh,
                auth,
            } => {
                guard::check_endpoint(endpoint, &self.inner.allow)
                    .map_err(|e| storage::Error::invalid("endpoint", e.0))?;
                webpush::parse_keys(p256dh, auth).map_err(|e| {
                    let field = if e.starts_with("auth") {
                        "auth"
                    } else {
                        "p256dh"
                    };
                    storage::Error::invalid(field, e)
                })?;
            }
            PushTarget::Fcm { token } => {
                if self.inner.fcm.is_none() {
                    return Err(storage::Error::invalid(
                        "kind",
                        "FCM is not configured on this cluster",
                    ));
                }
                let ok = (1..=4096).contains(&token.len())
                    && token.bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    return Err(storage::Error::invalid(
                        "token",
                        "must be 1 to 4096 printable ASCII characters",
                    ));
                }
            }
            PushTarget::Apns { token } => {
                if self.inner.apns.is_none() {
                    return Err(storage::Error::invalid(
                        "kind",
                        "APNs is not configured on this cluster",
                    ));
                }
                let ok = (32..=200).contains(&token.len())
                    && token.bytes().all(|b| b.is_ascii_hexdigit());
                if !ok {
                    return Err(storage::Error::invalid(
                        "token",
                        "must be 32 to 200 hex digits",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Message `seq` of `conv_id` was committed with an outbox row: take it
    /// over. Never blocks: when the queue is full the row stays in the
    /// outbox and the scan takes it over later.
    pub fn owed(&self, conv_id: ConvId, seq: Seq) {
        if self.inner.owed_tx.try_send((conv_id, seq)).is_err() {
            self.inner.metrics.push_queue_full.inc();
        }
    }

    /// Deliveries waiting or in progress on this node.
    pub fn queued(&self) -> usize {
        self.inner.queued()
    }
}

/// The pending deliveries of one device, newest per conversation.
type Pending = BTreeMap<ConvId, pipeline::Delivery>;

/// A device: its user and subscription id.
type DeviceKey = (UserId, String);

/// Per-device queues; a device has an entry while its worker runs.
pub(crate) type SlotMap = HashMap<DeviceKey, Pending>;
