//! Per-sample CPU work of the loader: verify the stored bytes, decode the JPEG to u8 grayscale
//! into a reused canvas, and draw the augmentation parameters (torchvision's RandomResizedCrop
//! box and the horizontal-flip bit). The pixel arithmetic itself (resize, flip, normalise) is the
//! training device's job.

use rand::Rng;
use sha2::{Digest, Sha256};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// A crop in pixels of the stored image: top-left corner and size, as torchvision's `(i, j, h, w)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: u32,
    /// First column.
    pub left: u32,
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
}

/// Augmentation ranges (ECAMP: scale 0.2–1, ratio 3/4–4/3, flip p = 0.5).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    /// Fraction of the image area the crop covers, (min, max).
    pub scale: (f64, f64),
    /// Width / height of the crop, (min, max).
    pub ratio: (f64, f64),
    /// Probability of a horizontal flip.
    pub flip_prob: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig { scale: (0.2, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0), flip_prob: 0.5 }
    }
}

/// Why a sample cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    /// The stored bytes do not hash to the recorded `image_sha256`.
    #[error("image bytes do not match their recorded sha256 (stored {expected}, computed {actual})")]
    HashMismatch {
        /// Recorded hash.
        expected: String,
        /// Hash of the bytes read.
        actual: String,
    },
    /// The JPEG does not decode.
    #[error("image does not decode: {0}")]
    Decode(String),
    /// The image is larger than the canvas.
    #[error("image of {width}x{height} does not fit the {canvas_width}x{canvas_height} canvas")]
    TooLarge {
        /// Image width.
        width: usize,
        /// Image height.
        height: usize,
        /// Canvas width.
        canvas_width: usize,
        /// Canvas height.
        canvas_height: usize,
    },
}

/// Checks `bytes` against the hash recorded at ingest.
pub fn verify_sha256(bytes: &[u8], expected: &str) -> Result<(), SampleError> {
    let actual = hex::encode(Sha256::digest(bytes));
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(SampleError::HashMismatch { expected: expected.to_string(), actual })
    }
}

/// Refuses an image larger than the `max_width × max_height` canvas.
pub fn fits(width: usize, height: usize, max_width: usize, max_height: usize) -> Result<(), SampleError> {
    if width > max_width || height > max_height {
        return Err(SampleError::TooLarge { width, height, canvas_width: max_width, canvas_height: max_height });
    }
    Ok(())
}

/// Decodes a JPEG to tight grayscale rows in `out` (its allocation reused), refusing
/// images larger than `max_width × max_height` before decoding them; returns (width, height).
pub fn decode_gray(
    jpeg: &[u8],
    max_width: usize,
    max_height: usize,
    out: &mut Vec<u8>,
) -> Result<(usize, usize), SampleError> {
    let opts = DecoderOptions::new_safe().set_strict_mode(true).jpeg_set_out_colorspace(ColorSpace::Luma);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(jpeg), opts);
    dec.decode_headers().map_err(|e| SampleError::Decode(e.to_string()))?;
    let (w, h) = dec.dimensions().ok_or_else(|| SampleError::Decode("no frame header".into()))?;
    fits(w, h, max_width, max_height)?;
    out.resize(w * h, 0);
    dec.decode_into(out).map_err(|e| SampleError::Decode(e.to_string()))?;
    Ok((w, h))
}

/// Decodes a JPEG to grayscale into the top-left of a `canvas_width`-wide canvas (row stride =
/// canvas width), reusing the caller's buffers; returns the image's (width, height).
pub fn decode_into(
    jpeg: &[u8],
    canvas: &mut [u8],
    canvas_width: usize,
    scratch: &mut Vec<u8>,
) -> Result<(usize, usize), SampleError> {
    let canvas_height = canvas.len() / canvas_width.max(1);
    let (w, h) = decode_gray(jpeg, canvas_width, canvas_height, scratch)?;
    for (row, src) in scratch.chunks_exact(w).enumerate() {
        canvas[row * canvas_width..row * canvas_width + w].copy_from_slice(src);
    }
    Ok((w, h))
}

/// torchvision's `RandomResizedCrop.get_params`: ten tries at a random area and log-uniform aspect
/// ratio, then a centre crop clamped to the ratio range.
pub fn random_resized_crop(width: u32, height: u32, cfg: &AugmentConfig, rng: &mut impl Rng) -> CropBox {
    let (w_img, h_img) = (f64::from(width), f64::from(height));
    let area = w_img * h_img;
    let (lr0, lr1) = (cfg.ratio.0.ln(), cfg.ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(cfg.scale.0..=cfg.scale.1);
        let aspect = rng.random_range(lr0..=lr1).exp();
        let w = (target * aspect).sqrt().round();
        let h = (target / aspect).sqrt().round();
        if w > 0.0 && w <= w_img && h > 0.0 && h <= h_img {
            let (w, h) = (w as u32, h as u32);
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return CropBox { top, left, height: h, width: w };
        }
    }
    let in_ratio = w_img / h_img;
    let (w, h) = if in_ratio < cfg.ratio.0 {
        (width, ((w_img / cfg.ratio.0).round() as u32).min(height))
    } else if in_ratio > cfg.ratio.1 {
        (((h_img * cfg.ratio.1).round() as u32).min(width), height)
    } else {
        (width, height)
    };
    CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
}

/// Whether to flip horizontally.
pub fn flip(cfg: &AugmentConfig, rng: &mut impl Rng) -> bool {
    rng.random::<f64>() < cfg.flip_prob
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::sample_rng;

    #[test]
    fn crops_stay_inside_and_follow_the_ranges() {
        let cfg = AugmentConfig::default();
        let mut rng = sample_rng(7, 0, 0);
        let (mut areas, mut n) = (0.0, 0);
        for _ in 0..2000 {
            let c = random_resized_crop(512, 640, &cfg, &mut rng);
            assert!(c.width > 0 && c.height > 0);
            assert!(c.left + c.width <= 512 && c.top + c.height <= 640, "{c:?}");
            let frac = f64::from(c.width * c.height) / (512.0 * 640.0);
            assert!((0.18..=1.02).contains(&frac), "{c:?} covers {frac}");
            let ratio = f64::from(c.width) / f64::from(c.height);
            assert!((0.70..=1.40).contains(&ratio), "{c:?} ratio {ratio}");
            areas += frac;
            n += 1;
        }
        // Scale is uniform in [0.2, 1] but the largest draws fail and retry: mean a bit under 0.6.
        let mean = areas / f64::from(n);
        assert!((0.45..0.62).contains(&mean), "mean area fraction {mean}");
    }

    #[test]
    fn impossible_ratios_fall_back_to_a_clamped_centre_crop() {
        let cfg = AugmentConfig::default();
        let mut rng = sample_rng(1, 0, 0);
        // A 4000x100 strip: no crop of ratio ≤ 4/3 covers ≥ 20 % of it, so the fallback is taken.
        let c = random_resized_crop(4000, 100, &cfg, &mut rng);
        assert_eq!((c.height, c.width), (100, 133));
        assert_eq!((c.top, c.left), (0, (4000 - 133) / 2));
    }

    #[test]
    fn decode_into_a_canvas_and_verify_hashes() {
        let (w, h) = (48usize, 40usize);
        let px: Vec<u8> = (0..w * h).map(|i| (i % 251) as u8).collect();
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, 100)
            .encode(&px, w as u16, h as u16, jpeg_encoder::ColorType::Luma)
            .expect("encode");
        verify_sha256(&jpeg, &hex::encode(Sha256::digest(&jpeg))).expect("hash matches");
        assert!(matches!(verify_sha256(&jpeg, &"0".repeat(64)), Err(SampleError::HashMismatch { .. })));
        let mut canvas = vec![0u8; 64 * 64];
        let mut scratch = Vec::new();
        assert_eq!(decode_into(&jpeg, &mut canvas, 64, &mut scratch).expect("decode"), (w, h));
        // Quality 100 grayscale: pixels within a few levels of the source, rows at the canvas stride.
        let err = (0..h)
            .flat_map(|y| (0..w).map(move |x| (y, x)))
            .map(|(y, x)| (canvas[y * 64 + x] as i32 - px[y * w + x] as i32).abs())
            .max();
        assert!(err.is_some_and(|e| e <= 8), "{err:?}");
        let mut small = vec![0u8; 32 * 32];
        assert!(matches!(decode_into(&jpeg, &mut small, 32, &mut scratch), Err(SampleError::TooLarge { .. })));
        assert!(matches!(
            decode_into(&jpeg[..jpeg.len() / 3], &mut canvas, 64, &mut scratch),
            Err(SampleError::Decode(_))
        ));
    }

    #[test]
    fn draws_depend_only_on_the_sample_rng() {
        let cfg = AugmentConfig::default();
        let draw = |i| {
            let mut rng = sample_rng(3, 1, i);
            (random_resized_crop(512, 512, &cfg, &mut rng), flip(&cfg, &mut rng))
        };
        assert_eq!(draw(5), draw(5));
        let flips = (0..400).filter(|i| draw(*i).1).count();
        assert!((150..250).contains(&flips), "{flips}");
    }
}
