//! The SegViT-style segmentation head of spec §7.2 on a frozen encoder's patch tokens.
//!
//! `seg_head` Linear(d, d) on every patch token → `[n, d, g, g]` → one stage per factor of two
//! between the grid and the image (`log2(patch)`; 4 for ViT-B/16) of [3×3 conv → BatchNorm → ReLU
//! → bilinear ×2] → 3×3 conv to one logit channel at the encoder's input side. Channels are
//! 512, 256, 128, 64 at d = 768 and scale with d (see [`SegConfig::for_encoder`]).
//! Loss `MixedLoss(alpha=10, gamma=2)`: `10·focal − log(dice)` with the soft Dice over the whole
//! batch; AdamW (β 0.9/0.999, wd 0.05), warmup + cosine, global gradient norm clipped at 1.0; the model
//! with the best validation score is kept.
//!
//! Deviations, both forced or harmless: the ×2 upsampling is bilinear with half-pixel centres
//! (`align_corners=False`, [`upsample2x_bilinear`]) instead of `align_corners=True`, because
//! burn-ndarray's `interpolate` has no backward; and since the encoder is frozen its tokens are
//! computed once by the caller instead of every step (no augmentation, as the spec's RSNA/SIIM
//! pipelines apply none that changes the frozen tokens' meaning at evaluation).

use burn::config::Config;
use burn::module::{AutodiffModule, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, PaddingConfig2d};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::{log_sigmoid, relu, sigmoid};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use super::probe::Rows;
use super::schedule::{Batches, BestOnValidation, validates_after};
use crate::net::init::linear;
use crate::net::sr::{conv3x3, upsample2x_bilinear};
use crate::train::optim::clip_global_norm;

/// Sizes of the segmentation head.
#[derive(Config, Debug)]
pub struct SegConfig {
    /// Encoder width d.
    pub dim: usize,
    /// Patch grid side g.
    pub grid: usize,
    /// Output channels of each upsampling stage (one stage per ×2).
    pub channels: Vec<usize>,
}

impl SegConfig {
    /// The head for an encoder of width `dim` on a `grid`² patch grid of `patch`-pixel patches:
    /// `log2(patch)` stages with `2d/3`, `d/3`, … channels (512, 256, 128, 64 at d = 768), at
    /// least 8 each.
    pub fn for_encoder(dim: usize, grid: usize, patch: usize) -> Self {
        let stages = patch.max(1).ilog2() as usize;
        let channels = (0..stages).map(|i| ((dim * 2 / 3) >> i).max(8)).collect();
        Self { dim, grid, channels }
    }

    /// A freshly initialised head.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SegHead<B> {
        let conv = |i: usize, o: usize| {
            Conv2dConfig::new([i, o], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device)
        };
        let mut stages = Vec::new();
        let mut c = self.dim;
        for &o in &self.channels {
            stages.push(SegStage { conv: conv(c, o), norm: BatchNormConfig::new(o).init(device) });
            c = o;
        }
        SegHead { seg_head: linear(self.dim, self.dim, true, device), stages, out: conv(c, 1), grid: self.grid }
    }
}

/// One upsampling stage: conv → BatchNorm → ReLU → ×2.
#[derive(Module, Debug)]
pub struct SegStage<B: Backend> {
    /// 3×3 convolution.
    pub conv: Conv2d<B>,
    /// Batch normalisation.
    pub norm: BatchNorm<B>,
}

/// The segmentation head.
#[derive(Module, Debug)]
pub struct SegHead<B: Backend> {
    /// The one trainable layer on the tokens (`seg_head`).
    pub seg_head: Linear<B>,
    /// Upsampling stages.
    pub stages: Vec<SegStage<B>>,
    /// Final 3×3 conv to one channel.
    pub out: Conv2d<B>,
    grid: usize,
}

impl<B: Backend> SegHead<B> {
    /// Patch tokens `[n, L, d]` → mask logits `[n, 1, S, S]`.
    pub fn forward(&self, tokens: Tensor<B, 3>) -> Tensor<B, 4> {
        let [n, _, d] = tokens.dims();
        let g = self.grid;
        let x = self.seg_head.forward(tokens).swap_dims(1, 2).reshape([n, d, g, g]);
        let mut x = x;
        for s in &self.stages {
            x = upsample2x_bilinear(relu(s.norm.forward(conv3x3(&s.conv, x))));
        }
        conv3x3(&self.out, x)
    }
}

/// `MixedLoss(alpha, gamma)` of the official code: `alpha·focal(x, y) − log(dice(x, y))`.
pub fn mixed_loss<B: Backend>(logits: Tensor<B, 4>, target: Tensor<B, 4>, alpha: f64, gamma: f64) -> Tensor<B, 1> {
    // Focal loss on logits (the common Kaggle formulation the official code copies):
    // BCE-with-logits weighted by exp(gamma · log σ(−x·(2y−1))).
    let bce =
        logits.clone().clamp_min(0.0) - logits.clone() * target.clone() + logits.clone().abs().neg().exp().log1p();
    let weight = (log_sigmoid(logits.clone().neg() * (target.clone().mul_scalar(2.0).sub_scalar(1.0))) * gamma).exp();
    let focal = (weight * bce).mean();
    let p = sigmoid(logits);
    let inter = (p.clone() * target.clone()).sum();
    let dice = (inter.mul_scalar(2.0).add_scalar(1.0)) / (p.sum() + target.sum()).add_scalar(1.0);
    focal.mul_scalar(alpha) - dice.log()
}

/// Training settings of the head.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegTrainConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Optimizer steps.
    pub steps: usize,
    /// Linear warmup steps.
    pub warmup: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Validate every this many steps.
    pub eval_every: usize,
    /// Seed of the initialisation and the batch order.
    pub seed: u64,
}

impl Default for SegTrainConfig {
    fn default() -> Self {
        Self { lr: 5e-4, weight_decay: 0.05, steps: 600, warmup: 50, batch_size: 32, eval_every: 50, seed: 42 }
    }
}

impl SegTrainConfig {
    /// Warmup then cosine to zero, stepped before the optimizer as the official scheduler.
    pub fn lr_at(&self, step: usize) -> f64 {
        super::schedule::warmup_cosine(self.lr, self.warmup, self.steps, step)
    }
}

/// Why the head cannot be trained.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegError {
    /// Tokens and masks disagree, or a set is empty.
    #[error("segmentation data: {0}")]
    Shape(String),
    /// The backend could not hand back a tensor.
    #[error("segmentation backend: {0}")]
    Backend(String),
}

/// A trained head and how it got there.
#[derive(Debug)]
pub struct SegFit<B: Backend> {
    /// The head with the best validation score (inference mode).
    pub head: SegHead<B>,
    /// The step after which it was taken.
    pub best_step: usize,
    /// Its validation score.
    pub best_score: f64,
    /// `(step, mean training loss, validation score)` at every validation.
    pub history: Vec<(usize, f64, f64)>,
}

/// Tokens `[n, L·d]` as a tensor `[n, L, d]`.
fn tokens_tensor<B: Backend>(rows: &Rows, dim: usize, device: &B::Device) -> Tensor<B, 3> {
    Tensor::from_data(TensorData::new(rows.values.clone(), [rows.n, rows.width / dim, dim]), device)
}

/// The masks `head` predicts for token rows `[n, L·d]`: logits thresholded at 0 (σ = 0.5), row-major `S·S`.
pub fn predict<B: Backend>(
    head: &SegHead<B>,
    tokens: &Rows,
    dim: usize,
    batch: usize,
    device: &B::Device,
) -> Result<Vec<Vec<bool>>, SegError> {
    let mut out = Vec::with_capacity(tokens.n);
    for start in (0..tokens.n).step_by(batch.max(1)) {
        let idx: Vec<usize> = (start..(start + batch.max(1)).min(tokens.n)).collect();
        let logits = head.forward(tokens_tensor::<B>(&tokens.select(&idx), dim, device));
        let [n, _, h, w] = logits.dims();
        let v = logits.into_data().into_vec::<f32>().map_err(|e| SegError::Backend(format!("{e:?}")))?;
        out.extend(v.chunks_exact(h * w).take(n).map(|m| m.iter().map(|&x| x > 0.0).collect()));
    }
    Ok(out)
}

/// Trains the head on `(tokens, masks)` (masks `[n, S·S]` of 0/1 at the encoder's input side),
/// keeping the head that `score(predicted, truth)` rates best on the validation set.
pub fn train_segmenter<B: AutodiffBackend>(
    device: &B::Device,
    cfg: &SegConfig,
    train: (&Rows, &Rows),
    val: (&Rows, &Rows),
    t: &SegTrainConfig,
    score: &dyn Fn(&[Vec<bool>], &Rows) -> f64,
) -> Result<SegFit<B::InnerBackend>, SegError> {
    let ((x, y), (vx, vy)) = (train, val);
    let side = cfg.grid << cfg.channels.len();
    let ok = x.n > 0
        && vx.n > 0
        && x.n == y.n
        && vx.n == vy.n
        && x.width == cfg.grid * cfg.grid * cfg.dim
        && vx.width == x.width
        && y.width == side * side
        && vy.width == y.width;
    if !ok || t.batch_size == 0 || t.steps == 0 || t.eval_every == 0 {
        return Err(SegError::Shape(format!(
            "train {}×{} tokens / {}×{} masks, validation {}×{} / {}×{}; expected tokens of width {} and masks of {}²",
            x.n,
            x.width,
            y.n,
            y.width,
            vx.n,
            vx.width,
            vy.n,
            vy.width,
            cfg.grid * cfg.grid * cfg.dim,
            side
        )));
    }
    B::seed(device, t.seed);
    let mut head: SegHead<B> = cfg.init(device);
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(t.weight_decay)
        .init::<B, SegHead<B>>();
    let mut batches = Batches::new(x.n, t.seed);
    let mut kept = BestOnValidation::default();
    let inner = Default::default();
    for step in 0..t.steps {
        let batch = batches.next_batch(t.batch_size);
        let tokens = tokens_tensor::<B>(&x.select(&batch), cfg.dim, device);
        let target: Tensor<B, 4> =
            Tensor::from_data(TensorData::new(y.select(&batch).values, [batch.len(), 1, side, side]), device);
        let loss = mixed_loss(head.forward(tokens), target, 10.0, 2.0);
        kept.add_loss(loss.clone().into_scalar().to_f64_lossy());
        let mut grads = GradientsParams::from_grads(loss.backward(), &head);
        // torch's clip_grad_norm_ (one global norm), not burn's per-tensor clipping.
        clip_global_norm::<B, SegHead<B>>(&head, &mut grads, 1.0);
        head = optim.step(t.lr_at(step), head, grads);
        if validates_after(step, t.eval_every, t.steps) {
            let valid = head.valid();
            let s = score(&predict(&valid, vx, cfg.dim, t.batch_size, &inner)?, vy);
            kept.record(step, s, valid);
        }
    }
    let (head, best_step, best_score, history) = kept.finish(t.steps, || head.valid());
    Ok(SegFit { head, best_step, best_score, history })
}

/// f32/f64 scalars as f64.
trait ToF64 {
    fn to_f64_lossy(self) -> f64;
}

impl<E: burn::tensor::ElementConversion> ToF64 for E {
    fn to_f64_lossy(self) -> f64 {
        self.elem::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    type B = Autodiff<NdArray>;

    #[test]
    fn head_shapes_follow_the_patch_size() {
        let c = SegConfig::for_encoder(768, 14, 16);
        assert_eq!(c.channels, vec![512, 256, 128, 64]);
        let c = SegConfig::for_encoder(64, 8, 4);
        assert_eq!(c.channels, vec![42, 21]);
        let head: SegHead<NdArray> = c.init(&Default::default());
        let out = head.forward(Tensor::zeros([3, 64, 64], &Default::default()));
        assert_eq!(out.dims(), [3, 1, 32, 32]);
    }

    #[test]
    fn mixed_loss_prefers_the_right_mask() {
        let d = Default::default();
        let y = Tensor::<NdArray, 4>::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [1, 1, 2, 2]), &d);
        let good = Tensor::<NdArray, 4>::from_data(TensorData::new(vec![4.0f32, -4.0, -4.0, 4.0], [1, 1, 2, 2]), &d);
        let bad = good.clone().neg();
        let (lg, lb) = (mixed_loss(good, y.clone(), 10.0, 2.0), mixed_loss(bad, y, 10.0, 2.0));
        let (lg, lb) = (lg.into_scalar(), lb.into_scalar());
        assert!(lg < 0.05 && lb > 3.0, "{lg} {lb}");
    }

    /// Tokens that carry a square's position: the token of each covered cell is all ones.
    fn toy(n: usize, seed: u64) -> (Rows, Rows) {
        use rand::Rng;
        let (g, d, s) = (4usize, 8usize, 8usize);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (r, c) = (rng.random_range(0..g - 1), rng.random_range(0..g - 1));
            let empty = rng.random_bool(0.25);
            for cell in 0..g * g {
                let on = !empty && (cell / g == r || cell / g == r + 1) && (cell % g == c || cell % g == c + 1);
                x.extend(std::iter::repeat_n(if on { 1.0f32 } else { -1.0 }, d));
            }
            for p in 0..s * s {
                let (pr, pc) = (p / s / 2, p % s / 2);
                let on = !empty && (pr == r || pr == r + 1) && (pc == c || pc == c + 1);
                y.push(f32::from(u8::from(on)));
            }
        }
        (Rows { n, width: g * g * d, values: x }, Rows { n, width: s * s, values: y })
    }

    fn dice(pred: &[Vec<bool>], truth: &Rows) -> f64 {
        let per = pred.iter().enumerate().map(|(i, p)| {
            let t: Vec<bool> = truth.row(i).iter().map(|&v| v > 0.5).collect();
            let inter = p.iter().zip(&t).filter(|(a, b)| **a && **b).count();
            let (np, nt) = (p.iter().filter(|v| **v).count(), t.iter().filter(|v| **v).count());
            if nt == 0 { f64::from(u8::from(np == 0)) } else { 2.0 * inter as f64 / (np + nt) as f64 }
        });
        per.sum::<f64>() / pred.len() as f64
    }

    #[test]
    fn learns_to_segment_squares_from_tokens() {
        let (x, y) = toy(64, 1);
        let (vx, vy) = toy(32, 2);
        let cfg = SegConfig { dim: 8, grid: 4, channels: vec![8] };
        let t =
            SegTrainConfig { lr: 1e-2, steps: 150, warmup: 10, batch_size: 16, eval_every: 25, ..Default::default() };
        let fit = train_segmenter::<B>(&Default::default(), &cfg, (&x, &y), (&vx, &vy), &t, &dice).unwrap();
        assert!(fit.best_score > 0.8, "{:?}", fit.history);
        let first = fit.history.first().map_or(0.0, |h| h.1);
        let last = fit.history.last().map_or(0.0, |h| h.1);
        assert!(last < first, "{:?}", fit.history);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let (x, y) = toy(4, 3);
        let cfg = SegConfig { dim: 8, grid: 4, channels: vec![8, 8] }; // wants 16² masks
        let r = train_segmenter::<B>(&Default::default(), &cfg, (&x, &y), (&x, &y), &SegTrainConfig::default(), &dice);
        assert!(matches!(r, Err(SegError::Shape(_))));
    }
}
