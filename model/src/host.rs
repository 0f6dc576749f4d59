//! The same arithmetic as [`crate::augment`] in plain single-threaded f32 Rust on the host, from
//! the same [`crate::taps`] tables: a fast CPU path (for CPU-only runs) that is exact, unlike a
//! `fast_image_resize` CatmullRom resize (a = −0.5, antialiased when shrinking, u8 output).

use crate::augment::{AugmentError, Canvases};
use crate::taps::{AxisTaps, axis_taps};
use crate::{MEAN, STD};

/// Separable resize of the `rows × cols` plane `src` (row stride `stride`) with `ty` over rows
/// and `tx` over columns, positions relative to `src`; `scale · Σ + offset` into `out`.
#[allow(clippy::too_many_arguments)]
fn resize_plane<T: Copy + Into<f32>>(
    src: &[T],
    stride: usize,
    cols: std::ops::Range<usize>,
    ty: &AxisTaps,
    tx: &AxisTaps,
    scale: f32,
    offset: f32,
    tmp: &mut Vec<f32>,
    out: &mut [f32],
) {
    let width = cols.len();
    let ow = tx.index.len();
    tmp.clear();
    tmp.resize(ty.index.len() * width, 0.0);
    for (y, (idx, w)) in ty.index.iter().zip(&ty.weight).enumerate() {
        let row = &mut tmp[y * width..(y + 1) * width];
        for k in 0..4 {
            let wk = (w[k] as f32) * scale;
            let s = &src[idx[k] as usize * stride + cols.start..][..width];
            row.iter_mut().zip(s).for_each(|(r, &v)| *r += wk * v.into());
        }
    }
    for (row, out) in tmp.chunks_exact(width).zip(out.chunks_exact_mut(ow)) {
        for (o, (idx, w)) in out.iter_mut().zip(tx.index.iter().zip(&tx.weight)) {
            let i = idx.map(|i| i as usize - cols.start);
            let acc = (w[0] as f32) * row[i[0]] + (w[1] as f32) * row[i[1]];
            *o = acc + (w[2] as f32) * row[i[2]] + (w[3] as f32) * row[i[3]] + offset;
        }
    }
}

/// [`crate::augment`] on the host: `(big, imgs)` row-major `[n, 3, side, side]`,
/// `[n, 3, side/2, side/2]`.
pub fn augment_host(batch: &Canvases, side: usize) -> Result<(Vec<f32>, Vec<f32>), AugmentError> {
    batch.check(side)?;
    let Canvases { pixels, n, height: canvas_h, width: canvas_w, crops, flips } = *batch;
    let (sb, ss) = (side, side / 2);
    let halve = axis_taps(0, sb as u32, ss, false);
    let mut big = vec![0.0f32; n * 3 * sb * sb];
    let mut small = vec![0.0f32; n * 3 * ss * ss];
    let mut tmp = Vec::new();
    for i in 0..n {
        let (top, left, h, w) = crops[i];
        // Only the crop's columns are read, rows through the taps.
        let cols = left as usize..(left + w) as usize;
        let ty = axis_taps(0, h, sb, false);
        let ty = AxisTaps { index: ty.index.iter().map(|r| r.map(|v| v + top)).collect(), weight: ty.weight };
        let tx = axis_taps(left, w, sb, flips[i]);
        let canvas = &pixels[i * canvas_h * canvas_w..(i + 1) * canvas_h * canvas_w];
        let plane = &mut big[i * 3 * sb * sb..][..sb * sb];
        resize_plane(canvas, canvas_w, cols, &ty, &tx, 1.0 / (255.0 * STD), -MEAN / STD, &mut tmp, plane);
        let half = &mut small[i * 3 * ss * ss..][..ss * ss];
        resize_plane(plane, sb, 0..sb, &halve, &halve, 1.0, 0.0, &mut tmp, half);
        big.copy_within(i * 3 * sb * sb..(i * 3 + 1) * sb * sb, (i * 3 + 1) * sb * sb);
        big.copy_within(i * 3 * sb * sb..(i * 3 + 1) * sb * sb, (i * 3 + 2) * sb * sb);
        small.copy_within(i * 3 * ss * ss..(i * 3 + 1) * ss * ss, (i * 3 + 1) * ss * ss);
        small.copy_within(i * 3 * ss * ss..(i * 3 + 1) * ss * ss, (i * 3 + 2) * ss * ss);
    }
    Ok((big, small))
}
