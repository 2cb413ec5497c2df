//! Push settings (`[push]` in the node's TOML file). Every field documents
//! its default.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How this node sends offline notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// The VAPID `sub` claim: a contact for push services (`mailto:` or
    /// `https:` URL). Default `mailto:push@parley.invalid`.
    pub vapid_subject: String,
    /// Put the first characters of the message in the (encrypted)
    /// notification. `false` sends only conversation, sender and seq.
    /// Default true.
    pub preview: bool,
    /// Characters of preview. Default 100.
    pub preview_chars: usize,
    /// How long a push service keeps an undelivered notification (the
    /// `TTL` header, APNs expiration), in seconds. Default 86400.
    pub ttl_secs: u64,
    /// Deliveries waiting at once on this node (beyond: dropped and
    /// counted); also the capacity of the queue of messages owing pushes.
    /// Default 10000.
    pub queue_capacity: usize,
    /// Push requests in flight at once on this node. Each endpoint has at
    /// most one. Default 64.
    pub max_in_flight: usize,
    /// Attempts per notification (the first included) on 429, 5xx and
    /// network errors. Default 5.
    pub max_attempts: u32,
    /// First retry delay, doubled each attempt, in milliseconds. Default 500.
    pub retry_base_ms: u64,
    /// Longest retry delay, `Retry-After` included, in milliseconds.
    /// Default 60000.
    pub retry_max_ms: u64,
    /// A push older than this (its message's commit time) is dropped, never
    /// sent: no stale notifications after a restart or a long outage.
    /// Default 600.
    pub max_age_secs: u64,
    /// An outbox row this old is taken over by any node (its own node died
    /// before it claimed it), in milliseconds. Default 10000.
    pub outbox_grace_ms: u64,
    /// How often each node scans the outbox for such rows, in
    /// milliseconds. Default 5000.
    pub outbox_scan_ms: u64,
    /// Hosts (exactly as in the endpoint URL, e.g. `127.0.0.1`) that may be
    /// reached over plain `http` and at non-public addresses. For
    /// development and tests only. Default none.
    pub allow_insecure: Vec<String>,
    /// Firebase Cloud Messaging (HTTP v1). Default unset: `fcm`
    /// subscriptions are refused.
    pub fcm: Option<FcmConfig>,
    /// Apple Push Notification service. Default unset: `apns`
    /// subscriptions are refused.
    pub apns: Option<ApnsConfig>,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            vapid_subject: "mailto:push@parley.invalid".into(),
            preview: true,
            preview_chars: 100,
            ttl_secs: 86_400,
            queue_capacity: 10_000,
            max_in_flight: 64,
            max_attempts: 5,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            max_age_secs: 600,
            outbox_grace_ms: 10_000,
            outbox_scan_ms: 5_000,
            allow_insecure: Vec::new(),
            fcm: None,
            apns: None,
        }
    }
}

impl PushConfig {
    pub(crate) fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms)
    }
}

/// FCM HTTP v1 with a service account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The Firebase project id (required).
    pub project_id: String,
    /// The service account's JSON key file, as the Firebase console gives
    /// it (`client_email`, `private_key`, `token_uri`) (required).
    pub service_account_file: PathBuf,
    /// The FCM API. Default `https://fcm.googleapis.com`.
    #[serde(default = "default_fcm_base")]
    pub base_url: String,
    /// The OAuth2 token endpoint. Default: the key file's `token_uri`.
    #[serde(default)]
    pub token_url: Option<String>,
}

fn default_fcm_base() -> String {
    "https://fcm.googleapis.com".into()
}

/// APNs with a token-based (`.p8`) provider key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The Apple developer team id (required).
    pub team_id: String,
    /// The key's id (required).
    pub key_id: String,
    /// The `.p8` key file (PKCS#8 PEM, P-256) (required).
    pub key_file: PathBuf,
    /// The app's bundle id, sent as `apns-topic` (required).
    pub topic: String,
    /// The APNs API. Default `https://api.push.apple.com` (the sandbox is
    /// `https://api.sandbox.push.apple.com`).
    #[serde(default = "default_apns_base")]
    pub base_url: String,
}

fn default_apns_base() -> String {
    "https://api.push.apple.com".into()
}
