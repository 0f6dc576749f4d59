//! Host-side bicubic tap tables: for every output pixel of a 1-D resize, the four source
//! positions and weights that torch's `upsample_bicubic2d` (`align_corners=False`,
//! `antialias=False`) reads.
//!
//! torch's rule, per axis, for an input segment of `len` pixels resized to `out` pixels:
//!
//! ```text
//! src = (o + 0.5) * len / out - 0.5        // half-pixel centres, NOT clamped at 0 (cubic=true)
//! f   = floor(src), t = src - f
//! taps  f-1, f, f+1, f+2, each clamped to [0, len-1]   // upsample_get_value_bounded
//! weights  W(t+1), W(t), W(1-t), W(2-t)                 // cubic convolution, a = -0.75
//! ```
//!
//! The tables already encode the crop (positions are absolute on the canvas axis: `start` is
//! added after clamping, so the border that is replicated is the crop's border, as when the crop
//! is cut out first and then resized) and the horizontal flip (output `o` takes the taps of
//! output `out-1-o`). The arithmetic is f64; torch does it in f32, which moves a weight by at
//! most a few ulps of f32.

/// torch's cubic-convolution constant (`get_cubic_upsample_coefficients`, `A = -0.75`).
pub const CUBIC_A: f64 = -0.75;

/// Keys' cubic convolution kernel W(x) for |x| ≤ 1.
fn cubic_near(x: f64) -> f64 {
    ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0
}

/// Keys' cubic convolution kernel W(x) for 1 < |x| < 2.
fn cubic_far(x: f64) -> f64 {
    ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A
}

/// The weights of the taps `f-1, f, f+1, f+2` for the fractional offset `t = src - f`, `t ∈ [0, 1)`.
/// They always sum to 1.
pub fn cubic_weights(t: f64) -> [f64; 4] {
    [cubic_far(t + 1.0), cubic_near(t), cubic_near(1.0 - t), cubic_far(2.0 - t)]
}

/// The four taps of every output pixel of one axis.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisTaps {
    /// Source positions on the (canvas) axis, `out` rows of 4.
    pub index: Vec<[u32; 4]>,
    /// Weights, `out` rows of 4, each row summing to 1.
    pub weight: Vec<[f64; 4]>,
}

/// Taps that resize the segment `[start, start + len)` of an axis to `out` pixels, mirrored when
/// `flip` is set.
///
/// # Panics
/// If `len` or `out` is zero.
pub fn axis_taps(start: u32, len: u32, out: usize, flip: bool) -> AxisTaps {
    assert!(len > 0 && out > 0, "empty resize: {len} -> {out}");
    let scale = f64::from(len) / out as f64;
    let last = i64::from(len) - 1;
    let mut index = Vec::with_capacity(out);
    let mut weight = Vec::with_capacity(out);
    for o in 0..out {
        let o = if flip { out - 1 - o } else { o };
        let src = (o as f64 + 0.5) * scale - 0.5;
        let f = src.floor();
        weight.push(cubic_weights(src - f));
        let f = f as i64;
        index.push(std::array::from_fn(|k| {
            let at = (f - 1 + k as i64).clamp(0, last);
            start + at as u32
        }));
    }
    AxisTaps { index, weight }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_interpolate() {
        for i in 0..=100 {
            let t = f64::from(i) / 100.0;
            let w = cubic_weights(t);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
        // The 2:1 downscale reads at t = 0.5: (-0.09375, 0.59375, 0.59375, -0.09375).
        let w = cubic_weights(0.5);
        assert!((w[0] + 0.09375).abs() < 1e-15 && (w[1] - 0.59375).abs() < 1e-15);
    }

    #[test]
    fn same_size_is_the_identity_and_clamps_at_the_crop() {
        let t = axis_taps(10, 5, 5, false);
        for (o, (idx, w)) in t.index.iter().zip(&t.weight).enumerate() {
            assert_eq!(idx[1], 10 + o as u32);
            assert_eq!(*w, [0.0, 1.0, 0.0, 0.0]);
            assert!(idx.iter().all(|&i| (10..15).contains(&i)));
        }
    }

    #[test]
    fn flip_mirrors_the_table() {
        let a = axis_taps(3, 37, 448, false);
        let b = axis_taps(3, 37, 448, true);
        for o in 0..448 {
            assert_eq!(a.index[o], b.index[447 - o]);
            assert_eq!(a.weight[o], b.weight[447 - o]);
        }
    }

    #[test]
    fn a_single_pixel_crop_is_constant() {
        let t = axis_taps(7, 1, 448, false);
        assert!(t.index.iter().all(|i| *i == [7; 4]));
    }
}
