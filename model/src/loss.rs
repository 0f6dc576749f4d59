//! The three pre-training losses exactly as the official `forward_loss` and
//! `MultimodalBertMaskedLM` compute them (spec §3.4–3.5), plus the documented corrections.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, backend::Backend};

/// `imgs [n, 3, g·p, g·p]` → `[n, L, p·p·3]` with the (row, col, channel) layout of `decoder_pred`.
pub fn patchify<B: Backend>(imgs: Tensor<B, 4>, patch: usize) -> Tensor<B, 3> {
    let [n, c, h, _] = imgs.dims();
    let g = h / patch;
    imgs.reshape([n, c, g, patch, g, patch]).permute([0, 2, 4, 3, 5, 1]).reshape([n, g * g, patch * patch * c])
}

/// MIM: squared error on the removed patches, averaged over **all** pixels (`[n, L, p²·3]` inputs,
/// `mask [n, L]` 1 = removed). With `norm_pix` the targets are normalised per patch (MAE's
/// `norm_pix_loss`, a correction: the official code ignores the flag).
pub fn mim_loss<B: Backend>(
    pred: Tensor<B, 3>,
    target: Tensor<B, 3>,
    mask: Tensor<B, 2>,
    norm_pix: bool,
) -> Tensor<B, 1> {
    let target = if norm_pix {
        let mean = target.clone().mean_dim(2);
        let var = target.clone().var(2);
        (target - mean).div(var.add_scalar(1e-6).sqrt())
    } else {
        target
    };
    let err = (pred - target).powi_scalar(2) * mask.unsqueeze_dim::<3>(2);
    err.mean()
}

/// SR: squared error inside each sample's window, averaged over **all** pixels of the `2S` image.
/// `window [n, g, g]` is 1 inside the window on the encoder's patch grid; each cell covers a
/// `2p × 2p` super-patch of `sr`/`big` `[n, 3, 2S, 2S]`.
pub fn sr_loss<B: Backend>(sr: Tensor<B, 4>, big: Tensor<B, 4>, window: Tensor<B, 3>) -> Tensor<B, 1> {
    let [n, c, h, w] = sr.dims();
    let g = window.dims()[1];
    let (sh, sw) = (h / g, w / g);
    let diff = (sr - big).reshape([n, c, g, sh, g, sw]);
    let cells = window.reshape([n, 1, g, 1, g, 1]);
    (diff * cells).powi_scalar(2).mean()
}

/// MLM from the per-position cross-entropy `ce [n, T]` (see [`token_cross_entropy`]): times the
/// loader's weights, averaged over `n · T` (official: every position counts, [PAD] included).
/// With `masked` (1 where the input differs from the target) only those positions count,
/// averaged over their number (a correction).
pub fn mlm_loss<B: Backend>(ce: Tensor<B, 2>, weights: Tensor<B, 2>, masked: Option<Tensor<B, 2>>) -> Tensor<B, 1> {
    match masked {
        None => (ce * weights).mean(),
        Some(m) => (ce * weights * m.clone()).sum().div(m.sum().clamp_min(1.0)),
    }
}

/// `∂ mlm_loss / ∂ ce` `[n, T]`: the factor each position's cross-entropy enters the MLM loss
/// with (`weights / (n·T)`, or with `masked` `weights · masked / max(Σ masked, 1)`).
pub fn mlm_coefficients<B: Backend>(weights: Tensor<B, 2>, masked: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
    match masked {
        None => {
            let [n, t] = weights.dims();
            weights.div_scalar((n * t) as f32)
        }
        Some(m) => {
            let count = m.clone().sum().clamp_min(1.0).unsqueeze::<2>();
            (weights * m).div(count)
        }
    }
}

/// Per-position cross-entropy `[n, T]` of `logits [n, T, V]` against `labels [n, T]` (the
/// straightforward definition; training uses [`crate::fused::cross_entropy::decoder_cross_entropy`]).
pub fn token_cross_entropy<B: Backend>(logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let [n, t, _] = logits.dims();
    let logp = log_softmax(logits, 2);
    logp.gather(2, labels.unsqueeze_dim::<3>(2)).reshape([n, t]).neg()
}

/// The `[n, g, g]` SR window mask from `(label_i, label_j)` offsets: rows `i..i+W`, columns
/// `j..j+W`, clipped at the grid edge as Python slicing does; negative offsets count as 0.
pub fn window_mask(windows: &[(i32, i32)], grid: usize, side: usize) -> Vec<f32> {
    let mut mask = vec![0.0f32; windows.len() * grid * grid];
    for (s, &(i, j)) in windows.iter().enumerate() {
        let (i, j) = (i.max(0) as usize, j.max(0) as usize);
        for y in i..(i + side).min(grid) {
            for x in j..(j + side).min(grid) {
                mask[(s * grid + y) * grid + x] = 1.0;
            }
        }
    }
    mask
}
