//! Signing a webhook delivery, and the check a receiver makes.
//!
//! The signature covers the timestamp and the exact body bytes sent, joined by a dot:
//! `HMAC-SHA256(secret, "<timestamp>.<body>")`, written as lowercase hex. The header carrying it reads
//! `t=<timestamp>,v1=<hex>`; the timestamp is also sent on its own in [`TIMESTAMP_HEADER`].

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

/// The header with the signature: `t=<unix seconds>,v1=<lowercase hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "Ocpp-Css-Signature";
/// The header with the unix time, in seconds, at which the delivery was signed.
pub const TIMESTAMP_HEADER: &str = "Ocpp-Css-Timestamp";
/// The header with the event's id: the same on every retry of one event, so receivers can drop duplicates.
pub const EVENT_ID_HEADER: &str = "Ocpp-Css-Event-Id";

/// What a new secret starts with, so that a leaked one is easy to recognise.
const SECRET_PREFIX: &str = "whsec_";
/// The version tag of the one signature scheme there is.
const SCHEME_V1: &str = "v1";

type HmacSha256 = Hmac<Sha256>;

/// An HMAC keyed with `secret` that has already taken in `"<timestamp>."`.
fn keyed(secret: &str, timestamp: i64) -> HmacSha256 {
    // HMAC accepts a key of any length (a long one is hashed, a short one padded): this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac
}

/// The signature header's value for `body` sent at `timestamp` (unix seconds):
/// `t=<timestamp>,v1=<lowercase hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = keyed(secret, timestamp);
    mac.update(body);
    format!("t={timestamp},{SCHEME_V1}={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header_value` is a valid signature of `body` under `secret`, made at most `tolerance_secs`
/// away from `now` (unix seconds) in either direction.
///
/// This is the receiver's algorithm: take `t` and every `v1` from the header, refuse a timestamp too far
/// from the receiver's clock (so a captured delivery cannot be replayed later), recompute the HMAC over
/// `"<t>.<body>"` and compare it in constant time with each `v1`. Unknown fields are ignored, so a later
/// scheme can be sent alongside; a header with no `t`, two of them, or no matching `v1` is refused.
pub fn verify(secret: &str, header_value: &str, body: &[u8], now: i64, tolerance_secs: i64) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for field in header_value.split(',') {
        let Some((key, value)) = field.split_once('=') else { continue };
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return false;
                }
                match value.trim().parse::<i64>() {
                    Ok(t) => timestamp = Some(t),
                    Err(_) => return false,
                }
            }
            SCHEME_V1 => signatures.push(value.trim()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else { return false };
    let tolerance = u64::try_from(tolerance_secs).unwrap_or(0);
    if now.abs_diff(timestamp) > tolerance {
        return false;
    }
    let mut mac = keyed(secret, timestamp);
    mac.update(body);
    signatures
        .into_iter()
        .filter_map(|s| hex::decode(s).ok())
        .any(|expected| mac.clone().verify_slice(&expected).is_ok())
}

/// A new signing secret: `whsec_` and 32 random bytes from the operating system, base64url without padding.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const BODY: &[u8] = br#"{"event":"StatusNotification","stationId":"CP-1"}"#;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body_in_lowercase_hex() {
        // Both values computed outside Rust: Python's hmac module, and
        // `printf '1.{}' | openssl dgst -sha256 -hmac key` for the second.
        assert_eq!(
            sign(SECRET, 1_700_000_000, BODY),
            "t=1700000000,v1=b120cd21dfa10c45bf61982ac59d781278d00a0ff36fea4a67bb94ddc2a00258"
        );
        assert_eq!(sign("key", 1, b"{}"), "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224");
    }

    #[test]
    fn verify_accepts_a_fresh_signature() {
        let header = sign(SECRET, 1000, BODY);
        assert!(verify(SECRET, &header, BODY, 1000, 300));
        assert!(verify(SECRET, &header, BODY, 1300, 300));
        assert!(verify(SECRET, &header, BODY, 700, 300));
    }

    #[test]
    fn verify_refuses_a_stale_or_future_timestamp() {
        let header = sign(SECRET, 1000, BODY);
        assert!(!verify(SECRET, &header, BODY, 1301, 300));
        assert!(!verify(SECRET, &header, BODY, 699, 300));
        assert!(!verify(SECRET, &header, BODY, 1001, -5));
    }

    #[test]
    fn verify_refuses_another_body_secret_or_timestamp() {
        let header = sign(SECRET, 1000, BODY);
        assert!(!verify(SECRET, &header, b"{}", 1000, 300));
        assert!(!verify("whsec_other", &header, BODY, 1000, 300));
        let moved = header.replacen("t=1000", "t=1001", 1);
        assert!(!verify(SECRET, &moved, BODY, 1000, 300));
    }

    #[test]
    fn verify_refuses_malformed_headers() {
        let good = sign(SECRET, 1000, BODY);
        let v1 = good.split_once(",v1=").unwrap().1;
        for header in [
            "",
            "garbage",
            &format!("v1={v1}"),
            "t=1000",
            &format!("t=abc,v1={v1}"),
            &format!("t=1000,t=1000,v1={v1}"),
            "t=1000,v1=not-hex",
            "t=1000,v1=",
        ] {
            assert!(!verify(SECRET, header, BODY, 1000, 300), "{header:?} was accepted");
        }
    }

    #[test]
    fn verify_takes_any_matching_v1_and_ignores_unknown_fields() {
        let good = sign(SECRET, 1000, BODY);
        let v1 = good.split_once(",v1=").unwrap().1;
        let header = format!("t=1000, v0=abc, v1={}, v1={v1}", "0".repeat(64));
        assert!(verify(SECRET, &header, BODY, 1000, 300));
    }

    #[test]
    fn new_secrets_are_prefixed_url_safe_and_distinct() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        let encoded = a.strip_prefix("whsec_").unwrap();
        // 32 bytes in base64 without padding: ceil(32 * 4 / 3) = 43 characters.
        assert_eq!(encoded.len(), 43);
        assert!(encoded.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).unwrap().len(), 32);
    }
}
