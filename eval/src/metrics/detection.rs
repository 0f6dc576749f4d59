//! Box IoU and COCO-style mean average precision for one class, as torchmetrics `MeanAveragePrecision` `map`
//! (pycocotools semantics, area range `all`, at most 100 detections per image).

use std::cmp::Ordering;

/// IoU thresholds of the ECAMP detection protocol (spec §7.3): 0.40, 0.45, …, 0.75.
pub const DETECTION_IOU_THRESHOLDS: [f64; 8] = [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75];

/// Detections kept per image, highest scores first (COCO's last `maxDets`, the one `map` uses).
pub const COCO_MAX_DETECTIONS: usize = 100;

/// Intersection over union of two boxes `[x0, y0, x1, y1]` (continuous coordinates, no +1), computed in f64;
/// 0 when the union is empty.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f64 {
    let [ax0, ay0, ax1, ay1] = a.map(f64::from);
    let [bx0, by0, bx1, by1] = b.map(f64::from);
    let area = |x0: f64, y0: f64, x1: f64, y1: f64| (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
    let iw = ax1.min(bx1) - ax0.max(bx0);
    let ih = ay1.min(by1) - ay0.max(by0);
    if iw <= 0.0 || ih <= 0.0 {
        return 0.0;
    }
    let inter = iw * ih;
    let union = area(ax0, ay0, ax1, ay1) + area(bx0, by0, bx1, by1) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Mean average precision of scored boxes `preds[i]` against truth boxes `truths[i]` for image `i`, averaged
/// over `iou_thresholds`, as COCOeval / torchmetrics `map` for a single class:
/// - per image, detections are sorted by descending score (stable) and cut to [`COCO_MAX_DETECTIONS`]; each is
///   matched greedily to the unmatched truth box of highest IoU ≥ threshold (ties go to the later box, as in
///   pycocotools), otherwise it is a false positive — so detections on images without truth boxes are false
///   positives;
/// - detections of all images are ranked by score (stable, image order), precision is made monotone and read
///   at the 101 recall points 0, 0.01, …, 1 (0 beyond the highest recall reached);
/// - AP is the mean of those 101 values; the result is the mean AP over thresholds.
///
/// None when there is no truth box at all or no threshold (COCO reports -1).
///
/// # Panics
/// When `preds` and `truths` have different lengths (one entry per image each).
pub fn mean_average_precision(
    preds: &[Vec<(f32, [f32; 4])>],
    truths: &[Vec<[f32; 4]>],
    iou_thresholds: &[f64],
) -> Option<f64> {
    assert_eq!(preds.len(), truths.len(), "mAP: {} prediction lists for {} images", preds.len(), truths.len());
    let n_truth: usize = truths.iter().map(Vec::len).sum();
    if n_truth == 0 || iou_thresholds.is_empty() {
        return None;
    }
    let by_score_desc = |a: &f32, b: &f32| b.partial_cmp(a).unwrap_or(Ordering::Equal);
    let sorted: Vec<Vec<(f32, [f32; 4])>> = preds
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.sort_by(|a, b| by_score_desc(&a.0, &b.0));
            p.truncate(COCO_MAX_DETECTIONS);
            p
        })
        .collect();
    let mut total = 0.0;
    for &t in iou_thresholds {
        let threshold = t.min(1.0 - 1e-10);
        // (score, is true positive) for every kept detection, image by image.
        let mut dets: Vec<(f32, bool)> = Vec::new();
        for (p, gts) in sorted.iter().zip(truths) {
            let mut taken = vec![false; gts.len()];
            for (score, b) in p {
                let mut best = threshold;
                let mut matched = None;
                for (g, gt) in gts.iter().enumerate() {
                    if taken[g] {
                        continue;
                    }
                    let v = iou(b, gt);
                    if v < best {
                        continue;
                    }
                    best = v;
                    matched = Some(g);
                }
                if let Some(g) = matched {
                    taken[g] = true;
                }
                dets.push((*score, matched.is_some()));
            }
        }
        dets.sort_by(|a, b| by_score_desc(&a.0, &b.0));
        total += average_precision(&dets, n_truth);
    }
    Some(total / iou_thresholds.len() as f64)
}

/// COCO 101-point interpolated AP of detections ranked by score, given the number of truth boxes. (COCO adds
/// 2⁻⁵² to the precision denominator against division by zero, which cannot happen here; leaving it out changes
/// results by at most 1e-16 and keeps a perfect score at exactly 1.)
fn average_precision(dets: &[(f32, bool)], n_truth: usize) -> f64 {
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    let mut recall = Vec::with_capacity(dets.len());
    let mut precision = Vec::with_capacity(dets.len());
    for &(_, hit) in dets {
        if hit {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        recall.push(tp / n_truth as f64);
        precision.push(tp / (tp + fp));
    }
    for i in (1..precision.len()).rev() {
        if precision[i] > precision[i - 1] {
            precision[i - 1] = precision[i];
        }
    }
    let mut sum = 0.0;
    for r in 0..=100u32 {
        // numpy.linspace(0, 1, 101) gives r · 0.01 with the last point exactly 1.
        let thr = if r == 100 { 1.0 } else { f64::from(r) * 0.01 };
        let idx = recall.partition_point(|&x| x < thr);
        sum += precision.get(idx).copied().unwrap_or(0.0);
    }
    sum / 101.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &[f64] = &DETECTION_IOU_THRESHOLDS;

    #[test]
    fn iou_of_simple_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]), 1.0);
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 6.0]), 0.6);
        assert!((iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 1.0, 3.0, 3.0]) - 1.0 / 7.0).abs() < 1e-12);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[1.0, 0.0, 2.0, 1.0]), 0.0);
        assert_eq!(iou(&[5.0, 5.0, 5.0, 5.0], &[5.0, 5.0, 5.0, 5.0]), 0.0);
    }

    #[test]
    fn perfect_and_empty_predictions() {
        let truths = vec![vec![[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 30.0]], vec![], vec![[5.0, 5.0, 9.0, 9.0]]];
        let perfect: Vec<Vec<(f32, [f32; 4])>> = truths.iter().map(|g| g.iter().map(|b| (0.9, *b)).collect()).collect();
        assert_eq!(mean_average_precision(&perfect, &truths, T), Some(1.0));
        let none = vec![vec![], vec![], vec![]];
        assert_eq!(mean_average_precision(&none, &truths, T), Some(0.0));
        assert_eq!(mean_average_precision(&none, &[vec![], vec![], vec![]], T), None);
        assert_eq!(mean_average_precision(&perfect, &truths, &[]), None);
    }

    #[test]
    fn hand_computed_cases() {
        let gt = [0.0f32, 0.0, 10.0, 10.0];
        let far = [50.0f32, 50.0, 60.0, 60.0];
        // A false positive ranked above the true positive: precision 0 then ½ → monotone ½ everywhere.
        let p = vec![vec![(0.9, far), (0.8, gt)]];
        let got = mean_average_precision(&p, &[vec![gt]], T).unwrap();
        assert!((got - ap_half()).abs() < 1e-12, "{got}");
        // Two truth boxes, one found: precision 1 up to recall 0.5 → 51 of 101 recall points.
        let p = vec![vec![(0.9, gt)]];
        let got = mean_average_precision(&p, &[vec![gt, far]], T).unwrap();
        assert!((got - 51.0 / 101.0).abs() < 1e-12, "{got}");
        // IoU 0.6: a hit at thresholds 0.40 … 0.60 (5 of 8), a miss at 0.65, 0.70, 0.75.
        let p = vec![vec![(0.7, [0.0, 0.0, 10.0, 6.0])]];
        let got = mean_average_precision(&p, &[vec![gt]], T).unwrap();
        assert!((got - 5.0 / 8.0).abs() < 1e-12, "{got}");
        // A confident false positive on an image without truth halves precision on the other image.
        let p = vec![vec![(0.8, gt)], vec![(0.9, far)]];
        let got = mean_average_precision(&p, &[vec![gt], vec![]], T).unwrap();
        assert!((got - ap_half()).abs() < 1e-12 && got < 0.51, "{got}");
        // One prediction cannot match two truth boxes; the second, lower-scored duplicate is a false positive.
        let p = vec![vec![(0.9, gt), (0.8, gt)]];
        assert_eq!(mean_average_precision(&p, &[vec![gt]], T), Some(1.0));
    }

    /// AP when the only true positive comes second: precision ½ at every recall point.
    fn ap_half() -> f64 {
        0.5
    }

    #[test]
    fn only_the_top_100_detections_per_image_count() {
        let gt = [0.0f32, 0.0, 10.0, 10.0];
        let mut p: Vec<(f32, [f32; 4])> =
            (0..100).map(|i| (0.9, [100.0 + i as f32, 0.0, 105.0 + i as f32, 5.0])).collect();
        p.push((0.1, gt));
        assert_eq!(mean_average_precision(&[p.clone()], &[vec![gt]], T), Some(0.0));
        p.pop();
        p.push((0.95, gt));
        assert_eq!(mean_average_precision(&[p], &[vec![gt]], T), Some(1.0));
    }
}
