//! `InterpolateConvSuperResolution` (spec §3.3): bilinear ×2, two 3×3 convs with a residual.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Tensor, backend::Backend};

/// The ×2 super-resolution head (168 parameters, PyTorch's default conv initialisation).
#[derive(Module, Debug)]
pub struct SuperResolution<B: Backend> {
    /// First 3×3 conv, followed by ReLU.
    pub conv1: Conv2d<B>,
    /// Second 3×3 conv, added to the upsampled input.
    pub conv2: Conv2d<B>,
    final_relu: bool,
}

impl<B: Backend> SuperResolution<B> {
    /// The head; `final_relu` keeps the official trailing ReLU.
    pub fn new(final_relu: bool, device: &B::Device) -> Self {
        // burn's default conv initialiser is PyTorch's kaiming_uniform(a = √5) with fan-in bias.
        let conv =
            || Conv2dConfig::new([3, 3], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device);
        Self { conv1: conv(), conv2: conv(), final_relu }
    }

    /// `rec [n, 3, S, S]` → `[n, 3, 2S, 2S]`.
    pub fn forward(&self, rec: Tensor<B, 4>) -> Tensor<B, 4> {
        let up = upsample2x_bilinear(rec);
        let x = self.conv2.forward(relu(self.conv1.forward(up.clone()))) + up;
        if self.final_relu { relu(x) } else { x }
    }
}

/// torch's `F.interpolate(scale_factor=2, mode='bilinear', align_corners=False)` as plain tensor
/// ops, so that it differentiates on every backend (burn-ndarray has no bilinear backward).
///
/// With half-pixel centres, output `2k` samples `k − 0.25` and `2k + 1` samples `k + 0.25`:
/// `0.75·x[k] + 0.25·x[k∓1]`, the neighbour clamped at the border (where torch clamps the
/// source coordinate to 0 and drops the out-of-range tap).
pub fn upsample2x_bilinear<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let x = upsample_axis(x, 3);
    upsample_axis(x, 2)
}

/// Doubles axis `dim` (2 or 3) of `x` with the 0.75 / 0.25 taps.
fn upsample_axis<B: Backend>(x: Tensor<B, 4>, dim: usize) -> Tensor<B, 4> {
    let len = x.dims()[dim];
    let first = x.clone().narrow(dim, 0, 1);
    let last = x.clone().narrow(dim, len - 1, 1);
    let prev = Tensor::cat(vec![first, x.clone().narrow(dim, 0, len - 1)], dim);
    let next = Tensor::cat(vec![x.clone().narrow(dim, 1, len - 1), last], dim);
    let base = x.mul_scalar(0.75);
    let even = base.clone() + prev.mul_scalar(0.25);
    let odd = base + next.mul_scalar(0.25);
    // Interleave: a new axis right after `dim`, then merge the two.
    let mut dims = even.dims();
    let pair = Tensor::stack::<5>(vec![even, odd], dim + 1);
    dims[dim] *= 2;
    pair.reshape(dims)
}
