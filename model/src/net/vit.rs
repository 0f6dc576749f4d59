//! The MAE ViT: timm 0.4.12 pre-norm blocks, the patch embedding, the encoder with MAE random
//! masking, and the MAE decoder (spec §3.1–3.2). Field names follow the official state dict.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use super::init::{frozen, layer_norm, linear, normal_002};
use super::{autocast, gelu, merge_heads, pos_embed::sincos_2d};

/// LayerNorm epsilon of every ViT / decoder norm.
const VIT_EPS: f64 = 1e-6;

/// timm `Attention`: fused qkv projection, softmax attention, output projection.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `dim → 3·dim` query/key/value projection.
    pub qkv: Linear<B>,
    /// Output projection.
    pub proj: Linear<B>,
    heads: usize,
}

impl<B: Backend> Attention<B> {
    fn new(dim: usize, heads: usize, device: &B::Device) -> Self {
        Self { qkv: linear(dim, 3 * dim, true, device), proj: linear(dim, dim, true, device), heads }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, c] = x.dims();
        let hd = c / self.heads;
        // [b, n, 3, h, hd] → three [b, h, n, hd]: torch's `reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)`.
        let qkv = autocast::linear(&self.qkv, x).reshape([b, n, 3, self.heads, hd]);
        let part = |i: usize| qkv.clone().narrow(2, i, 1).reshape([b, n, self.heads, hd]).swap_dims(1, 2);
        let (q, k, v) = (part(0), part(1), part(2));
        let attn = softmax(autocast::matmul(q, k.swap_dims(2, 3)).mul_scalar((hd as f64).powf(-0.5)), 3);
        autocast::linear(&self.proj, merge_heads(autocast::matmul(attn, v)))
    }
}

/// timm `Mlp`: Linear → exact GELU → Linear.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Expansion layer.
    pub fc1: Linear<B>,
    /// Projection back to the block width.
    pub fc2: Linear<B>,
}

/// timm `Block`: `x += attn(norm1(x)); x += mlp(norm2(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub norm1: LayerNorm<B>,
    /// Self-attention.
    pub attn: Attention<B>,
    /// Norm before the MLP.
    pub norm2: LayerNorm<B>,
    /// Feed-forward.
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    /// A block of width `dim` with `heads` heads and an MLP of `dim · mlp_ratio`.
    pub fn new(dim: usize, heads: usize, mlp_ratio: usize, device: &B::Device) -> Self {
        Self {
            norm1: layer_norm(dim, VIT_EPS, device),
            attn: Attention::new(dim, heads, device),
            norm2: layer_norm(dim, VIT_EPS, device),
            mlp: Mlp {
                fc1: linear(dim, dim * mlp_ratio, true, device),
                fc2: linear(dim * mlp_ratio, dim, true, device),
            },
        }
    }

    /// One pre-norm block.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x));
        let h = autocast::linear(&self.mlp.fc2, gelu(autocast::linear(&self.mlp.fc1, self.norm2.forward(x.clone()))));
        x + h
    }
}

/// timm `PatchEmbed`: a `p × p` stride-`p` convolution.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// The patchifying convolution (weight `[d, 3, p, p]`, as the official state dict).
    pub proj: Conv2d<B>,
}

impl<B: Backend> PatchEmbed<B> {
    /// `[n, 3, g·p, g·p]` → `[n, g², d]` in raster order.
    ///
    /// A stride-`p` `p × p` convolution is a matmul over non-overlapping patches; computed as
    /// one, because burn-ndarray's direct convolution (and its transposed-convolution backward)
    /// took a quarter of a tiny CPU training step.
    pub fn forward(&self, imgs: Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, c, h, w] = imgs.dims();
        let [d, _, p, _] = self.proj.weight.dims();
        let (gh, gw) = (h / p, w / p);
        let patches = imgs.reshape([n, c, gh, p, gw, p]).permute([0, 2, 4, 1, 3, 5]).reshape([n, gh * gw, c * p * p]);
        let weight = self.proj.weight.val().reshape([d, c * p * p]).transpose().unsqueeze_dim::<3>(0);
        let x = autocast::matmul(patches, weight);
        match &self.proj.bias {
            Some(b) => x + b.val().reshape([1, 1, d]),
            None => x,
        }
    }
}

/// What MAE's `random_masking` decided for a batch.
#[derive(Debug, Clone)]
pub struct Masking<B: Backend> {
    /// `[n, L]` 0 = kept, 1 = removed, in patch order.
    pub mask: Tensor<B, 2>,
    /// `[n, L]` the permutation that undoes the shuffle.
    pub ids_restore: Tensor<B, 2, Int>,
    /// `[n, len_keep]` kept patch indices, in shuffled (ascending-noise) order.
    pub ids_keep: Tensor<B, 2, Int>,
}

/// MAE's `random_masking` driven by given noise: the `len_keep` patches with the smallest noise
/// are kept, in ascending-noise order. Returns the kept tokens `[n, len_keep, d]` and the masking.
pub fn random_masking<B: Backend>(x: Tensor<B, 3>, noise: Tensor<B, 2>, len_keep: usize) -> (Tensor<B, 3>, Masking<B>) {
    let [n, l, d] = x.dims();
    let ids_shuffle = noise.argsort(1);
    let ids_restore = ids_shuffle.clone().argsort(1);
    let ids_keep = ids_shuffle.narrow(1, 0, len_keep);
    let kept = x.gather(1, ids_keep.clone().unsqueeze_dim::<3>(2).repeat_dim(2, d));
    let device = kept.device();
    // 0 for the first len_keep slots of the shuffled order, then back to patch order.
    let slots = Tensor::<B, 1, Int>::arange(0..l as i64, &device).unsqueeze_dim::<2>(0).repeat_dim(0, n);
    let mask = slots.greater_equal_elem(len_keep as i64).float().gather(1, ids_restore.clone());
    (kept, Masking { mask, ids_restore, ids_keep })
}

/// The MAE ViT encoder (spec §3.1).
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// Patch embedding.
    pub patch_embed: PatchEmbed<B>,
    /// `[1, 1, d]` class token.
    pub cls_token: Param<Tensor<B, 3>>,
    /// `[1, 1 + L, d]` fixed sin-cos positions.
    pub pos_embed: Param<Tensor<B, 3>>,
    /// Transformer blocks.
    pub blocks: Vec<Block<B>>,
    /// Final norm.
    pub norm: LayerNorm<B>,
    len_keep: usize,
}

impl<B: Backend> Encoder<B> {
    /// An encoder for `img`² inputs with `patch`² patches keeping `len_keep` of them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        img: usize,
        patch: usize,
        dim: usize,
        depth: usize,
        heads: usize,
        mlp_ratio: usize,
        len_keep: usize,
        device: &B::Device,
    ) -> Self {
        let grid = img / patch;
        // xavier on the (dim, 3·p·p) view of the conv weight: fan_in = 3·p², fan_out = dim.
        let bound = (6.0 / (3 * patch * patch + dim) as f64).sqrt();
        let mut proj = Conv2dConfig::new([3, dim], [patch, patch])
            .with_stride([patch, patch])
            .with_initializer(Initializer::Uniform { min: -bound, max: bound })
            .init(device);
        // The conv bias keeps PyTorch's default (the official init only touches Linear/LayerNorm).
        let fan_in = (3 * patch * patch) as f64;
        proj.bias = Some(Initializer::Uniform { min: -fan_in.powf(-0.5), max: fan_in.powf(-0.5) }.init([dim], device));
        Self {
            patch_embed: PatchEmbed { proj },
            cls_token: normal_002([1, 1, dim], device),
            pos_embed: frozen(position_table(dim, grid, device)),
            blocks: (0..depth).map(|_| Block::new(dim, heads, mlp_ratio, device)).collect(),
            norm: layer_norm(dim, VIT_EPS, device),
            len_keep,
        }
    }

    /// `imgs [n, 3, S, S]`, `noise [n, L]` → `latent [n, 1 + len_keep, d]` and the masking.
    pub fn forward(&self, imgs: Tensor<B, 4>, noise: Tensor<B, 2>) -> (Tensor<B, 3>, Masking<B>) {
        let (x, masking) = random_masking(self.patch_tokens(imgs), noise, self.len_keep);
        (self.transform(x), masking)
    }

    /// Every patch token, unmasked and in patch order, after the final norm: `[n, 1 + L, d]`
    /// (for downstream use and attention maps).
    pub fn forward_all(&self, imgs: Tensor<B, 4>) -> Tensor<B, 3> {
        self.transform(self.patch_tokens(imgs))
    }

    /// Global-pool features as timm/MAE's `global_pool=True` computes them before `fc_norm`: the
    /// mean of the patch tokens after the blocks, unmasked, without the final norm: `[n, d]`.
    pub fn pooled(&self, imgs: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.blocks_on(self.patch_tokens(imgs));
        let [n, t, d] = x.dims();
        x.narrow(1, 1, t - 1).mean_dim(1).reshape([n, d])
    }

    /// Patch embedding plus positions, `[n, L, d]` in patch order.
    fn patch_tokens(&self, imgs: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = self.patch_embed.forward(imgs);
        let l = x.dims()[1];
        x + self.pos_embed.val().narrow(1, 1, l)
    }

    /// Prepends the class token and runs the blocks and the final norm.
    fn transform(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.norm.forward(self.blocks_on(x))
    }

    /// Prepends the class token and runs the blocks.
    fn blocks_on(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let n = x.dims()[0];
        let cls = (self.cls_token.val() + self.pos_embed.val().narrow(1, 0, 1)).repeat_dim(0, n);
        let mut x = Tensor::cat(vec![cls, x], 1);
        for block in &self.blocks {
            x = block.forward(x);
        }
        x
    }
}

/// The MAE decoder (spec §3.2).
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// Encoder width → decoder width.
    pub decoder_embed: Linear<B>,
    /// `[1, 1, d]` token for removed patches.
    pub mask_token: Param<Tensor<B, 3>>,
    /// `[1, 1 + L, d]` fixed sin-cos positions.
    pub decoder_pos_embed: Param<Tensor<B, 3>>,
    /// Transformer blocks.
    pub decoder_blocks: Vec<Block<B>>,
    /// Final norm.
    pub decoder_norm: LayerNorm<B>,
    /// Per-patch pixel prediction (`p² · 3`).
    pub decoder_pred: Linear<B>,
}

impl<B: Backend> Decoder<B> {
    /// A decoder from `enc_dim` tokens to `patch² · 3` pixels per patch.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        enc_dim: usize,
        dim: usize,
        depth: usize,
        heads: usize,
        mlp_ratio: usize,
        grid: usize,
        patch: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            decoder_embed: linear(enc_dim, dim, true, device),
            mask_token: normal_002([1, 1, dim], device),
            decoder_pos_embed: frozen(position_table(dim, grid, device)),
            decoder_blocks: (0..depth).map(|_| Block::new(dim, heads, mlp_ratio, device)).collect(),
            decoder_norm: layer_norm(dim, VIT_EPS, device),
            decoder_pred: linear(dim, patch * patch * 3, true, device),
        }
    }

    /// `latent [n, 1 + k, e]` → `pred [n, L, p²·3]` in patch order.
    pub fn forward(&self, latent: Tensor<B, 3>, ids_restore: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let x = autocast::linear(&self.decoder_embed, latent);
        let [n, t, d] = x.dims();
        let l = ids_restore.dims()[1];
        let mask_tokens = self.mask_token.val().repeat_dim(0, n).repeat_dim(1, l + 1 - t);
        let patches = Tensor::cat(vec![x.clone().narrow(1, 1, t - 1), mask_tokens], 1);
        let patches = patches.gather(1, ids_restore.unsqueeze_dim::<3>(2).repeat_dim(2, d));
        let mut x = Tensor::cat(vec![x.narrow(1, 0, 1), patches], 1) + self.decoder_pos_embed.val();
        for block in &self.decoder_blocks {
            x = block.forward(x);
        }
        let x = autocast::linear(&self.decoder_pred, self.decoder_norm.forward(x));
        x.narrow(1, 1, l)
    }
}

/// `pred [n, L, p·p·3]` → images `[n, 3, g·p, g·p]` (the patch vector is (row, col, channel)).
pub fn unpatchify<B: Backend>(pred: Tensor<B, 3>, patch: usize) -> Tensor<B, 4> {
    let [n, l, _] = pred.dims();
    let g = (l as f64).sqrt() as usize;
    // [n, g, g, p, p, 3] → [n, 3, g, p, g, p] (einsum nhwpqc → nchpwq).
    pred.reshape([n, g, g, patch, patch, 3]).permute([0, 5, 1, 3, 2, 4]).reshape([n, 3, g * patch, g * patch])
}

/// The `[1, 1 + g², dim]` sin-cos table as a tensor.
fn position_table<B: Backend>(dim: usize, grid: usize, device: &B::Device) -> Tensor<B, 3> {
    Tensor::from_data(TensorData::new(sincos_2d(dim, grid), [1, 1 + grid * grid, dim]), device)
}
