//! The metrics against reference implementations: `data/reference_metrics.json` holds random cases scored by
//! pycocotools COCOeval (torchmetrics `map` with the ECAMP IoU thresholds) and sklearn `roc_auc_score`,
//! written by `data/reference_metrics.py`.

use ecamp_eval::metrics::{DETECTION_IOU_THRESHOLDS, mean_average_precision, roc_auc};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    map: Vec<MapCase>,
    auc: Vec<AucCase>,
}

#[derive(Deserialize)]
struct MapCase {
    preds: Vec<Vec<(f32, [f32; 4])>>,
    truths: Vec<Vec<[f32; 4]>>,
    map: f64,
}

#[derive(Deserialize)]
struct AucCase {
    scores: Vec<f32>,
    targets: Vec<f32>,
    auc: f64,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("data/reference_metrics.json")).expect("fixture parses")
}

#[test]
fn map_matches_pycocotools() {
    let r = reference();
    assert!(r.map.len() >= 50);
    assert!(r.map.iter().any(|c| c.map > 0.5) && r.map.iter().any(|c| c.map == 0.0));
    for (i, c) in r.map.iter().enumerate() {
        let got = mean_average_precision(&c.preds, &c.truths, &DETECTION_IOU_THRESHOLDS).expect("has truth boxes");
        assert!((got - c.map).abs() < 1e-9, "case {i}: got {got}, pycocotools {}", c.map);
    }
}

#[test]
fn roc_auc_matches_sklearn() {
    let r = reference();
    assert!(r.auc.len() >= 30);
    for (i, c) in r.auc.iter().enumerate() {
        let got = roc_auc(&c.scores, &c.targets).expect("both classes present");
        assert!((got - c.auc).abs() < 1e-12, "case {i}: got {got}, sklearn {}", c.auc);
    }
}
