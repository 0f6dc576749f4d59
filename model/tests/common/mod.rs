//! Shared by the augmentation tests on every backend: random canvases with crops that hit the
//! edge cases, and the error measure.
#![allow(dead_code)] // each test crate uses its own part

use ecamp_model::augment::Canvases;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A random batch: canvases with random valid images (zero elsewhere), and crops inside the
/// images, the first few chosen to hit the edge cases.
pub struct Case {
    pub pixels: Vec<u8>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub crops: Vec<(u32, u32, u32, u32)>,
    pub flips: Vec<bool>,
}

impl Case {
    pub fn canvases(&self) -> Canvases<'_> {
        Canvases {
            pixels: &self.pixels,
            n: self.n,
            height: self.h,
            width: self.w,
            crops: &self.crops,
            flips: &self.flips,
        }
    }
}

pub fn random_case(seed: u64, n: usize, h: usize, w: usize) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pixels = vec![0u8; n * h * w];
    let mut crops = Vec::new();
    let mut flips = Vec::new();
    for i in 0..n {
        let ih = rng.random_range(h / 2..=h) as u32;
        let iw = rng.random_range(w / 2..=w) as u32;
        // Smooth-ish structure plus noise, so both flat and sharp regions are exercised.
        let (fy, fx) = (rng.random_range(0.01..0.3), rng.random_range(0.01..0.3));
        for y in 0..ih as usize {
            for x in 0..iw as usize {
                let base = 127.5 + 100.0 * ((y as f64 * fy).sin() * (x as f64 * fx).cos());
                let v = base + rng.random_range(-27.0..27.0);
                pixels[i * h * w + y * w + x] = v.clamp(0.0, 255.0) as u8;
            }
        }
        let crop = match i % 8 {
            0 => (0, 0, ih, iw),                                           // full image
            1 => (rng.random_range(0..ih), rng.random_range(0..iw), 1, 1), // one pixel
            2 => (ih - 2, iw - 3, 2, 3),                                   // tiny, bottom-right corner
            3 => (rng.random_range(0..ih), 0, 1, iw),                      // one row
            4 => (0, rng.random_range(0..iw), ih, 1),                      // one column
            _ => {
                // RandomResizedCrop-like: scale 0.2–1, ratio 3/4–4/3, clipped to the image.
                let area = f64::from(ih * iw) * rng.random_range(0.2..1.0);
                let ratio: f64 = rng.random_range((0.75f64).ln()..(4.0f64 / 3.0).ln()).exp();
                let ch = ((area / ratio).sqrt().round() as u32).clamp(1, ih);
                let cw = ((area * ratio).sqrt().round() as u32).clamp(1, iw);
                (rng.random_range(0..=ih - ch), rng.random_range(0..=iw - cw), ch, cw)
            }
        };
        crops.push(crop);
        flips.push(rng.random_bool(0.5));
    }
    Case { pixels, n, h, w, crops, flips }
}

/// The largest |got − want|.
pub fn max_abs(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (f64::from(*g) - w).abs()).fold(0.0, f64::max)
}

/// Upscaling canvases (crops ≤ 448) and a downscaling one (crops up to 600 px), flips both ways.
pub fn cases() -> Vec<Case> {
    vec![random_case(1, 8, 96, 128), random_case(2, 8, 300, 200), random_case(3, 3, 600, 520)]
}
