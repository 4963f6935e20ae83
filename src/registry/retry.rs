//! When and how long to wait before trying a request again: exponential backoff with
//! jitter, and a server's `Retry-After` (429/503), both bounded.

use std::time::Duration;

/// First backoff step; each later attempt doubles it, up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between two attempts chosen by us.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest `Retry-After` we honour; a server asking for more gets this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The outcome of one attempt that did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// Worth another attempt (5xx, 429, timeout, reset, truncated body); the server may
    /// have said how long to wait.
    Retry(anyhow::Error, Option<Duration>),
    /// Trying again would give the same answer (404, denied, bad bytes, bad reply).
    Fatal(anyhow::Error),
}

impl Failure {
    /// A retryable failure without a server-requested delay.
    pub fn retry(e: impl Into<anyhow::Error>) -> Failure {
        Failure::Retry(e.into(), None)
    }
    /// A final failure.
    pub fn fatal(e: impl Into<anyhow::Error>) -> Failure {
        Failure::Fatal(e.into())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Fatal(e)
    }
}

/// The wait before attempt `attempt + 1` (attempt counts from 0): `BASE · 2^attempt`
/// capped at `MAX_BACKOFF`, scaled by a jitter factor in [0.5, 1.0) so that parallel
/// downloads hitting the same failure do not retry in lockstep.
pub fn backoff(attempt: u32, jitter01: f64) -> Duration {
    let exp = BASE_BACKOFF.saturating_mul(1u32 << attempt.min(16));
    let capped = exp.min(MAX_BACKOFF);
    capped.mul_f64(0.5 + 0.5 * jitter01.clamp(0.0, 0.999))
}

/// `Retry-After` as delta-seconds (the form registries send). HTTP-dates are not parsed:
/// the caller falls back to its own backoff.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// A cheap pseudo-random number in [0, 1) for jitter (no crypto needed; std's
/// per-process random hasher keys plus the clock are enough).
pub fn jitter() -> f64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(3, 0.0), Duration::from_millis(800));
        assert!(backoff(3, 0.99) < Duration::from_millis(1600));
        assert!(backoff(30, 0.99) <= MAX_BACKOFF);
        assert!(backoff(30, 0.0) >= MAX_BACKOFF / 2);
    }

    #[test]
    fn retry_after_seconds_only_and_bounded() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn jitter_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
