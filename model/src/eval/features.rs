//! Encoder inputs and pooled features for evaluation.
//!
//! Images go through the pre-training resize and normalisation ([`crate::augment`]) with a centre
//! square crop and no flip, so the encoder sees what it was trained on. Features are timm's
//! `global_pool=True` representation followed by the linear probe's `fc_norm`, which stays at
//! γ = 1, β = 0 because the probe freezes it (spec §7.1): a LayerNorm without affine, eps 1e-6.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::augment::{AugmentError, Canvases, augment};
use crate::net::vit::Encoder;

/// LayerNorm epsilon of timm's `fc_norm`.
pub const FC_NORM_EPS: f64 = 1e-6;

/// The largest centred square `(top, left, side, side)` of a `width × height` image.
pub fn centre_crop(width: u32, height: u32) -> (u32, u32, u32, u32) {
    let side = width.min(height);
    ((height - side) / 2, (width - side) / 2, side, side)
}

/// One decoded grayscale image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrayImage {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Row-major pixels.
    pub pixels: Vec<u8>,
}

/// Images of any sizes laid out as [`Canvases`] (each top-left in a canvas of the largest size)
/// with centre square crops and no flips: the evaluation view of a batch.
#[derive(Debug, Clone)]
pub struct CanvasBatch {
    pixels: Vec<u8>,
    n: usize,
    height: usize,
    width: usize,
    crops: Vec<(u32, u32, u32, u32)>,
    flips: Vec<bool>,
}

impl CanvasBatch {
    /// Lays out `images` (owned or borrowed).
    pub fn new<I: std::borrow::Borrow<GrayImage>>(images: &[I]) -> Self {
        let height = images.iter().map(|i| i.borrow().height as usize).max().unwrap_or(0);
        let width = images.iter().map(|i| i.borrow().width as usize).max().unwrap_or(0);
        let mut pixels = vec![0u8; images.len() * height * width];
        for (k, img) in images.iter().map(|i| i.borrow()).enumerate() {
            let w = img.width as usize;
            let canvas = &mut pixels[k * height * width..(k + 1) * height * width];
            for (row, src) in img.pixels.chunks_exact(w.max(1)).take(img.height as usize).enumerate() {
                canvas[row * width..row * width + w].copy_from_slice(src);
            }
        }
        let crops = images.iter().map(|i| centre_crop(i.borrow().width, i.borrow().height)).collect();
        Self { pixels, n: images.len(), height, width, crops, flips: vec![false; images.len()] }
    }

    /// Replaces the centre crops and flips with other views, `(top, left, height, width)` and a
    /// flip bit per image (training augmentation).
    pub fn set_views(&mut self, views: Vec<((u32, u32, u32, u32), bool)>) {
        (self.crops, self.flips) = views.into_iter().unzip();
    }

    /// The batch as the augmentation reads it.
    pub fn canvases(&self) -> Canvases<'_> {
        Canvases {
            pixels: &self.pixels,
            n: self.n,
            height: self.height,
            width: self.width,
            crops: &self.crops,
            flips: &self.flips,
        }
    }
}

/// Encoder inputs `[n, 3, S, S]` for `img_size` = S: the crops of `canvases` resized and
/// normalised exactly as in pre-training.
pub fn encoder_inputs<B: Backend>(
    device: &B::Device,
    canvases: &Canvases,
    img_size: usize,
) -> Result<Tensor<B, 4>, AugmentError> {
    let (_, imgs) = augment::<B>(device, canvases, 2 * img_size)?;
    Ok(imgs)
}

/// Probe features `[n, d]`: the pooled patch tokens, standardised per sample (`fc_norm`).
pub fn probe_features<B: Backend>(encoder: &Encoder<B>, imgs: Tensor<B, 4>) -> Tensor<B, 2> {
    let x = encoder.pooled(imgs);
    let mean = x.clone().mean_dim(1);
    let centred = x - mean;
    let var = centred.clone().powi_scalar(2).mean_dim(1);
    centred / var.add_scalar(FC_NORM_EPS).sqrt()
}

/// Patch tokens `[n, L, d]` after the final norm, in grid order (timm's `forward_features`
/// without the class token): what the segmentation and detection heads start from.
pub fn patch_tokens<B: Backend>(encoder: &Encoder<B>, imgs: Tensor<B, 4>) -> Tensor<B, 3> {
    let x = encoder.forward_all(imgs);
    let [_, t, _] = x.dims();
    x.narrow(1, 1, t - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centre_crop_is_the_middle_square() {
        assert_eq!(centre_crop(64, 64), (0, 0, 64, 64));
        assert_eq!(centre_crop(100, 60), (0, 20, 60, 60));
        assert_eq!(centre_crop(60, 101), (20, 0, 60, 60));
    }
}
