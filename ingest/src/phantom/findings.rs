//! Case mix (which findings a study has, and how the report states them) and drawing each finding.
//!
//! Sampling: about 36 % of studies are normal; in the others every kind is independently present (16-26 %) or
//! uncertain (7 %), and at least one finding is forced. Absent findings are mentioned (negated) with a
//! kind-specific probability, so negations are common. Every random draw happens here, before rendering, so a
//! finding can be left out of the image without disturbing anything else.

use super::anatomy::{Anatomy, Lung};
use super::raster::{Layers, smoothstep};
use super::{Finding, FindingKind, Presence, Side};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Millimetres per anatomy unit (the film is about 40 cm across).
pub(crate) const MM_PER_UNIT: f32 = 400.0;
/// Probability that a study has at least one present or uncertain finding.
const P_ABNORMAL: f64 = 0.64;
/// Probability of an uncertain finding (per kind, abnormal studies).
const P_UNCERTAIN: f32 = 0.07;

/// Probability that a kind is present in an abnormal study.
fn p_present(kind: FindingKind) -> f32 {
    match kind {
        FindingKind::Effusion => 0.26,
        FindingKind::Pneumothorax => 0.2,
        FindingKind::Cardiomegaly => 0.24,
        FindingKind::Nodule => 0.21,
        FindingKind::Mass => 0.17,
        FindingKind::Consolidation => 0.24,
        FindingKind::Opacity => 0.24,
    }
}

/// Probability that the report negates a kind the study does not have.
fn p_negated(kind: FindingKind) -> f64 {
    match kind {
        FindingKind::Effusion => 0.7,
        FindingKind::Pneumothorax => 0.7,
        FindingKind::Cardiomegaly => 0.3,
        FindingKind::Nodule => 0.25,
        FindingKind::Mass => 0.2,
        FindingKind::Consolidation => 0.6,
        FindingKind::Opacity => 0.25,
    }
}

/// Drawing parameters of one finding, all in anatomy units.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Geom {
    /// Fluid filling the lung base up to `height` (fraction of lung height) with a lateral meniscus.
    Effusion { sides: Vec<Side>, height: f32, strength: f32 },
    /// Lung collapsed towards the hilum by `shrink`, leaving a lucent rim without markings.
    Pneumothorax { side: Side, shrink: f32, strength: f32 },
    /// Enlarged heart (drawn by the anatomy; listed here for the mask).
    Cardiomegaly { ctr: f32 },
    /// Round (nodule) or lobulated (mass) opacity.
    Lesion { centre: (f32, f32), r: f32, lobes: [f32; 4], amp: f32 },
    /// Patchy airspace opacity: a cluster of soft blobs `[u, v, radius, weight]` clipped to one lung.
    Patchy { side: Side, blobs: Vec<[f32; 4]>, strength: f32 },
}

/// A mentioned finding with its drawing parameters (None for absent findings).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Planned {
    pub finding: Finding,
    pub geom: Option<Geom>,
}

/// Everything the image and the report need to agree on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Case {
    pub planned: Vec<Planned>,
    /// Cardiothoracic ratio actually drawn.
    pub ctr: f32,
}

/// Report name of a lobe approximated by a lung zone (0 upper, 1 middle, 2 lower).
pub(crate) fn lobe_name(side: Side, zone: usize) -> String {
    match (side, zone) {
        (Side::Left, 1) => "lingula".to_string(),
        _ => format!("{} {} lobe", side.as_str(), ["upper", "middle", "lower"][zone.min(2)]),
    }
}

/// Weighted choice; the weights should sum to one, any remainder goes to the last item.
fn pick<T: Copy, const N: usize>(rng: &mut ChaCha8Rng, items: [(T, f32); N]) -> T {
    let mut r: f32 = rng.random();
    for &(item, p) in &items[..N - 1] {
        if r < p {
            return item;
        }
        r -= p;
    }
    items[N - 1].0
}

fn lung_side(rng: &mut ChaCha8Rng) -> Side {
    if rng.random_bool(0.5) { Side::Right } else { Side::Left }
}

/// Samples the findings of one study.
pub(crate) fn sample_case(anat: &Anatomy, rng: &mut ChaCha8Rng) -> Case {
    let abnormal = rng.random_bool(P_ABNORMAL);
    let mut states: Vec<Option<Presence>> = FindingKind::ALL
        .iter()
        .map(|&k| {
            let r: f32 = rng.random();
            if !abnormal {
                None
            } else if r < p_present(k) {
                Some(Presence::Present)
            } else if r < p_present(k) + P_UNCERTAIN {
                Some(Presence::Uncertain)
            } else {
                None
            }
        })
        .collect();
    if abnormal && states.iter().all(Option::is_none) {
        let i = rng.random_range(0..states.len());
        states[i] = Some(if rng.random_bool(0.8) { Presence::Present } else { Presence::Uncertain });
    }
    for (s, &k) in states.iter_mut().zip(&FindingKind::ALL) {
        let negate = rng.random_bool(p_negated(k));
        if s.is_none() && negate {
            *s = Some(Presence::Absent);
        }
    }

    let mut ctr = anat.base_ctr;
    let mut used_lobes: Vec<(Side, usize)> = Vec::new();
    let mut planned = Vec::new();
    for (&kind, state) in FindingKind::ALL.iter().zip(states) {
        let Some(presence) = state else { continue };
        let mut finding = Finding { kind, presence, side: None, size: None, location: None, bbox: None, mask: None };
        if presence == Presence::Absent {
            planned.push(Planned { finding, geom: None });
            continue;
        }
        let sure = presence == Presence::Present;
        let faint = if sure { 1.0 } else { 0.45 };
        let geom = match kind {
            FindingKind::Effusion => {
                let side = pick(rng, [(Side::Right, 0.45), (Side::Left, 0.35), (Side::Bilateral, 0.2)]);
                let size =
                    if sure { pick(rng, [("small", 0.45), ("moderate", 0.35), ("large", 0.2)]) } else { "small" };
                let height = match size {
                    "small" => rng.random_range(0.12..0.18),
                    "moderate" => rng.random_range(0.26..0.34),
                    _ => rng.random_range(0.48..0.58),
                };
                finding.side = Some(side);
                finding.size = Some(size.to_string());
                let sides = if side == Side::Bilateral { vec![Side::Right, Side::Left] } else { vec![side] };
                Geom::Effusion { sides, height, strength: 0.95 * faint }
            }
            FindingKind::Pneumothorax => {
                let side = lung_side(rng);
                let size =
                    if sure { pick(rng, [("small", 0.5), ("moderate", 0.33), ("large", 0.17)]) } else { "small" };
                let shrink = match size {
                    "small" => rng.random_range(0.91..0.94),
                    "moderate" => rng.random_range(0.80..0.86),
                    _ => rng.random_range(0.62..0.70),
                };
                finding.side = Some(side);
                finding.size = Some(size.to_string());
                Geom::Pneumothorax { side, shrink, strength: faint }
            }
            FindingKind::Cardiomegaly => {
                ctr = if sure { rng.random_range(0.55..0.66) } else { rng.random_range(0.50..0.53) };
                Geom::Cardiomegaly { ctr }
            }
            FindingKind::Nodule | FindingKind::Mass => {
                let side = lung_side(rng);
                let zone = rng.random_range(0..3usize);
                let mm: f32 = match (kind, sure) {
                    (FindingKind::Nodule, true) => 6.0 + 22.0 * rng.random::<f32>().powi(2),
                    (FindingKind::Nodule, false) => rng.random_range(5.0..9.0),
                    (_, true) => rng.random_range(35.0..70.0),
                    (_, false) => rng.random_range(30.0..40.0),
                };
                let mm = mm.round();
                let r = mm / MM_PER_UNIT / 2.0;
                let lobulation = if kind == FindingKind::Mass { 0.12 } else { 0.03 };
                let tau = std::f32::consts::TAU;
                let lobes = [
                    lobulation * rng.random::<f32>(),
                    tau * rng.random::<f32>(),
                    0.6 * lobulation * rng.random::<f32>(),
                    tau * rng.random::<f32>(),
                ];
                let centre = place(rng, anat, anat.lung(side), zone, r, ctr);
                let amp = if kind == FindingKind::Mass { 0.2 } else { 0.18 };
                finding.side = Some(side);
                finding.size = Some(format!("{mm:.0} mm"));
                finding.location = Some(lobe_name(side, zone));
                Geom::Lesion { centre, r, lobes, amp: amp * faint }
            }
            FindingKind::Consolidation | FindingKind::Opacity => {
                let mut lobe = (lung_side(rng), rng.random_range(0..3usize));
                while used_lobes.contains(&lobe) {
                    lobe = (lung_side(rng), rng.random_range(0..3usize));
                }
                used_lobes.push(lobe);
                let (side, zone) = lobe;
                let lung = anat.lung(side);
                let dense = kind == FindingKind::Consolidation;
                let c = place(rng, anat, lung, zone, 0.03, ctr);
                let n = if dense { rng.random_range(7..12) } else { rng.random_range(9..15) };
                let (rmin, rmax) = if dense { (0.035, 0.06) } else { (0.045, 0.075) };
                let mut blobs = Vec::with_capacity(n);
                for _ in 0..n {
                    let mut p = c;
                    for _ in 0..8 {
                        p = (c.0 + rng.random_range(-0.055..0.055), c.1 + rng.random_range(-0.045..0.045));
                        if lung.contains(p.0, p.1) {
                            break;
                        }
                    }
                    blobs.push([p.0, p.1, rng.random_range(rmin..rmax), rng.random_range(0.35..0.75)]);
                }
                finding.side = Some(side);
                finding.location = Some(lobe_name(side, zone));
                let strength = if dense { 0.85 } else { 0.5 };
                Geom::Patchy { side, blobs, strength: strength * faint }
            }
        };
        planned.push(Planned { finding, geom: Some(geom) });
    }
    Case { planned, ctr }
}

/// Centre for a round lesion of radius `r` inside `zone` of `lung`, clear of the heart; falls back gracefully.
fn place(rng: &mut ChaCha8Rng, anat: &Anatomy, lung: &Lung, zone: usize, r: f32, ctr: f32) -> (f32, f32) {
    let heart = anat.heart(ctr);
    let (v0, v1) = lung.zone(zone);
    let (u0, u1) = lung.u_range();
    let mut fallback = None;
    for _ in 0..80 {
        let p = (rng.random_range(u0..u1), rng.random_range(v0..v1));
        if !lung.contains(p.0, p.1) || heart.r(p.0, p.1) < 1.05 {
            continue;
        }
        fallback.get_or_insert(p);
        let fits = (0..8).all(|k| {
            let a = k as f32 * std::f32::consts::FRAC_PI_4;
            lung.contains(p.0 + 0.9 * r * a.cos(), p.1 + 0.9 * r * a.sin())
        });
        if fits {
            return p;
        }
    }
    fallback.unwrap_or(((lung.cx + lung.lat() * 0.3 * lung.a_lat), 0.5 * (v0 + v1)))
}

/// Draws one finding into the layers and returns the bitmap of pixels it touched.
pub(crate) fn draw(geom: &Geom, anat: &Anatomy, layers: &mut Layers) -> Vec<bool> {
    let (w, h) = (layers.grid.w, layers.grid.h);
    let mut bits = vec![false; w * h];
    let ppu = layers.grid.ppu;
    match geom {
        Geom::Effusion { sides, height, strength } => {
            for &side in sides {
                let lung = anat.lung(side);
                let (top, base) = (lung.top(), lung.base_v());
                let level = base - height * (base - top);
                // The meniscus climbs the lateral chest wall; medially the fluid surface is lower.
                let drop = 0.03 + 0.25 * height * (base - top);
                let (ua, ub) = lung.u_range();
                let low = lung.diaphragm(ua).max(lung.diaphragm(ub));
                let (x0, y0, x1, y1) = layers.grid.px_box(ua, level - 0.02, ub, low);
                for y in y0..y1 {
                    let v = layers.grid.vs[y];
                    for x in x0..x1 {
                        let u = layers.grid.us[x];
                        let m = lung.membership(u, v, ppu);
                        if m <= 0.0 {
                            continue;
                        }
                        let lf = ((u - lung.cx) * lung.lat() / lung.a_lat).clamp(0.0, 1.0);
                        let surf = level + drop * (1.0 - lf) * (1.0 - lf);
                        let f = smoothstep(surf - 0.012, surf + 0.03, v);
                        if f <= 0.0 {
                            continue;
                        }
                        let i = y * w + x;
                        layers.air[i] *= 1.0 - strength * f;
                        layers.marks[i] *= 1.0 - f;
                        bits[i] |= m * f > 0.02;
                    }
                }
            }
        }
        Geom::Pneumothorax { side, shrink, strength } => {
            let lung = anat.lung(*side);
            let anchor = (lung.hilum.0, lung.hilum.1 + 0.12);
            let (ua, ub) = lung.u_range();
            let (x0, y0, x1, y1) = layers.grid.px_box(ua, lung.top(), ub, lung.base_v() + 0.05);
            for y in y0..y1 {
                let v = layers.grid.vs[y];
                for x in x0..x1 {
                    let u = layers.grid.us[x];
                    let m = lung.membership(u, v, ppu);
                    if m <= 0.0 {
                        continue;
                    }
                    let (cu, cv) = (anchor.0 + (u - anchor.0) / shrink, anchor.1 + (v - anchor.1) / shrink);
                    let mc = lung.membership(cu, cv, ppu * shrink);
                    let rim = m * (1.0 - mc);
                    let line = 4.0 * mc * (1.0 - mc) * m;
                    if rim <= 0.0 && line <= 0.0 {
                        continue;
                    }
                    let i = y * w + x;
                    layers.marks[i] *= 1.0 - rim * strength;
                    layers.air[i] *= 1.0 + 0.3 * rim * strength;
                    layers.tissue[i] += 0.16 * strength * line;
                    bits[i] = rim > 0.02 || line > 0.1;
                }
            }
        }
        Geom::Cardiomegaly { ctr } => {
            let heart = anat.heart(*ctr);
            let (u0, v0, u1, v1) = heart.bounds();
            let (x0, y0, x1, y1) = layers.grid.px_box(u0, v0, u1, v1);
            for y in y0..y1 {
                for x in x0..x1 {
                    bits[y * w + x] = heart.membership(layers.grid.us[x], layers.grid.vs[y], ppu) > 0.02;
                }
            }
        }
        Geom::Lesion { centre, r, lobes, amp } => {
            let rm = r * (1.0 + lobes[0] + lobes[2]) + 2.0 / ppu;
            let (x0, y0, x1, y1) = layers.grid.px_box(centre.0 - rm, centre.1 - rm, centre.0 + rm, centre.1 + rm);
            for y in y0..y1 {
                let dv = layers.grid.vs[y] - centre.1;
                for x in x0..x1 {
                    let du = layers.grid.us[x] - centre.0;
                    let d = (du * du + dv * dv).sqrt();
                    let th = dv.atan2(du);
                    let rr =
                        r * (1.0 + lobes[0] * (3.0 * th + lobes[1]).sin() + lobes[2] * (5.0 * th + lobes[3]).sin());
                    let edge = super::raster::ramp((rr - d) * ppu);
                    if edge <= 0.0 {
                        continue;
                    }
                    let q = (1.0 - (d / rr) * (d / rr)).max(0.0);
                    let i = y * w + x;
                    // A solid sphere: dense core, but a visible margin rather than a fade to nothing.
                    layers.tissue[i] += amp * edge * (0.35 + 0.65 * q.sqrt());
                    bits[i] = edge > 0.02;
                }
            }
        }
        Geom::Patchy { side, blobs, strength } => {
            let lung = anat.lung(*side);
            let (mut u0, mut v0, mut u1, mut v1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
            for b in blobs {
                u0 = u0.min(b[0] - b[2]);
                v0 = v0.min(b[1] - b[2]);
                u1 = u1.max(b[0] + b[2]);
                v1 = v1.max(b[1] + b[2]);
            }
            let (x0, y0, x1, y1) = layers.grid.px_box(u0, v0, u1, v1);
            for y in y0..y1 {
                let v = layers.grid.vs[y];
                for x in x0..x1 {
                    let u = layers.grid.us[x];
                    let m = lung.membership(u, v, ppu);
                    if m <= 0.0 {
                        continue;
                    }
                    let mut clear = 1.0f32;
                    for b in blobs {
                        let d2 = ((u - b[0]) * (u - b[0]) + (v - b[1]) * (v - b[1])) / (b[2] * b[2]);
                        if d2 < 1.0 {
                            // Compact-support kernel so the drawn region has a hard outer limit.
                            let k = (1.0 - d2) * (1.0 - d2);
                            clear *= 1.0 - b[3] * k;
                        }
                    }
                    let c = 1.0 - clear;
                    if c <= 0.0 {
                        continue;
                    }
                    let i = y * w + x;
                    layers.air[i] *= 1.0 - strength * c;
                    layers.marks[i] *= 1.0 - 0.6 * strength * c;
                    bits[i] = c * m > 0.02;
                }
            }
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lobe_names() {
        assert_eq!(lobe_name(Side::Right, 0), "right upper lobe");
        assert_eq!(lobe_name(Side::Right, 1), "right middle lobe");
        assert_eq!(lobe_name(Side::Left, 1), "lingula");
        assert_eq!(lobe_name(Side::Left, 2), "left lower lobe");
    }
}
