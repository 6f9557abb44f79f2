//! Per-key rate limits: requests per second and records per second, each a
//! GCRA bucket (`governor`) holding one second's worth, so one runaway key
//! is answered 429 while the others keep their pace.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// The limits of a scope, or of one key. Zero is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    pub requests_per_second: f64,
    pub records_per_second: f64,
}

/// A bucket of `per_second`, holding one second's worth (at least one).
fn bucket(per_second: f64) -> Option<DefaultDirectRateLimiter> {
    if !(per_second > 0.0 && per_second.is_finite()) {
        return None;
    }
    let burst =
        NonZeroU32::new(per_second.ceil().min(u32::MAX as f64) as u32).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
    Quota::with_period(period).map(|q| RateLimiter::direct(q.allow_burst(burst)))
}

/// The buckets of one key, made for the limits it had then.
struct Buckets {
    rates: RateConfig,
    requests: Option<DefaultDirectRateLimiter>,
    records: Option<DefaultDirectRateLimiter>,
}

/// Buckets by key id (as many as there are keys).
#[derive(Default)]
pub struct Limits {
    keys: Mutex<HashMap<String, Arc<Buckets>>>,
}

/// Which limit a request went over, and how long until it would fit.
pub type Over = (&'static str, Duration);

impl Limits {
    fn buckets(&self, id: &str, rates: RateConfig) -> Arc<Buckets> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        match keys.get(id) {
            Some(b) if b.rates == rates => b.clone(),
            _ => {
                let made = Arc::new(Buckets {
                    rates,
                    requests: bucket(rates.requests_per_second),
                    records: bucket(rates.records_per_second),
                });
                keys.insert(id.to_owned(), made.clone());
                made
            }
        }
    }

    /// Takes one request and `records` records from key `id`'s buckets.
    pub fn admit(&self, id: &str, rates: RateConfig, records: u64) -> Result<(), Over> {
        let buckets = self.buckets(id, rates);
        let clock = DefaultClock::default();
        if records == 0 {
            if let Some(requests) = &buckets.requests
                && let Err(not_until) = requests.check()
            {
                return Err(("requests_per_second", not_until.wait_time_from(clock.now())));
            }
            return Ok(());
        }
        let Some(bucket) = &buckets.records else { return Ok(()) };
        let n = NonZeroU32::new(records.min(u32::MAX as u64) as u32).unwrap_or(NonZeroU32::MIN);
        match bucket.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                Err(("records_per_second", not_until.wait_time_from(clock.now())))
            }
            // More records in one request than a second's worth.
            Err(_) => Err(("records_per_second", Duration::from_secs(1))),
        }
    }

    /// Forgets the buckets of keys that are gone.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).retain(|id, _| keep(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_rate_waits_and_another_key_does_not() {
        let limits = Limits::default();
        let rates = RateConfig { requests_per_second: 5.0, records_per_second: 100.0 };
        for _ in 0..5 {
            limits.admit("a", rates, 0).unwrap();
        }
        let (what, wait) = limits.admit("a", rates, 0).unwrap_err();
        assert_eq!(what, "requests_per_second");
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        limits.admit("b", rates, 0).unwrap();
        limits.admit("a", rates, 60).unwrap();
        assert_eq!(limits.admit("a", rates, 60).unwrap_err().0, "records_per_second");
        // More than a second's worth at once never fits.
        assert!(limits.admit("b", rates, 101).is_err());
        let none = RateConfig { requests_per_second: 0.0, records_per_second: 0.0 };
        for _ in 0..1000 {
            limits.admit("c", none, 1_000_000).unwrap();
        }
    }
}
