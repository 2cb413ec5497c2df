//! Apple Push Notification service: a thin HTTP/2 client on reqwest with a
//! token-based (ES256) provider key.

use std::time::{Duration, Instant};

use serde_json::json;

use super::config::ApnsConfig;
use super::jwt;
use super::Notification;

/// Apple refuses provider tokens older than an hour and throttles ones
/// renewed more often than every 20 minutes.
const TOKEN_LIFETIME: Duration = Duration::from_secs(45 * 60);

/// An APNs sender.
pub struct Apns {
    client: reqwest::Client,
    base_url: String,
    team_id: String,
    key_id: String,
    topic: String,
    key: p256::SecretKey,
    token: std::sync::Mutex<Option<(String, Instant)>>,
}

impl Apns {
    /// Reads the `.p8` key. `client` must speak HTTP/2 to `base_url`.
    pub fn new(config: &ApnsConfig, client: reqwest::Client) -> Result<Self, String> {
        use p256::pkcs8::DecodePrivateKey as _;
        let file = &config.key_file;
        let pem = std::fs::read_to_string(file)
            .map_err(|e| format!("reading {}: {e}", file.display()))?;
        let key = p256::SecretKey::from_pkcs8_pem(&pem)
            .map_err(|e| format!("{}: not a P-256 PKCS#8 key: {e}", file.display()))?;
        Ok(Self {
            client,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            team_id: config.team_id.clone(),
            key_id: config.key_id.clone(),
            topic: config.topic.clone(),
            key,
            token: std::sync::Mutex::new(None),
        })
    }

    fn provider_token(&self) -> String {
        let mut cached = match self.token.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((token, at)) = cached.as_ref() {
            if at.elapsed() < TOKEN_LIFETIME {
                return token.clone();
            }
        }
        let token = jwt::es256(
            &self.key,
            &json!({"alg": "ES256", "kid": self.key_id}),
            &json!({"iss": self.team_id, "iat": jwt::unix_now()}),
        );
        *cached = Some((token.clone(), Instant::now()));
        token
    }

    /// Sends one notification to a device token.
    pub async fn send(
        &self,
        device: &str,
        n: &Notification,
        ttl_secs: u64,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let alert = match &n.preview {
            Some(preview) => json!({"title": "New message", "body": preview}),
            None => json!({"title": "New message"}),
        };
        let body = json!({
            "aps": {"alert": alert, "thread-id": super::webpush::topic(n.conv_id), "sound": "default"},
            "conv_id": n.conv_id,
            "seq": n.seq,
            "sender": n.sender,
            "sent_at": n.sent_at,
        });
        self.client
            .post(format!("{}/3/device/{device}", self.base_url))
            .header("authorization", format!("bearer {}", self.provider_token()))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", "10")
            .header("apns-expiration", (jwt::unix_now() + ttl_secs).to_string())
            .header("apns-collapse-id", super::webpush::topic(n.conv_id))
            .json(&body)
            .send()
            .await
    }
}
