//! Web Push by the standards: the payload encrypted for the device
//! (RFC 8291, `aes128gcm`, with the subscription's p256dh and auth), the
//! request signed with the cluster's VAPID key (RFC 8292), and RFC 8030's
//! `TTL`, `Urgency` and `Topic` headers.

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::json;
use storage::chat::{ConvId, VapidKey};

use super::jwt;

/// How long a VAPID token is valid (RFC 8292 allows at most 24 hours).
const VAPID_VALIDITY_SECS: u64 = 12 * 3600;

/// The cluster's VAPID signer.
#[derive(Clone)]
pub struct Vapid {
    secret: p256::SecretKey,
    public_b64: String,
    subject: String,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vapid({})", self.public_b64)
    }
}

impl Vapid {
    /// A fresh key pair, the candidate a node offers when the store has none.
    pub fn generate(now: storage::chat::Millis) -> VapidKey {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let public = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
            &secret.public_key(),
            false,
        );
        VapidKey {
            private: secret.to_bytes().to_vec(),
            public: public.as_bytes().to_vec(),
            created_at: now,
        }
    }

    /// The signer of a stored key.
    pub fn from_stored(key: &VapidKey, subject: &str) -> Result<Self, String> {
        let secret = p256::SecretKey::from_slice(&key.private)
            .map_err(|e| format!("stored VAPID key is not a P-256 key: {e}"))?;
        Ok(Self {
            secret,
            public_b64: URL_SAFE_NO_PAD.encode(&key.public),
            subject: subject.to_owned(),
        })
    }

    /// The public key, base64url: a browser's `applicationServerKey`.
    pub fn public_key(&self) -> &str {
        &self.public_b64
    }

    /// The `Authorization` header for a request to `endpoint`: `aud` is the
    /// endpoint's origin, port included when it is not the default.
    pub fn authorization(&self, endpoint: &url::Url) -> String {
        let claims = json!({
            "aud": endpoint.origin().ascii_serialization(),
            "exp": jwt::unix_now() + VAPID_VALIDITY_SECS,
            "sub": self.subject,
        });
        let token = jwt::es256(
            &self.secret,
            &json!({"typ": "JWT", "alg": "ES256"}),
            &claims,
        );
        format!("vapid t={token}, k={}", self.public_b64)
    }
}

/// Decodes base64url, padded or not (browsers give it unpadded; some
/// libraries pad).
pub fn decode_b64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .or_else(|| URL_SAFE.decode(s).ok())
}

/// A subscription's keys, checked: the device's P-256 public key and its
/// 16-byte auth secret.
pub fn parse_keys(p256dh: &str, auth: &str) -> Result<(p256::PublicKey, [u8; 16]), String> {
    let key = decode_b64url(p256dh)
        .and_then(|b| p256::PublicKey::from_sec1_bytes(&b).ok())
        .ok_or("p256dh must be a base64url P-256 public key")?;
    let auth: [u8; 16] = decode_b64url(auth)
        .and_then(|b| b.try_into().ok())
        .ok_or("auth must be 16 bytes, base64url")?;
    Ok((key, auth))
}

/// The RFC 8030 `Topic` of a conversation's notifications: a push service
/// keeps only the newest undelivered one per topic, so a burst reaches a
/// device asleep as one notification.
pub fn topic(conv_id: ConvId) -> String {
    format!("conv-{conv_id}")
}

/// The encrypted body of a notification (`aes128gcm`, RFC 8291).
pub fn encrypt(payload: &[u8], p256dh: &str, auth: &str) -> Result<Vec<u8>, String> {
    let (key, auth) = parse_keys(p256dh, auth)?;
    let auth = web_push_native::Auth::clone_from_slice(&auth);
    web_push_native::encrypt(payload.to_vec(), &key, &auth).map_err(|e| e.to_string())
}
