//! Full fine-tuning of spec §7.1: the whole encoder plus timm's `global_pool` → `fc_norm` →
//! `head` classifier trained end to end with SGD (momentum 0.9, no weight decay) under a
//! warmup-cosine schedule, the global gradient norm clipped at 1.0, `BCEWithLogits` (multi-label)
//! or cross-entropy (single-label), validated every `eval_every` steps with the best model kept.
//!
//! Training views are `RandomResizedCrop` (scale 0.08–1, ratio 3/4–4/3) plus a horizontal flip at
//! p = 0.5, drawn per step from a seeded RNG, and go through the same device-side resize and
//! normalisation as pre-training; evaluation views are the centre crops of [`super::features`].
//! Unlike the linear probe, `fc_norm` has a learnable affine here, and the position table is made
//! trainable (timm's `pos_embed` is a parameter initialised from the checkpoint).
//!
//! Deviations: no stochastic depth (`drop_path_rate = 0.1` in the official script) because the
//! encoder blocks have none, and the crop is resized bicubically (the pre-training resize) rather
//! than bilinearly. Both only change the regularisation, not what is measured.

use burn::module::{AutodiffModule, Module, Param};
use burn::nn::{LayerNorm, Linear, LinearConfig};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::tensor::activation::{log_sigmoid, log_softmax, sigmoid, softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use ecamp_loader::sample::{AugmentConfig, random_resized_crop};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::features::{CanvasBatch, FC_NORM_EPS, GrayImage, encoder_inputs};
use super::probe::{Objective, ProbeConfig, Rows};
use super::schedule::{Batches, BestOnValidation, validates_after};
use crate::augment::AugmentError;
use crate::net::init::layer_norm;
use crate::net::vit::Encoder;
use crate::train::optim::clip_global_norm;

/// An encoder with timm's classification head: mean of the patch tokens → `fc_norm` → `head`.
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    /// The image encoder (its final norm is unused, as in timm with `global_pool=True`).
    pub encoder: Encoder<B>,
    /// LayerNorm over the pooled features (eps 1e-6).
    pub fc_norm: LayerNorm<B>,
    /// `Linear(d, C)`.
    pub head: Linear<B>,
    /// Side of the encoder input.
    pub img_size: usize,
}

impl<B: Backend> Classifier<B> {
    /// Wraps `encoder` (for `img_size`² inputs) with a fresh head for `classes` outputs: weight
    /// ~ N(0, 2e-5) truncated at ±2σ, bias 0; `fc_norm` at γ = 1, β = 0; the position table made
    /// trainable.
    pub fn new(mut encoder: Encoder<B>, img_size: usize, classes: usize, seed: u64, device: &B::Device) -> Self {
        let dim = encoder.cls_token.dims()[2];
        encoder.pos_embed = Param::from_tensor(encoder.pos_embed.val());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let weight: Vec<f32> = (0..dim * classes)
            .map(|_| {
                let (u, v): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
                let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                (2e-5 * z.clamp(-2.0, 2.0)) as f32
            })
            .collect();
        let mut head = LinearConfig::new(dim, classes).init(device);
        // burn stores Linear weights as [d_in, d_out].
        let w: Tensor<B, 2> = Tensor::from_data(TensorData::new(weight, [classes, dim]), device);
        head.weight = Param::from_tensor(w.transpose());
        head.bias = Some(Param::from_tensor(Tensor::zeros([classes], device)));
        Self { encoder, fc_norm: layer_norm(dim, FC_NORM_EPS, device), head, img_size }
    }

    /// Logits `[n, C]` of encoder inputs `[n, 3, S, S]`.
    pub fn forward(&self, imgs: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head.forward(self.fc_norm.forward(self.encoder.pooled(imgs)))
    }
}

/// Fine-tuning hyper-parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FinetuneConfig {
    /// The SGD schedule, batches, validation interval and seed, as the linear probe's.
    pub schedule: ProbeConfig,
    /// Global gradient-norm limit.
    pub clip: f64,
    /// `RandomResizedCrop` area range.
    pub scale: (f64, f64),
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self { schedule: ProbeConfig { lr: 0.01, steps: 600, ..ProbeConfig::default() }, clip: 1.0, scale: (0.08, 1.0) }
    }
}

/// Why fine-tuning cannot run.
#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    /// Images and targets disagree, a set is empty, or a setting is out of range.
    #[error("fine-tune data: {0}")]
    Shape(String),
    /// An image could not be turned into encoder inputs.
    #[error("fine-tune images: {0}")]
    Augment(#[from] AugmentError),
    /// The backend could not hand back a tensor.
    #[error("fine-tune backend: {0}")]
    Backend(String),
}

/// A fine-tuned classifier and how it got there.
#[derive(Debug)]
pub struct FinetuneFit<B: Backend> {
    /// The model with the best validation score (inference mode).
    pub model: Classifier<B>,
    /// The step after which it was taken.
    pub best_step: usize,
    /// Its validation score.
    pub best_score: f64,
    /// `(step, mean training loss, validation score)` at every validation.
    pub history: Vec<(usize, f64, f64)>,
}

/// Labelled images: one target row per image.
#[derive(Debug, Clone, Copy)]
pub struct Labelled<'a> {
    /// The images.
    pub images: &'a [&'a GrayImage],
    /// Targets `[n, C]`: 0/1 with NaN for unknown (multi-label) or one-hot (single-label).
    pub targets: &'a Rows,
}

impl Labelled<'_> {
    fn check(&self, what: &str) -> Result<(), FinetuneError> {
        if self.images.is_empty() || self.images.len() != self.targets.n || self.targets.width == 0 {
            return Err(FinetuneError::Shape(format!(
                "{what}: {} images, {}×{} targets",
                self.images.len(),
                self.targets.n,
                self.targets.width
            )));
        }
        Ok(())
    }
}

/// Scores `[n, C]` (sigmoid or softmax of the logits) of the evaluation views of `images`.
pub fn predict<B: Backend>(
    model: &Classifier<B>,
    images: &[&GrayImage],
    batch: usize,
    objective: Objective,
    device: &B::Device,
) -> Result<Rows, FinetuneError> {
    let mut values = Vec::new();
    let mut width = 0;
    for chunk in images.chunks(batch.max(1)) {
        let x = encoder_inputs::<B>(device, &CanvasBatch::new(chunk).canvases(), model.img_size)?;
        let logits = model.forward(x);
        width = logits.dims()[1];
        let s = match objective {
            Objective::MultiLabel => sigmoid(logits),
            Objective::SingleLabel => softmax(logits, 1),
        };
        values.extend(s.into_data().into_vec::<f32>().map_err(|e| FinetuneError::Backend(format!("{e:?}")))?);
    }
    Ok(Rows { n: images.len(), width, values })
}

/// Mean loss over the known targets: BCE with logits (NaN targets left out) or cross-entropy.
fn loss<B: Backend>(logits: Tensor<B, 2>, targets: &Rows, objective: Objective) -> Tensor<B, 1> {
    let device = logits.device();
    let shape = [targets.n, targets.width];
    let known: Vec<f32> = targets.values.iter().map(|t| if t.is_nan() { 0.0 } else { 1.0 }).collect();
    let clean: Vec<f32> = targets.values.iter().map(|t| if t.is_nan() { 0.0 } else { *t }).collect();
    let count = known.iter().sum::<f32>().max(1.0);
    let t: Tensor<B, 2> = Tensor::from_data(TensorData::new(clean, shape), &device);
    match objective {
        Objective::MultiLabel => {
            let k: Tensor<B, 2> = Tensor::from_data(TensorData::new(known, shape), &device);
            let per = t.clone() * log_sigmoid(logits.clone()) + (t.neg() + 1.0) * log_sigmoid(logits.neg());
            (per * k).sum().neg() / count
        }
        Objective::SingleLabel => (t * log_softmax(logits, 1)).sum().neg() / targets.n.max(1) as f32,
    }
}

/// Fine-tunes `model` on `train`, keeping the model that `score(val scores, val targets)` rates
/// best (higher is better; NaN counts as worst; ties update, as the official multi-label loop).
pub fn finetune<B: AutodiffBackend>(
    device: &B::Device,
    mut model: Classifier<B>,
    train: Labelled,
    val: Labelled,
    objective: Objective,
    cfg: &FinetuneConfig,
    score: &dyn Fn(&Rows, &Rows) -> f64,
) -> Result<FinetuneFit<B::InnerBackend>, FinetuneError> {
    train.check("training set")?;
    val.check("validation set")?;
    let sgd = &cfg.schedule;
    if sgd.batch_size == 0 || sgd.steps == 0 || sgd.eval_every == 0 {
        return Err(FinetuneError::Shape("batch size, steps and eval_every must be positive".into()));
    }
    if !(cfg.scale.0 > 0.0 && cfg.scale.0 <= cfg.scale.1 && cfg.scale.1 <= 1.0) {
        return Err(FinetuneError::Shape(format!("crop scale range {:?} is not within (0, 1]", cfg.scale)));
    }
    let augment = AugmentConfig { scale: cfg.scale, ..AugmentConfig::default() };
    let mut rng = ChaCha8Rng::seed_from_u64(sgd.seed);
    let mut batches = Batches::new(train.images.len(), rng.random());
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(sgd.momentum).with_dampening(0.0)))
        .init::<B, Classifier<B>>();
    let mut kept = BestOnValidation::default();
    for step in 0..sgd.steps {
        let idx = batches.next_batch(sgd.batch_size);
        let images: Vec<&GrayImage> = idx.iter().map(|&i| train.images[i]).collect();
        let mut batch = CanvasBatch::new(&images);
        let views = images
            .iter()
            .map(|img| {
                let c = random_resized_crop(img.width, img.height, &augment, &mut rng);
                ((c.top, c.left, c.height, c.width), rng.random_bool(augment.flip_prob))
            })
            .collect();
        batch.set_views(views);
        let x = encoder_inputs::<B>(device, &batch.canvases(), model.img_size)?;
        let l = loss(model.forward(x), &train.targets.select(&idx), objective);
        kept.add_loss(l.clone().into_scalar().elem::<f64>());
        let mut grads = GradientsParams::from_grads(l.backward(), &model);
        clip_global_norm::<B, Classifier<B>>(&model, &mut grads, cfg.clip);
        model = optim.step(sgd.lr_at(step), model, grads);
        if validates_after(step, sgd.eval_every, sgd.steps) {
            let current = model.valid();
            let scores = predict(&current, val.images, sgd.batch_size, objective, device)?;
            kept.record(step, score(&scores, val.targets), current);
        }
    }
    let (model, best_step, best_score, history) = kept.finish(sgd.steps, || model.valid());
    Ok(FinetuneFit { model, best_step, best_score, history })
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};

    use super::*;
    use crate::config::EcampConfig;

    type B = Autodiff<NdArray>;

    /// 32×32 images: class 0 = a bright square in the left half, class 1 = a dark bar at the top.
    fn toy(n: usize, seed: u64) -> (Vec<GrayImage>, Rows) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut images, mut y) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (a, b) = (rng.random_bool(0.5), rng.random_bool(0.5));
            let mut pixels: Vec<u8> = (0..32 * 32).map(|_| rng.random_range(90..130)).collect();
            for r in 0..32 {
                for c in 0..32 {
                    if a && (8..20).contains(&r) && (2..14).contains(&c) {
                        pixels[r * 32 + c] = 240;
                    }
                    if b && r < 6 {
                        pixels[r * 32 + c] = 10;
                    }
                }
            }
            images.push(GrayImage { width: 32, height: 32, pixels });
            y.extend([f32::from(u8::from(a)), f32::from(u8::from(b))]);
        }
        (images, Rows { n, width: 2, values: y })
    }

    fn auc_like(s: &Rows, t: &Rows) -> f64 {
        // Fraction of correct 0.5-threshold decisions: enough to see learning.
        let hits = s.values.iter().zip(&t.values).filter(|(p, t)| (**p > 0.5) == (**t > 0.5)).count();
        hits as f64 / s.values.len() as f64
    }

    /// Fine-tunes a copy of `model` on `train` (validated on `val`) as a multi-label task.
    fn fit(
        model: &Classifier<B>,
        train: (&[&GrayImage], &Rows),
        val: (&[&GrayImage], &Rows),
        cfg: &FinetuneConfig,
    ) -> Result<FinetuneFit<NdArray>, FinetuneError> {
        let (train, val) = (Labelled { images: train.0, targets: train.1 }, Labelled { images: val.0, targets: val.1 });
        finetune::<B>(&Default::default(), model.clone(), train, val, Objective::MultiLabel, cfg, &auc_like)
    }

    #[test]
    fn fine_tuning_learns_and_is_reproducible() {
        let device = Default::default();
        let cfg = EcampConfig::tiny();
        let (ti, ty) = toy(96, 1);
        let (vi, vy) = toy(48, 2);
        let (tr, va): (Vec<&GrayImage>, Vec<&GrayImage>) = (ti.iter().collect(), vi.iter().collect());
        let schedule =
            ProbeConfig { steps: 80, warmup: 5, eval_every: 20, batch_size: 16, lr: 0.05, ..ProbeConfig::default() };
        let ft = FinetuneConfig { schedule, ..Default::default() };
        // One initial model for both runs: other tests draw from the backend's global RNG too.
        let initial = Classifier::new(cfg.init::<B>(&device).encoder, cfg.img_size, 2, 7, &device);
        let before = predict(&initial.valid(), &va, 16, Objective::MultiLabel, &device).unwrap();
        let before = auc_like(&before, &vy);
        let first = fit(&initial, (&tr, &ty), (&va, &vy), &ft).unwrap();
        assert!(first.best_score > before + 0.15 && first.best_score > 0.85, "{before} → {:?}", first.history);
        let again = fit(&initial, (&tr, &ty), (&va, &vy), &ft).unwrap();
        assert_eq!(first.history, again.history, "same seeds, same run");
    }

    #[test]
    fn nan_targets_carry_no_loss_and_bad_shapes_are_errors() {
        let device = Default::default();
        let logits: Tensor<NdArray, 2> = Tensor::from_data(TensorData::new(vec![3.0f32, -2.0], [1, 2]), &device);
        let t = Rows { n: 1, width: 2, values: vec![1.0, f32::NAN] };
        let l: f32 = loss(logits, &t, Objective::MultiLabel).into_scalar();
        assert!((l - (1.0 + (-3.0f32).exp()).ln()).abs() < 1e-6, "{l}");
        let tiny = EcampConfig::tiny();
        let model = Classifier::new(tiny.init::<B>(&device).encoder, tiny.img_size, 2, 7, &device);
        let (ti, ty) = toy(4, 1);
        let tr: Vec<&GrayImage> = ti.iter().collect();
        let short = Rows { n: 3, width: 2, values: ty.values[..6].to_vec() };
        let err = fit(&model, (&tr, &short), (&tr, &ty), &FinetuneConfig::default());
        assert!(matches!(err, Err(FinetuneError::Shape(_))), "{err:?}");
        let bad_scale = FinetuneConfig { scale: (0.0, 1.0), ..FinetuneConfig::default() };
        let err = fit(&model, (&tr, &ty), (&tr, &ty), &bad_scale);
        assert!(matches!(err, Err(FinetuneError::Shape(_))), "{err:?}");
    }
}
