//! The linear probe of spec §7.1 on precomputed features: a `Linear(d, C)` head trained with SGD
//! (momentum 0.9, no weight decay) under a warmup-cosine schedule, `BCEWithLogits` for multi-label
//! tasks or cross-entropy for single-label ones, validated every `eval_every` steps with the best
//! validation head kept (ties update, as the official multi-label loop).
//!
//! The encoder is frozen in a linear probe, and so is `fc_norm`, so the head only ever sees fixed
//! features: they are computed once (see [`super::features`]) instead of every step, and without
//! the random crops of the official training transform. Plain f32 host code: the head is tiny and
//! this keeps the probe bit-for-bit reproducible on every backend.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::schedule::{Batches, BestOnValidation, validates_after};

/// Loss of the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Objective {
    /// Independent sigmoid per class (`BCEWithLogitsLoss`); NaN targets are left out.
    MultiLabel,
    /// Softmax over classes (`CrossEntropyLoss`); the target row is one-hot.
    SingleLabel,
}

/// Probe hyper-parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProbeConfig {
    /// Peak SGD learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Samples per step.
    pub batch_size: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Linear warmup steps.
    pub warmup: usize,
    /// Validate every this many steps.
    pub eval_every: usize,
    /// Seed of the head init and the batch order.
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self { lr: 0.1, momentum: 0.9, batch_size: 64, steps: 1500, warmup: 50, eval_every: 50, seed: 42 }
    }
}

impl ProbeConfig {
    /// `WarmupCosineSchedule` as the official code steps it (before the optimizer, so the first
    /// step already uses `lr / warmup`).
    pub fn lr_at(&self, step: usize) -> f64 {
        super::schedule::warmup_cosine(self.lr, self.warmup, self.steps, step)
    }
}

/// Row-major `n × width` f32 values (features or targets).
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// Rows.
    pub n: usize,
    /// Columns.
    pub width: usize,
    /// `n · width` values.
    pub values: Vec<f32>,
}

impl Rows {
    /// Wraps values; `None` when the length is not `n · width`.
    pub fn new(n: usize, width: usize, values: Vec<f32>) -> Option<Self> {
        (n.checked_mul(width) == Some(values.len())).then_some(Self { n, width, values })
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Rows {
        let mut values = Vec::with_capacity(indices.len() * self.width);
        for &i in indices {
            values.extend_from_slice(self.row(i));
        }
        Rows { n: indices.len(), width: self.width, values }
    }
}

/// A trained `Linear(d, C)` head.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearHead {
    /// Input features.
    pub dim: usize,
    /// Classes.
    pub classes: usize,
    /// `[C, d]` row-major, PyTorch's layout.
    pub weight: Vec<f32>,
    /// `[C]`.
    pub bias: Vec<f32>,
}

impl LinearHead {
    /// timm's head init: weight ~ N(0, 2e-5) truncated at ±2σ, bias 0.
    fn init(dim: usize, classes: usize, rng: &mut impl Rng) -> Self {
        let weight = (0..dim * classes)
            .map(|_| {
                // Box–Muller; the truncation keeps the draw count fixed.
                let (u, v): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
                let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                (2e-5 * z.clamp(-2.0, 2.0)) as f32
            })
            .collect();
        Self { dim, classes, weight, bias: vec![0.0; classes] }
    }

    /// Logits `[n, C]` of feature rows `[n, d]`.
    pub fn logits(&self, x: &Rows) -> Rows {
        let mut out = Vec::with_capacity(x.n * self.classes);
        for i in 0..x.n {
            let row = x.row(i);
            for c in 0..self.classes {
                let w = &self.weight[c * self.dim..(c + 1) * self.dim];
                out.push(self.bias[c] + w.iter().zip(row).map(|(a, b)| a * b).sum::<f32>());
            }
        }
        Rows { n: x.n, width: self.classes, values: out }
    }

    /// Scores `[n, C]` for the metrics: sigmoid (multi-label) or softmax (single-label) of the logits.
    pub fn scores(&self, x: &Rows, objective: Objective) -> Rows {
        let mut s = self.logits(x);
        match objective {
            Objective::MultiLabel => s.values.iter_mut().for_each(|v| *v = sigmoid(*v)),
            Objective::SingleLabel => s.values.chunks_exact_mut(self.classes).for_each(softmax_in_place),
        }
        s
    }
}

/// What a probe run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeFit {
    /// The head with the best validation score.
    pub head: LinearHead,
    /// The step after which it was taken (0 = after the first validation interval).
    pub best_step: usize,
    /// Its validation score.
    pub best_score: f64,
    /// `(step, train loss, validation score)` at every validation.
    pub history: Vec<(usize, f64, f64)>,
}

/// Why a probe cannot run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    /// Features and targets disagree, or a set is empty.
    #[error("probe data: {0}")]
    Shape(String),
}

/// Trains the head on `(train_x, train_y)` and keeps the one `score(val scores, val targets)`
/// rates best (higher is better; NaN counts as worst).
pub fn train_probe(
    train: (&Rows, &Rows),
    val: (&Rows, &Rows),
    objective: Objective,
    cfg: &ProbeConfig,
    score: &dyn Fn(&Rows, &Rows) -> f64,
) -> Result<ProbeFit, ProbeError> {
    let ((x, y), (vx, vy)) = (train, val);
    if x.n == 0 || vx.n == 0 || x.n != y.n || vx.n != vy.n || x.width != vx.width || y.width != vy.width {
        return Err(ProbeError::Shape(format!(
            "train {}×{} features / {}×{} targets, validation {}×{} / {}×{}",
            x.n, x.width, y.n, y.width, vx.n, vx.width, vy.n, vy.width
        )));
    }
    if cfg.batch_size == 0 || cfg.steps == 0 || cfg.eval_every == 0 {
        return Err(ProbeError::Shape("batch size, steps and eval_every must be positive".into()));
    }
    let (dim, classes) = (x.width, y.width);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut head = LinearHead::init(dim, classes, &mut rng);
    let mut batches = Batches::with_rng(x.n, rng);
    let mut velocity = LinearHead { dim, classes, weight: vec![0.0; dim * classes], bias: vec![0.0; classes] };
    let mut kept = BestOnValidation::default();
    for step in 0..cfg.steps {
        let batch = batches.next_batch(cfg.batch_size);
        let (bx, by) = (x.select(&batch), y.select(&batch));
        let (loss, grad) = loss_and_grad(&head, &bx, &by, objective);
        kept.add_loss(loss);
        let lr = cfg.lr_at(step) as f32;
        let m = cfg.momentum as f32;
        // torch SGD: v = μ·v + g; p -= lr·v (dampening 0, no Nesterov).
        for (p, (v, g)) in head.weight.iter_mut().zip(velocity.weight.iter_mut().zip(&grad.weight)) {
            *v = m * *v + g;
            *p -= lr * *v;
        }
        for (p, (v, g)) in head.bias.iter_mut().zip(velocity.bias.iter_mut().zip(&grad.bias)) {
            *v = m * *v + g;
            *p -= lr * *v;
        }
        if validates_after(step, cfg.eval_every, cfg.steps) {
            kept.record(step, score(&head.scores(vx, objective), vy), head.clone());
        }
    }
    let (head, best_step, best_score, history) = kept.finish(cfg.steps, || head);
    Ok(ProbeFit { head, best_step, best_score, history })
}

/// Mean loss of a batch and its gradient with respect to the head.
fn loss_and_grad(head: &LinearHead, x: &Rows, y: &Rows, objective: Objective) -> (f64, LinearHead) {
    let logits = head.logits(x);
    let (dim, classes) = (head.dim, head.classes);
    let mut dlogits = vec![0.0f32; logits.values.len()];
    let mut loss = 0.0f64;
    let mut count = 0usize;
    match objective {
        Objective::MultiLabel => {
            for (k, (&z, &t)) in logits.values.iter().zip(&y.values).enumerate() {
                if t.is_nan() {
                    continue;
                }
                // Stable BCE with logits: max(z, 0) − z·t + log(1 + e^−|z|).
                loss += f64::from(z.max(0.0) - z * t + (-z.abs()).exp().ln_1p());
                dlogits[k] = sigmoid(z) - t;
                count += 1;
            }
        }
        Objective::SingleLabel => {
            for i in 0..x.n {
                let row = &logits.values[i * classes..(i + 1) * classes];
                let mut p = row.to_vec();
                softmax_in_place(&mut p);
                let t = &y.values[i * classes..(i + 1) * classes];
                for c in 0..classes {
                    loss -= f64::from(t[c]) * f64::from(p[c].max(1e-30).ln());
                    dlogits[i * classes + c] = p[c] - t[c];
                }
                count += 1;
            }
        }
    }
    let scale = 1.0 / count.max(1) as f32;
    let mut grad = LinearHead { dim, classes, weight: vec![0.0; dim * classes], bias: vec![0.0; classes] };
    for i in 0..x.n {
        let row = x.row(i);
        for c in 0..classes {
            let d = dlogits[i * classes + c] * scale;
            if d == 0.0 {
                continue;
            }
            grad.bias[c] += d;
            for (g, v) in grad.weight[c * dim..(c + 1) * dim].iter_mut().zip(row) {
                *g += d * v;
            }
        }
    }
    (loss / count.max(1) as f64, grad)
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Gaussian-ish clusters per class, separable along feature 0 (class 0) and 1 (class 1).
    fn toy(n: usize, seed: u64) -> (Rows, Rows) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (a, b) = (rng.random_bool(0.5), rng.random_bool(0.3));
            let f0 = if a { 1.0 } else { -1.0 } + rng.random_range(-0.8..0.8);
            let f1 = if b { 1.0 } else { -1.0 } + rng.random_range(-0.8..0.8);
            x.extend([f0, f1, rng.random_range(-1.0..1.0)]);
            y.extend([f32::from(u8::from(a)), f32::from(u8::from(b))]);
        }
        (Rows { n, width: 3, values: x }, Rows { n, width: 2, values: y })
    }

    fn accuracy(s: &Rows, t: &Rows) -> f64 {
        let hits = s.values.iter().zip(&t.values).filter(|(p, t)| (**p > 0.5) == (**t > 0.5)).count();
        hits as f64 / s.values.len() as f64
    }

    #[test]
    fn learns_a_separable_multi_label_task_and_is_reproducible() {
        let (x, y) = toy(200, 1);
        let (vx, vy) = toy(100, 2);
        let cfg = ProbeConfig { steps: 300, ..ProbeConfig::default() };
        let fit = train_probe((&x, &y), (&vx, &vy), Objective::MultiLabel, &cfg, &accuracy).unwrap();
        assert!(fit.best_score > 0.95, "validation accuracy {}", fit.best_score);
        assert!(fit.history.first().unwrap().1 > fit.history.last().unwrap().1, "{:?}", fit.history);
        // The useless third feature gets a small weight next to the informative ones.
        let w = &fit.head.weight;
        assert!(w[2].abs() < w[0].abs() / 3.0 && w[5].abs() < w[4].abs() / 3.0, "{w:?}");
        let again = train_probe((&x, &y), (&vx, &vy), Objective::MultiLabel, &cfg, &accuracy).unwrap();
        assert_eq!(fit.head, again.head);
    }

    #[test]
    fn nan_targets_are_ignored() {
        let (x, mut y) = toy(200, 3);
        let (vx, vy) = toy(100, 4);
        // Hide class 1 everywhere: its weights must stay at their tiny init.
        y.values.iter_mut().skip(1).step_by(2).for_each(|v| *v = f32::NAN);
        let cfg = ProbeConfig { steps: 100, ..ProbeConfig::default() };
        let fit = train_probe((&x, &y), (&vx, &vy), Objective::MultiLabel, &cfg, &|_, _| 0.0).unwrap();
        assert!(fit.head.weight[3..].iter().all(|w| w.abs() <= 4e-5), "{:?}", fit.head.weight);
        assert!(fit.head.weight[0].abs() > 0.1);
    }

    #[test]
    fn single_label_uses_softmax() {
        let (x, y) = toy(200, 5);
        // One-hot of "feature 0 positive".
        let one_hot = |y: &Rows| Rows {
            n: y.n,
            width: 2,
            values: y.values.chunks(2).flat_map(|r| if r[0] > 0.5 { [0.0, 1.0] } else { [1.0, 0.0] }).collect(),
        };
        let (vx, vy) = toy(100, 6);
        let cfg = ProbeConfig { steps: 200, ..ProbeConfig::default() };
        let fit =
            train_probe((&x, &one_hot(&y)), (&vx, &one_hot(&vy)), Objective::SingleLabel, &cfg, &accuracy).unwrap();
        let s = fit.head.scores(&vx, Objective::SingleLabel);
        assert!(s.values.chunks(2).all(|r| (r[0] + r[1] - 1.0).abs() < 1e-5));
        assert!(fit.best_score > 0.95, "{}", fit.best_score);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let (x, y) = toy(10, 7);
        let short = Rows { n: 9, width: 2, values: y.values[..18].to_vec() };
        assert!(
            train_probe((&x, &short), (&x, &y), Objective::MultiLabel, &ProbeConfig::default(), &|_, _| 0.0).is_err()
        );
    }
}
