//! Synthetic chest radiograph phantoms (PA view) with radiology-style reports and pixel-level ground truth.
//!
//! This is the built-in data source behind `--source phantom:COUNT[:SEED]`, used by the demo, the tests and the
//! benchmarks. Every study is a pure function of `(seed, index)`: each random decision is drawn from its own
//! `ChaCha8Rng` stream keyed by seed, index (or subject) and purpose, so a study never depends on how many others
//! are generated, and leaving a finding out of the rendering (see [`render_without`]) changes nothing else.
//!
//! Conventions:
//! - Image coordinates: x grows to the right, y grows downwards. PA view, so the patient's right is image left.
//! - [`Phantom::findings`] lists exactly the findings the report mentions: present, uncertain, or absent
//!   (negated). A kind that is not listed is not mentioned, like a blank in CheXpert-style labels.
//! - Uncertain findings are always drawn, but faintly (about 45 % of the present contrast, smallest size;
//!   cardiomegaly becomes a borderline cardiothoracic ratio of 0.50 to 0.53), so the image itself is equivocal and
//!   every drawn finding has a mask and a bounding box. Absent findings are never drawn.
//! - Lobes are approximated by vertical thirds of each lung (upper, middle, lower zone); the left middle third is
//!   reported as the lingula.

mod anatomy;
mod findings;
mod mask;
mod raster;
mod report;

pub use mask::Mask;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

/// Default edge length of a phantom in pixels.
pub const DEFAULT_SIZE: u32 = 512;
/// Smallest supported edge length; smaller requests are rendered at this size.
pub const MIN_SIZE: u32 = 64;
/// Consecutive indices that share one subject, so patient-level splits have something to group.
pub const STUDIES_PER_SUBJECT: u64 = 3;

/// Parameters shared by every study of one phantom source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhantomSpec {
    /// Seed of the whole source; with the index it determines a study completely.
    pub seed: u64,
    /// Edge length of the square image in pixels (at least [`MIN_SIZE`]).
    pub size: u32,
}

impl Default for PhantomSpec {
    fn default() -> Self {
        Self { seed: 0, size: DEFAULT_SIZE }
    }
}

/// Kind of a radiographic finding; names are ECAMP entity strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingKind {
    /// Pleural fluid blunting the costophrenic angle.
    Effusion,
    /// Air in the pleural space with a visible pleural line.
    Pneumothorax,
    /// Cardiothoracic ratio above about 0.5.
    Cardiomegaly,
    /// Small round opacity (up to 30 mm).
    Nodule,
    /// Larger lobulated opacity (over 30 mm).
    Mass,
    /// Dense patchy airspace opacity in a lobe.
    Consolidation,
    /// Fainter, hazier airspace opacity in a lobe.
    Opacity,
}

impl FindingKind {
    /// Every kind, in the order used for sampling and for labels.
    pub const ALL: [FindingKind; 7] = [
        FindingKind::Effusion,
        FindingKind::Pneumothorax,
        FindingKind::Cardiomegaly,
        FindingKind::Nodule,
        FindingKind::Mass,
        FindingKind::Consolidation,
        FindingKind::Opacity,
    ];

    /// ECAMP entity string (a single lower-case vocabulary token).
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::Effusion => "effusion",
            FindingKind::Pneumothorax => "pneumothorax",
            FindingKind::Cardiomegaly => "cardiomegaly",
            FindingKind::Nodule => "nodule",
            FindingKind::Mass => "mass",
            FindingKind::Consolidation => "consolidation",
            FindingKind::Opacity => "opacity",
        }
    }
}

/// How the report states a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// Stated as seen.
    Present,
    /// Hedged ("possible", "cannot exclude"); drawn faintly.
    Uncertain,
    /// Negated ("no ...", "without ..."); not drawn.
    Absent,
}

impl Presence {
    /// Label string: `present`, `uncertain` or `absent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Present => "present",
            Presence::Uncertain => "uncertain",
            Presence::Absent => "absent",
        }
    }
}

/// Patient side (patient's right is image left on a PA film).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Patient's left (image right).
    Left,
    /// Patient's right (image left).
    Right,
    /// Both sides.
    Bilateral,
}

impl Side {
    /// Word used in reports and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
            Side::Bilateral => "bilateral",
        }
    }
}

/// One finding mentioned by a report, with its ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// What was found.
    pub kind: FindingKind,
    /// How the report states it.
    pub presence: Presence,
    /// Patient side, where the kind has one.
    pub side: Option<Side>,
    /// `small`/`moderate`/`large`, or a diameter such as `8 mm`.
    pub size: Option<String>,
    /// Lobe, e.g. `right upper lobe` or `lingula`.
    pub location: Option<String>,
    /// Half-open pixel box `[x0, y0, x1, y1]` of the drawn region (drawn findings only).
    pub bbox: Option<[u32; 4]>,
    /// Pixels where the finding was drawn (drawn findings only).
    pub mask: Option<Mask>,
}

/// One synthetic study: image, report and ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phantom {
    /// `phantom-{seed}-{index:08}`.
    pub sample_id: String,
    /// Subject shared by [`STUDIES_PER_SUBJECT`] consecutive indices.
    pub subject_id: String,
    /// Study identifier (one image per study).
    pub study_id: String,
    /// Projection, always `PA`.
    pub view: String,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Row-major 8-bit grayscale pixels, bright = dense.
    pub pixels: Vec<u8>,
    /// Free-text report, `FINDINGS: ... IMPRESSION: ...`.
    pub report: String,
    /// Findings the report mentions, in [`FindingKind::ALL`] order.
    pub findings: Vec<Finding>,
    /// Drawn heart width over thoracic width.
    pub cardiothoracic_ratio: f32,
}

impl Phantom {
    /// True when no finding is present or uncertain.
    pub fn is_normal(&self) -> bool {
        self.findings.iter().all(|f| f.presence == Presence::Absent)
    }

    /// Ground truth as JSON: ids, size, ratio and every mentioned finding with presence, side, size, location,
    /// bbox and mask run-lengths.
    pub fn labels(&self) -> serde_json::Value {
        let findings: Vec<serde_json::Value> = self
            .findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "entity": f.kind.name(),
                    "presence": f.presence.as_str(),
                    "side": f.side.map(Side::as_str),
                    "size": f.size,
                    "location": f.location,
                    "bbox": f.bbox,
                    "mask": f.mask.as_ref().map(|m| serde_json::json!({
                        "width": m.width, "height": m.height, "rle": m.rle,
                    })),
                })
            })
            .collect();
        serde_json::json!({
            "sample_id": self.sample_id,
            "subject_id": self.subject_id,
            "study_id": self.study_id,
            "view": self.view,
            "width": self.width,
            "height": self.height,
            "normal": self.is_normal(),
            "cardiothoracic_ratio": self.cardiothoracic_ratio,
            "findings": findings,
        })
    }
}

/// Generates study `index` of the source described by `spec`.
pub fn generate(spec: &PhantomSpec, index: u64) -> Phantom {
    let study = Study::sample(spec, index);
    let (pixels, masks) = study.render(None);
    let findings = study
        .case
        .planned
        .iter()
        .zip(masks)
        .map(|(p, mask)| {
            let mut f = p.finding.clone();
            f.bbox = mask.as_ref().and_then(Mask::bbox);
            f.mask = mask;
            f
        })
        .collect();
    Phantom {
        sample_id: format!("phantom-{}-{index:08}", spec.seed),
        subject_id: format!("phantom-{}-p{:08}", spec.seed, index / STUDIES_PER_SUBJECT),
        study_id: format!("phantom-{}-s{index:08}", spec.seed),
        view: "PA".to_string(),
        width: study.size,
        height: study.size,
        pixels,
        report: study.report,
        findings,
        cardiothoracic_ratio: study.case.ctr,
    }
}

/// Renders the pixels of study `index` with one finding kind left out and everything else (anatomy, noise, other
/// findings) identical; a counterfactual for tests and saliency checks.
pub fn render_without(spec: &PhantomSpec, index: u64, omit: FindingKind) -> Vec<u8> {
    Study::sample(spec, index).render(Some(omit)).0
}

/// Purposes of the independent random streams of one study.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Subject = 1,
    Pose = 2,
    Case = 3,
    Noise = 4,
    Report = 5,
}

/// Random stream for one purpose, keyed by seed and index (or subject) so studies never share state.
fn stream_rng(seed: u64, key: u64, stream: Stream) -> ChaCha8Rng {
    let mut s = [0u8; 32];
    s[0..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&key.to_le_bytes());
    s[16..24].copy_from_slice(&(stream as u64).to_le_bytes());
    s[24..32].copy_from_slice(b"phantom1");
    ChaCha8Rng::from_seed(s)
}

/// Everything sampled for one study before rendering.
struct Study {
    size: u32,
    seed: u64,
    index: u64,
    anatomy: anatomy::Anatomy,
    pose: anatomy::Pose,
    case: findings::Case,
    report: String,
}

impl Study {
    fn sample(spec: &PhantomSpec, index: u64) -> Self {
        let size = spec.size.max(MIN_SIZE);
        let anatomy =
            anatomy::Anatomy::sample(&mut stream_rng(spec.seed, index / STUDIES_PER_SUBJECT, Stream::Subject));
        let pose = anatomy::Pose::sample(&mut stream_rng(spec.seed, index, Stream::Pose));
        let case = findings::sample_case(&anatomy, &mut stream_rng(spec.seed, index, Stream::Case));
        let report = report::write(&case, &mut stream_rng(spec.seed, index, Stream::Report));
        Study { size, seed: spec.seed, index, anatomy, pose, case, report }
    }

    /// Pixels plus one mask per planned finding (None for findings that were not drawn).
    fn render(&self, omit: Option<FindingKind>) -> (Vec<u8>, Vec<Option<Mask>>) {
        let grid = raster::Grid::new(self.size, self.size, &self.pose);
        let mut layers = raster::Layers::new(grid);
        let ctr = if omit == Some(FindingKind::Cardiomegaly) { self.anatomy.base_ctr } else { self.case.ctr };
        self.anatomy.draw(&mut layers, ctr);
        let masks = self
            .case
            .planned
            .iter()
            .map(|p| {
                if omit == Some(p.finding.kind) {
                    return None;
                }
                let geom = p.geom.as_ref()?;
                let bits = findings::draw(geom, &self.anatomy, &mut layers);
                Some(Mask::from_bitmap(self.size, self.size, &bits))
            })
            .collect();
        let pixels = layers.compose(&self.pose, &mut stream_rng(self.seed, self.index, Stream::Noise));
        (pixels, masks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEGATIONS: &[&str] = &["no", "without", "not", "negative"];
    const HEDGES: &[&str] = &["possible", "possibly", "may", "might", "cannot", "questionable", "borderline", "could"];

    fn spec(size: u32) -> PhantomSpec {
        PhantomSpec { seed: 42, size }
    }

    /// Report sentences as lower-case word lists ("4.9 cm" keeps its decimal point).
    fn sentences(report: &str) -> Vec<Vec<String>> {
        report
            .replace('\n', " ")
            .split(". ")
            .map(|s| {
                s.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
            })
            .collect()
    }

    fn has_any(words: &[String], list: &[&str]) -> bool {
        words.iter().any(|w| list.contains(&w.as_str()))
    }

    #[test]
    fn deterministic_per_seed_and_index() {
        let a = generate(&spec(128), 5);
        let b = generate(&spec(128), 5);
        assert_eq!(a, b);
        let c = generate(&spec(128), 6);
        assert_ne!(a.pixels, c.pixels);
        let d = generate(&PhantomSpec { seed: 43, size: 128 }, 5);
        assert_ne!(a.pixels, d.pixels);
        assert_eq!(a.sample_id, "phantom-42-00000005");
    }

    #[test]
    fn studies_do_not_depend_on_generation_order() {
        let forward: Vec<Phantom> = (0..6).map(|i| generate(&spec(96), i)).collect();
        let backward: Vec<Phantom> = (0..6).rev().map(|i| generate(&spec(96), i)).collect();
        for (f, b) in forward.iter().zip(backward.iter().rev()) {
            assert_eq!(f, b);
        }
    }

    #[test]
    fn subjects_group_consecutive_studies_with_shared_anatomy() {
        let ids: Vec<String> = (0..4).map(|i| generate(&spec(64), i).subject_id).collect();
        assert_eq!(ids[0], ids[2]);
        assert_ne!(ids[2], ids[3]);
        assert_eq!(Study::sample(&spec(64), 0).anatomy, Study::sample(&spec(64), 2).anatomy);
        assert_ne!(Study::sample(&spec(64), 0).anatomy, Study::sample(&spec(64), 3).anatomy);
    }

    #[test]
    fn sizes_and_geometry_are_inside_the_image() {
        for size in [64u32, 224, 512] {
            for i in 0..4 {
                let p = generate(&spec(size), i);
                assert_eq!((p.width, p.height), (size, size));
                assert_eq!(p.pixels.len(), (size * size) as usize);
                for f in &p.findings {
                    if let (Some(b), Some(m)) = (f.bbox, &f.mask) {
                        assert!(b[0] < b[2] && b[1] < b[3] && b[2] <= size && b[3] <= size, "{b:?}");
                        assert_eq!((m.width, m.height), (size, size));
                        assert_eq!(m.bbox(), Some(b));
                    }
                }
            }
        }
        assert_eq!(generate(&spec(10), 0).width, MIN_SIZE);
    }

    #[test]
    fn case_mix_covers_every_kind_and_state() {
        let n = 300;
        let mut counts = std::collections::HashMap::new();
        let mut normal = 0;
        for i in 0..n {
            let s = Study::sample(&spec(64), i);
            if s.case.planned.iter().all(|p| p.finding.presence == Presence::Absent) {
                normal += 1;
            }
            for p in &s.case.planned {
                *counts.entry((p.finding.kind, p.finding.presence)).or_insert(0u32) += 1;
            }
        }
        let frac = normal as f64 / n as f64;
        assert!((0.28..=0.45).contains(&frac), "normal fraction {frac}");
        for k in FindingKind::ALL {
            for pr in [Presence::Present, Presence::Uncertain, Presence::Absent] {
                assert!(counts.get(&(k, pr)).copied().unwrap_or(0) > 0, "{k:?} never {pr:?}");
            }
            let present = counts[&(k, Presence::Present)] as f64 / n as f64;
            assert!((0.07..=0.25).contains(&present), "{k:?} present in {present}");
        }
    }

    #[test]
    fn masks_cover_exactly_what_each_finding_changes() {
        let size = 160u32;
        let mut checked = std::collections::HashSet::new();
        for i in 0..60 {
            let p = generate(&spec(size), i);
            for f in p.findings.iter().filter(|f| f.presence != Presence::Absent) {
                let (Some(b), Some(m)) = (f.bbox, &f.mask) else { panic!("drawn finding without mask: {f:?}") };
                let bits = m.to_bitmap();
                let without = render_without(&spec(size), i, f.kind);
                let (mut outside, mut changed, mut mask_changed) = (0usize, 0usize, 0usize);
                for (j, (&a, &c)) in p.pixels.iter().zip(&without).enumerate() {
                    if a == c {
                        continue;
                    }
                    changed += 1;
                    mask_changed += usize::from(bits[j]);
                    let (x, y) = ((j as u32) % size, (j as u32) / size);
                    if x + 3 < b[0] || y + 3 < b[1] || x >= b[2] + 3 || y >= b[3] + 3 {
                        outside += 1;
                    }
                }
                assert!(changed > 0, "{i} {f:?} changed nothing");
                assert!(outside * 50 <= changed, "{i} {:?}: {outside} of {changed} changes outside bbox", f.kind);
                assert!(mask_changed as u64 * 10 >= m.area(), "{i} {:?}: mask barely drawn", f.kind);
                checked.insert(f.kind);
            }
        }
        assert_eq!(checked.len(), FindingKind::ALL.len());
    }

    #[test]
    fn reports_state_every_finding_with_its_polarity() {
        for i in 0..300 {
            let p = generate(&spec(64), i);
            assert!(p.report.starts_with("FINDINGS: ") && p.report.contains("\n\nIMPRESSION: "), "{}", p.report);
            let sents = sentences(&p.report);
            for k in FindingKind::ALL {
                let hits: Vec<&Vec<String>> = sents.iter().filter(|s| s.iter().any(|w| w == k.name())).collect();
                let Some(f) = p.findings.iter().find(|f| f.kind == k) else {
                    assert!(hits.is_empty(), "{i}: unlabelled {k:?} in {}", p.report);
                    continue;
                };
                assert!(!hits.is_empty(), "{i}: {k:?} not mentioned in {}", p.report);
                for s in hits {
                    let (neg, hedge) = (has_any(s, NEGATIONS), has_any(s, HEDGES));
                    let ok = match f.presence {
                        Presence::Present => !neg && !hedge,
                        Presence::Uncertain => hedge && !neg,
                        Presence::Absent => neg && !hedge,
                    };
                    assert!(ok, "{i}: {k:?} {:?} in {s:?}", f.presence);
                }
            }
        }
    }

    #[test]
    fn reports_vary() {
        let reports: std::collections::HashSet<String> = (0..60).map(|i| Study::sample(&spec(64), i).report).collect();
        assert!(reports.len() > 45, "{} distinct reports", reports.len());
    }

    #[test]
    fn lungs_are_darker_than_the_heart() {
        let spec = spec(256);
        for i in 0..12 {
            let s = Study::sample(&spec, i);
            let p = generate(&spec, i);
            let grid = raster::Grid::new(spec.size, spec.size, &s.pose);
            let heart = s.anatomy.heart(s.case.ctr);
            let (mut lung, mut nl, mut cardiac, mut nh) = (0u64, 0u64, 0u64, 0u64);
            for (y, &v) in grid.vs.iter().enumerate() {
                for (x, &u) in grid.us.iter().enumerate() {
                    let px = u64::from(p.pixels[y * grid.w + x]);
                    if heart.r(u, v) < 0.7 {
                        cardiac += px;
                        nh += 1;
                    } else if heart.r(u, v) > 1.2 && s.anatomy.lungs.iter().any(|l| l.contains(u, v)) {
                        lung += px;
                        nl += 1;
                    }
                }
            }
            let (lung, cardiac) = (lung as f64 / nl as f64, cardiac as f64 / nh as f64);
            assert!(lung + 40.0 < cardiac, "study {i}: lung {lung:.0} vs heart {cardiac:.0}");
        }
    }

    #[test]
    fn labels_are_json_ground_truth() {
        let p = (0..20).map(|i| generate(&spec(64), i)).find(|p| !p.is_normal()).expect("an abnormal study");
        let l = p.labels();
        assert_eq!(l["sample_id"], p.sample_id);
        let fs = l["findings"].as_array().expect("findings array");
        assert_eq!(fs.len(), p.findings.len());
        let drawn = fs.iter().find(|f| f["presence"] != "absent").expect("a drawn finding");
        assert!(drawn["bbox"].is_array() && drawn["mask"]["rle"].is_array());
        let back: Phantom = serde_json::from_str(&serde_json::to_string(&p).expect("serialise")).expect("parse");
        assert_eq!(back, p);
    }
}
