//! Exponential backoff with full jitter, so many writers that collide spread out.

use std::time::Duration;

use rand::Rng;

/// Successive sleep durations: uniformly random in `[0, min(cap, base·2^n)]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting around `base` and never sleeping longer than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap, attempt: 0 }
    }

    /// The next delay to sleep.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << self.attempt.min(16)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        for _ in 0..40 {
            assert!(b.next_delay() <= Duration::from_millis(50));
        }
    }
}
