//! The ECAMP networks as burn modules, one file per part of spec §3.

pub mod autocast;
pub mod bert;
pub mod init;
pub mod pos_embed;
pub mod sr;
pub mod vit;

use burn::tensor::{Tensor, backend::Backend};

/// `[b, n, h·d]` → `[b, h, n, d]`: the per-head view of an attention input.
pub(crate) fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, n, c] = x.dims();
    x.reshape([b, n, heads, c / heads]).swap_dims(1, 2)
}

/// `[b, h, n, d]` → `[b, n, h·d]`: heads concatenated back, head-major as torch's reshape.
pub(crate) fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}
