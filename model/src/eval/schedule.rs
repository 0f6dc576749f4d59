//! What the downstream heads' training loops share: the warmup-cosine learning rate of the
//! official `WarmupCosineSchedule`, seeded shuffled batches, and the keeper of the best model
//! on the validation set.

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

/// A training loop's record of its validations: the mean training loss since the previous one,
/// every score, and the model that scored best (higher is better; NaN never counts; ties go to
/// the later model, as the official multi-label loops compare with `>=`).
#[derive(Debug, Clone)]
pub struct BestOnValidation<M> {
    best: Option<(M, usize, f64)>,
    history: Vec<(usize, f64, f64)>,
    running: f64,
    since: usize,
}

impl<M> Default for BestOnValidation<M> {
    fn default() -> Self {
        Self { best: None, history: Vec::new(), running: 0.0, since: 0 }
    }
}

/// What a loop hands back: the kept model, the step after which it was taken, its score, and
/// `(step, mean training loss, validation score)` at every validation.
pub type Kept<M> = (M, usize, f64, Vec<(usize, f64, f64)>);

/// Whether a loop of `steps` steps validates after `step` (0-based): every `every` steps and
/// after the last.
pub fn validates_after(step: usize, every: usize, steps: usize) -> bool {
    (step + 1).is_multiple_of(every.max(1)) || step + 1 == steps
}

impl<M> BestOnValidation<M> {
    /// Adds one step's training loss to the running mean.
    pub fn add_loss(&mut self, loss: f64) {
        self.running += loss;
        self.since += 1;
    }

    /// Records the validation after `step` (0-based) and keeps `model` if it scored best so far.
    pub fn record(&mut self, step: usize, score: f64, model: M) {
        self.history.push((step + 1, self.running / self.since.max(1) as f64, score));
        (self.running, self.since) = (0.0, 0);
        if !score.is_nan() && self.best.as_ref().is_none_or(|b| score >= b.2) {
            self.best = Some((model, step + 1, score));
        }
    }

    /// The kept model, or `last` after `steps` with a NaN score when no validation scored.
    pub fn finish(self, steps: usize, last: impl FnOnce() -> M) -> Kept<M> {
        let (model, step, score) = self.best.unwrap_or_else(|| (last(), steps, f64::NAN));
        (model, step, score, self.history)
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

    #[test]
    fn keeps_the_best_later_on_ties_and_never_nan() {
        let mut k = BestOnValidation::default();
        for (step, loss, score) in [(0, 1.0, f64::NAN), (1, 3.0, 0.5), (2, 1.0, 0.7), (3, 0.0, 0.7), (4, 2.0, 0.6)] {
            k.add_loss(loss);
            k.add_loss(loss + 1.0);
            k.record(step, score, step);
        }
        let (model, step, score, history) = k.finish(5, || 99);
        assert_eq!((model, step, score), (3, 4, 0.7));
        assert_eq!(history.len(), 5);
        assert_eq!((history[1].0, history[1].1), (2, 3.5));
        assert!(history[0].2.is_nan());
        let mut none = BestOnValidation::default();
        none.record(0, f64::NAN, 1);
        let (model, step, score, _) = none.finish(7, || 42);
        assert_eq!((model, step), (42, 7));
        assert!(score.is_nan());
        assert!(validates_after(9, 10, 100) && validates_after(99, 7, 100));
        assert!(!validates_after(8, 10, 100));
    }
}
