//! Deterministic patient-level splits and nested training subsets (1 % ⊂ 10 % ⊂ 100 %).
//!
//! Patients are ranked by `sha256("{seed}:{patient}")`, so a split depends only on the seed and the patient
//! ids, never on the order or number of other items, and all images of one patient land in the same part.

use crate::error::{EvalError, Result};
use crate::labels::Item;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Item indices of the three parts of a split, each in ascending order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Split {
    /// Training items.
    pub train: Vec<usize>,
    /// Validation items (model selection, early stopping).
    pub val: Vec<usize>,
    /// Test items (reported metric).
    pub test: Vec<usize>,
}

/// Rank key of a patient under `seed`: `sha256("{seed}:{patient}")`.
pub fn patient_hash(seed: u64, patient: &str) -> [u8; 32] {
    Sha256::digest(format!("{seed}:{patient}").as_bytes()).into()
}

/// Distinct patients of the items at `indices`, ordered by hash (ties by name), with their item indices.
fn ranked_patients<'a>(items: &'a [Item], indices: &[usize], seed: u64) -> Result<Vec<(&'a str, Vec<usize>)>> {
    let mut by_patient: HashMap<&str, Vec<usize>> = HashMap::new();
    for &i in indices {
        let item = items
            .get(i)
            .ok_or_else(|| EvalError::Invalid(format!("item index {i} out of range ({} items)", items.len())))?;
        by_patient.entry(item.patient_or_key()).or_default().push(i);
    }
    let mut ranked: Vec<([u8; 32], &str, Vec<usize>)> =
        by_patient.into_iter().map(|(p, v)| (patient_hash(seed, p), p, v)).collect();
    ranked.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    Ok(ranked.into_iter().map(|(_, p, v)| (p, v)).collect())
}

/// Splits `items` by patient: patients ranked by [`patient_hash`] go to train, val and test in proportion to
/// `fractions` (normalised by their sum; the first `round(P·train/sum)` patients train, up to
/// `round(P·(train+val)/sum)` val, the rest test). Items without a patient count as their own patient.
/// Fractions must be finite, non-negative and not all zero.
pub fn split_by_patient(items: &[Item], seed: u64, fractions: (f64, f64, f64)) -> Result<Split> {
    let (t, v, s) = fractions;
    let sum = t + v + s;
    if [t, v, s].iter().any(|f| !f.is_finite() || *f < 0.0) || sum <= 0.0 {
        return Err(EvalError::Invalid(format!(
            "split fractions {t}/{v}/{s} must be finite, non-negative and not all zero"
        )));
    }
    let all: Vec<usize> = (0..items.len()).collect();
    let ranked = ranked_patients(items, &all, seed)?;
    let p = ranked.len() as f64;
    let n_train = (p * t / sum).round() as usize;
    let n_trainval = ((p * (t + v) / sum).round() as usize).max(n_train);
    let mut split = Split::default();
    for (rank, (_, idx)) in ranked.into_iter().enumerate() {
        let part = if rank < n_train {
            &mut split.train
        } else if rank < n_trainval {
            &mut split.val
        } else {
            &mut split.test
        };
        part.extend(idx);
    }
    split.train.sort_unstable();
    split.val.sort_unstable();
    split.test.sort_unstable();
    Ok(split)
}

/// The items of `indices` whose patient is among the ⌈fraction·P⌉ smallest-hash patients of those indices
/// (at least one when any), in the order of `indices`. For a fixed seed, smaller fractions give subsets of
/// larger ones. `fraction` must lie in (0, 1].
pub fn subsample_by_patient(indices: &[usize], items: &[Item], fraction: f64, seed: u64) -> Result<Vec<usize>> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(EvalError::Invalid(format!("subsample fraction {fraction} must be in (0, 1]")));
    }
    let ranked = ranked_patients(items, indices, seed)?;
    if ranked.is_empty() {
        return Ok(Vec::new());
    }
    // A small tolerance keeps 0.1 · 30 = 3.0000000000000004 at 3 patients.
    let keep = ((fraction * ranked.len() as f64 - 1e-9).ceil() as usize).clamp(1, ranked.len());
    let chosen: std::collections::HashSet<&str> = ranked.iter().take(keep).map(|(p, _)| *p).collect();
    Ok(indices
        .iter()
        .copied()
        .filter(|&i| items.get(i).is_some_and(|it| chosen.contains(it.patient_or_key())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// 3 images per patient for 30 patients, plus 5 items without a patient.
    fn items() -> Vec<Item> {
        let mut v: Vec<Item> = (0..90)
            .map(|i| Item { key: format!("img{i}"), patient: Some(format!("p{}", i / 3)), ..Item::default() })
            .collect();
        v.extend((0..5).map(|i| Item { key: format!("solo{i}"), ..Item::default() }));
        v
    }

    fn patients(items: &[Item], idx: &[usize]) -> HashSet<String> {
        idx.iter().map(|&i| items[i].patient_or_key().to_string()).collect()
    }

    #[test]
    fn split_is_by_patient_complete_and_deterministic() {
        let items = items();
        let s = split_by_patient(&items, 42, (0.6, 0.2, 0.2)).unwrap();
        let mut all: Vec<usize> = s.train.iter().chain(&s.val).chain(&s.test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..items.len()).collect::<Vec<_>>());
        let (a, b, c) = (patients(&items, &s.train), patients(&items, &s.val), patients(&items, &s.test));
        assert!(a.is_disjoint(&b) && a.is_disjoint(&c) && b.is_disjoint(&c));
        // 35 patients: 21 train, 7 val, 7 test.
        assert_eq!((a.len(), b.len(), c.len()), (21, 7, 7));
        assert_eq!(split_by_patient(&items, 42, (3.0, 1.0, 1.0)).unwrap(), s, "fractions are normalised");
        assert_ne!(split_by_patient(&items, 7, (0.6, 0.2, 0.2)).unwrap(), s);
        // Item order does not matter: the same patients go to train.
        let mut rev = items.clone();
        rev.reverse();
        let r = split_by_patient(&rev, 42, (0.6, 0.2, 0.2)).unwrap();
        assert_eq!(patients(&rev, &r.train), a);
        assert!(split_by_patient(&items, 1, (0.5, -0.1, 0.6)).is_err());
        assert!(split_by_patient(&items, 1, (0.0, 0.0, 0.0)).is_err());
    }

    #[test]
    fn subsamples_are_nested_and_sized_by_patient() {
        let items = items();
        let s = split_by_patient(&items, 3, (1.0, 0.0, 0.0)).unwrap();
        assert_eq!(s.train.len(), items.len());
        let one = subsample_by_patient(&s.train, &items, 0.01, 3).unwrap();
        let ten = subsample_by_patient(&s.train, &items, 0.1, 3).unwrap();
        let all = subsample_by_patient(&s.train, &items, 1.0, 3).unwrap();
        assert_eq!(patients(&items, &one).len(), 1, "at least one patient");
        assert_eq!(patients(&items, &ten).len(), 4, "ceil(0.1 · 35)");
        assert_eq!(all, s.train);
        let (one_s, ten_s): (HashSet<usize>, HashSet<usize>) =
            (one.iter().copied().collect(), ten.iter().copied().collect());
        assert!(one_s.is_subset(&ten_s));
        // Every image of a chosen patient comes along.
        for p in patients(&items, &ten) {
            let n = items.iter().filter(|it| it.patient_or_key() == p).count();
            assert_eq!(ten.iter().filter(|&&i| items[i].patient_or_key() == p).count(), n);
        }
        let thirty: Vec<usize> = (0..90).collect();
        let three = subsample_by_patient(&thirty, &items, 0.1, 9).unwrap();
        assert_eq!(patients(&items, &three).len(), 3, "0.1 · 30 is exactly 3");
        assert!(subsample_by_patient(&thirty, &items, 0.0, 9).is_err());
        assert!(subsample_by_patient(&thirty, &items, 1.5, 9).is_err());
        assert!(subsample_by_patient(&[999], &items, 0.5, 9).is_err());
        assert!(subsample_by_patient(&[], &items, 0.5, 9).unwrap().is_empty());
    }

    #[test]
    fn hash_is_sha256_of_seed_colon_patient() {
        // `printf '0:p' | sha256sum`
        let h = patient_hash(0, "p");
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "82e2058a6e787d77dca92a7599b847cef5082dc0b2dbe8930e0cdd789db8c70f");
        assert_ne!(patient_hash(1, "p"), h);
    }
}
