//! The deliverer: leases due webhook deliveries from the store, POSTs each signed body, and
//! records the outcome: delivered on 2xx, else retried with exponential backoff and jitter
//! until the attempts run out. Leases keep replicas from sending the same delivery at once;
//! delivery is at least once (receivers drop repeats by `Flowrun-Delivery`).

use std::time::Duration;

use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{ATTEMPT_HEADER, DELIVERY_HEADER, SIGNATURE_HEADER, WebhookConfig, WebhookSecret};
use crate::state::Shared;
use crate::store::{Delivery, DeliveryOutcome};

/// Deliveries claimed at once.
const BATCH: u32 = 16;

fn now() -> i64 {
    flowrun_core::event::now_ms()
}

/// The wait after failed attempt number `attempt` (1-based): `backoff * 2^(attempt-1)`, at most
/// `max_backoff`, of which a random half (`unit` in `[0, 1)`) is jitter.
pub fn backoff(cfg: &WebhookConfig, attempt: u32, unit: f64) -> Duration {
    let ceiling = cfg
        .backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(cfg.max_backoff);
    ceiling / 2 + (ceiling / 2).mul_f64(unit.clamp(0.0, 1.0))
}

/// Delivers until `stop` (does nothing without a secret).
pub async fn deliver(shared: Shared, owner: String, cfg: WebhookConfig, stop: CancellationToken) {
    let Some(secret) = cfg.secret.clone() else {
        return;
    };
    let http = match reqwest::Client::builder()
        .timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("flowrun-webhook/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not delivered");
            return;
        }
    };
    while !stop.is_cancelled() {
        let at = now();
        let lease_until = at + cfg.lease.as_millis() as i64;
        match shared
            .store
            .claim_deliveries(&owner, at, lease_until, BATCH)
            .await
        {
            Ok(batch) if !batch.is_empty() => {
                let mut sends = JoinSet::new();
                for d in batch {
                    let attempt = Attempt {
                        shared: shared.clone(),
                        http: http.clone(),
                        cfg: cfg.clone(),
                        secret: secret.clone(),
                        owner: owner.clone(),
                    };
                    sends.spawn(async move { attempt.run(d).await });
                }
                while sends.join_next().await.is_some() {}
            }
            Ok(_) => {
                tokio::select! {
                    _ = shared.deliveries.notified() => {}
                    _ = tokio::time::sleep(cfg.poll) => {}
                    _ = stop.cancelled() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim webhook deliveries");
                tokio::select! {
                    _ = tokio::time::sleep(cfg.poll) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }
}

struct Attempt {
    shared: Shared,
    http: reqwest::Client,
    cfg: WebhookConfig,
    secret: WebhookSecret,
    owner: String,
}

impl Attempt {
    async fn run(self, d: Delivery) {
        let run_id = d.run.id.clone();
        let host = reqwest::Url::parse(&d.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let outcome = if d.attempts > self.cfg.max_attempts {
            // A deliverer died while holding the last attempt.
            DeliveryOutcome::Failed {
                error: format!("gave up after {} attempts", self.cfg.max_attempts),
            }
        } else {
            match self.send(&d).await {
                Ok(()) => DeliveryOutcome::Delivered,
                Err(error) if d.attempts >= self.cfg.max_attempts => {
                    DeliveryOutcome::Failed { error }
                }
                Err(error) => {
                    let wait = backoff(&self.cfg, d.attempts, rand::rng().random::<f64>());
                    DeliveryOutcome::Retry {
                        at: now() + wait.as_millis() as i64,
                        error,
                    }
                }
            }
        };
        let label = match &outcome {
            DeliveryOutcome::Delivered => {
                tracing::info!(run_id, host, attempt = d.attempts, "webhook delivered");
                "delivered"
            }
            DeliveryOutcome::Retry { at, error } => {
                tracing::warn!(
                    run_id,
                    host,
                    attempt = d.attempts,
                    error,
                    retry_in_ms = at - now(),
                    "webhook attempt failed; will retry"
                );
                "retry"
            }
            DeliveryOutcome::Failed { error } => {
                tracing::error!(
                    run_id,
                    host,
                    attempt = d.attempts,
                    error,
                    "webhook given up"
                );
                "failed"
            }
        };
        self.shared.metrics.webhook_outcome(label);
        match self
            .shared
            .store
            .settle_delivery(&run_id, &self.owner, &outcome, now())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    run_id,
                    "webhook delivery lease lost before its outcome was recorded"
                );
            }
            Err(e) => tracing::error!(run_id, error = %e, "cannot record a webhook outcome"),
        }
    }

    /// One POST; the error text never holds the URL (it may carry a token).
    async fn send(&self, d: &Delivery) -> Result<(), String> {
        let body = super::payload(&d.run);
        let signature = super::sign(&self.secret, now() / 1000, &body);
        let resp = self
            .http
            .post(&d.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(DELIVERY_HEADER, &d.run.id)
            .header(ATTEMPT_HEADER, d.attempts.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!("no answer within {:?}", self.cfg.timeout)
                } else if e.is_connect() {
                    "cannot connect".to_string()
                } else {
                    e.without_url().to_string()
                }
            })?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_half_of_it_random() {
        let cfg = WebhookConfig {
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(10),
            ..WebhookConfig::default()
        };
        assert_eq!(backoff(&cfg, 1, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(&cfg, 1, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(&cfg, 2, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(&cfg, 3, 0.5), Duration::from_secs(6));
        assert_eq!(backoff(&cfg, 30, 1.0), Duration::from_secs(10));
    }
}
