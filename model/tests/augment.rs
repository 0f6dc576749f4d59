//! The burn formulations against the f64 reference on random batches: random canvases, random
//! crops including 1-pixel, tiny, thin, full-image, border-touching and downscaling ones, random
//! flips. Prints the max abs errors (run with `--nocapture` to see them).

use burn::backend::NdArray;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor, TensorData};
use ecamp_model::augment::{AugmentError, Canvases, Resample, augment_with};
use ecamp_model::host::augment_host;
use ecamp_model::reference::{augment_reference, bicubic_resize};
use ecamp_model::{SIDE_BIG, SIDE_SMALL, augment};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod common;

use common::{Case, cases, max_abs, random_case};

type B = NdArray<f32>;

/// The bound the tests hold every formulation to, in normalised units: values span about
/// [−1.6, 1.8] plus bicubic overshoot, so this is a few f32 ulps (one u8 step is
/// 1/(255·0.3037) ≈ 0.0129, four orders of magnitude more).
const TOLERANCE: f64 = 4e-6;

type AugmentFn = fn(&Device<B>, &Canvases, usize) -> Result<(Tensor<B, 4>, Tensor<B, 4>), AugmentError>;

/// Runs `f` and the reference on `case`, returns (max error of big, of imgs).
fn compare(f: AugmentFn, case: &Case) -> (f64, f64) {
    let device = Default::default();
    let (big, small) = f(&device, &case.canvases(), SIDE_BIG).unwrap();
    assert_eq!(big.dims(), [case.n, 3, SIDE_BIG, SIDE_BIG]);
    assert_eq!(small.dims(), [case.n, 3, SIDE_SMALL, SIDE_SMALL]);
    let (want_big, want_small) = augment_reference(&case.canvases(), SIDE_BIG).unwrap();
    let big = big.into_data().convert::<f32>().into_vec::<f32>().unwrap();
    let small = small.into_data().convert::<f32>().into_vec::<f32>().unwrap();
    (max_abs(&big, &want_big), max_abs(&small, &want_small))
}

#[test]
fn separable_gather_matches_the_reference() {
    for case in cases() {
        let (eb, es) = compare(augment::<B>, &case);
        println!("gather      {}x{} n={}: max |err| big {eb:.3e}, imgs {es:.3e}", case.h, case.w, case.n);
        assert!(eb < TOLERANCE && es < TOLERANCE, "big {eb}, imgs {es}");
    }
}

fn augment_one_select(
    device: &Device<B>,
    batch: &Canvases,
    side: usize,
) -> Result<(Tensor<B, 4>, Tensor<B, 4>), AugmentError> {
    augment_with::<B>(device, batch, side, Resample::OneSelect)
}

#[test]
fn one_select_gather_matches_the_reference() {
    for case in cases() {
        let (eb, es) = compare(augment_one_select, &case);
        println!("gather/1sel {}x{} n={}: max |err| big {eb:.3e}, imgs {es:.3e}", case.h, case.w, case.n);
        assert!(eb < TOLERANCE && es < TOLERANCE, "big {eb}, imgs {es}");
    }
}

#[test]
fn host_code_matches_the_reference() {
    for case in cases() {
        let (big, small) = augment_host(&case.canvases(), SIDE_BIG).unwrap();
        let (want_big, want_small) = augment_reference(&case.canvases(), SIDE_BIG).unwrap();
        let (eb, es) = (max_abs(&big, &want_big), max_abs(&small, &want_small));
        println!("host f32    {}x{} n={}: max |err| big {eb:.3e}, imgs {es:.3e}", case.h, case.w, case.n);
        assert!(eb < TOLERANCE && es < TOLERANCE, "big {eb}, imgs {es}");
    }
}

/// burn's ndarray `interpolate(Bicubic)` is torch's a = −0.75 half-pixel kernel only with
/// `with_align_corners(false)`; `InterpolateOptions::new` defaults to `align_corners = true`.
#[test]
fn burn_bicubic_is_torch_bicubic_only_without_align_corners() {
    let mut rng = StdRng::seed_from_u64(9);
    for &(h, w, oh, ow) in &[(37, 53, 448, 448), (448, 448, 224, 224), (600, 520, 448, 448), (1, 3, 5, 4)] {
        let src: Vec<f64> = (0..h * w).map(|_| rng.random_range(-2.0..2.0)).collect();
        let want = bicubic_resize(&src, h, w, oh, ow);
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(src.iter().map(|&v| v as f32).collect::<Vec<_>>(), [1, 1, h, w]),
            &Default::default(),
        );
        let run = |align| {
            let opts = InterpolateOptions::new(InterpolateMode::Bicubic).with_align_corners(align);
            let got = interpolate(x.clone(), [oh, ow], opts).into_data().into_vec::<f32>().unwrap();
            max_abs(&got, &want)
        };
        let (half_pixel, corners) = (run(false), run(true));
        println!("burn interpolate {h}x{w} -> {oh}x{ow}: align_corners=false {half_pixel:.3e}, true {corners:.3e}");
        assert!(half_pixel < 1e-5, "{half_pixel}");
        if h > 1 && w > 1 {
            assert!(corners > 1e-2, "align_corners=true unexpectedly matches: {corners}");
        }
    }
}

/// The reference itself, on cases worked by hand.
#[test]
fn reference_sanity() {
    // 1×4 → 1×2 (a 2:1 downscale): t = 0.5 everywhere, weights (−3/32, 19/32, 19/32, −3/32),
    // the left tap of output 0 and the right tap of output 1 clamped to the border.
    let (a, b, c, d) = (10.0, 20.0, 40.0, 80.0);
    let out = bicubic_resize(&[a, b, c, d], 1, 4, 1, 2);
    let w = [-3.0 / 32.0, 19.0 / 32.0];
    let want0 = w[0] * a + w[1] * a + w[1] * b + w[0] * c;
    let want1 = w[0] * b + w[1] * c + w[1] * d + w[0] * d;
    assert!((out[0] - want0).abs() < 1e-12 && (out[1] - want1).abs() < 1e-12, "{out:?}");
    // Same size is the identity; a constant stays constant at any size.
    let src: Vec<f64> = (0..35).map(f64::from).collect();
    assert_eq!(bicubic_resize(&src, 5, 7, 5, 7), src);
    assert!(bicubic_resize(&[3.25; 35], 5, 7, 448, 448).iter().all(|v| (v - 3.25).abs() < 1e-12));
    // A full, unflipped crop of a constant canvas normalises as (v/255 − mean)/std.
    let one = |pixels: &[u8], h: usize, w: usize, flip: bool| {
        let (crops, flips) = ([(0, 0, h as u32, w as u32)], [flip]);
        let batch = Canvases { pixels, n: 1, height: h, width: w, crops: &crops, flips: &flips };
        augment_reference(&batch, SIDE_BIG).unwrap()
    };
    let (big, small) = one(&[51u8; 6 * 4], 6, 4, false);
    let want = (0.2 - 0.4721f64 as f32 as f64) / (0.3037f32 as f64);
    assert!(big.iter().chain(&small).all(|v| (v - want).abs() < 1e-12));
    // Flip mirrors the columns.
    let ramp: Vec<u8> = (0..16 * 16).map(|i| (i % 16 * 16) as u8).collect();
    let (plain, _) = one(&ramp, 16, 16, false);
    let (flipped, _) = one(&ramp, 16, 16, true);
    for y in [0, 200, 447] {
        for x in [0, 3, 300] {
            assert_eq!(plain[y * 448 + x], flipped[y * 448 + 447 - x]);
        }
    }
}

/// The tiny preset's sizes (64 → 32) go through the same code.
#[test]
fn any_even_output_side() {
    let case = random_case(4, 4, 50, 70);
    let (big, small) = augment::<B>(&Default::default(), &case.canvases(), 64).unwrap();
    assert_eq!((big.dims(), small.dims()), ([4, 3, 64, 64], [4, 3, 32, 32]));
    let (want_big, want_small) = augment_reference(&case.canvases(), 64).unwrap();
    let big = big.into_data().into_vec::<f32>().unwrap();
    let small = small.into_data().into_vec::<f32>().unwrap();
    assert!(max_abs(&big, &want_big) < TOLERANCE && max_abs(&small, &want_small) < TOLERANCE);
}

/// Malformed batches are errors that name the problem, never panics.
#[test]
fn malformed_batches_are_errors() {
    let case = random_case(5, 2, 20, 30);
    let dev = Default::default();
    let mut crops = case.crops.clone();
    crops[1] = (15, 0, 10, 5);
    let bad = Canvases { crops: &crops, ..case.canvases() };
    let err = augment::<B>(&dev, &bad, 64).unwrap_err();
    assert!(matches!(err, AugmentError::Crop { sample: 1, .. }), "{err}");
    let short = Canvases { pixels: &case.pixels[1..], ..case.canvases() };
    assert!(matches!(augment_host(&short, 64), Err(AugmentError::Malformed(_))));
    assert!(matches!(augment::<B>(&dev, &case.canvases(), 63), Err(AugmentError::Empty(_))));
    let flips = [true];
    let few = Canvases { flips: &flips, ..case.canvases() };
    assert!(matches!(augment_reference(&few, 64), Err(AugmentError::Malformed(_))));
}
