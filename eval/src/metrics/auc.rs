//! ROC-AUC, exact (Mann–Whitney U with average ranks for ties), as sklearn's `roc_auc_score`.

use std::cmp::Ordering;

/// Area under the ROC curve of `scores` against binary `targets` (positive when above 0.5). Items whose
/// target is NaN are skipped; None when only one class remains or a kept score is NaN. Tied scores share
/// their average rank, which equals sklearn's trapezoidal `roc_auc_score`.
///
/// # Panics
/// When `scores` and `targets` have different lengths.
pub fn roc_auc(scores: &[f32], targets: &[f32]) -> Option<f64> {
    assert_eq!(scores.len(), targets.len(), "roc_auc: {} scores for {} targets", scores.len(), targets.len());
    let mut pairs: Vec<(f32, bool)> =
        scores.iter().zip(targets).filter(|(_, t)| !t.is_nan()).map(|(&s, &t)| (s, t > 0.5)).collect();
    if pairs.iter().any(|p| p.0.is_nan()) {
        return None;
    }
    let n_pos = pairs.iter().filter(|p| p.1).count();
    let n_neg = pairs.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    pairs.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i + 1;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += avg_rank * pairs[i..j].iter().filter(|p| p.1).count() as f64;
        i = j;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Mean ROC-AUC over classes of `scores` and `targets` (both items × classes), and each class's AUC; classes
/// whose AUC is undefined (one class present) are left out of the mean, which is None when none is defined.
///
/// # Panics
/// When the two have different numbers of rows, or a row's length differs from the first target row's.
pub fn mean_auc(scores: &[Vec<f32>], targets: &[Vec<f32>]) -> (Option<f64>, Vec<Option<f64>>) {
    assert_eq!(scores.len(), targets.len(), "mean_auc: {} score rows for {} target rows", scores.len(), targets.len());
    let classes = targets.first().map_or(0, Vec::len);
    for (s, t) in scores.iter().zip(targets) {
        assert!(s.len() == classes && t.len() == classes, "mean_auc: rows must all have {classes} classes");
    }
    let per_class: Vec<Option<f64>> = (0..classes)
        .map(|c| {
            let s: Vec<f32> = scores.iter().map(|r| r[c]).collect();
            let t: Vec<f32> = targets.iter().map(|r| r[c]).collect();
            roc_auc(&s, &t)
        })
        .collect();
    let defined: Vec<f64> = per_class.iter().flatten().copied().collect();
    let mean = (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
    (mean, per_class)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pair-counting definition: P(score_pos > score_neg) + ½ P(equal).
    fn brute(scores: &[f32], targets: &[f32]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for (i, &ti) in targets.iter().enumerate() {
            for (j, &tj) in targets.iter().enumerate() {
                if ti == 1.0 && tj == 0.0 {
                    den += 1.0;
                    num += match scores[i].partial_cmp(&scores[j]) {
                        Some(Ordering::Greater) => 1.0,
                        Some(Ordering::Equal) => 0.5,
                        _ => 0.0,
                    };
                }
            }
        }
        num / den
    }

    #[test]
    fn hand_computed_values() {
        // sklearn's documented example: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75.
        assert_eq!(roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]), Some(0.75));
        // One tied positive/negative pair counts ½: (1 + ½ + 1 + 1) / 4.
        assert_eq!(roc_auc(&[0.1, 0.5, 0.5, 0.9], &[0.0, 0.0, 1.0, 1.0]), Some(0.875));
        assert_eq!(roc_auc(&[0.5; 4], &[0.0, 1.0, 0.0, 1.0]), Some(0.5));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.1], &[0.0, 0.0, 1.0]), Some(0.0));
        // -0.0 and 0.0 are a tie.
        assert_eq!(roc_auc(&[-0.0, 0.0], &[0.0, 1.0]), Some(0.5));
    }

    #[test]
    fn nan_targets_are_skipped_and_one_class_is_undefined() {
        assert_eq!(roc_auc(&[0.1, 0.9, 0.0, 0.2], &[0.0, 1.0, f32::NAN, 1.0]), Some(1.0));
        assert_eq!(roc_auc(&[0.1, 0.9], &[1.0, 1.0]), None);
        assert_eq!(roc_auc(&[0.1, 0.9], &[f32::NAN, 1.0]), None);
        assert_eq!(roc_auc(&[], &[]), None);
        assert_eq!(roc_auc(&[f32::NAN, 0.9], &[0.0, 1.0]), None);
    }

    #[test]
    fn matches_pair_counting_with_many_ties() {
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let scores: Vec<f32> = (0..300).map(|_| (next() % 17) as f32 / 16.0).collect();
        let targets: Vec<f32> = (0..300).map(|_| (next() % 3 == 0) as u32 as f32).collect();
        let got = roc_auc(&scores, &targets).unwrap();
        assert!((got - brute(&scores, &targets)).abs() < 1e-12, "{got}");
    }

    #[test]
    fn mean_over_defined_classes() {
        let scores = vec![vec![0.1, 0.3], vec![0.9, 0.2], vec![0.4, 0.8]];
        let targets = vec![vec![0.0, 1.0], vec![1.0, 1.0], vec![0.0, 1.0]];
        let (mean, per) = mean_auc(&scores, &targets);
        assert_eq!(per, vec![Some(1.0), None]);
        assert_eq!(mean, Some(1.0));
        let targets2 = vec![vec![0.0, 1.0], vec![1.0, 0.0], vec![0.0, 1.0]];
        let (mean2, per2) = mean_auc(&scores, &targets2);
        assert_eq!(per2, vec![Some(1.0), Some(1.0)]);
        assert_eq!(mean2, Some(1.0));
        let targets3 = vec![vec![1.0, 1.0], vec![0.0, 0.0], vec![0.0, 1.0]];
        let (mean3, _) = mean_auc(&scores, &targets3);
        // class 0: pos 0.1 vs neg {0.9, 0.4} → 0; class 1: pos {0.3, 0.8} vs neg 0.2 → 1.
        assert_eq!(mean3, Some(0.5));
        assert_eq!(mean_auc(&[], &[]), (None, vec![]));
    }
}
