//! Argmax accuracy for single-label classification.

/// Index of the largest score (the first one on ties; NaN never wins), None for an empty or all-NaN row.
pub fn argmax(scores: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &s) in scores.iter().enumerate() {
        if !s.is_nan() && best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// Fraction of items whose argmax score is the labelled class; None when there are no items.
///
/// # Panics
/// When `scores` and `labels` have different lengths.
pub fn accuracy(scores: &[Vec<f32>], labels: &[usize]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "accuracy: {} score rows for {} labels", scores.len(), labels.len());
    if labels.is_empty() {
        return None;
    }
    let correct = scores.iter().zip(labels).filter(|(s, l)| argmax(s) == Some(**l)).count();
    Some(correct as f64 / labels.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_and_accuracy() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), Some(1));
        assert_eq!(argmax(&[f32::NAN, -1.0]), Some(1));
        assert_eq!(argmax(&[]), None);
        let scores = vec![vec![0.1, 0.8, 0.1], vec![0.5, 0.2, 0.3], vec![0.2, 0.2, 0.6], vec![]];
        assert_eq!(accuracy(&scores, &[1, 2, 2, 0]), Some(0.5));
        assert_eq!(accuracy(&[], &[]), None);
    }
}
