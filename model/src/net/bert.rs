//! The text branch (spec §3.5): HF BERT embeddings, attention and layers, the multi-scale context
//! fusion layer, and the MLM head. Field names follow HF (`self` is `self_attn` here).

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, backend::Backend};

use super::init::{layer_norm, linear, normal_002};
use super::{autocast, gelu, merge_heads, split_heads};
use crate::config::EcampConfig;

/// LayerNorm epsilon of every BERT norm.
const BERT_EPS: f64 = 1e-12;

/// Word + position + token-type embeddings → LayerNorm → dropout.
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    /// Token table (row 0 = [PAD], kept at zero as `padding_idx` does).
    pub word_embeddings: Embedding<B>,
    /// Absolute positions `0..max_len`.
    pub position_embeddings: Embedding<B>,
    /// Token types (all 0 here).
    pub token_type_embeddings: Embedding<B>,
    /// Norm after the sum.
    pub layer_norm: LayerNorm<B>,
    dropout: Dropout,
}

impl<B: Backend> Embeddings<B> {
    fn new(c: &EcampConfig, device: &B::Device) -> Self {
        let table = |rows: usize| Embedding { weight: normal_002([rows, c.bert_hidden], device) };
        let mut word_embeddings = table(c.vocab_size);
        word_embeddings.weight = word_embeddings.weight.map(|w| {
            let zero = Tensor::zeros([1, c.bert_hidden], &w.device());
            w.slice_assign([0..1, 0..c.bert_hidden], zero)
        });
        Self {
            word_embeddings,
            position_embeddings: table(c.max_len),
            token_type_embeddings: table(c.type_vocab),
            layer_norm: layer_norm(c.bert_hidden, BERT_EPS, device),
            dropout: DropoutConfig::new(c.hidden_dropout).init(),
        }
    }

    /// `ids [n, T]` → `[n, T, hidden]`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [n, t] = ids.dims();
        let device = ids.device();
        // padding_idx: [PAD] contributes zero and its row never receives a gradient.
        let pad = ids.clone().equal_elem(0).unsqueeze_dim::<3>(2);
        let words = self.word_embeddings.forward(ids).mask_fill(pad, 0.0);
        let positions = Tensor::<B, 1, Int>::arange(0..t as i64, &device).unsqueeze_dim::<2>(0).repeat_dim(0, n);
        let types = Tensor::<B, 2, Int>::zeros([n, t], &device);
        let x = words + self.position_embeddings.forward(positions) + self.token_type_embeddings.forward(types);
        self.dropout.forward(self.layer_norm.forward(x))
    }
}

/// HF `BertSelfAttention`: separate query/key/value projections, no output projection.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// Query projection.
    pub query: Linear<B>,
    /// Key projection.
    pub key: Linear<B>,
    /// Value projection.
    pub value: Linear<B>,
    dropout: Dropout,
    heads: usize,
}

impl<B: Backend> SelfAttention<B> {
    fn new(c: &EcampConfig, device: &B::Device) -> Self {
        let h = c.bert_hidden;
        Self {
            query: linear(h, h, true, device),
            key: linear(h, h, true, device),
            value: linear(h, h, true, device),
            dropout: DropoutConfig::new(c.attn_dropout).init(),
            heads: c.bert_heads,
        }
    }

    /// Queries from `x [n, T, h]`, keys and values from `kv [n, S, h]`; `bias` is added to the
    /// scores (`[n, 1, 1, S]`, 0 or `f32::MIN`). Returns the context `[n, T, h]` and the attention
    /// probabilities `[n, heads, T, S]` (before dropout).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        kv: Tensor<B, 3>,
        bias: Option<Tensor<B, 4>>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let hd = x.dims()[2] / self.heads;
        let q = split_heads(autocast::linear(&self.query, x), self.heads);
        let k = split_heads(autocast::linear(&self.key, kv.clone()), self.heads);
        let v = split_heads(autocast::linear(&self.value, kv), self.heads);
        let mut scores = autocast::matmul(q, k.swap_dims(2, 3)).div_scalar((hd as f64).sqrt());
        if let Some(bias) = bias {
            scores = scores + bias;
        }
        let probs = softmax(scores, 3);
        let ctx = merge_heads(autocast::matmul(self.dropout.forward(probs.clone()), v));
        (ctx, probs)
    }
}

/// HF `BertSelfOutput` / `BertOutput`: `LN(dropout(dense(x)) + residual)`.
#[derive(Module, Debug)]
pub struct Output<B: Backend> {
    /// Projection.
    pub dense: Linear<B>,
    /// Norm after the residual.
    pub layer_norm: LayerNorm<B>,
    dropout: Dropout,
}

impl<B: Backend> Output<B> {
    fn new(d_in: usize, c: &EcampConfig, device: &B::Device) -> Self {
        Self {
            dense: linear(d_in, c.bert_hidden, true, device),
            layer_norm: layer_norm(c.bert_hidden, BERT_EPS, device),
            dropout: DropoutConfig::new(c.hidden_dropout).init(),
        }
    }

    fn forward(&self, x: Tensor<B, 3>, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        self.layer_norm.forward(self.dropout.forward(autocast::linear(&self.dense, x)) + residual)
    }
}

/// HF `BertAttention`: self-attention and its output block.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `attention.self`.
    pub self_attn: SelfAttention<B>,
    /// `attention.output`.
    pub output: Output<B>,
}

impl<B: Backend> Attention<B> {
    fn new(c: &EcampConfig, device: &B::Device) -> Self {
        Self { self_attn: SelfAttention::new(c, device), output: Output::new(c.bert_hidden, c, device) }
    }

    fn forward(&self, x: Tensor<B, 3>, text_bias: Tensor<B, 4>) -> Tensor<B, 3> {
        let (ctx, _) = self.self_attn.forward(x.clone(), x.clone(), Some(text_bias));
        self.output.forward(ctx, x)
    }
}

/// HF `BertIntermediate`: the feed-forward expansion with exact GELU.
#[derive(Module, Debug)]
pub struct Intermediate<B: Backend> {
    /// `hidden → intermediate`.
    pub dense: Linear<B>,
}

/// HF `BertLayer`: attention then feed-forward, post-norm.
#[derive(Module, Debug)]
pub struct Layer<B: Backend> {
    /// Self-attention block.
    pub attention: Attention<B>,
    /// Feed-forward expansion.
    pub intermediate: Intermediate<B>,
    /// Feed-forward projection, residual and norm.
    pub output: Output<B>,
}

impl<B: Backend> Layer<B> {
    fn new(c: &EcampConfig, device: &B::Device) -> Self {
        Self {
            attention: Attention::new(c, device),
            intermediate: Intermediate { dense: linear(c.bert_hidden, c.bert_intermediate, true, device) },
            output: Output::new(c.bert_intermediate, c, device),
        }
    }

    fn feed_forward(intermediate: &Intermediate<B>, output: &Output<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
        output.forward(gelu(autocast::linear(&intermediate.dense, x.clone())), x)
    }

    fn forward(&self, x: Tensor<B, 3>, text_bias: Tensor<B, 4>) -> Tensor<B, 3> {
        let a = self.attention.forward(x, text_bias);
        Self::feed_forward(&self.intermediate, &self.output, a)
    }
}

/// `ECAMPFusionLayer`: text self-attention, cross-attention to the visible patch tokens plus the
/// pooled GAP token through `gap_mlp`, then the feed-forward (spec §3.5).
#[derive(Module, Debug)]
pub struct FusionLayer<B: Backend> {
    /// Text self-attention block.
    pub attention: Attention<B>,
    /// Cross-attention (raw context, no projection inside).
    pub cross_self_attention: SelfAttention<B>,
    /// The GAP token's own linear.
    pub gap_mlp: Linear<B>,
    /// Output block of the fused context.
    pub out_layer: Output<B>,
    /// Feed-forward expansion.
    pub intermediate: Intermediate<B>,
    /// Feed-forward projection.
    pub output: Output<B>,
}

impl<B: Backend> FusionLayer<B> {
    fn new(c: &EcampConfig, device: &B::Device) -> Self {
        Self {
            attention: Attention::new(c, device),
            cross_self_attention: SelfAttention::new(c, device),
            gap_mlp: linear(c.bert_hidden, c.bert_hidden, true, device),
            out_layer: Output::new(c.bert_hidden, c, device),
            intermediate: Intermediate { dense: linear(c.bert_hidden, c.bert_intermediate, true, device) },
            output: Output::new(c.bert_intermediate, c, device),
        }
    }

    /// `h0 [n, T, h]`, `img [n, k, h]`, `gap [n, 1, h]` → `h1 [n, T, h]` and the cross-attention
    /// probabilities `[n, heads, T, k]`.
    pub fn forward(
        &self,
        h0: Tensor<B, 3>,
        img: Tensor<B, 3>,
        gap: Tensor<B, 3>,
        text_bias: Tensor<B, 4>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let a = self.attention.forward(h0, text_bias);
        // The image mask is all ones: no bias on the cross-attention scores.
        let (c, probs) = self.cross_self_attention.forward(a.clone(), img, None);
        let c = c + autocast::linear(&self.gap_mlp, gap);
        let b = self.out_layer.forward(c, a);
        (Layer::feed_forward(&self.intermediate, &self.output, b), probs)
    }
}

/// HF `BertPooler` (computed but unused by the official model; kept so its weights load).
#[derive(Module, Debug)]
pub struct Pooler<B: Backend> {
    /// `hidden → hidden`, tanh.
    pub dense: Linear<B>,
}

/// `BertOnlyMLMHead`: dense → GELU → LayerNorm → decoder (untied, spec §3.5) with bias.
#[derive(Module, Debug)]
pub struct MlmHead<B: Backend> {
    /// `transform.dense`.
    pub transform_dense: Linear<B>,
    /// `transform.LayerNorm`.
    pub transform_norm: LayerNorm<B>,
    /// `decoder` weight with `predictions.bias` as its bias.
    pub decoder: Linear<B>,
}

impl<B: Backend> MlmHead<B> {
    fn new(c: &EcampConfig, device: &B::Device) -> Self {
        Self {
            transform_dense: linear(c.bert_hidden, c.bert_hidden, true, device),
            transform_norm: layer_norm(c.bert_hidden, BERT_EPS, device),
            decoder: linear(c.bert_hidden, c.vocab_size, true, device),
        }
    }

    /// `[n, T, h]` → logits `[n, T, vocab]`.
    pub fn forward(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        autocast::linear(&self.decoder, self.transform(h))
    }

    /// `[n, T, h]` → the decoder's input `[n, T, h]` (dense, GELU, LayerNorm).
    pub fn transform(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        self.transform_norm.forward(gelu(autocast::linear(&self.transform_dense, h)))
    }
}

/// The whole text branch: embeddings, fusion layer, BERT layers, pooler, MLM head.
#[derive(Module, Debug)]
pub struct TextBranch<B: Backend> {
    /// Token embeddings.
    pub embeddings: Embeddings<B>,
    /// The multi-scale context fusion layer.
    pub fusion: FusionLayer<B>,
    /// BERT encoder layers.
    pub layers: Vec<Layer<B>>,
    /// Unused pooler.
    pub pooler: Pooler<B>,
    /// MLM head.
    pub head: MlmHead<B>,
}

impl<B: Backend> TextBranch<B> {
    /// The text branch of `c`.
    pub fn new(c: &EcampConfig, device: &B::Device) -> Self {
        Self {
            embeddings: Embeddings::new(c, device),
            fusion: FusionLayer::new(c, device),
            layers: (0..c.bert_layers).map(|_| Layer::new(c, device)).collect(),
            pooler: Pooler { dense: linear(c.bert_hidden, c.bert_hidden, true, device) },
            head: MlmHead::new(c, device),
        }
    }

    /// Masked ids `[n, T]`, attention mask `[n, T]` (1 token, 0 pad), visible patch tokens after
    /// `bert_mlp` `[n, k, h]` → the MLM decoder's input `[n, T, h]` (the logits are
    /// `head.decoder` of it) and the cross-attention probabilities.
    pub fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        attention: Tensor<B, 2>,
        img: Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let (mut h, probs, text_bias) = self.fuse(ids, attention, img);
        for layer in &self.layers {
            h = layer.forward(h, text_bias.clone());
        }
        (self.head.transform(h), probs)
    }

    /// Only the fusion layer's cross-attention probabilities `[n, heads, T, k]` (for attention
    /// maps; the BERT layers and the MLM head are skipped).
    pub fn cross_attention(&self, ids: Tensor<B, 2, Int>, attention: Tensor<B, 2>, img: Tensor<B, 3>) -> Tensor<B, 4> {
        self.fuse(ids, attention, img).1
    }

    /// Embeddings and the fusion layer: hidden states, cross-attention probabilities and the
    /// additive text mask the later layers reuse.
    fn fuse(
        &self,
        ids: Tensor<B, 2, Int>,
        attention: Tensor<B, 2>,
        img: Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>, Tensor<B, 4>) {
        let gap = img.clone().mean_dim(1);
        // HF's extended mask: (1 − m) · finfo(f32).min, broadcast over heads and queries.
        let text_bias =
            attention.neg().add_scalar(1.0).mul_scalar(f32::MIN).unsqueeze_dim::<3>(1).unsqueeze_dim::<4>(1);
        let h0 = self.embeddings.forward(ids);
        let (h, probs) = self.fusion.forward(h0, img, gap, text_bias.clone());
        (h, probs, text_bias)
    }
}
