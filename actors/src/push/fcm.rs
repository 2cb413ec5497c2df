//! Firebase Cloud Messaging, HTTP v1: a thin client on reqwest.
//!
//! Authenticates as a service account: an RS256 assertion signed with the
//! account's key is exchanged at the OAuth2 token endpoint for an access
//! token (RFC 7523), kept until shortly before it expires.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use super::config::FcmConfig;
use super::jwt;
use super::Notification;

/// The OAuth2 scope FCM sends need.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default)]
    token_uri: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// An FCM sender.
pub struct Fcm {
    client: reqwest::Client,
    send_url: String,
    token_url: String,
    client_email: String,
    key: rsa::RsaPrivateKey,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl Fcm {
    /// Reads the service account's key file.
    pub fn new(config: &FcmConfig, client: reqwest::Client) -> Result<Self, String> {
        use rsa::pkcs8::DecodePrivateKey as _;
        let file = &config.service_account_file;
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("reading {}: {e}", file.display()))?;
        let account: ServiceAccount = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a service account key: {e}", file.display()))?;
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(&account.private_key)
            .map_err(|e| format!("{}: private_key: {e}", file.display()))?;
        let token_url = config
            .token_url
            .clone()
            .or(account.token_uri)
            .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into());
        Ok(Self {
            client,
            send_url: format!(
                "{}/v1/projects/{}/messages:send",
                config.base_url.trim_end_matches('/'),
                config.project_id
            ),
            token_url,
            client_email: account.client_email,
            key,
            token: tokio::sync::Mutex::new(None),
        })
    }

    async fn access_token(&self) -> Result<String, reqwest::Error> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let now = jwt::unix_now();
        let assertion = jwt::rs256(
            &self.key,
            &json!({"alg": "RS256", "typ": "JWT"}),
            &json!({
                "iss": self.client_email,
                "scope": SCOPE,
                "aud": self.token_url,
                "iat": now,
                "exp": now + 3600,
            }),
        );
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let response: TokenResponse = self
            .client
            .post(&self.token_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        // Refreshed a minute early, so a token never expires in flight.
        let lifetime = Duration::from_secs(response.expires_in.unwrap_or(3600).saturating_sub(60));
        *cached = Some((response.access_token.clone(), Instant::now() + lifetime));
        Ok(response.access_token)
    }

    /// Forgets the access token (after a 401).
    pub async fn reset_token(&self) {
        *self.token.lock().await = None;
    }

    /// Sends one notification to a registration token.
    pub async fn send(
        &self,
        token: &str,
        n: &Notification,
        ttl_secs: u64,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let access = self.access_token().await?;
        let mut data = serde_json::Map::new();
        data.insert("type".into(), json!("message"));
        data.insert("conv_id".into(), json!(n.conv_id.to_string()));
        data.insert("seq".into(), json!(n.seq.to_string()));
        data.insert("sender".into(), json!(n.sender.to_string()));
        data.insert("sent_at".into(), json!(n.sent_at.to_string()));
        if let Some(preview) = &n.preview {
            data.insert("preview".into(), json!(preview));
        }
        let body = json!({
            "message": {
                "token": token,
                "data": data,
                "android": {
                    "priority": "high",
                    "ttl": format!("{ttl_secs}s"),
                    "collapse_key": super::webpush::topic(n.conv_id),
                },
            }
        });
        self.client
            .post(&self.send_url)
            .bearer_auth(access)
            .json(&body)
            .send()
            .await
    }
}
