//! What the downstream heads' training loops share: the warmup-cosine learning rate of the
//! official `WarmupCosineSchedule` and seeded shuffled batches.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Learning rate at `step` (0-based): linear warmup to `lr` over `warmup` steps, then a half
/// cosine to zero at `steps`; stepped before the optimizer as the official scheduler, so the first
/// step already uses `lr / warmup`.
pub fn warmup_cosine(lr: f64, warmup: usize, steps: usize, step: usize) -> f64 {
    let s = step + 1;
    if s < warmup {
        return lr * s as f64 / warmup.max(1) as f64;
    }
    let progress = (s - warmup) as f64 / steps.saturating_sub(warmup).max(1) as f64;
    lr * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// Batches of item indices: every item once per pass, each pass in a new seeded order.
#[derive(Debug, Clone)]
pub struct Batches {
    order: Vec<usize>,
    cursor: usize,
    rng: ChaCha8Rng,
}

impl Batches {
    /// Batches over `n` items with the order drawn from `seed`.
    pub fn new(n: usize, seed: u64) -> Self {
        Self { order: (0..n).collect(), cursor: n, rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// Batches over `n` items drawing the order from `rng` (shared with the caller's other draws).
    pub fn with_rng(n: usize, rng: ChaCha8Rng) -> Self {
        Self { order: (0..n).collect(), cursor: n, rng }
    }

    /// The next `size` indices (at most `n`), reshuffling when a pass ends.
    pub fn next_batch(&mut self, size: usize) -> Vec<usize> {
        let mut batch = Vec::with_capacity(size);
        while batch.len() < size.min(self.order.len()) {
            if self.cursor == self.order.len() {
                self.order.shuffle(&mut self.rng);
                self.cursor = 0;
            }
            batch.push(self.order[self.cursor]);
            self.cursor += 1;
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((warmup_cosine(1.0, 10, 100, 0) - 0.1).abs() < 1e-12);
        assert!((warmup_cosine(1.0, 10, 100, 9) - 1.0).abs() < 1e-12);
        let mid = warmup_cosine(1.0, 10, 100, 54);
        assert!(mid < 0.51 && mid > 0.49);
        assert!(warmup_cosine(1.0, 10, 100, 99) < 1e-12);
    }

    #[test]
    fn every_item_once_per_pass_and_reproducible() {
        let mut a = Batches::new(10, 7);
        let mut seen: Vec<usize> = (0..5).flat_map(|_| a.next_batch(2)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        let mut b = Batches::new(10, 7);
        let mut c = Batches::new(10, 7);
        assert_eq!(b.next_batch(4), c.next_batch(4));
        assert_eq!(Batches::new(3, 1).next_batch(8).len(), 3);
    }
}
