//! Batched device-side augmentation as separable gather-and-weight passes.
//!
//! A bicubic resize is separable and each output pixel reads 4 source pixels per axis, so one
//! axis of the whole batch is
//!
//! ```text
//! out[r, :] = Σ_{k<4} w_k[r] · in[idx_k[r], :]        (rows r over all samples at once)
//! ```
//!
//! with `idx_k` / `w_k` precomputed on the host ([`crate::taps`]) and already holding the
//! per-sample crop offset, the border clamp, the flip, the sample's row offset in the flattened
//! batch and (for the first pass) the 1/(255·std) scale. On the device that is 4 × (`select`
//! along dim 0, broadcast `mul`, `add`) per pass: the same kernels for every sample, whatever
//! its crop, so the batch needs no per-sample slicing and no host round trip. The other axis is
//! handled the same way after a transpose (`swap_dims` + `reshape`), because a row gather is
//! contiguous on every backend while a column gather (`select` on the last dim) is strided.
//!
//! Uploads per batch: the u8 canvas (as a `U8` int tensor, so 1 byte per pixel crosses the bus),
//! one i32 index table and one f32 weight table (4 × (448 + 448 + 224) = 4,480 entries per
//! sample each, 35 KB per sample: 14 % of a 512² canvas; a backend whose int is i64, like
//! ndarray, widens the indices on the host). Work: O(n · 448 · 4 · (W + 448)) multiply-adds,
//! versus O(n · 448 · (H·W + W·448)) for the dense matmul formulation.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::taps::{AxisTaps, axis_taps};
use crate::{MEAN, STD};

/// One resampling pass inside the packed tables: tap `k` of output row `r` is entry
/// `offset + k * rows + r`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pass {
    offset: usize,
    rows: usize,
}

/// Tap tables of several passes, packed so that they go up in one index and one weight upload.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    index: Vec<i32>,
    weight: Vec<f32>,
}

impl Tables {
    /// Appends a pass over `taps` (one entry per sample, in batch order); sample `s`'s source row
    /// `i` is row `s * stride + i` of the flattened input; the weights are multiplied by `scale`.
    pub(crate) fn push(&mut self, taps: &[AxisTaps], stride: usize, scale: f64) -> Pass {
        let offset = self.index.len();
        let rows = taps.iter().map(|t| t.index.len()).sum();
        for k in 0..4 {
            for (s, t) in taps.iter().enumerate() {
                let base = s * stride;
                // In range: `Canvases::check` bounds every row index of the batch by i32::MAX.
                self.index.extend(t.index.iter().map(|i| (base + i[k] as usize) as i32));
                self.weight.extend(t.weight.iter().map(|w| (w[k] * scale) as f32));
            }
        }
        Pass { offset, rows }
    }

    /// Uploads the tables.
    pub(crate) fn upload<B: Backend>(self, device: &B::Device) -> DeviceTables<B> {
        let len = self.index.len();
        DeviceTables {
            index: Tensor::from_data(TensorData::new(self.index, [len]), device),
            weight: Tensor::from_data(TensorData::new(self.weight, [len]), device),
        }
    }
}

/// [`Tables`] on the device.
pub(crate) struct DeviceTables<B: Backend> {
    index: Tensor<B, 1, Int>,
    weight: Tensor<B, 1>,
}

/// How a pass is laid out in kernels; both compute the same sums (up to f32 summation order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// Per tap: `select` → broadcast `mul` → `add` into the running sum (11 ops per pass, every
    /// intermediate the size of the output).
    PerTap,
    /// One `select` of all 4 taps, one broadcast `mul`, one `sum_dim` over the taps (3 ops per
    /// pass on 4× larger intermediates; fewer launches on a GPU).
    OneSelect,
}

/// One separable pass: `out[r] = Σ_k w_k[r] · x[idx_k[r]]` over the rows of `x` (`[rows_in, C]`),
/// giving `[pass.rows, C]`.
pub(crate) fn resample_rows<B: Backend>(
    x: Tensor<B, 2>,
    tables: &DeviceTables<B>,
    pass: Pass,
    how: Resample,
) -> Tensor<B, 2> {
    match how {
        Resample::PerTap => {
            let mut acc: Option<Tensor<B, 2>> = None;
            for k in 0..4 {
                let start = pass.offset + k * pass.rows;
                let index = tables.index.clone().narrow(0, start, pass.rows);
                let weight = tables.weight.clone().narrow(0, start, pass.rows).reshape([pass.rows, 1]);
                let term = x.clone().select(0, index) * weight;
                acc = Some(match acc {
                    Some(sum) => sum + term,
                    None => term,
                });
            }
            acc.expect("four taps")
        }
        Resample::OneSelect => {
            let cols = x.dims()[1];
            let index = tables.index.clone().narrow(0, pass.offset, 4 * pass.rows);
            let weight = tables.weight.clone().narrow(0, pass.offset, 4 * pass.rows).reshape([4 * pass.rows, 1]);
            let taps = (x.select(0, index) * weight).reshape([4, pass.rows, cols]);
            taps.sum_dim(0).reshape([pass.rows, cols])
        }
    }
}

/// One loader batch as the augmentation reads it: `n × height × width` u8 grayscale canvases
/// (each image top-left in its canvas), per sample a crop `(top, left, height, width)` in image
/// pixels (torchvision `RandomResizedCrop`'s `i, j, h, w`) and a horizontal-flip bit.
#[derive(Debug, Clone, Copy)]
pub struct Canvases<'a> {
    /// `n · height · width` pixels.
    pub pixels: &'a [u8],
    /// Samples.
    pub n: usize,
    /// Canvas rows.
    pub height: usize,
    /// Canvas columns.
    pub width: usize,
    /// One crop per sample.
    pub crops: &'a [(u32, u32, u32, u32)],
    /// One flip bit per sample.
    pub flips: &'a [bool],
}

/// A batch the augmentation cannot process; names the sample where there is one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AugmentError {
    /// No sample, or an output side that is zero or odd.
    #[error("nothing to augment: {0}")]
    Empty(String),
    /// The buffers disagree with `n` and the canvas size.
    #[error("malformed batch: {0}")]
    Malformed(String),
    /// A crop is empty or leaves the canvas.
    #[error("sample {sample}: crop {crop:?} is empty or leaves the {height}×{width} canvas")]
    Crop {
        /// Index in the batch.
        sample: usize,
        /// The crop `(top, left, height, width)`.
        crop: (u32, u32, u32, u32),
        /// Canvas rows.
        height: usize,
        /// Canvas columns.
        width: usize,
    },
}

impl Canvases<'_> {
    /// Checks the description against itself and the output side `side` (the `big` image).
    pub fn check(&self, side: usize) -> Result<(), AugmentError> {
        let malformed = |what: String| Err(AugmentError::Malformed(what));
        if self.n == 0 || side == 0 || side % 2 == 1 {
            return Err(AugmentError::Empty(format!("{} samples, output side {side} (must be even)", self.n)));
        }
        let rows = self.n.checked_mul(self.height.max(self.width).max(side));
        if rows.is_none_or(|r| r > i32::MAX as usize) {
            return malformed(format!("{} samples of {}×{} exceed the index range", self.n, self.height, self.width));
        }
        if Some(self.pixels.len()) != self.n.checked_mul(self.height * self.width) {
            let want = format!("{} × {} × {}", self.n, self.height, self.width);
            return malformed(format!("{} pixels for {want}", self.pixels.len()));
        }
        if self.crops.len() != self.n || self.flips.len() != self.n {
            let got = (self.crops.len(), self.flips.len());
            return malformed(format!("{} samples but {} crops and {} flip bits", self.n, got.0, got.1));
        }
        for (sample, &crop) in self.crops.iter().enumerate() {
            let (top, left, h, w) = crop;
            let fits = |start: u32, len: u32, limit: usize| u64::from(start) + u64::from(len) <= limit as u64;
            if h == 0 || w == 0 || !fits(top, h, self.height) || !fits(left, w, self.width) {
                return Err(AugmentError::Crop { sample, crop, height: self.height, width: self.width });
            }
        }
        Ok(())
    }
}

/// The device-side augmentation of one batch.
///
/// Returns, for the output side `side` (448 in the paper, [`crate::SIDE_BIG`]),
///
/// * `big`  `[n, 3, side, side]`: crop → bicubic resize to side² (torch `F.interpolate(...,
///   mode='bicubic', align_corners=False, antialias=False)`: a = −0.75, half-pixel centres,
///   border clamped to the crop) → flip → /255 → (x − 0.4721) / 0.3037 → 3 channels;
/// * `imgs` `[n, 3, side/2, side/2]`: the same bicubic resize of the normalised `big`, as the
///   official `forward` does (`Resize([224, 224], BICUBIC)` on the tensor, torchvision 0.14: no
///   antialias).
///
/// One upload of the canvas (as u8) plus two small tap tables, then tensor ops only.
pub fn augment<B: Backend>(
    device: &B::Device,
    batch: &Canvases,
    side: usize,
) -> Result<(Tensor<B, 4>, Tensor<B, 4>), AugmentError> {
    augment_with(device, batch, side, Resample::PerTap)
}

/// [`augment`] with the pass layout chosen by `how`.
pub fn augment_with<B: Backend>(
    device: &B::Device,
    batch: &Canvases,
    side: usize,
    how: Resample,
) -> Result<(Tensor<B, 4>, Tensor<B, 4>), AugmentError> {
    batch.check(side)?;
    let Canvases { pixels, n, height: canvas_h, width: canvas_w, crops, flips } = *batch;
    let (sb, ss) = (side, side / 2);

    // Host: tap tables (O(n · side) work). The 1/255 and 1/std factors ride on the first pass's
    // weights; the −mean/std offset commutes with every pass because each weight row sums to 1.
    let rows: Vec<AxisTaps> = crops.iter().map(|&(top, _, h, _)| axis_taps(top, h, sb, false)).collect();
    let cols: Vec<AxisTaps> =
        crops.iter().zip(flips).map(|(&(_, left, _, w), &flip)| axis_taps(left, w, sb, flip)).collect();
    let halve = vec![axis_taps(0, sb as u32, ss, false); n];
    let mut tables = Tables::default();
    let pass_y = tables.push(&rows, canvas_h, 1.0 / (255.0 * f64::from(STD)));
    let pass_x = tables.push(&cols, canvas_w, 1.0);
    let pass_half = tables.push(&halve, sb, 1.0); // both axes of 448 → 224
    let tables = tables.upload::<B>(device);

    // Device. The canvas goes up as u8 and is widened there.
    let canvas = TensorData::new(pixels.to_vec(), [n, canvas_h, canvas_w]);
    let canvas = Tensor::<B, 3, Int>::from_data(canvas, (device, DType::U8)).float();

    // Crop + resize rows: [n·H, W] → [n·448 (y), W].
    let v = resample_rows(canvas.reshape([n * canvas_h, canvas_w]), &tables, pass_y, how);
    // Transpose so that columns become rows: [n·W, 448 (y)].
    let v = v.reshape([n, sb, canvas_w]).swap_dims(1, 2).reshape([n * canvas_w, sb]);
    // Crop + resize + flip columns: big, transposed, [n·448 (x), 448 (y)].
    let big_t = resample_rows(v, &tables, pass_x, how).add_scalar(-MEAN / STD);

    // imgs = bicubic(big, 224): x (rows of big_t) first, transpose, then y.
    let s = resample_rows(big_t.clone(), &tables, pass_half, how); // [n·224 (x), 448 (y)]
    let s = s.reshape([n, ss, sb]).swap_dims(1, 2).reshape([n * sb, ss]); // [n·448 (y), 224 (x)]
    let small = resample_rows(s, &tables, pass_half, how); // [n·224 (y), 224 (x)]

    let big = big_t.reshape([n, sb, sb]).swap_dims(1, 2).unsqueeze_dim::<4>(1).repeat_dim(1, 3);
    let small = small.reshape([n, 1, ss, ss]).repeat_dim(1, 3);
    Ok((big, small))
}
