//! The whole ECAMP model (spec §3, §5): image encoder, MAE decoder, SR head, the image→text
//! bridge and the text branch, with one `forward` that returns the three losses.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::config::EcampConfig;
use crate::fused::cross_entropy::decoder_cross_entropy;
use crate::fused::super_resolution::super_resolution_loss;
use crate::loss::{mim_loss, mlm_coefficients, mlm_loss, patchify, window_mask};
use crate::net::autocast;
use crate::net::bert::TextBranch;
use crate::net::init::linear;
use crate::net::sr::SuperResolution;
use crate::net::vit::{Decoder, Encoder, Masking, unpatchify};

/// The ECAMP pre-training model.
#[derive(Module, Debug)]
pub struct Ecamp<B: Backend> {
    /// MAE ViT encoder.
    pub encoder: Encoder<B>,
    /// MAE decoder.
    pub decoder: Decoder<B>,
    /// ×2 super-resolution head.
    pub sr: SuperResolution<B>,
    /// Visible tokens (ViT width) → BERT width.
    pub bert_mlp: Linear<B>,
    /// Text branch with the fusion layer and the MLM head.
    pub text: TextBranch<B>,
    patch: usize,
    grid: usize,
    sr_window: usize,
    mlm_masked_only: bool,
    norm_pix_loss: bool,
}

/// One batch as the model consumes it, already on the device.
#[derive(Debug, Clone)]
pub struct Inputs<B: Backend> {
    /// `[n, 3, 2S, 2S]` normalised SR target.
    pub big: Tensor<B, 4>,
    /// `[n, 3, S, S]` encoder input; `None` = bicubic of `big` inside the model (torch semantics).
    pub imgs: Option<Tensor<B, 4>>,
    /// `[n, L]` masking noise; ascending order = kept first.
    pub noise: Tensor<B, 2>,
    /// `[n, T]` masked input ids.
    pub ids: Tensor<B, 2, Int>,
    /// `[n, T]` unmasked ids (MLM targets).
    pub labels: Tensor<B, 2, Int>,
    /// `[n, T]` 1 token / 0 padding.
    pub attention: Tensor<B, 2>,
    /// `[n, T]` per-position loss weights.
    pub weights: Tensor<B, 2>,
    /// `[n, g, g]` SR window mask (see [`window_mask`]).
    pub window: Tensor<B, 3>,
}

/// The losses of one forward pass (scalars, `[1]`).
#[derive(Debug, Clone)]
pub struct Losses<B: Backend> {
    /// Masked image modelling.
    pub mim: Tensor<B, 1>,
    /// Context-guided super-resolution.
    pub sr: Tensor<B, 1>,
    /// Image-conditioned masked language modelling.
    pub mlm: Tensor<B, 1>,
    /// `mim + sr + mlm`, what is optimised.
    pub total: Tensor<B, 1>,
    /// Metric only: unweighted cross-entropy over the masked positions.
    pub mlm_masked: Tensor<B, 1>,
}

/// Everything a forward pass produced, for tests, attention maps and evaluation.
#[derive(Debug, Clone)]
pub struct Outputs<B: Backend> {
    /// The losses.
    pub losses: Losses<B>,
    /// `[n, L, p²·3]` MAE predictions in patch order.
    pub pred: Tensor<B, 3>,
    /// The masking the noise gave.
    pub masking: Masking<B>,
    /// `[n, 3, 2S, 2S]` SR output.
    pub sr: Tensor<B, 4>,
    /// `[n, heads, T, k]` fusion cross-attention probabilities over the visible tokens.
    pub cross_attention: Tensor<B, 4>,
}

/// Draws every lazily initialised parameter now, in module order.
struct Materialize;

impl<B: Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

impl EcampConfig {
    /// The model with the official initialisation (spec §3.6).
    ///
    /// burn initialises parameters lazily, at first use; they are all drawn here, in module
    /// order, so that the weights depend only on the backend seed at this call and not on
    /// whatever else draws from the backend RNG before the first forward pass (dropout, the
    /// order of use on several devices).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Ecamp<B> {
        let model = self.build(device);
        model.visit(&mut Materialize);
        model
    }

    fn build<B: Backend>(&self, device: &B::Device) -> Ecamp<B> {
        Ecamp {
            encoder: Encoder::new(
                self.img_size,
                self.patch,
                self.vit_dim,
                self.vit_depth,
                self.vit_heads,
                self.mlp_ratio,
                self.len_keep(),
                device,
            ),
            decoder: Decoder::new(
                self.vit_dim,
                self.dec_dim,
                self.dec_depth,
                self.dec_heads,
                self.mlp_ratio,
                self.grid(),
                self.patch,
                device,
            ),
            sr: SuperResolution::new(self.sr_final_relu, device),
            bert_mlp: linear(self.vit_dim, self.bert_hidden, true, device),
            text: TextBranch::new(self, device),
            patch: self.patch,
            grid: self.grid(),
            sr_window: self.sr_window,
            mlm_masked_only: self.mlm_masked_only,
            norm_pix_loss: self.norm_pix_loss,
        }
    }
}

impl<B: Backend> Ecamp<B> {
    /// The three losses of one batch.
    pub fn forward(&self, x: Inputs<B>) -> Losses<B> {
        self.forward_all(x).losses
    }

    /// The forward pass of spec §5 with every intermediate kept.
    pub fn forward_all(&self, x: Inputs<B>) -> Outputs<B> {
        let [_, _, side, _] = x.big.dims();
        let imgs = x.imgs.unwrap_or_else(|| {
            let bicubic = InterpolateOptions::new(InterpolateMode::Bicubic).with_align_corners(false);
            interpolate(x.big.clone(), [side / 2, side / 2], bicubic)
        });
        let (latent, masking) = self.encoder.forward(imgs.clone(), x.noise);
        let pred = self.decoder.forward(latent.clone(), masking.ids_restore.clone());
        let (res, sr) = super_resolution_loss(&self.sr, unpatchify(pred.clone(), self.patch), x.big, x.window);
        let mim = mim_loss(pred.clone(), patchify(imgs, self.patch), masking.mask.clone(), self.norm_pix_loss);

        let z = autocast::linear(&self.bert_mlp, latent);
        let k = z.dims()[1] - 1;
        let (states, cross_attention) = self.text.forward(x.ids.clone(), x.attention, z.narrow(1, 1, k));
        let masked = x.ids.not_equal(x.labels.clone()).float();
        let only = self.mlm_masked_only.then(|| masked.clone());
        let coef = mlm_coefficients(x.weights.clone(), only.clone());
        let value = |ce| mlm_loss(ce, x.weights, only);
        let (mlm, ce) = decoder_cross_entropy(&self.text.head.decoder, states, x.labels, coef, value);
        let mlm_masked = (ce * masked.clone()).sum().div(masked.sum().clamp_min(1.0));
        let total = mim.clone() + res.clone() + mlm.clone();
        Outputs { losses: Losses { mim, sr: res, mlm, total, mlm_masked }, pred, masking, sr, cross_attention }
    }

    /// Cross-attention of every text position over every patch, `[n, heads, T, L]` with the
    /// patches in grid order: the model run with mask ratio 0 and no shuffling (spec §6; the
    /// official visualisation forgets to un-shuffle). `imgs [n, 3, S, S]`, `ids`/`attention [n, T]`.
    pub fn entity_attention(
        &self,
        imgs: Tensor<B, 4>,
        ids: Tensor<B, 2, Int>,
        attention: Tensor<B, 2>,
    ) -> Tensor<B, 4> {
        let latent = self.encoder.forward_all(imgs);
        let z = autocast::linear(&self.bert_mlp, latent);
        let l = z.dims()[1] - 1;
        self.text.cross_attention(ids, attention, z.narrow(1, 1, l))
    }

    /// The `[n, g, g]` window mask tensor for `(label_i, label_j)` offsets on this model's grid.
    pub fn window_tensor(&self, windows: &[(i32, i32)], device: &B::Device) -> Tensor<B, 3> {
        let g = self.grid;
        let data = TensorData::new(window_mask(windows, g, self.sr_window), [windows.len(), g, g]);
        Tensor::from_data(data, device)
    }
}
