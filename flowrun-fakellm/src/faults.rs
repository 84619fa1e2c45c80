//! Seeded random fault injection (500, 429, hang, reset) driven by `FakeConfig`.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::FakeConfig;
use crate::reply::Reply;

/// Draws one random number per request and turns it into a fault or nothing.
#[derive(Debug)]
pub(crate) struct FaultInjector {
    rng: StdRng,
    fail_500: f64,
    fail_429: f64,
    retry_after: Option<Duration>,
    hang: f64,
    reset: f64,
}

impl FaultInjector {
    pub(crate) fn new(config: &FakeConfig) -> Self {
        let rate = |p: f64| if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        FaultInjector {
            rng: StdRng::seed_from_u64(config.seed),
            fail_500: rate(config.fail_500),
            fail_429: rate(config.fail_429),
            retry_after: config.retry_after_secs.map(Duration::from_secs),
            hang: rate(config.hang),
            reset: rate(config.reset),
        }
    }

    /// The injected fault for the next request, if any. Always draws exactly
    /// one number so that sequences are reproducible whatever the rates.
    pub(crate) fn roll(&mut self) -> Option<Reply> {
        let r: f64 = self.rng.random();
        let mut threshold = self.fail_500;
        if r < threshold {
            return Some(Reply::error(500, "injected fault: internal server error"));
        }
        threshold += self.fail_429;
        if r < threshold {
            let reply = Reply::error(429, "injected fault: rate limit exceeded");
            return Some(match self.retry_after {
                Some(d) => reply.with_retry_after(d),
                None => reply,
            });
        }
        threshold += self.hang;
        if r < threshold {
            return Some(Reply::Hang);
        }
        threshold += self.reset;
        if r < threshold {
            return Some(Reply::Reset);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rates_never_fault() {
        let mut f = FaultInjector::new(&FakeConfig::default());
        assert!((0..1000).all(|_| f.roll().is_none()));
    }

    #[test]
    fn full_rate_always_faults() {
        let mut f = FaultInjector::new(&FakeConfig::default().with_fail_429(1.0, Some(3)));
        for _ in 0..100 {
            assert_eq!(
                f.roll(),
                Some(
                    Reply::error(429, "injected fault: rate limit exceeded")
                        .with_retry_after(Duration::from_secs(3))
                )
            );
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let config = FakeConfig::default()
            .with_fail_500(0.2)
            .with_hang(0.2)
            .with_reset(0.2)
            .with_seed(7);
        let mut a = FaultInjector::new(&config);
        let mut b = FaultInjector::new(&config);
        let sa: Vec<_> = (0..200).map(|_| a.roll().map(|r| r.kind())).collect();
        let sb: Vec<_> = (0..200).map(|_| b.roll().map(|r| r.kind())).collect();
        assert_eq!(sa, sb);
        let faults = sa.iter().filter(|k| k.is_some()).count();
        assert!(
            (80..160).contains(&faults),
            "about 60% faults, got {faults}"
        );
    }
}
