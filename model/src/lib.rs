//! ecamp-model: the ECAMP model in burn 0.21 — the networks ([`net`], [`Ecamp`]), the losses
//! ([`loss`]), the sizes ([`EcampConfig`]) and the device-side image augmentation ([`augment`]).
//!
//! The loader hands over `n × H × W` u8 grayscale canvases plus, per sample, a
//! RandomResizedCrop box and a flip bit (`ecamp_loader::Batch`). The device then makes
//!
//! * `big`  `[n, 3, 2S, 2S]` f32 — crop → bicubic → flip → /255 → (x − 0.4721)/0.3037 → ×3 ch
//! * `imgs` `[n, 3, S, S]` f32 — bicubic of the normalised `big` (spec §2.2: the official
//!   `forward` runs `Resize([224, 224], BICUBIC)` on `big_imgs`).
//!
//! Bicubic means torch's `F.interpolate(mode='bicubic', align_corners=False, antialias=False)`:
//! Keys cubic convolution with a = −0.75, half-pixel centres, reads clamped to the border.
//!
//! * [`augment::augment`] — the recommended formulation: separable 4-tap gather passes
//!   (`select` + broadcast `mul` + `add`), batched over samples with different crops.
//! * [`host`] — the same arithmetic as plain f32 host code (a fast, exact CPU path).
//! * [`reference`] — plain f64 loops, the ground truth of the tests.
//! * [`taps`] — host-side tap tables (crop, clamp and flip folded in).

#![warn(missing_docs)]

pub mod augment;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod ecamp;
pub mod eval;
pub mod fused;
pub mod host;
pub mod loss;
pub mod net;
pub mod reference;
pub mod taps;
pub mod train;
pub mod weights;

pub use augment::augment;
pub use config::EcampConfig;
pub use ecamp::{Ecamp, Inputs, Losses, Outputs};
pub use net::autocast::Precision;

/// Output side of the big (SR target) image.
pub const SIDE_BIG: usize = 448;
/// Output side of the encoder input.
pub const SIDE_SMALL: usize = 224;
/// Pre-training normalisation mean (spec §2.2).
pub const MEAN: f32 = 0.4721;
/// Pre-training normalisation std (spec §2.2).
pub const STD: f32 = 0.3037;
