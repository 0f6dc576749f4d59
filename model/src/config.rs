//! Model sizes and loss switches ([`EcampConfig`]), with the `tiny` and `base` presets.

use burn::config::Config;

/// Largest `img_size` [`EcampConfig::check`] accepts.
const MAX_IMG_SIZE: usize = 4096;
/// Largest width (ViT, decoder, BERT hidden and feed-forward) it accepts.
const MAX_WIDTH: usize = 16384;
/// Most blocks of any stack it accepts.
const MAX_DEPTH: usize = 1024;
/// Largest vocabulary (and token-type count) it accepts.
const MAX_VOCAB: usize = 1 << 22;
/// Most token positions it accepts.
const MAX_LEN: usize = 1 << 16;
/// Largest patch grid side it accepts (65,536 patches).
const MAX_GRID: usize = 256;
/// Most parameters (estimated) it accepts: about 20 times the paper's model.
const MAX_PARAMETERS: f64 = 4e9;

/// Every size of the ECAMP networks plus the switches for the documented corrections of the
/// official losses (all off by default, i.e. code-faithful; spec §3, §10).
#[derive(Config, Debug, PartialEq)]
pub struct EcampConfig {
    /// Side of the encoder input (`imgs`); the SR target (`big`) is twice this.
    pub img_size: usize,
    /// ViT patch side.
    pub patch: usize,
    /// ViT width.
    pub vit_dim: usize,
    /// ViT blocks.
    pub vit_depth: usize,
    /// ViT attention heads.
    pub vit_heads: usize,
    /// MAE decoder width.
    pub dec_dim: usize,
    /// MAE decoder blocks.
    pub dec_depth: usize,
    /// MAE decoder attention heads.
    pub dec_heads: usize,
    /// Hidden-to-MLP width ratio of the ViT and decoder blocks.
    #[config(default = 4)]
    pub mlp_ratio: usize,
    /// BERT hidden width.
    pub bert_hidden: usize,
    /// BERT layers after the fusion layer.
    pub bert_layers: usize,
    /// BERT attention heads.
    pub bert_heads: usize,
    /// BERT feed-forward width.
    pub bert_intermediate: usize,
    /// Vocabulary size (embedding rows = MLM outputs).
    pub vocab_size: usize,
    /// Token positions (`max_position_embeddings` = caption length).
    pub max_len: usize,
    /// BERT token types.
    #[config(default = 2)]
    pub type_vocab: usize,
    /// BERT hidden dropout.
    #[config(default = 0.1)]
    pub hidden_dropout: f64,
    /// BERT attention-probability dropout.
    #[config(default = 0.1)]
    pub attn_dropout: f64,
    /// Fraction of patches removed by MAE masking.
    #[config(default = 0.75)]
    pub mask_ratio: f64,
    /// SR window side, in patches of the encoder grid.
    pub sr_window: usize,
    /// Correction: MLM loss over the masked positions only (official: all positions).
    #[config(default = false)]
    pub mlm_masked_only: bool,
    /// Correction: MIM targets normalised per patch (official: the flag is passed but unused).
    #[config(default = false)]
    pub norm_pix_loss: bool,
    /// Official SR head ends with a ReLU although targets can be negative; `false` drops it.
    #[config(default = true)]
    pub sr_final_relu: bool,
}

impl EcampConfig {
    /// Spec-tiny "A": 32² input, 4² patches, 64-wide ViT, 5,000-token vocabulary.
    pub fn tiny() -> Self {
        Self::new(32, 4, 64, 2, 4, 32, 2, 2, 64, 2, 2, 128, 5000, 64, 6)
    }

    /// The paper's sizes (183,173,080 trainable parameters).
    pub fn base() -> Self {
        Self::new(224, 16, 768, 12, 12, 512, 4, 16, 768, 6, 6, 1536, 30000, 256, 12)
    }

    /// A preset by name (`tiny` or `base`).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "base" => Some(Self::base()),
            _ => None,
        }
    }

    /// Side of the patch grid (`g`).
    pub fn grid(&self) -> usize {
        self.img_size / self.patch
    }

    /// Patches per image (`L = g²`).
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Patches the encoder keeps, `int(L · (1 − mask_ratio))` as MAE computes it.
    pub fn len_keep(&self) -> usize {
        (self.num_patches() as f64 * (1.0 - self.mask_ratio)) as usize
    }

    /// Side of the SR target image.
    pub fn big_size(&self) -> usize {
        2 * self.img_size
    }

    /// Multiply-add FLOPs (2 per multiply-add) of one sample's forward pass in the matmuls and
    /// convolutions, text padded to `max_len` as the model computes it; ×3 gives a training
    /// step's model FLOPs, the numerator of MFU. Elementwise work, norms and softmax are left
    /// out, as MFU conventionally does.
    pub fn forward_flops_per_sample(&self) -> f64 {
        let f = |x: usize| x as f64;
        let mm = |m: usize, k: usize, n: usize| 2.0 * f(m) * f(k) * f(n);
        let (l, p) = (self.num_patches(), self.patch);
        // A pre-norm ViT block over `t` tokens of width `d`.
        let block =
            |t: usize, d: usize| mm(t, d, 3 * d) + 2.0 * mm(t, d, t) + mm(t, d, d) + 2.0 * mm(t, d, self.mlp_ratio * d);
        let visible = 1 + self.len_keep();
        let encoder = mm(l, 3 * p * p, self.vit_dim) + f(self.vit_depth) * block(visible, self.vit_dim);
        let decoder = mm(visible, self.vit_dim, self.dec_dim)
            + f(self.dec_depth) * block(1 + l, self.dec_dim)
            + mm(1 + l, self.dec_dim, 3 * p * p);
        // Two 3-channel 3×3 convolutions on the 2S × 2S upsampled reconstruction.
        let sr = 2.0 * mm(self.big_size() * self.big_size(), 27, 3);
        let (t, h, k) = (self.max_len, self.bert_hidden, self.len_keep());
        let ffn = mm(t, h, self.bert_intermediate) * 2.0;
        let self_attention = 4.0 * mm(t, h, h) + 2.0 * mm(t, h, t);
        let cross_attention = mm(t, h, h) + 2.0 * mm(k, h, h) + 2.0 * mm(t, h, k) + mm(1, h, h) + mm(t, h, h);
        let fusion = self_attention + cross_attention + ffn;
        let text = mm(visible, self.vit_dim, h)
            + fusion
            + f(self.bert_layers) * (self_attention + ffn)
            + mm(t, h, h)
            + mm(t, h, self.vocab_size);
        encoder + decoder + sr + text
    }

    /// Rough parameter count (matrices of the transformer stacks, embeddings, MLM head), for
    /// [`Self::check`]'s limit; the base preset estimates ~1.8e8.
    fn parameters_estimate(&self) -> f64 {
        let f = |x: usize| x as f64;
        let block = |d: usize| f(d) * f(d) * (4.0 + 2.0 * f(self.mlp_ratio));
        let bert_layer = |h: usize| 4.0 * f(h) * f(h) + 2.0 * f(h) * f(self.bert_intermediate);
        f(self.vit_depth) * block(self.vit_dim)
            + f(self.dec_depth) * block(self.dec_dim)
            + (f(self.bert_layers) + 2.0) * bert_layer(self.bert_hidden)
            + f(self.vocab_size) * f(self.bert_hidden) * 2.0
            + f(self.max_len) * f(self.bert_hidden)
            + 3.0 * f(self.patch) * f(self.patch) * (f(self.vit_dim) + f(self.dec_dim))
    }

    /// Checks the sizes that must agree (spec-tiny §2); the message names the offending field.
    pub fn check(&self) -> Result<(), String> {
        let rule = |ok: bool, why: &str| if ok { Ok(()) } else { Err(why.to_string()) };
        // Upper bounds first: a file may hold any number, and every size below is multiplied
        // into allocations (the base preset is far inside them).
        rule((1..=MAX_IMG_SIZE).contains(&self.img_size), &format!("img_size must be in 1..={MAX_IMG_SIZE}"))?;
        for (name, width) in [
            ("vit_dim", self.vit_dim),
            ("dec_dim", self.dec_dim),
            ("bert_hidden", self.bert_hidden),
            ("bert_intermediate", self.bert_intermediate),
        ] {
            rule((1..=MAX_WIDTH).contains(&width), &format!("{name} must be in 1..={MAX_WIDTH}"))?;
        }
        for (name, depth) in
            [("vit_depth", self.vit_depth), ("dec_depth", self.dec_depth), ("bert_layers", self.bert_layers)]
        {
            rule(depth <= MAX_DEPTH, &format!("{name} must be at most {MAX_DEPTH}"))?;
        }
        rule((1..=64).contains(&self.mlp_ratio), "mlp_ratio must be in 1..=64")?;
        rule((1..=MAX_VOCAB).contains(&self.type_vocab), &format!("type_vocab must be in 1..={MAX_VOCAB}"))?;
        rule(self.vocab_size <= MAX_VOCAB, &format!("vocab_size must be at most {MAX_VOCAB}"))?;
        rule(self.max_len <= MAX_LEN, &format!("max_len must be at most {MAX_LEN}"))?;
        rule(
            (0.0..1.0).contains(&self.hidden_dropout) && (0.0..1.0).contains(&self.attn_dropout),
            "hidden_dropout and attn_dropout must be in [0, 1)",
        )?;
        rule(self.patch > 0 && self.img_size.is_multiple_of(self.patch), "img_size must be a multiple of patch")?;
        // Within the per-field bounds, combinations can still not fit any machine.
        rule(
            self.grid() <= MAX_GRID,
            &format!("img_size / patch must be at most {MAX_GRID} (attention is quadratic in it²)"),
        )?;
        let params = self.parameters_estimate();
        rule(
            params <= MAX_PARAMETERS,
            &format!("the model would have ~{params:.2e} parameters, over the limit of {MAX_PARAMETERS:.0e}"),
        )?;
        rule(self.vit_dim.is_multiple_of(4), "vit_dim must be a multiple of 4 (2-D sin-cos positions)")?;
        rule(self.dec_dim.is_multiple_of(4), "dec_dim must be a multiple of 4 (2-D sin-cos positions)")?;
        rule(self.vit_heads > 0 && self.vit_dim.is_multiple_of(self.vit_heads), "vit_dim must divide by vit_heads")?;
        rule(self.dec_heads > 0 && self.dec_dim.is_multiple_of(self.dec_heads), "dec_dim must divide by dec_heads")?;
        rule(
            self.bert_heads > 0 && self.bert_hidden.is_multiple_of(self.bert_heads),
            "bert_hidden must divide by bert_heads",
        )?;
        rule((0.0..1.0).contains(&self.mask_ratio), "mask_ratio must be in [0, 1)")?;
        rule(self.len_keep() >= 1, "mask_ratio leaves no visible patch")?;
        rule(self.sr_window >= 1 && self.sr_window <= self.grid(), "sr_window must be within the patch grid")?;
        rule(self.vocab_size > 4 && self.max_len > 4, "vocab_size and max_len are too small")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::EcampConfig;

    #[test]
    fn presets_pass_and_out_of_range_sizes_are_refused_by_name() {
        assert_eq!(EcampConfig::tiny().check(), Ok(()));
        assert_eq!(EcampConfig::base().check(), Ok(()));
        let refused = |edit: fn(&mut EcampConfig), field: &str| {
            let mut c = EcampConfig::tiny();
            edit(&mut c);
            let err = c.check().expect_err(field);
            assert!(err.contains(field), "{field}: {err}");
        };
        refused(|c| c.patch = 0, "patch");
        refused(|c| c.img_size = 1 << 20, "img_size");
        refused(|c| c.vit_heads = 0, "vit_heads");
        refused(|c| c.vit_dim = 0, "vit_dim");
        refused(|c| c.bert_intermediate = usize::MAX, "bert_intermediate");
        refused(|c| c.vit_depth = 100_000, "vit_depth");
        refused(|c| c.max_len = usize::MAX, "max_len");
        refused(|c| c.vocab_size = usize::MAX, "vocab_size");
        refused(|c| c.attn_dropout = 1.0, "attn_dropout");
        refused(|c| c.mlp_ratio = 0, "mlp_ratio");
        refused(|c| (c.img_size, c.patch) = (4096, 1), "img_size / patch");
        // Every field within its bound, the whole far beyond any machine.
        refused(
            |c| (c.vit_dim, c.vit_depth, c.vit_heads, c.img_size, c.patch) = (16384, 1024, 16, 4096, 16),
            "parameters",
        );
        let params = EcampConfig::base().parameters_estimate();
        assert!((1.5e8..2.2e8).contains(&params), "base estimate {params:.3e} (183,173,080 exact)");
    }
}
