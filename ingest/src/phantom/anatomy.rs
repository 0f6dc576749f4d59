//! Normal thoracic anatomy: per-subject geometry, per-study positioning, and their rasterisation.
//!
//! Units: u runs across the image (0 = image left = patient's right), v runs down; a standard patient fills
//! roughly `0.05..0.95` in u. Attenuation is in units of the central body thickness.

use super::Side;
use super::raster::{Combine, Layers, Target, ramp, smoothstep};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::PI;

/// Uniform jitter in `[-s, s)`.
fn jit(rng: &mut ChaCha8Rng, s: f32) -> f32 {
    rng.random_range(-s..s)
}

/// Positioning and exposure of one study (the patient is the same across a subject's studies, the film is not).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pose {
    pub sx: f32,
    pub sy: f32,
    pub scale: f32,
    /// Attenuation-to-film gain (beam penetration).
    pub gain: f32,
    /// Display window on film density.
    pub lo: f32,
    pub hi: f32,
    pub gamma: f32,
    /// Grain standard deviation as a fraction of full scale.
    pub noise: f32,
    /// 4x4 exposure gains for smooth intensity variation.
    pub field: [f32; 16],
}

impl Pose {
    pub fn sample(rng: &mut ChaCha8Rng) -> Pose {
        let sx = jit(rng, 0.015);
        let sy = jit(rng, 0.012);
        let scale = rng.random_range(0.95..1.03);
        let gain = rng.random_range(1.45..1.75);
        let lo = rng.random_range(0.16..0.24);
        let hi = rng.random_range(0.90..0.96);
        let gamma = rng.random_range(1.0..1.35);
        let noise = rng.random_range(0.008..0.016);
        // The anode heel effect makes one side of the film consistently darker.
        let heel = jit(rng, 0.05);
        let mut field = [1.0f32; 16];
        for (i, f) in field.iter_mut().enumerate() {
            *f = 1.0 + jit(rng, 0.04) + heel * ((i / 4) as f32 / 3.0 - 0.5);
        }
        Pose { sx, sy, scale, gain, lo, hi, gamma, noise, field }
    }
}

/// One lung: an asymmetric superellipse (round laterally, flat medially) cut below by its hemidiaphragm dome.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lung {
    pub side: Side,
    pub cx: f32,
    pub cy: f32,
    pub b: f32,
    pub a_lat: f32,
    pub a_med: f32,
    pub dome_u: f32,
    pub dome_v: f32,
    pub curv_lat: f32,
    pub curv_med: f32,
    pub hilum: (f32, f32),
}

impl Lung {
    /// +1 when lateral is towards larger u (patient's left lung), -1 otherwise.
    pub fn lat(&self) -> f32 {
        if self.side == Side::Right { -1.0 } else { 1.0 }
    }

    /// Apex v.
    pub fn top(&self) -> f32 {
        self.cy - self.b
    }

    /// Horizontal extent of the lung at row `v`, ignoring the diaphragm.
    pub fn row_span(&self, v: f32) -> Option<(f32, f32)> {
        let dy = (v - self.cy) / self.b;
        if dy.abs() >= 1.0 {
            return None;
        }
        let d2 = dy * dy;
        // Exponent 2 laterally (rounded apex and wall), 4 medially (straight mediastinal border): no powf.
        let lateral = self.cx + self.lat() * self.a_lat * (1.0 - d2).sqrt();
        let medial = self.cx - self.lat() * self.a_med * (1.0 - d2 * d2).sqrt().sqrt();
        Some((lateral.min(medial), lateral.max(medial)))
    }

    /// Hemidiaphragm v at column `u`; steeper laterally, which makes the costophrenic angle acute.
    pub fn diaphragm(&self, u: f32) -> f32 {
        let d = u - self.dome_u;
        let c = if d * self.lat() > 0.0 { self.curv_lat } else { self.curv_med };
        self.dome_v + c * d * d
    }

    /// Soft lung membership with a one-pixel edge (`ppu` pixels per unit).
    pub fn membership(&self, u: f32, v: f32, ppu: f32) -> f32 {
        match self.row_span(v) {
            None => 0.0,
            Some((a, b)) => ramp((u - a) * ppu) * ramp((b - u) * ppu) * ramp((self.diaphragm(u) - v) * ppu),
        }
    }

    /// Whether a point is inside the lung.
    pub fn contains(&self, u: f32, v: f32) -> bool {
        self.row_span(v).is_some_and(|(a, b)| u > a && u < b) && v < self.diaphragm(u)
    }

    /// Approximate level of the costophrenic angle (the lowest aerated lung).
    pub fn base_v(&self) -> f32 {
        let u = self.cx + self.lat() * self.a_lat * 0.9;
        self.diaphragm(u).min(self.cy + 0.95 * self.b)
    }

    /// Vertical range of zone 0 (upper), 1 (middle) or 2 (lower): thirds between apex and costophrenic level.
    pub fn zone(&self, zone: usize) -> (f32, f32) {
        let (t, h) = (self.top(), self.base_v() - self.top());
        (t + h * zone as f32 / 3.0, t + h * (zone + 1) as f32 / 3.0)
    }

    /// Horizontal bounds of the whole lung.
    pub fn u_range(&self) -> (f32, f32) {
        let a = self.cx + self.lat() * self.a_lat;
        let b = self.cx - self.lat() * self.a_med;
        (a.min(b), a.max(b))
    }
}

/// Cardiac silhouette: an ellipse tilted so its apex points down towards the patient's left.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Heart {
    pub cu: f32,
    pub cv: f32,
    pub a: f32,
    pub b: f32,
    cos: f32,
    sin: f32,
}

impl Heart {
    /// Normalised elliptic radius (1 on the border).
    pub fn r(&self, u: f32, v: f32) -> f32 {
        let (du, dv) = (u - self.cu, v - self.cv);
        let x = (du * self.cos + dv * self.sin) / self.a;
        let y = (-du * self.sin + dv * self.cos) / self.b;
        (x * x + y * y).sqrt()
    }

    /// Soft membership with a one-pixel edge.
    pub fn membership(&self, u: f32, v: f32, ppu: f32) -> f32 {
        ramp((1.0 - self.r(u, v)) * self.b * ppu)
    }

    /// Bounding box `(u0, v0, u1, v1)`.
    pub fn bounds(&self) -> (f32, f32, f32, f32) {
        let (c2, s2) = (self.cos * self.cos, self.sin * self.sin);
        let hu = (self.a * self.a * c2 + self.b * self.b * s2).sqrt();
        let hv = (self.a * self.a * s2 + self.b * self.b * c2).sqrt();
        (self.cu - hu, self.cv - hv, self.cu + hu, self.cv + hv)
    }
}

/// A piece of pulmonary vessel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Vessel {
    a: (f32, f32),
    b: (f32, f32),
    r: (f32, f32),
}

/// One rib pair member: posterior arc from the spine plus the anterior arc running back down-medially.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rib {
    /// -1 for the image-left (patient right) hemithorax, +1 for the other.
    side: f32,
    v0: f32,
    dmax: f32,
    rise: f32,
    drop: f32,
    half: f32,
}

impl Rib {
    fn posterior(&self, d: f32) -> (f32, f32) {
        let t = d / self.dmax;
        let v = self.v0 - self.rise * d + self.drop * d * t * t;
        let slope = -self.rise + 3.0 * self.drop * t * t;
        (v, slope)
    }
}

/// Normal anatomy of one subject.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Anatomy {
    pub mid: f32,
    pub body_hw: f32,
    neck_hw: f32,
    shoulder_v: f32,
    /// `[patient right (image left), patient left (image right)]`.
    pub lungs: [Lung; 2],
    /// Cardiothoracic ratio of this subject's normal heart.
    pub base_ctr: f32,
    heart_bottom: f32,
    heart_tilt: f32,
    heart_aspect: f32,
    knob: (f32, f32, f32),
    trachea_hw: f32,
    carina_v: f32,
    ribs: Vec<Rib>,
    clavicle_v: Option<f32>,
    vessels: Vec<Vessel>,
    gastric: Option<(f32, f32, f32, f32)>,
    spine_hw: f32,
    vert_period: f32,
    vert_phase: f32,
}

impl Anatomy {
    pub fn sample(rng: &mut ChaCha8Rng) -> Anatomy {
        let mid = 0.5 + jit(rng, 0.008);
        let body_hw = 0.455 + jit(rng, 0.02);
        let neck_hw = 0.11 + jit(rng, 0.015);
        let shoulder_v = 0.09 + jit(rng, 0.015);
        let lw = 1.0 + jit(rng, 0.05);
        let top = 0.075 + jit(rng, 0.012);
        let insp = jit(rng, 0.03);
        let b = (0.42 + jit(rng, 0.02)) * (1.0 + insp);
        let right = Lung {
            side: Side::Right,
            cx: mid - 0.205 * lw,
            cy: top + b,
            b,
            a_lat: 0.185 * lw,
            a_med: 0.13 * lw,
            dome_u: mid - 0.19 * lw,
            dome_v: 0.655 + insp + jit(rng, 0.01),
            curv_lat: 3.0 + jit(rng, 0.4),
            curv_med: 1.6 + jit(rng, 0.3),
            hilum: (mid - 0.085, 0.42 + jit(rng, 0.015)),
        };
        let ltop = top + 0.01;
        let left = Lung {
            side: Side::Left,
            cx: mid + 0.205 * lw,
            cy: ltop + b,
            b,
            a_lat: 0.18 * lw,
            a_med: 0.125 * lw,
            dome_u: mid + 0.19 * lw,
            dome_v: 0.68 + insp + jit(rng, 0.01),
            curv_lat: 3.0 + jit(rng, 0.4),
            curv_med: 1.6 + jit(rng, 0.3),
            hilum: (mid + 0.09, 0.40 + jit(rng, 0.015)),
        };
        let base_ctr = rng.random_range(0.40..0.48);
        let heart_bottom = left.dome_v + 0.035;
        let heart_tilt = 0.5 + jit(rng, 0.08);
        let heart_aspect = 0.66 + jit(rng, 0.05);
        let knob = (mid + 0.072 + jit(rng, 0.01), 0.30 + jit(rng, 0.015), 0.034 + jit(rng, 0.005));
        let trachea_hw = 0.016 + jit(rng, 0.002);
        let carina_v = 0.37 + jit(rng, 0.015);

        let mut ribs = Vec::new();
        let rib_top = 0.125 + jit(rng, 0.01);
        let gap = 0.062 * (1.0 + insp);
        let widths = [0.55, 0.78, 0.9, 0.96, 1.0, 1.0, 1.0, 0.99, 0.97, 0.95];
        for side in [-1.0f32, 1.0] {
            for (i, wf) in widths.iter().enumerate() {
                ribs.push(Rib {
                    side,
                    v0: rib_top + gap * i as f32 + jit(rng, 0.004),
                    dmax: (body_hw - 0.045) * wf,
                    // The short first rib is a tight arch; lower ribs flatten and slope more.
                    rise: if i == 0 { 0.5 } else { 0.30 - 0.01 * i as f32 } + jit(rng, 0.03),
                    drop: if i == 0 { 1.0 } else { 0.55 + 0.015 * i as f32 } + jit(rng, 0.05),
                    half: 0.0072 + 0.0004 * i as f32,
                });
            }
        }
        let clavicle_v = rng.random_bool(0.85).then(|| 0.19 + jit(rng, 0.015));

        let mut vessels = Vec::new();
        for lung in [&right, &left] {
            let n = 9;
            for k in 0..n {
                // Trunk directions fan from upwards (t > 0) through lateral to downwards (t < 0).
                let t = 1.4 - 2.7 * (k as f32 + 0.5) / n as f32 + jit(rng, 0.15);
                let ang = (-t.sin()).atan2(lung.lat() * t.cos());
                let o = (lung.hilum.0 + jit(rng, 0.01), lung.hilum.1 + jit(rng, 0.015));
                let len = rng.random_range(0.06..0.085);
                grow(rng, &mut vessels, o, ang, len, 0.0048, 4);
            }
        }
        let gastric = rng.random_bool(0.6).then(|| {
            (left.dome_u + jit(rng, 0.03), left.dome_v + 0.045, 0.04 + jit(rng, 0.01), 0.022 + jit(rng, 0.006))
        });
        Anatomy {
            mid,
            body_hw,
            neck_hw,
            shoulder_v,
            lungs: [right, left],
            base_ctr,
            heart_bottom,
            heart_tilt,
            heart_aspect,
            knob,
            trachea_hw,
            carina_v,
            ribs,
            clavicle_v,
            vessels,
            gastric,
            spine_hw: 0.036 + jit(rng, 0.004),
            vert_period: 0.047 + jit(rng, 0.004),
            vert_phase: jit(rng, 0.05),
        }
    }

    /// Lung on the given patient side (bilateral maps to the left).
    pub fn lung(&self, side: Side) -> &Lung {
        match side {
            Side::Right => &self.lungs[0],
            _ => &self.lungs[1],
        }
    }

    /// Inner width of the thorax at its widest, the denominator of the cardiothoracic ratio.
    pub fn thoracic_width(&self) -> f32 {
        let l = &self.lungs;
        (l[1].cx + l[1].a_lat) - (l[0].cx - l[0].a_lat) + 0.02
    }

    /// Heart whose horizontal width is `ctr` times the thoracic width; grows up and out from the diaphragm.
    pub fn heart(&self, ctr: f32) -> Heart {
        let width = ctr * self.thoracic_width();
        let hw = width / 2.0;
        let (sin, cos) = self.heart_tilt.sin_cos();
        let k = self.heart_aspect;
        let a = hw / (cos * cos + k * k * sin * sin).sqrt();
        let b = k * a;
        let vh = (a * a * sin * sin + b * b * cos * cos).sqrt();
        // About a third of the heart lies right of the midline.
        Heart { cu: self.mid - 0.36 * width + hw, cv: self.heart_bottom - vh, a, b, cos, sin }
    }

    /// Half width of the body silhouette at row `v`: neck, shoulders, chest, upper abdomen.
    fn body_half_width(&self, v: f32) -> f32 {
        let sv = self.shoulder_v;
        self.neck_hw + (self.body_hw + 0.03 - self.neck_hw) * smoothstep(sv - 0.08, sv + 0.02, v)
            - 0.03 * smoothstep(sv + 0.02, sv + 0.2, v)
            - 0.03 * smoothstep(0.75, 1.1, v)
    }

    /// Draws the normal chest with a heart of cardiothoracic ratio `ctr`.
    pub fn draw(&self, layers: &mut Layers, ctr: f32) {
        let heart = self.heart(ctr);
        let (hu0, hv0, hu1, hv1) = heart.bounds();
        let ppu = layers.grid.ppu;
        let margin = 2.0 / ppu;
        let [l0, l1] = &self.lungs;
        // Per-column terms hoisted out of the pixel loop: both domes and the spine's cylinder profile.
        let cols: Vec<(f32, f32, f32)> = layers
            .grid
            .us
            .iter()
            .map(|&u| {
                let sd = (u - self.mid).abs() / self.spine_hw;
                (l0.diaphragm(u), l1.diaphragm(u), if sd < 1.0 { (1.0 - sd * sd).sqrt() } else { 0.0 })
            })
            .collect();
        let (ku, kv, kr) = self.knob;
        let w = layers.grid.w;
        for (y, &v) in layers.grid.vs.iter().enumerate() {
            let hw = self.body_half_width(v);
            let spans = [l0.row_span(v), l1.row_span(v)];
            let heart_row = v > hv0 - margin && v < hv1 + margin;
            let knob_row = (v - kv).abs() < kr + margin;
            let ph = ((v - self.vert_phase) / self.vert_period).rem_euclid(1.0);
            let disc = smoothstep(0.80, 0.88, ph) * (1.0 - smoothstep(0.94, 1.0, ph));
            let spine_amp = 0.07 * (1.0 - 0.5 * disc);
            let tissue = &mut layers.tissue[y * w..(y + 1) * w];
            let air = &mut layers.air[y * w..(y + 1) * w];
            for (x, &u) in layers.grid.us.iter().enumerate() {
                let du = u - self.mid;
                let q = 1.0 - (du / hw) * (du / hw);
                if q <= 0.0 {
                    continue;
                }
                let t = q.sqrt();
                let (d0, d1, spine_prof) = cols[x];
                let abd_v = d0.min(d1);
                let abd = smoothstep(-0.01, 0.06, v - abd_v);
                let mut m = 0.0;
                for (span, d) in spans.iter().zip([d0, d1]) {
                    if let Some((a, b)) = span {
                        let inside = ramp((u - a) * ppu) * ramp((b - u) * ppu) * ramp((d - v) * ppu);
                        if inside > 0.0 {
                            // Lungs are thinner towards their margins, so the edges are soft rather than cut out.
                            let c = 2.0 * (u - a) / (b - a) - 1.0;
                            let depth = (1.0 - c * c).max(0.0).sqrt();
                            let base = smoothstep(0.0, 0.05, d - v);
                            m += inside * (0.55 + 0.45 * depth) * (0.6 + 0.4 * base);
                        }
                    }
                }
                let (mut hm, mut hr) = (0.0, 0.0);
                if heart_row && u > hu0 - margin && u < hu1 + margin {
                    hm = heart.membership(u, v, ppu);
                    let r = heart.r(u, v);
                    hr = (1.0 - (r * r).min(1.0)).sqrt();
                }
                let mut km = 0.0;
                if knob_row {
                    let dk = ((u - ku) * (u - ku) + (v - kv) * (v - kv)).sqrt();
                    km = ramp((kr - dk) * ppu);
                }
                let spine = spine_amp * spine_prof;
                tissue[x] = t * (1.0 + 0.25 * abd) + 0.14 * hr + 0.08 * km + spine;
                air[x] = m * t * (1.0 - 0.88 * hm) * (1.0 - km);
            }
        }

        // Air column: trachea down to the carina, then the main bronchi (the right one steeper).
        let tr = self.trachea_hw;
        layers.segment(Target::Tissue, (self.mid, -0.02), (self.mid, self.carina_v), (tr, tr), -0.10, Combine::Add);
        for (lung, drop) in [(l0, 0.07), (l1, 0.05)] {
            let end = (self.mid + lung.lat() * 0.07, self.carina_v + drop);
            layers.segment(Target::Tissue, (self.mid, self.carina_v), end, (tr * 0.8, tr * 0.6), -0.07, Combine::Add);
        }
        for rib in &self.ribs {
            self.draw_rib(layers, rib);
        }
        if let Some(cv) = self.clavicle_v {
            for side in [-1.0f32, 1.0] {
                let u_range = if side < 0.0 { (self.mid - 0.31, self.mid) } else { (self.mid, self.mid + 0.31) };
                let mid = self.mid;
                layers.band(u_range, |u| {
                    let d = (u - mid) * side - 0.035;
                    if !(0.0..=0.265).contains(&d) {
                        return None;
                    }
                    let v = cv - 0.26 * d + 0.012 * (2.0 * PI * d / 0.265).sin();
                    let half = 0.0115 * (1.0 + 0.35 * (1.0 - smoothstep(0.0, 0.04, d)));
                    Some((v, half, 0.2 * smoothstep(0.0, 0.015, d)))
                });
            }
        }
        // Humeral heads at the upper corners, mostly outside the field.
        for side in [-1.0f32, 1.0] {
            let c = (self.mid + side * (self.body_hw + 0.035), 0.165);
            layers.segment(Target::Tissue, c, c, (0.075, 0.075), 0.35, Combine::Add);
        }
        if let Some((gu, gv, rx, ry)) = self.gastric {
            layers.segment(Target::Tissue, (gu - rx, gv), (gu + rx, gv), (ry, ry), -0.12, Combine::Add);
        }
        for ves in &self.vessels {
            // Projected density follows the vessel diameter, so small peripheral branches fade out.
            let amp = 0.16 * (ves.r.0 / 0.0048).min(1.0);
            layers.segment(Target::Marks, ves.a, ves.b, ves.r, amp, Combine::Max);
        }
    }

    fn draw_rib(&self, layers: &mut Layers, rib: &Rib) {
        let (mid, side) = (self.mid, rib.side);
        let u_range = if side < 0.0 { (mid - rib.dmax - 0.01, mid) } else { (mid, mid + rib.dmax + 0.01) };
        layers.band(u_range, |u| {
            let d = (u - mid) * side;
            if !(0.03..=rib.dmax).contains(&d) {
                return None;
            }
            let (v, slope) = rib.posterior(d);
            Some((v, rib.half * (1.0 + slope * slope).sqrt(), 0.14 * smoothstep(0.03, 0.07, d)))
        });
        let (v_end, _) = rib.posterior(rib.dmax);
        layers.band(u_range, |u| {
            let d = (u - mid) * side;
            if !(0.10..=rib.dmax).contains(&d) {
                return None;
            }
            let e = rib.dmax - d;
            let slope = 0.40 - 0.5 * e;
            let v = v_end + 0.40 * e - 0.25 * e * e;
            // Costal cartilage is invisible, so the anterior rib fades out medially.
            Some((v, 0.0095 * (1.0 + slope * slope).sqrt(), 0.07 * smoothstep(0.10, 0.2, d)))
        });
    }
}

/// Grows a vessel branch of two slightly bent pieces, then splits it in two thinner daughters.
fn grow(rng: &mut ChaCha8Rng, out: &mut Vec<Vessel>, o: (f32, f32), ang: f32, len: f32, r: f32, depth: u32) {
    let half = len * 0.5;
    let p1 = (o.0 + half * ang.cos(), o.1 + half * ang.sin());
    let ang2 = ang + jit(rng, 0.25);
    let p2 = (p1.0 + half * ang2.cos(), p1.1 + half * ang2.sin());
    out.push(Vessel { a: o, b: p1, r: (r, r * 0.93) });
    out.push(Vessel { a: p1, b: p2, r: (r * 0.93, r * 0.86) });
    if depth == 0 {
        return;
    }
    let spread = rng.random_range(0.25..0.55);
    let skew = jit(rng, 0.15);
    let l1 = len * rng.random_range(0.65..0.8);
    grow(rng, out, p2, ang2 - spread + skew, l1, r * 0.74, depth - 1);
    let l2 = len * rng.random_range(0.65..0.8);
    grow(rng, out, p2, ang2 + spread + skew, l2, r * 0.7, depth - 1);
}
