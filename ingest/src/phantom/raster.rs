//! Attenuation layers, drawing primitives and the final exposure-to-pixel mapping.
//!
//! Geometry is described in anatomy units (u across, v down, both 0..1 for a centred standard patient); the
//! [`Grid`] maps them to pixels through the study's positioning, so all drawing is resolution independent.

use super::anatomy::Pose;
use rand::RngCore;
use rand_chacha::ChaCha8Rng;

/// Fraction of the body thickness that aerated lung removes from the attenuation.
const AIR_K: f32 = 0.58;

/// Soft membership from a signed distance in pixels (positive inside): a one-pixel anti-aliased edge.
#[inline]
pub(crate) fn ramp(d_px: f32) -> f32 {
    (d_px + 0.5).clamp(0.0, 1.0)
}

/// Hermite smoothstep of `x` between `e0` and `e1`.
#[inline]
pub(crate) fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Mapping between anatomy units and pixels for one study.
#[derive(Debug, Clone)]
pub(crate) struct Grid {
    pub w: usize,
    pub h: usize,
    /// Anatomy u of each pixel column centre.
    pub us: Vec<f32>,
    /// Anatomy v of each pixel row centre.
    pub vs: Vec<f32>,
    /// Pixels per anatomy unit (square pixels, square images).
    pub ppu: f32,
    sx: f32,
    sy: f32,
    scale: f32,
}

impl Grid {
    pub fn new(w: u32, h: u32, pose: &Pose) -> Grid {
        let (w, h) = (w as usize, h as usize);
        let us = (0..w).map(|x| ((x as f32 + 0.5) / w as f32 - 0.5 - pose.sx) / pose.scale + 0.5).collect();
        let vs = (0..h).map(|y| ((y as f32 + 0.5) / h as f32 - 0.5 - pose.sy) / pose.scale + 0.5).collect();
        Grid { w, h, us, vs, ppu: pose.scale * w as f32, sx: pose.sx, sy: pose.sy, scale: pose.scale }
    }

    /// Continuous pixel coordinates of an anatomy point (pixel centres at integers).
    pub fn to_px(&self, u: f32, v: f32) -> (f32, f32) {
        let x = ((u - 0.5) * self.scale + 0.5 + self.sx) * self.w as f32 - 0.5;
        let y = ((v - 0.5) * self.scale + 0.5 + self.sy) * self.h as f32 - 0.5;
        (x, y)
    }

    /// Half-open pixel ranges covering the anatomy box `[u0, u1] x [v0, v1]`, clipped to the image.
    pub fn px_box(&self, u0: f32, v0: f32, u1: f32, v1: f32) -> (usize, usize, usize, usize) {
        let (x0, y0) = self.to_px(u0, v0);
        let (x1, y1) = self.to_px(u1, v1);
        let clip = |a: f32, n: usize| (a.max(0.0) as usize).min(n);
        (
            clip(x0.floor(), self.w),
            clip(y0.floor(), self.h),
            clip(x1.ceil() + 1.0, self.w),
            clip(y1.ceil() + 1.0, self.h),
        )
    }
}

/// How a primitive combines with what is already in a layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Combine {
    Add,
    /// Overlapping vessel pieces must not double up at their joints.
    Max,
}

/// The three attenuation layers a study is drawn into before composition.
#[derive(Debug, Clone)]
pub(crate) struct Layers {
    pub grid: Grid,
    /// Soft tissue and bone attenuation.
    pub tissue: Vec<f32>,
    /// Aerated lung thickness (0 = none); removes [`AIR_K`] of it from the attenuation.
    pub air: Vec<f32>,
    /// Lung markings (vessels), only visible where there is aerated lung.
    pub marks: Vec<f32>,
}

impl Layers {
    pub fn new(grid: Grid) -> Layers {
        let n = grid.w * grid.h;
        Layers { grid, tissue: vec![0.0; n], air: vec![0.0; n], marks: vec![0.0; n] }
    }

    /// Tapered tube from `a` to `b` (radii in anatomy units) with a cylinder profile scaled by `amp`.
    pub fn segment(&mut self, target: Target, a: (f32, f32), b: (f32, f32), r: (f32, f32), amp: f32, mode: Combine) {
        let g = &self.grid;
        let (ax, ay) = g.to_px(a.0, a.1);
        let (bx, by) = g.to_px(b.0, b.1);
        // Sub-pixel tubes are widened to 0.7 px with the contrast lowered so the projected mass stays the same.
        let r0 = r.0 * g.ppu;
        let r1 = r.1 * g.ppu;
        let (r0d, r1d) = (r0.max(0.7), r1.max(0.7));
        let amp = amp * (r0 + r1) / (r0d + r1d);
        let rm = r0d.max(r1d);
        let x0 = ((ax.min(bx) - rm).floor().max(0.0) as usize).min(g.w);
        let x1 = ((ax.max(bx) + rm).ceil().max(-1.0) as usize + 1).min(g.w);
        let y0 = ((ay.min(by) - rm).floor().max(0.0) as usize).min(g.h);
        let y1 = ((ay.max(by) + rm).ceil().max(-1.0) as usize + 1).min(g.h);
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = dx * dx + dy * dy;
        let w = g.w;
        let buf = self.layer_mut(target);
        for y in y0..y1 {
            let row = &mut buf[y * w..(y + 1) * w];
            let py = y as f32 - ay;
            for (x, px) in row.iter_mut().enumerate().take(x1).skip(x0) {
                let pxx = x as f32 - ax;
                let t = if len2 > 0.0 { ((pxx * dx + py * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
                let (ex, ey) = (pxx - t * dx, py - t * dy);
                let rr = r0d + t * (r1d - r0d);
                let q = 1.0 - (ex * ex + ey * ey) / (rr * rr);
                if q > 0.0 {
                    let val = amp * q.sqrt();
                    match mode {
                        Combine::Add => *px += val,
                        Combine::Max => *px = px.max(val),
                    }
                }
            }
        }
    }

    /// Bone band drawn column by column: `f(u)` gives the centre v, the vertical half-thickness and the density.
    pub fn band(&mut self, u_range: (f32, f32), f: impl Fn(f32) -> Option<(f32, f32, f32)>) {
        let g = &self.grid;
        let (x0, _, x1, _) = g.px_box(u_range.0, 0.0, u_range.1, 0.0);
        for x in x0..x1 {
            let Some((vc, hv, amp)) = f(g.us[x]) else { continue };
            let (_, yc) = g.to_px(g.us[x], vc);
            let h_px = (hv * g.ppu).max(0.5);
            let ya = ((yc - h_px).floor().max(0.0) as usize).min(g.h);
            let yb = ((yc + h_px).ceil().max(-1.0) as usize + 1).min(g.h);
            for y in ya..yb {
                let t = (y as f32 - yc) / h_px;
                let at = t.abs();
                if at >= 1.0 + 0.5 / h_px {
                    continue;
                }
                // Cortical bone is densest at the rims of a rib seen end-on.
                let t2 = (t * t).min(1.0);
                let profile = 0.6 * (1.0 - t2).sqrt() + 0.4 * t2 * t2;
                self.tissue[y * g.w + x] += amp * profile * ramp((1.0 - at) * h_px);
            }
        }
    }

    fn layer_mut(&mut self, target: Target) -> &mut Vec<f32> {
        match target {
            Target::Tissue => &mut self.tissue,
            Target::Marks => &mut self.marks,
        }
    }

    /// Combines the layers into film density and quantises to 8-bit with grain and uneven exposure.
    pub fn compose(self, pose: &Pose, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let Layers { grid, tissue, air, mut marks } = self;
        let (w, h) = (grid.w, grid.h);
        let mut att = tissue;
        for ((a, &air), &m) in att.iter_mut().zip(&air).zip(&marks) {
            *a = (*a - AIR_K * air + m * (air * 3.0).min(1.0)).max(0.0);
        }
        blur121(&mut att, &mut marks, w, h);

        // Exposure, film response, display window and gamma folded into one table over the exposure product.
        const LUT_N: usize = 4096;
        const LUT_MAX: f32 = 6.0;
        let lut: Vec<f32> = (0..LUT_N)
            .map(|i| {
                let film = 1.0 - (-(i as f32) * LUT_MAX / (LUT_N - 1) as f32).exp();
                let t = ((film - pose.lo) / (pose.hi - pose.lo)).clamp(0.0, 1.0);
                255.0 * t.powf(pose.gamma) + 0.5
            })
            .collect();
        let lut_scale = (LUT_N - 1) as f32 / LUT_MAX;

        // Uneven exposure: a coarse 4x4 field of gains, bilinearly interpolated.
        let cell = |p: usize, n: usize| {
            let f = ((p as f32 + 0.5) / n as f32 * 3.0).clamp(0.0, 2.999);
            (f as usize, f.fract())
        };
        let cols: Vec<(usize, f32)> = (0..w).map(|x| cell(x, w)).collect();
        let sigma = pose.noise * 255.0 / 0.577;
        let mut out = vec![0u8; w * h];
        for y in 0..h {
            let (cy, fy) = cell(y, h);
            let f0 = &pose.field[cy * 4..cy * 4 + 4];
            let f1 = &pose.field[(cy + 1) * 4..(cy + 1) * 4 + 4];
            let row_in = &att[y * w..(y + 1) * w];
            let row_out = &mut out[y * w..(y + 1) * w];
            for ((o, &a), &(cx, fx)) in row_out.iter_mut().zip(row_in).zip(&cols) {
                let top = f0[cx] + (f0[cx + 1] - f0[cx]) * fx;
                let bot = f1[cx] + (f1[cx + 1] - f1[cx]) * fx;
                let gain = top + (bot - top) * fy;
                let k = ((pose.gain * gain * a * lut_scale) as usize).min(LUT_N - 1);
                let r = rng.next_u64();
                let s = ((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48)) as f32 / 65535.0;
                // The table already adds 0.5, so truncation rounds.
                *o = (lut[k] + (s - 2.0) * sigma).clamp(0.0, 255.0) as u8;
            }
        }
        out
    }
}

/// Which layer a primitive draws into.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target {
    Tissue,
    Marks,
}

/// Separable [1, 2, 1] / 4 blur with clamped borders; softens the analytic edges like film unsharpness.
fn blur121(buf: &mut [f32], tmp: &mut [f32], w: usize, h: usize) {
    for y in 0..h {
        let src = &buf[y * w..(y + 1) * w];
        let dst = &mut tmp[y * w..(y + 1) * w];
        for x in 0..w {
            let l = src[x.saturating_sub(1)];
            let r = src[(x + 1).min(w - 1)];
            dst[x] = 0.25 * (l + r) + 0.5 * src[x];
        }
    }
    for y in 0..h {
        let up = y.saturating_sub(1) * w;
        let dn = (y + 1).min(h - 1) * w;
        let me = y * w;
        for x in 0..w {
            buf[me + x] = 0.25 * (tmp[up + x] + tmp[dn + x]) + 0.5 * tmp[me + x];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_constant_images() {
        let (w, h) = (5, 4);
        let mut b = vec![2.0f32; w * h];
        let mut t = vec![0.0f32; w * h];
        blur121(&mut b, &mut t, w, h);
        assert!(b.iter().all(|&v| (v - 2.0).abs() < 1e-6));
    }

    #[test]
    fn ramp_and_smoothstep_bounds() {
        assert_eq!(ramp(-3.0), 0.0);
        assert_eq!(ramp(3.0), 1.0);
        assert_eq!(smoothstep(0.0, 1.0, 0.5), 0.5);
    }
}
