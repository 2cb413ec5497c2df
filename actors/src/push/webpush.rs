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

/// The record size every body declares (RFC 8188's `rs`). RFC 8291 §4
/// wants it larger than the one record it carries (payload, delimiter,
/// padding and the 16-byte tag), which it always is: the padded record is
/// at most [`MAX_PADDED`] + 16 bytes.
pub const RECORD_SIZE: u32 = 4096;

/// Plaintexts are padded to a multiple of this many bytes (the payload,
/// its delimiter and zeros), so the push service, which sees only the
/// ciphertext's length, cannot tell one preview's length from another's:
/// every notification of a usual size has the same length.
pub const PAD_TO: usize = 1024;

/// The longest padded plaintext: a push service takes at least 4096 bytes
/// of body (RFC 8030 §7.2), of which the header takes 86 and the tag 16.
const MAX_PADDED: usize = 4096 - 86 - 16;

/// The encrypted body of a notification (`aes128gcm`, RFC 8291): one
/// record, padded to a multiple of [`PAD_TO`], declaring [`RECORD_SIZE`].
pub fn encrypt(payload: &[u8], p256dh: &str, auth: &str) -> Result<Vec<u8>, String> {
    use aes_gcm::aead::{Aead, KeyInit};
    use hkdf::Hkdf;
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use rand::RngCore;
    use sha2::Sha256;

    let (device, auth) = parse_keys(p256dh, auth)?;
    let padded = (payload.len() + 1).div_ceil(PAD_TO) * PAD_TO;
    if padded > MAX_PADDED {
        return Err(format!(
            "payload of {} bytes is over a push body's room",
            payload.len()
        ));
    }
    // A fresh key pair and salt per message (RFC 8291 §3.1, RFC 8188 §2.1).
    let ours = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let our_public = ours.public_key().to_encoded_point(false);
    let device_public = device.to_encoded_point(false);
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let shared = p256::ecdh::diffie_hellman(ours.to_nonzero_scalar(), device.as_affine());
    // RFC 8291 §3.3-3.4: the input keying material, then RFC 8188's key
    // and nonce.
    let mut info = b"WebPush: info\0".to_vec();
    info.extend_from_slice(device_public.as_bytes());
    info.extend_from_slice(our_public.as_bytes());
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&auth), shared.raw_secret_bytes().as_slice())
        .expand(&info, &mut ikm)
        .map_err(|e| format!("hkdf: {e}"))?;
    let prk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .and_then(|()| prk.expand(b"Content-Encoding: nonce\0", &mut nonce))
        .map_err(|e| format!("hkdf: {e}"))?;
    // One (last) record: the payload, the delimiter 2, then zeros.
    let mut plain = Vec::with_capacity(padded + 16);
    plain.extend_from_slice(payload);
    plain.push(2);
    plain.resize(padded, 0);
    let cipher = aes_gcm::Aes128Gcm::new_from_slice(&cek).map_err(|e| format!("aes: {e}"))?;
    let sealed = cipher
        .encrypt(aes_gcm::Nonce::from_slice(&nonce), plain.as_slice())
        .map_err(|e| format!("aes: {e}"))?;
    let key_id = our_public.as_bytes();
    let mut body = Vec::with_capacity(21 + key_id.len() + sealed.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(key_id.len() as u8);
    body.extend_from_slice(key_id);
    body.extend_from_slice(&sealed);
    Ok(body)
}
