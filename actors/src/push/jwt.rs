//! Compact JWS signing for the three push services: ES256 (VAPID, APNs
//! provider tokens) and RS256 (the FCM service-account assertion).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;

/// base64url without padding, JWT's encoding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signing_input(header: &impl Serialize, claims: &impl Serialize) -> String {
    let header = serde_json::to_vec(header).unwrap_or_default();
    let claims = serde_json::to_vec(claims).unwrap_or_default();
    format!("{}.{}", b64(&header), b64(&claims))
}

/// An ES256 JWT (`header` must say `"alg":"ES256"`).
pub fn es256(key: &p256::SecretKey, header: &impl Serialize, claims: &impl Serialize) -> String {
    use p256::ecdsa::signature::Signer as _;
    let input = signing_input(header, claims);
    let signer = p256::ecdsa::SigningKey::from(key);
    let signature: p256::ecdsa::Signature = signer.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

/// An RS256 JWT (`header` must say `"alg":"RS256"`).
pub fn rs256(key: &rsa::RsaPrivateKey, header: &impl Serialize, claims: &impl Serialize) -> String {
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    let input = signing_input(header, claims);
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone());
    let signature = signer.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_vec()))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
