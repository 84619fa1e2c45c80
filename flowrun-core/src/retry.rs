//! When to try a failed call again and how long to wait: exponential backoff with full
//! jitter, `Retry-After` honoured.

use std::time::Duration;

use crate::provider::ProviderError;

/// The retry policy of one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    /// Time allowed for one attempt.
    pub timeout: Duration,
    /// First backoff step, doubled each retry.
    pub base: Duration,
    /// Longest wait; a longer `Retry-After` gives up on this model.
    pub max: Duration,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait, then try the same model again.
    RetryAfter(Duration),
    /// Stop trying this model (move on to a fallback, if any).
    GiveUp,
}

impl RetryPolicy {
    /// Decides after failed attempt number `attempt` (0-based) with `error`; `unit` is a
    /// random number in `[0, 1)` for the jitter.
    pub fn next(&self, attempt: u32, error: &ProviderError, unit: f64) -> Next {
        if !error.is_retryable() || attempt >= self.retries {
            return Next::GiveUp;
        }
        if let Some(wait) = error.retry_after() {
            return if wait <= self.max {
                Next::RetryAfter(wait)
            } else {
                Next::GiveUp
            };
        }
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.max);
        Next::RetryAfter(ceiling.mul_f64(unit.clamp(0.0, 1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retries: 3,
            timeout: Duration::from_secs(1),
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        }
    }

    fn server() -> ProviderError {
        ProviderError::Server {
            status: 500,
            retry_after: None,
            message: "boom".into(),
        }
    }

    #[test]
    fn backoff_doubles_with_full_jitter_and_caps() {
        let p = policy();
        assert_eq!(
            p.next(0, &server(), 0.5),
            Next::RetryAfter(Duration::from_millis(50))
        );
        assert_eq!(
            p.next(2, &server(), 0.999_999),
            Next::RetryAfter(Duration::from_millis(400).mul_f64(0.999_999))
        );
        let long = RetryPolicy { retries: 10, ..p };
        assert_eq!(
            long.next(8, &server(), 1.0),
            Next::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(p.next(3, &server(), 0.5), Next::GiveUp, "budget spent");
    }

    #[test]
    fn honours_retry_after_and_never_retries_client_errors() {
        let p = policy();
        let limited = ProviderError::RateLimited {
            retry_after: Some(Duration::from_millis(700)),
            message: String::new(),
        };
        assert_eq!(
            p.next(0, &limited, 0.1),
            Next::RetryAfter(Duration::from_millis(700))
        );
        let too_long = ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
            message: String::new(),
        };
        assert_eq!(p.next(0, &too_long, 0.1), Next::GiveUp);
        for status in [400, 404] {
            let e = ProviderError::InvalidRequest {
                status,
                message: String::new(),
            };
            assert_eq!(p.next(0, &e, 0.5), Next::GiveUp);
        }
        assert_eq!(
            p.next(
                0,
                &ProviderError::Auth {
                    status: 401,
                    message: String::new()
                },
                0.5
            ),
            Next::GiveUp
        );
    }
}
