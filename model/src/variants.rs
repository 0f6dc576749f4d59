//! Two other formulations of [`crate::augment`], kept to compare exactness and speed:
//!
//! * [`augment_matmul`]: big = Wy · img · Wx with dense per-sample bicubic weight matrices
//!   (built on the device by `scatter`-adding the same 4-tap tables into zeros), then
//!   imgs = A · big · Aᵀ with the constant 224×448 matrix A. Exact and batched, but
//!   O(n · 448 · (H·W + W·448)) multiply-adds (~7.3 G for 32 samples of 512²) instead of ~0.1 G.
//! * [`augment_interpolate`]: per-sample `slice` + burn's `interpolate` (Bicubic,
//!   `align_corners = false`) + `flip`, `cat` along the batch; the 224 step is then one batched
//!   `interpolate`. n crop kernels per batch instead of a fixed handful.

use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{DType, IndexingUpdateOp, Int, Tensor, TensorData};

use crate::augment::validate;
use crate::taps::{AxisTaps, axis_taps};
use crate::{MEAN, SIDE_BIG, SIDE_SMALL, STD};

/// A `[rows, cols]` dense resampling matrix whose row `r` holds the 4 taps of output `r`
/// (positions relative to the sample, duplicates from the border clamp summed), built on the
/// device from `[rows, 4]` tables.
fn dense<B: Backend>(device: &B::Device, taps: &[AxisTaps], cols: usize, scale: f64) -> Tensor<B, 2> {
    let rows: usize = taps.iter().map(|t| t.index.len()).sum();
    let index: Vec<i64> = taps.iter().flat_map(|t| t.index.iter().flat_map(|i| i.map(i64::from))).collect();
    let weight: Vec<f32> =
        taps.iter().flat_map(|t| t.weight.iter().flat_map(|w| w.map(|w| (w * scale) as f32))).collect();
    let index = Tensor::<B, 2, Int>::from_data(TensorData::new(index, [rows, 4]), device);
    let weight = Tensor::<B, 2>::from_data(TensorData::new(weight, [rows, 4]), device);
    Tensor::<B, 2>::zeros([rows, cols], device).scatter(1, index, weight, IndexingUpdateOp::Add)
}

/// [`crate::augment`] as batched matmuls with dense weight matrices.
pub fn augment_matmul<B: Backend>(
    device: &B::Device,
    pixels: &[u8],
    n: usize,
    canvas_h: usize,
    canvas_w: usize,
    crops: &[(u32, u32, u32, u32)],
    flips: &[bool],
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    validate(pixels, n, canvas_h, canvas_w, crops, flips);
    let (sb, ss) = (SIDE_BIG, SIDE_SMALL);
    // Relative to the sample, so `start` is the crop offset only.
    let rows: Vec<AxisTaps> = crops.iter().map(|&(top, _, h, _)| axis_taps(top, h, sb, false)).collect();
    let cols: Vec<AxisTaps> =
        crops.iter().zip(flips).map(|(&(_, left, _, w), &flip)| axis_taps(left, w, sb, flip)).collect();
    let wy = dense::<B>(device, &rows, canvas_h, 1.0 / (255.0 * f64::from(STD))).reshape([n, sb, canvas_h]);
    let wx = dense::<B>(device, &cols, canvas_w, 1.0).reshape([n, sb, canvas_w]).swap_dims(1, 2);
    let a = dense::<B>(device, &[axis_taps(0, sb as u32, ss, false)], sb, 1.0);
    let at = a.clone().transpose();

    let canvas = TensorData::new(pixels.to_vec(), [n, canvas_h, canvas_w]);
    let img = Tensor::<B, 3, Int>::from_data(canvas, (device, DType::U8)).float();
    let big = wy.matmul(img).matmul(wx).add_scalar(-MEAN / STD); // [n, 448, 448]
    let small =
        a.unsqueeze::<3>().expand([n, ss, sb]).matmul(big.clone()).matmul(at.unsqueeze::<3>().expand([n, sb, ss]));
    (big.unsqueeze_dim::<4>(1).repeat_dim(1, 3), small.unsqueeze_dim::<4>(1).repeat_dim(1, 3))
}

/// [`crate::augment`] with burn's own bicubic `interpolate`, one call per sample for the crop.
pub fn augment_interpolate<B: Backend>(
    device: &B::Device,
    pixels: &[u8],
    n: usize,
    canvas_h: usize,
    canvas_w: usize,
    crops: &[(u32, u32, u32, u32)],
    flips: &[bool],
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    validate(pixels, n, canvas_h, canvas_w, crops, flips);
    let (sb, ss) = (SIDE_BIG, SIDE_SMALL);
    // burn's default is align_corners = true, which is NOT torch's default.
    let bicubic = InterpolateOptions::new(InterpolateMode::Bicubic).with_align_corners(false);
    let canvas = TensorData::new(pixels.to_vec(), [n, canvas_h, canvas_w]);
    let img = Tensor::<B, 3, Int>::from_data(canvas, (device, DType::U8)).float();
    let planes = crops
        .iter()
        .zip(flips)
        .enumerate()
        .map(|(i, (&(top, left, h, w), &flip))| {
            let (top, left, h, w) = (top as usize, left as usize, h as usize, w as usize);
            let crop = img.clone().slice([i..i + 1, top..top + h, left..left + w]).reshape([1, 1, h, w]);
            let out = interpolate(crop, [sb, sb], bicubic.clone());
            if flip { out.flip([3]) } else { out }
        })
        .collect();
    let big = Tensor::cat(planes, 0).mul_scalar(1.0 / (255.0 * STD)).add_scalar(-MEAN / STD);
    let small = interpolate(big.clone(), [ss, ss], bicubic);
    (big.repeat_dim(1, 3), small.repeat_dim(1, 3))
}
