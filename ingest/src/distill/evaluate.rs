//! Scores the `rules` distiller against IU X-ray MeSH `major` tags, per finding (precision / recall / F1).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::lexicon;
use super::rules::{RulesDistiller, Status};

/// A finding enters the mean only with at least this many positive reports, so F1 is not dominated by noise.
pub const MIN_SUPPORT: usize = 20;

/// Maps a MeSH major tag (`Head/qualifier/...`) to the ECAMP entity it asserts, or `None` when it has no
/// counterpart.
///
/// Mostly the head decides. Anatomical heads (`Lung`, `Aorta`, `Diaphragm`, `Cardiac Shadow`, ...) carry their
/// finding in a qualifier and are mapped only for the qualifiers that name an ECAMP entity; anatomy alone is not
/// a finding.
pub fn mesh_entity(tag: &str) -> Option<&'static str> {
    let mut parts = tag.split('/').map(str::trim);
    let head = parts.next()?.to_ascii_lowercase();
    let quals: Vec<String> = parts.map(str::to_ascii_lowercase).collect();
    let has = |q: &str| quals.iter().any(|x| x == q);
    Some(match head.as_str() {
        "opacity" | "density" => "opacity",
        "cardiomegaly" => "cardiomegaly",
        "cardiac shadow" if has("enlarged") => "cardiomegaly",
        "pulmonary atelectasis" | "atelectasis" => "atelectasis",
        "calcinosis" => "calcification",
        "calcified granuloma" | "granuloma" | "granulomatous disease" => "granuloma",
        "pleural effusion" => "effusion",
        "catheters, indwelling" | "tube, inserted" => "catheter",
        "airspace disease" | "consolidation" => "consolidation",
        "deformity" => "deformity",
        "nodule" | "multiple pulmonary nodules" => "nodule",
        "fractures, bone" => "fracture",
        "pulmonary congestion" => "congestion",
        "infiltrate" => "infiltrate",
        "emphysema" | "pulmonary emphysema" => "emphysema",
        "thickening" => "thickening",
        "pulmonary disease, chronic obstructive" => "copd",
        "hernia, hiatal" | "hernia" => "hernia",
        "pulmonary edema" | "edema" => "edema",
        "pneumonia" => "pneumonia",
        "pneumothorax" => "pneumothorax",
        "pulmonary fibrosis" | "cicatrix" => "fibrosis",
        "mass" => "mass",
        "heart failure" => "chf",
        "tuberculosis" | "tuberculosis, pulmonary" => "tuberculosis",
        "sarcoidosis" | "sarcoidosis, pulmonary" => "sarcoidosis",
        "bronchiectasis" => "bronchiectasis",
        "pulmonary embolism" => "embolism",
        "lung" if has("hyperdistention") => "hyperinflate",
        "aorta" | "aorta, thoracic" if has("tortuous") || has("enlarged") || has("dilatation") => "aorta",
        "diaphragm" if has("elevated") || has("flattened") => "hemidiaphragm",
        _ => return None,
    })
}

/// Per-finding confusion counts and scores.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FindingScore {
    /// ECAMP entity name.
    pub entity: String,
    /// Reports whose MeSH tags assert the finding.
    pub support: usize,
    /// Reports predicted positive and tagged.
    pub tp: usize,
    /// Reports predicted positive but not tagged.
    pub fp: usize,
    /// Reports tagged but not predicted positive.
    pub fn_: usize,
    /// tp / (tp + fp), 0 when nothing was predicted.
    pub precision: f64,
    /// tp / (tp + fn), 0 when there is no support.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
}

/// Evaluation over a report collection.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// Reports scored.
    pub reports: usize,
    /// Covered findings (mapped, in the lexicon, support ≥ [`MIN_SUPPORT`]), by entity name.
    pub findings: Vec<FindingScore>,
    /// Unweighted mean F1 over `findings`.
    pub mean_f1: f64,
}

/// Entities the distiller predicts positive for a report.
///
/// Only `present` counts; `uncertain` is a negative, as in the CheXpert convention of not reading hedges as
/// assertions. IU indexers tag some hedges ("atelectasis versus scarring") and skip others ("may represent
/// pneumonia"), so neither choice is exact; counting uncertain as positive scored lower overall (mean F1 0.862 vs
/// 0.902 on the 3,955 IU reports with rules-1). High-probability wording ("probably", "likely") is already
/// reported as present by the distiller.
pub fn predicted(d: &RulesDistiller, report: &str) -> BTreeSet<String> {
    d.distill(report).entities.into_iter().filter(|m| matches!(m.status, Status::Present)).map(|m| m.name).collect()
}

/// Entities asserted by a report's MeSH major tags.
pub fn gold(mesh_major: &[String]) -> BTreeSet<String> {
    mesh_major.iter().filter_map(|t| mesh_entity(t)).map(str::to_string).collect()
}

/// Scores `d` on `(report text, MeSH major tags)` pairs.
pub fn evaluate<'a>(d: &RulesDistiller, items: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Evaluation {
    let mut counts: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut reports = 0;
    for (text, mesh) in items {
        reports += 1;
        let pred = predicted(d, text);
        let truth = gold(mesh);
        for e in truth.union(&pred) {
            let c = counts.entry(e.clone()).or_default();
            match (truth.contains(e), pred.contains(e)) {
                (true, true) => c[0] += 1,
                (false, true) => c[1] += 1,
                (true, false) => c[2] += 1,
                (false, false) => {}
            }
        }
    }
    let findings: Vec<FindingScore> = counts
        .into_iter()
        .filter(|(e, c)| lexicon::entity(e).is_some() && c[0] + c[2] >= MIN_SUPPORT)
        .map(|(entity, [tp, fp, fn_])| {
            let precision = ratio(tp, tp + fp);
            let recall = ratio(tp, tp + fn_);
            let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
            FindingScore { entity, support: tp + fn_, tp, fp, fn_, precision, recall, f1 }
        })
        .collect();
    let mean_f1 =
        if findings.is_empty() { 0.0 } else { findings.iter().map(|f| f.f1).sum::<f64>() / findings.len() as f64 };
    Evaluation { reports, findings, mean_f1 }
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 { 0.0 } else { num as f64 / den as f64 }
}

impl Evaluation {
    /// Printable per-finding table followed by the mean F1.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<15} {:>7} {:>5} {:>5} {:>5} {:>9} {:>7} {:>6}",
            "finding", "support", "tp", "fp", "fn", "precision", "recall", "f1"
        );
        for f in &self.findings {
            let _ = writeln!(
                s,
                "{:<15} {:>7} {:>5} {:>5} {:>5} {:>9.3} {:>7.3} {:>6.3}",
                f.entity, f.support, f.tp, f.fp, f.fn_, f.precision, f.recall, f.f1
            );
        }
        let _ = writeln!(
            s,
            "mean F1 over {} findings ({} reports): {:.3}",
            self.findings.len(),
            self.reports,
            self.mean_f1
        );
        s
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::source::iu_xray::parse_iu_report;

    #[test]
    fn mesh_tags_map_to_entities() {
        assert_eq!(mesh_entity("Opacity/lung/base/left/mild"), Some("opacity"));
        assert_eq!(mesh_entity("Pleural Effusion/bilateral/small"), Some("effusion"));
        assert_eq!(mesh_entity("Hernia, Hiatal"), Some("hernia"));
        assert_eq!(mesh_entity("Calcified Granuloma/lung/upper lobe/right"), Some("granuloma"));
        assert_eq!(mesh_entity("Pulmonary Disease, Chronic Obstructive"), Some("copd"));
        assert_eq!(mesh_entity("Cardiac Shadow/enlarged/mild"), Some("cardiomegaly"));
        assert_eq!(mesh_entity("Cardiac Shadow/obscured"), None);
        assert_eq!(mesh_entity("Lung/hypoinflation"), None);
        assert_eq!(mesh_entity("normal"), None);
        assert_eq!(mesh_entity(""), None);
    }

    #[test]
    fn scores_a_toy_collection() {
        let d = RulesDistiller::new();
        let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let data = vec![
            ("Small left pleural effusion.".to_string(), tags(&["Pleural Effusion/left/small"])),
            ("No pleural effusion.".to_string(), tags(&["normal"])),
            ("Possible effusion.".to_string(), tags(&["Pleural Effusion"])),
            ("Left effusion.".to_string(), tags(&["normal"])),
        ];
        let mut items: Vec<(String, Vec<String>)> = data.clone();
        // Pad support above MIN_SUPPORT so the finding is covered.
        items.extend(std::iter::repeat_n(data[0].clone(), MIN_SUPPORT));
        let ev = evaluate(&d, items.iter().map(|(t, m)| (t.as_str(), m.as_slice())));
        assert_eq!(ev.reports, 4 + MIN_SUPPORT);
        let f = &ev.findings[0];
        assert_eq!((f.entity.as_str(), f.tp, f.fp, f.fn_), ("effusion", 1 + MIN_SUPPORT, 1, 1));
        assert!(ev.table().contains("effusion"));
        assert!((ev.mean_f1 - f.f1).abs() < 1e-12);
    }

    /// Reads the IU X-ray reports (CC BY-NC-ND) from the torchxrayvision wheel at test time only.
    fn load_iu_reports() -> Option<Vec<(String, Vec<String>)>> {
        let tgz = crate::testdata::wheel_member(
            "torchxrayvision-1.5.7-py3-none-any.whl",
            "torchxrayvision/data/NLMCXR_reports.tgz",
        )?;
        let dir = tempfile::tempdir().expect("tempdir");
        tar::Archive::new(flate2::read::GzDecoder::new(tgz.as_slice())).unpack(dir.path()).expect("unpack tgz");
        let mut paths = Vec::new();
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).expect("read dir") {
                let path = e.expect("dir entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "xml") {
                    paths.push(path);
                }
            }
        }
        paths.sort();
        Some(
            paths
                .iter()
                .map(|p| {
                    let xml = std::fs::read_to_string(p).expect("read xml");
                    let r = parse_iu_report(&xml).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                    (r.report_text().unwrap_or_default(), r.mesh_major)
                })
                .collect(),
        )
    }

    #[test]
    fn real_iu_xray_reports_reach_target_f1() {
        let Some(reports) = load_iu_reports() else { return };
        assert_eq!(reports.len(), 3955, "unexpected IU X-ray report count");
        let ev = evaluate(&RulesDistiller::new(), reports.iter().map(|(t, m)| (t.as_str(), m.as_slice())));
        println!("{}", ev.table());
        assert!(ev.findings.len() >= 15, "too few covered findings: {}", ev.findings.len());
        assert!(ev.mean_f1 >= 0.80, "mean F1 {:.3} below 0.80\n{}", ev.mean_f1, ev.table());
    }
}
