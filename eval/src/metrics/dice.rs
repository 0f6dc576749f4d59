//! Per-image Dice for segmentation (spec §7.2).

/// Dice `2|P∩T| / (|P| + |T|)` of a thresholded prediction against the truth; an image with empty truth
/// scores 1 when the prediction is empty too, else 0.
///
/// # Panics
/// When `pred` and `truth` have different lengths.
pub fn dice_per_image(pred: &[bool], truth: &[bool]) -> f64 {
    assert_eq!(pred.len(), truth.len(), "dice: {} predicted pixels for {} truth pixels", pred.len(), truth.len());
    let (mut p, mut t, mut both) = (0u64, 0u64, 0u64);
    for (&a, &b) in pred.iter().zip(truth) {
        p += u64::from(a);
        t += u64::from(b);
        both += u64::from(a && b);
    }
    if t == 0 {
        return if p == 0 { 1.0 } else { 0.0 };
    }
    2.0 * both as f64 / (p + t) as f64
}

/// Mean of [`dice_per_image`] over images; None when there are none.
///
/// # Panics
/// When the two lists, or any image pair, differ in length.
pub fn mean_dice(preds: &[Vec<bool>], truths: &[Vec<bool>]) -> Option<f64> {
    assert_eq!(preds.len(), truths.len(), "mean_dice: {} predictions for {} truths", preds.len(), truths.len());
    if preds.is_empty() {
        return None;
    }
    Some(preds.iter().zip(truths).map(|(p, t)| dice_per_image(p, t)).sum::<f64>() / preds.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice_rules_of_the_protocol() {
        let (f, t) = (false, true);
        assert_eq!(dice_per_image(&[f, f, f], &[f, f, f]), 1.0);
        assert_eq!(dice_per_image(&[f, t, f], &[f, f, f]), 0.0);
        assert_eq!(dice_per_image(&[f, f, f], &[t, f, f]), 0.0);
        // |P| = 2, |T| = 1, overlap 1 → 2/3.
        assert!((dice_per_image(&[t, t, f], &[t, f, f]) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(dice_per_image(&[t, t], &[t, t]), 1.0);
        let mean = mean_dice(&[vec![f, f], vec![t, f], vec![t, f]], &[vec![f, f], vec![f, f], vec![t, f]]).unwrap();
        assert!((mean - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(mean_dice(&[], &[]), None);
    }
}
