//! A deliberately plain CPU reference of the device-side augmentation, in f64, written in the
//! order of the official pipeline and of torch's `upsample_bicubic2d` kernel (per output pixel:
//! four horizontal cubic interpolations, then one vertical), sharing no code with
//! [`crate::taps`] or [`crate::augment`] so that a bug in either shows up as a mismatch.

use crate::augment::{AugmentError, Canvases};
use crate::{MEAN, STD};

/// torch's `upsample_bicubic2d` of one `h × w` plane to `oh × ow`, `align_corners=False`,
/// no antialias: half-pixel source coordinates, cubic convolution with a = −0.75, reads outside
/// the plane clamped to its border.
pub fn bicubic_resize(src: &[f64], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f64> {
    assert_eq!(src.len(), h * w);
    const A: f64 = -0.75;
    let cc1 = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let cc2 = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let interp = |x0: f64, x1: f64, x2: f64, x3: f64, t: f64| {
        x0 * cc2(t + 1.0) + x1 * cc1(t) + x2 * cc1(1.0 - t) + x3 * cc2(2.0 - t)
    };
    let at = |y: i64, x: i64| {
        let y = y.clamp(0, h as i64 - 1) as usize;
        let x = x.clamp(0, w as i64 - 1) as usize;
        src[y * w + x]
    };
    let (sy, sx) = (h as f64 / oh as f64, w as f64 / ow as f64);
    let mut out = vec![0.0; oh * ow];
    for oy in 0..oh {
        let real_y = (oy as f64 + 0.5) * sy - 0.5;
        let iy = real_y.floor();
        let ty = real_y - iy;
        let iy = iy as i64;
        for ox in 0..ow {
            let real_x = (ox as f64 + 0.5) * sx - 0.5;
            let ix = real_x.floor();
            let tx = real_x - ix;
            let ix = ix as i64;
            let rows: [f64; 4] = std::array::from_fn(|k| {
                let y = iy - 1 + k as i64;
                interp(at(y, ix - 1), at(y, ix), at(y, ix + 1), at(y, ix + 2), tx)
            });
            out[oy * ow + ox] = interp(rows[0], rows[1], rows[2], rows[3], ty);
        }
    }
    out
}

/// The reference augmentation: for every sample, cut the crop `(top, left, height, width)` out of
/// its canvas, bicubic-resize it to side², flip it if asked, scale by 1/255, normalise with
/// (x − 0.4721) / 0.3037 and replicate to 3 channels (`big`); then `imgs` = bicubic resize of the
/// normalised `big` to (side/2)² (what `Resize([224, 224], BICUBIC)` does to the tensor in the
/// official `forward`). Both returned row-major, `[n, 3, ·, ·]`.
pub fn augment_reference(batch: &Canvases, side: usize) -> Result<(Vec<f64>, Vec<f64>), AugmentError> {
    batch.check(side)?;
    let Canvases { pixels, n, height: canvas_h, width: canvas_w, crops, flips } = *batch;
    let (sb, ss) = (side, side / 2);
    let mut big = Vec::with_capacity(n * 3 * sb * sb);
    let mut small = Vec::with_capacity(n * 3 * ss * ss);
    for i in 0..n {
        let canvas = &pixels[i * canvas_h * canvas_w..(i + 1) * canvas_h * canvas_w];
        let (top, left, h, w) = crops[i];
        let (top, left, h, w) = (top as usize, left as usize, h as usize, w as usize);
        let mut crop = Vec::with_capacity(h * w);
        for y in top..top + h {
            crop.extend(canvas[y * canvas_w + left..y * canvas_w + left + w].iter().map(|&p| f64::from(p)));
        }
        let resized = bicubic_resize(&crop, h, w, sb, sb);
        let mut plane = vec![0.0; sb * sb];
        for y in 0..sb {
            for x in 0..sb {
                let sx = if flips[i] { sb - 1 - x } else { x };
                let v = resized[y * sb + sx] / 255.0;
                plane[y * sb + x] = (v - f64::from(MEAN)) / f64::from(STD);
            }
        }
        let half = bicubic_resize(&plane, sb, sb, ss, ss);
        for _ in 0..3 {
            big.extend_from_slice(&plane);
            small.extend_from_slice(&half);
        }
    }
    Ok((big, small))
}
