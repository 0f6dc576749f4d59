//! The YOLOv3 detector of spec §7.3 on a frozen encoder's patch tokens (`Detection/train.py`,
//! `detector_backbone_vit.py`, MGCA's `ssl_detector.py` and `yolo_loss.py`).
//!
//! `det_head` Linear(d, d) on every patch token → `[n, d, g, g]` → three branches, each a 1×1 conv
//! and a ResNet v1.5 bottleneck (identity shortcut): (a) d→1024 at g, (b) d→512 then bilinear ×2
//! to 2g, (c) d→2048 with stride 2 to ⌈g/2⌉. MGCA's YOLOv3 head then runs top-down: the coarse
//! "embedding" (six conv-BN-LeakyReLU(0.1) layers alternating 1×1 and 3×3 — `embed_layers`, fewer
//! allowed for tiny tests — then a 1×1 conv to 3·(5+1) = 18 channels) on (c); its fifth layer →
//! 1×1 conv-BN-LeakyReLU → nearest ×2, concatenated with (a), feeds the middle embedding; the same
//! again into the fine one with (b).
//! Maps come coarsest first, matching the anchors (416-scale anchors × S/416, largest on the
//! coarsest grid). Channels are the spec's at d = 768 and scale with d ([`DetectConfig::for_encoder`]).
//!
//! Loss: MGCA's `YOLOLoss` summed over the three scales. Each box is assigned, on every scale, to
//! the anchor of best shape IoU at the cell holding its centre; with `N = n·3·h·w` cells,
//! `λ_xy·Σ_pos[(σ(x)−tx)² + (σ(y)−ty)²]/N + λ_wh·Σ_pos[(w−tw)² + (h−th)²]/N` (`tw = ln(bw/aw)`)
//! `+ λ_conf·(Σ_pos −ln σ(c) + ½·Σ_noobj −ln(1−σ(c)))/N + λ_cls·Σ_pos −ln σ(cls)/N`, where the
//! no-object cells exclude anchors whose shape IoU with a box exceeds 0.5 at its cell. Inference:
//! boxes with objectness ≥ `conf_thres`, greedy NMS at IoU `nms_iou`. Shape and NMS IoUs use MGCA's
//! `bbox_iou` (the `+1` pixel convention) so that assignments and suppression match the original.
//!
//! Choices where the spec is silent or that deviate from it, and why:
//! * x/y use MSE on the sigmoid offsets as the spec states (MGCA's file applies BCE there).
//! * The positive anchor is also removed from the no-object term (MGCA only removes anchors with
//!   shape IoU > 0.5, so a positive whose best anchor has IoU ≤ 0.5 got both targets).
//! * The score of a box is its objectness, as MGCA's `non_max_suppression` filters, sorts and
//!   reports it (`scores=out[:, 4]`); with one class the class probability plays no part.
//! * BCE uses `log σ` (stable) instead of torch's `BCELoss` on probabilities clamped at −100.
//! * A box centre on the far image edge is put in the last cell (torch would index out of range).
//! * Gradients are clipped by their global norm (torch `clip_grad_norm_`), not burn's per-tensor
//!   norm; AdamW decays every parameter (as `torch.optim.AdamW(model.parameters())`), ε = 1e-8.
//! * `det_head` is xavier-uniform with a zero bias (assumed: the ViT `_init_weights` rule for every
//!   Linear; the detector's source is not in the spec); the convolutions
//!   keep PyTorch's default initialisation, the branch 1×1 convs have a bias (`nn.Conv2d` default),
//!   the bottleneck and embedding convs none (ResNet / MGCA).
//! * Nearest ×2 of the coarse map gives `2⌈g/2⌉` rows; for odd g it is cropped to g.
//! * Convolutions run as matmuls (1×1, and 3×3 by im2col) because burn-ndarray's conv backward is
//!   slow; the sums are those of the direct convolution.
//! * Tokens are computed once by the caller (the encoder is frozen and RSNA detection applies no
//!   augmentation).

use burn::config::Config;
use burn::module::{AutodiffModule, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, PaddingConfig2d};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::{leaky_relu, log_sigmoid, relu, sigmoid};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::PadMode;
use burn::tensor::{ElementConversion, Tensor, TensorData};

use super::probe::Rows;
use super::schedule::{Batches, BestOnValidation, validates_after};
use crate::net::init::linear;
use crate::net::sr::{conv3x3, upsample2x_bilinear};
use crate::train::optim::clip_global_norm;

/// YOLOv3's anchors `(w, h)` at a 416-pixel input, coarsest scale first.
pub const ANCHORS_416: [[[f32; 2]; 3]; 3] = [
    [[116.0, 90.0], [156.0, 198.0], [373.0, 326.0]],
    [[30.0, 61.0], [62.0, 45.0], [59.0, 119.0]],
    [[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]],
];

/// Anchors per scale.
const ANCHORS: usize = 3;
/// Values per anchor: x, y, w, h, objectness and the one class.
const ATTRS: usize = 6;
/// LeakyReLU slope of the YOLO head.
const LEAK: f64 = 0.1;

/// A detection: `(score, [x0, y0, x1, y1])` in input-image pixels.
pub type Detection = (f32, [f32; 4]);

/// A validation scorer: `(detections, ground-truth boxes)` per image → score (higher is better).
pub type DetectScore<'a> = dyn Fn(&[Vec<Detection>], &[Vec<[f32; 4]>]) -> f64 + 'a;

/// Sizes and loss weights of the detector (defaults: the spec's ViT-B/16 numbers).
#[derive(Config, Debug)]
pub struct DetectConfig {
    /// Encoder width d.
    pub dim: usize,
    /// Patch grid side g.
    pub grid: usize,
    /// Input image side S in pixels (g · patch); anchors are scaled by S/416.
    pub image_side: usize,
    /// Channels of branch (a) at g×g.
    #[config(default = 1024)]
    pub mid_channels: usize,
    /// Channels of branch (b) at 2g×2g.
    #[config(default = 512)]
    pub fine_channels: usize,
    /// Channels of branch (c) at ⌈g/2⌉×⌈g/2⌉.
    #[config(default = 2048)]
    pub coarse_channels: usize,
    /// Bottleneck expansion (8 for the 1 %/10 % runs, 4 for 100 %): inner width = channels / expansion.
    #[config(default = 8)]
    pub expansion: usize,
    /// YOLO embedding filters `[1×1, 3×3]` on the coarse grid.
    #[config(default = "[512, 1024]")]
    pub coarse_filters: [usize; 2],
    /// YOLO embedding filters on the middle grid.
    #[config(default = "[256, 512]")]
    pub mid_filters: [usize; 2],
    /// YOLO embedding filters on the fine grid.
    #[config(default = "[128, 256]")]
    pub fine_filters: [usize; 2],
    /// conv-BN-LeakyReLU layers per embedding before the output conv (rounded up to even, ≥ 2).
    #[config(default = 6)]
    pub embed_layers: usize,
    /// Anchors whose shape IoU with a box exceeds this get no no-object loss at its cell.
    #[config(default = 0.5)]
    pub ignore_iou: f32,
    /// Weight of the x/y loss.
    #[config(default = 2.5)]
    pub lambda_xy: f32,
    /// Weight of the w/h loss.
    #[config(default = 2.5)]
    pub lambda_wh: f32,
    /// Weight of the objectness loss.
    #[config(default = 1.0)]
    pub lambda_conf: f32,
    /// Weight of the class loss.
    #[config(default = 1.0)]
    pub lambda_cls: f32,
    /// Factor of the no-object part of the objectness loss.
    #[config(default = 0.5)]
    pub noobj_weight: f32,
}

impl DetectConfig {
    /// The detector for an encoder of width `dim` on a `grid`² patch grid of an `image_side`-pixel
    /// input: the spec's channels at d = 768, scaled by d/768 otherwise (rounded to a multiple of
    /// 8, at least 16), expansion 8, six embedding layers.
    pub fn for_encoder(dim: usize, grid: usize, image_side: usize) -> Self {
        let s = |c: usize| (((c * dim) as f64 / 768.0 / 8.0).round() as usize * 8).max(16);
        Self::new(dim, grid, image_side)
            .with_mid_channels(s(1024))
            .with_fine_channels(s(512))
            .with_coarse_channels(s(2048))
            .with_coarse_filters([s(512), s(1024)])
            .with_mid_filters([s(256), s(512)])
            .with_fine_filters([s(128), s(256)])
    }

    /// Grid sides of the three output maps, coarsest first: `[⌈g/2⌉, g, 2g]`.
    pub fn grids(&self) -> [usize; 3] {
        [self.grid.div_ceil(2), self.grid, 2 * self.grid]
    }

    /// Anchors `(w, h)` in input pixels of scale `k` (0 = coarsest).
    pub fn anchors_px(&self, k: usize) -> [[f32; 2]; 3] {
        let f = self.image_side as f32 / 416.0;
        ANCHORS_416[k.min(2)].map(|[w, h]| [w * f, h * f])
    }

    /// A freshly initialised detector.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Detector<B> {
        let d = self.dim;
        let branch = |o: usize| Conv2dConfig::new([d, o], [1, 1]).init(device);
        let e = self.expansion.max(1);
        let [cf, mf, ff] = [self.coarse_filters, self.mid_filters, self.fine_filters];
        Detector {
            det_head: linear(d, d, true, device),
            mid_branch: branch(self.mid_channels),
            mid_block: Bottleneck::new(self.mid_channels, e, device),
            fine_branch: branch(self.fine_channels),
            fine_block: Bottleneck::new(self.fine_channels, e, device),
            coarse_branch: branch(self.coarse_channels),
            coarse_block: Bottleneck::new(self.coarse_channels, e, device),
            coarse_embed: Embedding::new(self.coarse_channels, cf, self.embed_layers, device),
            mid_lateral: ConvBn::new(cf[0], mf[0], 1, device),
            mid_embed: Embedding::new(mf[0] + self.mid_channels, mf, self.embed_layers, device),
            fine_lateral: ConvBn::new(mf[0], ff[0], 1, device),
            fine_embed: Embedding::new(ff[0] + self.fine_channels, ff, self.embed_layers, device),
            cfg: self.clone(),
        }
    }
}

/// A bias-free convolution (1×1 or 3×3, stride 1) followed by BatchNorm.
#[derive(Module, Debug)]
pub struct ConvBn<B: Backend> {
    /// The convolution.
    pub conv: Conv2d<B>,
    /// Its batch normalisation.
    pub bn: BatchNorm<B>,
}

impl<B: Backend> ConvBn<B> {
    /// `i → o` channels with a `k`×`k` kernel (1 or 3), same padding.
    fn new(i: usize, o: usize, k: usize, device: &B::Device) -> Self {
        let p = k / 2;
        let conv = Conv2dConfig::new([i, o], [k, k])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(false)
            .init(device);
        Self { conv, bn: BatchNormConfig::new(o).init(device) }
    }

    /// conv → BatchNorm (no activation).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.bn.forward(conv(&self.conv, x))
    }
}

/// ResNet v1.5 bottleneck with an identity shortcut: 1×1 → 3×3 → 1×1, each with BatchNorm.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    /// 1×1 reduction to `channels / expansion`, then ReLU.
    pub conv1: ConvBn<B>,
    /// 3×3 at the reduced width, then ReLU.
    pub conv2: ConvBn<B>,
    /// 1×1 back to `channels`, added to the input, then ReLU.
    pub conv3: ConvBn<B>,
}

impl<B: Backend> Bottleneck<B> {
    /// A bottleneck keeping `c` channels.
    fn new(c: usize, expansion: usize, device: &B::Device) -> Self {
        let w = (c / expansion).max(1);
        Self {
            conv1: ConvBn::new(c, w, 1, device),
            conv2: ConvBn::new(w, w, 3, device),
            conv3: ConvBn::new(w, c, 1, device),
        }
    }

    /// `[n, c, h, w]` → `[n, c, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = relu(self.conv1.forward(x.clone()));
        let y = relu(self.conv2.forward(y));
        relu(self.conv3.forward(y) + x)
    }
}

/// A YOLOv3 "embedding": conv-BN-LeakyReLU layers alternating 1×1 and 3×3, then a 1×1 conv out.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    /// The conv-BN-LeakyReLU layers.
    pub layers: Vec<ConvBn<B>>,
    /// The 1×1 output conv (with bias) to 3·(5+1) channels.
    pub out: Conv2d<B>,
}

impl<B: Backend> Embedding<B> {
    /// `input` channels in, `filters = [1×1 width, 3×3 width]`, `layers` rounded up to even ≥ 2.
    fn new(input: usize, filters: [usize; 2], layers: usize, device: &B::Device) -> Self {
        let layers = layers.max(2).div_ceil(2) * 2;
        let mut c = input;
        let layers = (0..layers)
            .map(|i| {
                let (o, k) = if i % 2 == 0 { (filters[0], 1) } else { (filters[1], 3) };
                let l = ConvBn::new(c, o, k, device);
                c = o;
                l
            })
            .collect();
        Self { layers, out: Conv2dConfig::new([c, ANCHORS * ATTRS], [1, 1]).init(device) }
    }

    /// The raw map and the branch output (the second-to-last layer, MGCA's index 4) fed upwards.
    pub fn forward(&self, mut x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let tap = self.layers.len().saturating_sub(2);
        let mut branch = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            x = leaky_relu(l.forward(x), LEAK);
            if i == tap {
                branch = x.clone();
            }
        }
        (conv(&self.out, x), branch)
    }
}

/// The detector: `det_head`, the three branches and the YOLOv3 head.
#[derive(Module, Debug)]
pub struct Detector<B: Backend> {
    /// The one trainable layer on the tokens.
    pub det_head: Linear<B>,
    /// Branch (a): 1×1 conv at g×g.
    pub mid_branch: Conv2d<B>,
    /// Branch (a)'s bottleneck.
    pub mid_block: Bottleneck<B>,
    /// Branch (b): 1×1 conv before the bilinear ×2.
    pub fine_branch: Conv2d<B>,
    /// Branch (b)'s bottleneck at 2g×2g.
    pub fine_block: Bottleneck<B>,
    /// Branch (c): 1×1 conv with stride 2.
    pub coarse_branch: Conv2d<B>,
    /// Branch (c)'s bottleneck at ⌈g/2⌉.
    pub coarse_block: Bottleneck<B>,
    /// YOLO embedding on the coarse grid.
    pub coarse_embed: Embedding<B>,
    /// Coarse → middle 1×1 conv-BN-LeakyReLU before the nearest ×2.
    pub mid_lateral: ConvBn<B>,
    /// YOLO embedding on the middle grid.
    pub mid_embed: Embedding<B>,
    /// Middle → fine 1×1 conv-BN-LeakyReLU before the nearest ×2.
    pub fine_lateral: ConvBn<B>,
    /// YOLO embedding on the fine grid.
    pub fine_embed: Embedding<B>,
    #[module(skip)]
    cfg: DetectConfig,
}

impl<B: Backend> Detector<B> {
    /// The configuration it was built from.
    pub fn config(&self) -> &DetectConfig {
        &self.cfg
    }

    /// Patch tokens `[n, g², d]` → raw maps `[n, 18, s, s]` for `s` in [`DetectConfig::grids`]
    /// (coarsest first); channel `6a + k` is anchor `a`'s x, y, w, h, objectness, class logit.
    /// Panics on other token shapes (as burn's layers do); [`Self::loss`] and [`Self::detect`] check.
    pub fn forward(&self, tokens: Tensor<B, 3>) -> Vec<Tensor<B, 4>> {
        let [n, _, d] = tokens.dims();
        let g = self.cfg.grid;
        let x = self.det_head.forward(tokens).swap_dims(1, 2).reshape([n, d, g, g]);
        let mid = self.mid_block.forward(conv(&self.mid_branch, x.clone()));
        let fine = self.fine_block.forward(upsample2x_bilinear(conv(&self.fine_branch, x.clone())));
        let coarse = self.coarse_block.forward(conv(&self.coarse_branch, subsample2(x)));
        let (out0, b0) = self.coarse_embed.forward(coarse);
        let up = upsample2x_nearest(leaky_relu(self.mid_lateral.forward(b0), LEAK)).narrow(2, 0, g).narrow(3, 0, g);
        let (out1, b1) = self.mid_embed.forward(Tensor::cat(vec![up, mid], 1));
        let up = upsample2x_nearest(leaky_relu(self.fine_lateral.forward(b1), LEAK));
        let (out2, _) = self.fine_embed.forward(Tensor::cat(vec![up, fine], 1));
        vec![out0, out1, out2]
    }

    /// The YOLO loss of tokens `[n, g², d]` against boxes `[x0, y0, x1, y1]` (input pixels) per image.
    pub fn loss(&self, tokens: Tensor<B, 3>, boxes: &[Vec<[f32; 4]>]) -> Result<Tensor<B, 1>, DetectError> {
        self.check_dims(tokens.dims())?;
        let n = tokens.dims()[0];
        if boxes.len() != n {
            return Err(DetectError::Shape(format!("{n} token rows but {} box lists", boxes.len())));
        }
        check_boxes(boxes)?;
        let device = tokens.device();
        let c = &self.cfg;
        let mut total: Option<Tensor<B, 1>> = None;
        for (k, map) in self.forward(tokens).into_iter().enumerate() {
            let [n, _, h, w] = map.dims();
            let t = build_targets(boxes, h, c.anchors_px(k), c.image_side as f32, c.ignore_iou);
            let p = map.reshape([n, ANCHORS, ATTRS, h, w]);
            let ch = |i: usize| p.clone().narrow(2, i, 1).reshape([n, ANCHORS, h, w]);
            let host = |v: Vec<f32>| Tensor::<B, 4>::from_data(TensorData::new(v, [n, ANCHORS, h, w]), &device);
            let (mask, noobj) = (host(t.mask), host(t.noobj));
            let sq = |a: Tensor<B, 4>, b: Vec<f32>| ((a - host(b)).square() * mask.clone()).sum();
            let xy = sq(sigmoid(ch(0)), t.tx) + sq(sigmoid(ch(1)), t.ty);
            let wh = sq(ch(2), t.tw) + sq(ch(3), t.th);
            let conf = (log_sigmoid(ch(4)).neg() * mask.clone()).sum()
                + (log_sigmoid(ch(4).neg()).neg() * noobj).sum().mul_scalar(c.noobj_weight);
            let cls = (log_sigmoid(ch(5)).neg() * mask).sum();
            let scale = (n * ANCHORS * h * w) as f32;
            let l = (xy.mul_scalar(c.lambda_xy)
                + wh.mul_scalar(c.lambda_wh)
                + conf.mul_scalar(c.lambda_conf)
                + cls.mul_scalar(c.lambda_cls))
            .div_scalar(scale);
            total = Some(match total {
                Some(t) => t + l,
                None => l,
            });
        }
        total.ok_or_else(|| DetectError::Shape("no output maps".into()))
    }

    /// Boxes of tokens `[n, g², d]`: objectness ≥ `conf_thres`, then NMS at IoU `nms_iou`, best first.
    pub fn detect(
        &self,
        tokens: Tensor<B, 3>,
        conf_thres: f32,
        nms_iou: f32,
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        self.check_dims(tokens.dims())?;
        let raw = self.decode(self.forward(tokens), conf_thres)?;
        Ok(raw.into_iter().map(|d| nms(d, nms_iou)).collect())
    }

    /// [`Self::detect`] on host token rows (`[n, g²·d]`), `batch` images at a time.
    pub fn predict(
        &self,
        tokens: &Rows,
        batch: usize,
        conf_thres: f32,
        nms_iou: f32,
        device: &B::Device,
    ) -> Result<Vec<Vec<Detection>>, DetectError> {
        self.check_width(tokens)?;
        let mut out = Vec::with_capacity(tokens.n);
        for start in (0..tokens.n).step_by(batch.max(1)) {
            let idx: Vec<usize> = (start..(start + batch.max(1)).min(tokens.n)).collect();
            out.extend(self.detect(tokens_tensor(&tokens.select(&idx), self.cfg.dim, device), conf_thres, nms_iou)?);
        }
        Ok(out)
    }

    /// Tokens `[n, g², d]`, or a shape error.
    fn check_dims(&self, dims: [usize; 3]) -> Result<(), DetectError> {
        let (g, d) = (self.cfg.grid, self.cfg.dim);
        if dims[1] != g * g || dims[2] != d {
            return Err(DetectError::Shape(format!("tokens {dims:?}, expected [n, {}, {d}]", g * g)));
        }
        Ok(())
    }

    /// `width == g²·d`, or a shape error.
    fn check_width(&self, tokens: &Rows) -> Result<(), DetectError> {
        let want = self.cfg.grid * self.cfg.grid * self.cfg.dim;
        if tokens.width != want {
            return Err(DetectError::Shape(format!("token rows of width {}, expected {want}", tokens.width)));
        }
        Ok(())
    }

    /// Raw maps → every anchor box with objectness ≥ `conf_thres`, per image (before NMS).
    fn decode(&self, maps: Vec<Tensor<B, 4>>, conf_thres: f32) -> Result<Vec<Vec<Detection>>, DetectError> {
        let n = maps.first().map_or(0, |m| m.dims()[0]);
        let mut out = vec![Vec::new(); n];
        let side = self.cfg.image_side as f32;
        for (k, map) in maps.into_iter().enumerate() {
            let [_, _, h, w] = map.dims();
            let v = map.into_data().into_vec::<f32>().map_err(|e| DetectError::Backend(format!("{e:?}")))?;
            let (sx, sy) = (side / w as f32, side / h as f32);
            let anchors = self.cfg.anchors_px(k);
            for (b, dets) in out.iter_mut().enumerate() {
                for (a, anchor) in anchors.iter().enumerate() {
                    let at = |c: usize, j: usize, i: usize| v[(((b * ANCHORS + a) * ATTRS + c) * h + j) * w + i];
                    for j in 0..h {
                        for i in 0..w {
                            let conf = sig(at(4, j, i));
                            if conf.is_nan() || conf < conf_thres {
                                continue;
                            }
                            let cx = (sig(at(0, j, i)) + i as f32) * sx;
                            let cy = (sig(at(1, j, i)) + j as f32) * sy;
                            let (bw, bh) = (at(2, j, i).exp() * anchor[0], at(3, j, i).exp() * anchor[1]);
                            dets.push((conf, [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0]));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Any conv of this module (1×1, or 3×3 with padding 1; stride 1) as matmuls.
fn conv<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [out, _, k, _] = conv.weight.dims();
    if k == 3 {
        return conv3x3(conv, x);
    }
    let [n, c, h, w] = x.dims();
    let y = conv.weight.val().reshape([1, out, c]).matmul(x.reshape([n, c, h * w])).reshape([n, out, h, w]);
    match &conv.bias {
        Some(b) => y + b.val().reshape([1, out, 1, 1]),
        None => y,
    }
}

/// Every second row and column from the first (what a 1×1 conv with stride 2 sees): `⌈h/2⌉×⌈w/2⌉`.
fn subsample2<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let x =
        if h % 2 == 1 || w % 2 == 1 { x.pad([(0, h2 * 2 - h), (0, w2 * 2 - w)], PadMode::Constant(0.0)) } else { x };
    x.reshape([n, c, h2, 2, w2, 2]).narrow(3, 0, 1).narrow(5, 0, 1).reshape([n, c, h2, w2])
}

/// `nn.Upsample(scale_factor=2, mode='nearest')` as a broadcast (differentiable on every backend).
fn upsample2x_nearest<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1]).expand([n, c, h, 2, w, 2]).reshape([n, c, 2 * h, 2 * w])
}

/// Loss targets of one scale, each `n·3·s·s` in `[image, anchor, row, column]` order.
#[derive(Debug, Clone, PartialEq)]
struct Targets {
    /// 1 at the assigned anchor of each box.
    mask: Vec<f32>,
    /// 1 where the no-object loss applies.
    noobj: Vec<f32>,
    /// Centre offset in the cell, x.
    tx: Vec<f32>,
    /// Centre offset in the cell, y.
    ty: Vec<f32>,
    /// `ln(box w / anchor w)`.
    tw: Vec<f32>,
    /// `ln(box h / anchor h)`.
    th: Vec<f32>,
}

/// MGCA's `get_target` on an `s`×`s` grid of an image of side `side` pixels.
fn build_targets(boxes: &[Vec<[f32; 4]>], s: usize, anchors_px: [[f32; 2]; 3], side: f32, ignore: f32) -> Targets {
    let len = boxes.len() * ANCHORS * s * s;
    let mut t = Targets {
        mask: vec![0.0; len],
        noobj: vec![1.0; len],
        tx: vec![0.0; len],
        ty: vec![0.0; len],
        tw: vec![0.0; len],
        th: vec![0.0; len],
    };
    let f = s as f32 / side;
    let anchors = anchors_px.map(|[w, h]| [w * f, h * f]);
    for (b, list) in boxes.iter().enumerate() {
        for &[x0, y0, x1, y1] in list {
            let (gx, gy, gw, gh) = ((x0 + x1) / 2.0 * f, (y0 + y1) / 2.0 * f, (x1 - x0) * f, (y1 - y0) * f);
            if !(gw > 0.0 && gh > 0.0) {
                continue;
            }
            let cell = |g: f32| (g.floor().max(0.0) as usize).min(s - 1);
            let (gi, gj) = (cell(gx), cell(gy));
            let at = |a: usize| ((b * ANCHORS + a) * s + gj) * s + gi;
            let ious = anchors.map(|[aw, ah]| shape_iou(gw, gh, aw, ah));
            let mut best = 0;
            for (a, &iou) in ious.iter().enumerate() {
                if iou > ignore {
                    t.noobj[at(a)] = 0.0;
                }
                if iou > ious[best] {
                    best = a;
                }
            }
            let k = at(best);
            t.mask[k] = 1.0;
            t.noobj[k] = 0.0;
            t.tx[k] = gx - gi as f32;
            t.ty[k] = gy - gj as f32;
            t.tw[k] = (gw / anchors[best][0] + 1e-16).ln();
            t.th[k] = (gh / anchors[best][1] + 1e-16).ln();
        }
    }
    t
}

/// MGCA's `bbox_iou` of `[0, 0, w, h]` boxes (the `+1` convention).
fn shape_iou(w1: f32, h1: f32, w2: f32, h2: f32) -> f32 {
    let inter = (w1.min(w2) + 1.0) * (h1.min(h2) + 1.0);
    inter / ((w1 + 1.0) * (h1 + 1.0) + (w2 + 1.0) * (h2 + 1.0) - inter + 1e-16)
}

/// MGCA's `bbox_iou` of two `[x0, y0, x1, y1]` boxes (inclusive pixel ends: `+1`).
pub fn box_iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    let inter = iw * ih;
    let area = |r: [f32; 4]| (r[2] - r[0] + 1.0) * (r[3] - r[1] + 1.0);
    inter / (area(a) + area(b) - inter + 1e-16)
}

/// Greedy NMS: best score first, dropping boxes with [`box_iou`] ≥ `iou` to a kept one.
pub fn nms(mut dets: Vec<Detection>, iou: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut keep: Vec<Detection> = Vec::new();
    for d in dets {
        if keep.iter().all(|k| box_iou(k.1, d.1) < iou) {
            keep.push(d);
        }
    }
    keep
}

fn sig(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Every coordinate finite and every box of positive width and height.
fn check_boxes(boxes: &[Vec<[f32; 4]>]) -> Result<(), DetectError> {
    for (i, list) in boxes.iter().enumerate() {
        for (j, b) in list.iter().enumerate() {
            if !(b.iter().all(|v| v.is_finite()) && b[2] > b[0] && b[3] > b[1]) {
                return Err(DetectError::Box(format!("image {i}, box {j}: {b:?}")));
            }
        }
    }
    Ok(())
}

/// Tokens `[n, L·d]` as a tensor `[n, L, d]`.
fn tokens_tensor<B: Backend>(rows: &Rows, dim: usize, device: &B::Device) -> Tensor<B, 3> {
    Tensor::from_data(TensorData::new(rows.values.clone(), [rows.n, rows.width / dim.max(1), dim]), device)
}

/// Training settings of the detector (spec 1 %: lr 5e-4, batch 96, 3000 steps, warmup 5).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetectTrainConfig {
    /// Peak AdamW learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
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
    /// Global gradient-norm clip (0 = none).
    pub clip: f64,
    /// Objectness threshold at validation.
    pub conf_thres: f32,
    /// NMS IoU at validation.
    pub nms_iou: f32,
}

impl Default for DetectTrainConfig {
    fn default() -> Self {
        Self {
            lr: 5e-4,
            weight_decay: 0.05,
            steps: 3000,
            warmup: 5,
            batch_size: 96,
            eval_every: 100,
            seed: 42,
            clip: 1.0,
            conf_thres: 0.5,
            nms_iou: 0.5,
        }
    }
}

impl DetectTrainConfig {
    /// Warmup then cosine to zero, stepped before the optimizer as the official scheduler.
    pub fn lr_at(&self, step: usize) -> f64 {
        super::schedule::warmup_cosine(self.lr, self.warmup, self.steps, step)
    }
}

/// Why the detector cannot be trained or run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DetectError {
    /// Tokens and boxes disagree, a set is empty or a setting is zero.
    #[error("detection data: {0}")]
    Shape(String),
    /// A box is not finite or has no area.
    #[error("detection box: {0}")]
    Box(String),
    /// The backend could not hand back a tensor.
    #[error("detection backend: {0}")]
    Backend(String),
}

/// A trained detector and how it got there.
#[derive(Debug)]
pub struct DetectorFit<B: Backend> {
    /// The detector with the best validation score (inference mode).
    pub model: Detector<B>,
    /// The step after which it was taken.
    pub best_step: usize,
    /// Its validation score.
    pub best_score: f64,
    /// `(step, mean training loss, validation score)` at every validation.
    pub history: Vec<(usize, f64, f64)>,
}

/// Trains the detector on `(tokens, boxes)` and keeps the one `score(detections, truth)` rates
/// best on the validation set (higher is better, NaN worst; ties go to the later one).
pub fn train_detector<B: AutodiffBackend>(
    device: &B::Device,
    cfg: &DetectConfig,
    train: (&Rows, &[Vec<[f32; 4]>]),
    val: (&Rows, &[Vec<[f32; 4]>]),
    t: &DetectTrainConfig,
    score: &DetectScore<'_>,
) -> Result<DetectorFit<B::InnerBackend>, DetectError> {
    let ((x, y), (vx, vy)) = (train, val);
    let width = cfg.grid * cfg.grid * cfg.dim;
    let ok = x.n > 0 && vx.n > 0 && x.n == y.len() && vx.n == vy.len() && x.width == width && vx.width == width;
    if !ok || t.batch_size == 0 || t.steps == 0 || t.eval_every == 0 {
        return Err(DetectError::Shape(format!(
            "train {}×{} tokens / {} box lists, validation {}×{} / {}; expected width {width}, positive \
             batch size, steps and eval_every",
            x.n,
            x.width,
            y.len(),
            vx.n,
            vx.width,
            vy.len()
        )));
    }
    check_boxes(y)?;
    check_boxes(vy)?;
    B::seed(device, t.seed);
    let mut model: Detector<B> = cfg.init(device);
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(t.weight_decay as f32)
        .init::<B, Detector<B>>();
    let mut batches = Batches::new(x.n, t.seed);
    let mut kept = BestOnValidation::default();
    for step in 0..t.steps {
        let batch = batches.next_batch(t.batch_size);
        let boxes: Vec<Vec<[f32; 4]>> = batch.iter().map(|&i| y[i].clone()).collect();
        let loss = model.loss(tokens_tensor(&x.select(&batch), cfg.dim, device), &boxes)?;
        kept.add_loss(loss.clone().into_scalar().elem::<f64>());
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        if t.clip > 0.0 {
            clip_global_norm::<B, Detector<B>>(&model, &mut grads, t.clip);
        }
        model = optim.step(t.lr_at(step), model, grads);
        if validates_after(step, t.eval_every, t.steps) {
            let valid = model.valid();
            let s = score(&valid.predict(vx, t.batch_size, t.conf_thres, t.nms_iou, device)?, vy);
            kept.record(step, s, valid);
        }
    }
    let (model, best_step, best_score, history) = kept.finish(t.steps, || model.valid());
    Ok(DetectorFit { model, best_step, best_score, history })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use rand::Rng;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    type B = Autodiff<NdArray>;

    #[test]
    fn channels_and_map_shapes() {
        let base = DetectConfig::for_encoder(768, 14, 224);
        assert_eq!((base.mid_channels, base.fine_channels, base.coarse_channels), (1024, 512, 2048));
        assert_eq!((base.coarse_filters, base.mid_filters, base.fine_filters), ([512, 1024], [256, 512], [128, 256]));
        assert_eq!((base.expansion, base.embed_layers, base.grids()), (8, 6, [7, 14, 28]));
        assert!((base.anchors_px(0)[0][0] - 116.0 * 224.0 / 416.0).abs() < 1e-4);
        let tiny = DetectConfig::for_encoder(64, 8, 32);
        assert_eq!((tiny.mid_channels, tiny.fine_channels, tiny.coarse_channels), (88, 40, 168));
        assert_eq!((tiny.coarse_filters, tiny.mid_filters, tiny.fine_filters), ([40, 88], [24, 40], [16, 24]));
        let dev = Default::default();
        let m: Detector<NdArray> = tiny.init(&dev);
        let dims: Vec<_> = m.forward(Tensor::zeros([2, 64, 64], &dev)).iter().map(|t| t.dims()).collect();
        assert_eq!(dims, vec![[2, 18, 4, 4], [2, 18, 8, 8], [2, 18, 16, 16]]);
        // Odd grids: the coarse map is ⌈g/2⌉ and its upsampling is cropped back to g.
        let odd = DetectConfig::for_encoder(64, 7, 28).with_embed_layers(2);
        let m: Detector<NdArray> = odd.init(&dev);
        let dims: Vec<_> = m.forward(Tensor::zeros([1, 49, 64], &dev)).iter().map(|t| t.dims()).collect();
        assert_eq!(dims, vec![[1, 18, 4, 4], [1, 18, 7, 7], [1, 18, 14, 14]]);
    }

    #[test]
    fn matmul_convs_equal_burns() {
        let dev = Default::default();
        let x = Tensor::<NdArray, 4>::random([2, 5, 6, 6], burn::tensor::Distribution::Normal(0.0, 1.0), &dev);
        let c1 = Conv2dConfig::new([5, 7], [1, 1]).init::<NdArray>(&dev);
        assert!((conv(&c1, x.clone()) - c1.forward(x.clone())).abs().max().into_scalar() < 1e-5);
        let strided = Conv2dConfig::new([5, 7], [1, 1]).with_stride([2, 2]).init::<NdArray>(&dev);
        let odd = x.clone().narrow(2, 0, 5).narrow(3, 0, 5);
        let diff = (conv(&strided, subsample2(odd.clone())) - strided.forward(odd)).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
        let up = upsample2x_nearest(x.clone());
        let back = up.clone().narrow(2, 3, 1).narrow(3, 5, 1) - x.narrow(2, 1, 1).narrow(3, 2, 1);
        assert!(back.abs().max().into_scalar() < 1e-7);
    }

    #[test]
    fn a_box_goes_to_its_cell_and_best_anchor() {
        let cfg = DetectConfig::for_encoder(64, 8, 32);
        // Centre (14, 20), 12×8 px: coarse grid 4 (8-px cells) → cell (row 2, col 1).
        let boxes = vec![vec![], vec![[8.0, 16.0, 20.0, 24.0]]];
        let anchors = cfg.anchors_px(0);
        let t = build_targets(&boxes, 4, anchors, 32.0, 0.5);
        let f = 4.0 / 32.0;
        let ious = anchors.map(|[w, h]| shape_iou(1.5, 1.0, w * f, h * f));
        assert!(ious[0] > ious[1] && ious[1] > 0.5 && ious[2] < 0.5, "{ious:?}");
        let at = |b: usize, a: usize, j: usize, i: usize| ((b * 3 + a) * 4 + j) * 4 + i;
        assert_eq!(t.mask.iter().sum::<f32>(), 1.0);
        assert_eq!(t.mask[at(1, 0, 2, 1)], 1.0);
        assert!((t.tx[at(1, 0, 2, 1)] - 0.75).abs() < 1e-6 && (t.ty[at(1, 0, 2, 1)] - 0.5).abs() < 1e-6);
        assert!((t.tw[at(1, 0, 2, 1)] - (1.5 / (anchors[0][0] * f)).ln()).abs() < 1e-5);
        assert!((t.th[at(1, 0, 2, 1)] - (1.0 / (anchors[0][1] * f)).ln()).abs() < 1e-5);
        // Ignored: the positive and the other anchor above 0.5; the third still a negative.
        assert_eq!([t.noobj[at(1, 0, 2, 1)], t.noobj[at(1, 1, 2, 1)], t.noobj[at(1, 2, 2, 1)]], [0.0, 0.0, 1.0]);
        assert_eq!(t.noobj.iter().filter(|v| **v == 0.0).count(), 2);
        assert!(t.mask[..48].iter().all(|v| *v == 0.0), "the empty image has no positive");
        // Fine grid 16 (2-px cells): cell (10, 7), anchor of best shape there.
        let t = build_targets(&boxes, 16, cfg.anchors_px(2), 32.0, 0.5);
        let k = t.mask.iter().position(|v| *v == 1.0).unwrap_or(usize::MAX);
        assert_eq!((k / 256 / 3, k % 256 / 16, k % 16), (1, 10, 7));
    }

    #[test]
    fn nms_removes_a_duplicate() {
        let dets =
            vec![(0.8, [10.0, 10.0, 30.0, 30.0]), (0.9, [11.0, 10.0, 31.0, 31.0]), (0.7, [50.0, 50.0, 60.0, 60.0])];
        let kept = nms(dets, 0.5);
        assert_eq!(kept, vec![(0.9, [11.0, 10.0, 31.0, 31.0]), (0.7, [50.0, 50.0, 60.0, 60.0])]);
    }

    /// Tokens of a 32-px image (g = 8, 4-px patches, d = 64) whose covered cells carry +1 in the
    /// first 16 dimensions (−1 elsewhere) and noise in the rest; one grid-aligned box of 8 or 12
    /// px sides, or none for a tenth of the images.
    fn toy(n: usize, seed: u64) -> (Rows, Vec<Vec<[f32; 4]>>) {
        let (g, d) = (8usize, 64usize);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut x, mut boxes) = (Vec::with_capacity(n * g * g * d), Vec::new());
        for _ in 0..n {
            let (w, h) = (rng.random_range(2..4usize), rng.random_range(2..4usize));
            let (c, r) = (rng.random_range(0..=g - w), rng.random_range(0..=g - h));
            let empty = rng.random_bool(0.1);
            for cell in 0..g * g {
                let (cr, cc) = (cell / g, cell % g);
                let on = !empty && (r..r + h).contains(&cr) && (c..c + w).contains(&cc);
                x.extend(
                    (0..d).map(|k| if k < 16 { if on { 1.0 } else { -1.0 } } else { rng.random_range(-0.3..0.3) }),
                );
            }
            let b = [(4 * c) as f32, (4 * r) as f32, (4 * (c + w)) as f32, (4 * (r + h)) as f32];
            boxes.push(if empty { vec![] } else { vec![b] });
        }
        (Rows { n, width: g * g * d, values: x }, boxes)
    }

    /// Standard IoU (no +1), as torchmetrics.
    fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
        let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
        let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
        let inter = iw * ih;
        inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
    }

    /// All-point AP at IoU 0.5 (one class, greedy matching by score).
    fn ap50(preds: &[Vec<Detection>], truth: &[Vec<[f32; 4]>]) -> f64 {
        let n_gt: usize = truth.iter().map(Vec::len).sum();
        let mut all: Vec<(f32, bool)> = Vec::new();
        for (p, t) in preds.iter().zip(truth) {
            let mut used = vec![false; t.len()];
            for &(s, b) in p {
                let m = (0..t.len()).filter(|&j| !used[j]).max_by(|&i, &j| iou(b, t[i]).total_cmp(&iou(b, t[j])));
                let hit = m.filter(|&j| iou(b, t[j]) >= 0.5);
                if let Some(j) = hit {
                    used[j] = true;
                }
                all.push((s, hit.is_some()));
            }
        }
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut tp, mut curve) = (0usize, Vec::new());
        for (k, &(_, hit)) in all.iter().enumerate() {
            tp += usize::from(hit);
            curve.push((tp as f64 / (k + 1) as f64, tp as f64 / n_gt.max(1) as f64));
        }
        let (mut ap, mut last_recall) = (0.0, 0.0);
        for k in 0..curve.len() {
            let best_prec = curve[k..].iter().map(|c| c.0).fold(0.0, f64::max);
            ap += (curve[k].1 - last_recall) * best_prec;
            last_recall = curve[k].1;
        }
        ap
    }

    #[test]
    fn learns_to_find_boxes_from_tokens() {
        let (x, y) = toy(64, 1);
        let (vx, vy) = toy(32, 2);
        let cfg = DetectConfig::for_encoder(64, 8, 32).with_embed_layers(2);
        let t =
            DetectTrainConfig { lr: 2e-3, steps: 120, warmup: 10, batch_size: 8, eval_every: 40, ..Default::default() };
        let start = std::time::Instant::now();
        let fit = train_detector::<B>(&Default::default(), &cfg, (&x, &y), (&vx, &vy), &t, &ap50).unwrap();
        eprintln!("{:?} in {:?}", fit.history, start.elapsed());
        // AP@0.5 reaches ≈ 0.5 after these 120 small steps (≈ 0.7 after 300 of batch 16).
        assert!(fit.best_score > 0.3, "{:?}", fit.history);
        let (first, last) = (fit.history[0].1, fit.history[fit.history.len() - 1].1);
        assert!(last < first / 2.0, "{:?}", fit.history);
    }

    #[test]
    fn images_without_boxes_train_without_nan() {
        let (x, mut y) = toy(8, 3);
        y.iter_mut().for_each(Vec::clear);
        let cfg = DetectConfig::for_encoder(64, 8, 32).with_embed_layers(2);
        let t = DetectTrainConfig { steps: 4, warmup: 1, batch_size: 4, eval_every: 2, ..Default::default() };
        let fit = train_detector::<B>(&Default::default(), &cfg, (&x, &y), (&x, &y), &t, &|_, _| 0.0).unwrap();
        assert!(fit.history.iter().all(|h| h.1.is_finite()), "{:?}", fit.history);
        let maps = fit.model.forward(tokens_tensor(&x, 64, &Default::default()));
        assert!(
            maps.into_iter().all(|m| m.into_data().into_vec::<f32>().is_ok_and(|v| v.iter().all(|x| x.is_finite())))
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (x, y) = toy(4, 4);
        let cfg = DetectConfig::for_encoder(64, 8, 32).with_embed_layers(2);
        let t = DetectTrainConfig { steps: 1, batch_size: 2, eval_every: 1, ..Default::default() };
        let short = &y[..3];
        let r = train_detector::<B>(&Default::default(), &cfg, (&x, short), (&x, &y), &t, &|_, _| 0.0);
        assert!(matches!(r, Err(DetectError::Shape(_))));
        let mut bad = y.clone();
        bad[0] = vec![[5.0, 5.0, 5.0, 9.0]];
        let r = train_detector::<B>(&Default::default(), &cfg, (&x, &bad), (&x, &y), &t, &|_, _| 0.0);
        assert!(matches!(r, Err(DetectError::Box(_))));
        let m: Detector<NdArray> = cfg.init(&Default::default());
        let wrong = Tensor::zeros([1, 63, 64], &Default::default());
        assert!(matches!(m.detect(wrong, 0.5, 0.5), Err(DetectError::Shape(_))));
    }
}
