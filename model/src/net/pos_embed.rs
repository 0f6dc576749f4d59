//! Fixed 2-D sin-cos position tables with a zero row for the cls token (MAE's formula, spec §3.6
//! item 4: the official repository's `k/(2D)` frequencies are replaced by MAE's `k/(D/2)`, as
//! every MAE checkpoint carries).

/// `(1 + g²) × dim` row-major: row 0 (cls) zero, then the grid in raster order. The first half of
/// each row encodes the column (x), the second half the row (y), as MAE's `meshgrid(w, h)`.
pub fn sincos_2d(dim: usize, grid: usize) -> Vec<f32> {
    let mut table = vec![0.0f32; (1 + grid * grid) * dim];
    let half = dim / 2;
    for y in 0..grid {
        for x in 0..grid {
            let row = &mut table[(1 + y * grid + x) * dim..][..dim];
            encode_1d(&mut row[..half], x as f64);
            encode_1d(&mut row[half..], y as f64);
        }
    }
    table
}

/// `[sin(p·ω_0..), cos(p·ω_0..)]` with `ω_k = 1 / 10000^(k / (D/2))`.
fn encode_1d(out: &mut [f32], pos: f64) {
    let quarter = out.len() / 2;
    for k in 0..quarter {
        let omega = 1.0 / 10000f64.powf(k as f64 / quarter as f64);
        out[k] = (pos * omega).sin() as f32;
        out[quarter + k] = (pos * omega).cos() as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_mae_layout() {
        let t = sincos_2d(8, 2);
        assert!(t[..8].iter().all(|&v| v == 0.0), "cls row is zero");
        // Patch (y=0, x=1): x half = [sin(1), sin(0.01), cos(1), cos(0.01)], y half = [0, 0, 1, 1].
        let p = &t[2 * 8..3 * 8];
        let want = [1f64.sin(), 0.01f64.sin(), 1f64.cos(), 0.01f64.cos(), 0.0, 0.0, 1.0, 1.0];
        for (a, b) in p.iter().zip(want) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{p:?}");
        }
    }
}
