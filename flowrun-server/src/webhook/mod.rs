//! Webhooks on completion: a run submitted with a `Flowrun-Webhook: <url>` header is POSTed to
//! that URL when it ends, as JSON signed with HMAC-SHA256 (`Flowrun-Signature: t=<unix
//! seconds>,v1=<hex>` over `"{t}.{body}"`). The delivery row is committed with the run's end;
//! [`deliver`] sends it at least once, with backoff, across restarts and replicas.

mod deliver;

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

pub use deliver::{backoff, deliver};

use crate::error::AppError;
use crate::store::RunRow;

/// The request header that names a run's webhook URL.
pub const URL_HEADER: &str = "Flowrun-Webhook";
/// The signature header of a delivery.
pub const SIGNATURE_HEADER: &str = "Flowrun-Signature";
/// The delivery's id (the run id: one delivery per run), for receivers to drop repeats.
pub const DELIVERY_HEADER: &str = "Flowrun-Delivery";
/// The 1-based attempt number of a delivery.
pub const ATTEMPT_HEADER: &str = "Flowrun-Delivery-Attempt";

const MAX_URL_LEN: usize = 2048;

/// The signing secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookSecret(Arc<str>);

impl WebhookSecret {
    pub fn new(secret: impl Into<Arc<str>>) -> WebhookSecret {
        WebhookSecret(secret.into())
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Without a secret, submissions naming a webhook are refused and nothing is delivered.
    pub secret: Option<WebhookSecret>,
    /// Attempts before a delivery is given up.
    pub max_attempts: u32,
    /// The wait after the first failed attempt, doubled after each one (with jitter).
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Time allowed for one POST.
    pub timeout: Duration,
    /// How long a claimed delivery is held (longer than `timeout`).
    pub lease: Duration,
    /// How often an idle deliverer looks for due deliveries (it is also woken when a run ends).
    pub poll: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            secret: None,
            max_attempts: 8,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(1),
        }
    }
}

/// Checks the value of the `Flowrun-Webhook` header: an absolute `http`/`https` URL with a
/// host and no credentials.
pub fn check_url(value: &str) -> Result<String, AppError> {
    let bad = |message: &str| AppError::bad_field("invalid_webhook", URL_HEADER, message);
    if value.is_empty() || value.len() > MAX_URL_LEN {
        return Err(bad("the webhook URL must be 1 to 2048 characters"));
    }
    let url = reqwest::Url::parse(value).map_err(|e| {
        bad(&format!(
            "not a URL ({e}); give e.g. `https://example.com/hook`"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(
            "the webhook URL must start with `http://` or `https://`",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("the webhook URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "the webhook URL must not carry credentials: check the signature instead",
        ));
    }
    Ok(url.to_string())
}

/// The JSON body delivered for an ended run.
pub fn payload(run: &RunRow) -> Vec<u8> {
    json!({
        "event": "run.finished",
        "run_id": run.id,
        "env": run.env,
        "flow": run.flow,
        "status": run.status,
        "output": run.output,
        "error": run.error,
        "usage": run.usage,
        "cost": run.cost,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
    })
    .to_string()
    .into_bytes()
}

/// The `Flowrun-Signature` value of `body` sent at `timestamp` (unix seconds):
/// `t=<timestamp>,v1=<hex HMAC-SHA256 of "{timestamp}.{body}">`.
pub fn sign(secret: &WebhookSecret, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.0.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        assert_eq!(
            check_url("https://example.com/hook?x=1").ok().as_deref(),
            Some("https://example.com/hook?x=1")
        );
        assert!(check_url("http://127.0.0.1:9000/").is_ok());
        for bad in [
            "",
            "example.com/hook",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "http://",
        ] {
            let Err(AppError::BadRequest { field, .. }) = check_url(bad) else {
                panic!("{bad:?} was accepted");
            };
            assert_eq!(field.as_deref(), Some(URL_HEADER));
        }
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference value: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec
        let sig = sign(&WebhookSecret::new("whsec"), 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            sig,
            "t=1700000000,v1=8ad37ba156048ae0e0a5533c75cdf26fee88b07f93cb57ee4c80adb053012032"
        );
    }

    #[test]
    fn the_secret_is_never_in_debug_output() {
        let cfg = WebhookConfig {
            secret: Some(WebhookSecret::new("hunter2")),
            ..WebhookConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
