//! `InterpolateConvSuperResolution` (spec §3.3): bilinear ×2, two 3×3 convs with a residual.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::ops::PadMode;
use burn::tensor::{Tensor, backend::Backend};

/// The ×2 super-resolution head (168 parameters, PyTorch's default conv initialisation).
#[derive(Module, Debug)]
pub struct SuperResolution<B: Backend> {
    /// First 3×3 conv, followed by ReLU.
    pub conv1: Conv2d<B>,
    /// Second 3×3 conv, added to the upsampled input.
    pub conv2: Conv2d<B>,
    pub(crate) final_relu: bool,
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
        let x = conv3x3(&self.conv2, relu(conv3x3(&self.conv1, up.clone()))) + up;
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

/// `conv` (3×3, stride 1, zero padding 1) as one matmul over the nine shifted copies of the
/// input (im2col by slicing): same sums as the direct convolution, but burn-ndarray's direct
/// convolution backward (a transposed convolution) took a fifth of a tiny CPU step for these
/// 3-channel layers. Costs 9× the input in memory.
pub(crate) fn conv3x3<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let [out, _, kh, kw] = conv.weight.dims();
    let padded = x.pad([(1, 1), (1, 1)], PadMode::Constant(0.0));
    let mut taps = Vec::with_capacity(kh * kw);
    for dy in 0..kh {
        for dx in 0..kw {
            taps.push(padded.clone().narrow(2, dy, h).narrow(3, dx, w));
        }
    }
    // [n, c, kh·kw, h, w] → [n, c·kh·kw, h·w], matching the weight's (c, ky, kx) layout.
    let cols = Tensor::stack::<5>(taps, 2).reshape([n, c * kh * kw, h * w]);
    let weight = conv.weight.val().reshape([1, out, c * kh * kw]);
    let y = weight.matmul(cols).reshape([n, out, h, w]);
    match &conv.bias {
        Some(b) => y + b.val().reshape([1, out, 1, 1]),
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    #[test]
    fn sliced_matmul_equals_the_convolution() {
        let dev = Default::default();
        let sr = SuperResolution::<NdArray>::new(true, &dev);
        let x = Tensor::<NdArray, 4>::random([2, 3, 9, 11], Distribution::Normal(0.0, 1.0), &dev);
        let diff = (conv3x3(&sr.conv1, x.clone()) - sr.conv1.forward(x)).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
    }
}
