//! Checking webhook deliveries in a Rust receiver: [`verify_webhook`] checks the
//! `Flowrun-Signature` header (`t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{body}">`) of a
//! body against the server's secret; [`WebhookEvent`] is the body.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use crate::RunStatus;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Flowrun-Signature";
/// The delivery's id (the run id): the same delivery may arrive more than once.
pub const DELIVERY_HEADER: &str = "Flowrun-Delivery";

/// Why a delivery was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("the signature header is malformed: expected `t=<unix seconds>,v1=<hex>`")]
    Malformed,
    #[error("the signature is {age_secs} s away from now, more than the tolerance")]
    Stale { age_secs: u64 },
    #[error("the signature does not match the body")]
    Mismatch,
}

/// A delivered run end (the body of a webhook delivery).
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookEvent {
    /// `run.finished`.
    pub event: String,
    pub run_id: String,
    pub env: String,
    pub flow: String,
    pub status: RunStatus,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub usage: Option<Value>,
    pub cost: Option<Value>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// Checks that `body` was signed with `secret` at a time within `tolerance` of `now`.
///
/// Call it with the raw body bytes, before parsing them. Several `v1=` entries are accepted
/// (any one matching is enough). The comparison takes constant time.
pub fn verify_webhook(
    secret: &str,
    header: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), WebhookError> {
    let mut timestamp: Option<i64> = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or(WebhookError::Malformed)?;
        match key {
            "t" => timestamp = Some(value.parse().map_err(|_| WebhookError::Malformed)?),
            "v1" => signatures.push(hex::decode(value).map_err(|_| WebhookError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(WebhookError::Malformed)?;
    if signatures.is_empty() {
        return Err(WebhookError::Malformed);
    }
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let age_secs = now_secs.abs_diff(timestamp);
    if age_secs > tolerance.as_secs() {
        return Err(WebhookError::Stale { age_secs });
    }
    for signature in signatures {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|_| WebhookError::Mismatch)?;
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&signature).is_ok() {
            return Ok(());
        }
    }
    Err(WebhookError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec
    const SIG: &str = "8ad37ba156048ae0e0a5533c75cdf26fee88b07f93cb57ee4c80adb053012032";
    const BODY: &[u8] = br#"{"a":1}"#;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_good_signature_within_the_tolerance_passes() {
        let header = format!("t=1700000000,v1={SIG}");
        let five_min = Duration::from_secs(300);
        assert_eq!(
            verify_webhook("whsec", &header, BODY, at(1_700_000_100), five_min),
            Ok(())
        );
        // Rotation: another v1 first.
        let two = format!("t=1700000000,v1={},v1={SIG}", "00".repeat(32));
        assert!(verify_webhook("whsec", &two, BODY, at(1_700_000_000), five_min).is_ok());
    }

    #[test]
    fn a_wrong_secret_body_or_time_fails() {
        let header = format!("t=1700000000,v1={SIG}");
        let tol = Duration::from_secs(300);
        let now = at(1_700_000_000);
        assert_eq!(
            verify_webhook("other", &header, BODY, now, tol),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(
            verify_webhook("whsec", &header, br#"{"a":2}"#, now, tol),
            Err(WebhookError::Mismatch)
        );
        assert_eq!(
            verify_webhook("whsec", &header, BODY, at(1_700_001_000), tol),
            Err(WebhookError::Stale { age_secs: 1000 })
        );
        for bad in [
            "",
            "t=x,v1=00",
            &format!("v1={SIG}"),
            "t=1700000000",
            "t=1,v1=zz",
        ] {
            assert_eq!(
                verify_webhook("whsec", bad, BODY, now, tol),
                Err(WebhookError::Malformed),
                "{bad}"
            );
        }
    }
}
