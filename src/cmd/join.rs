//! How the rows of a label file find their samples.
//!
//! Label files name images their own way (ChestX-ray14 `00000001_000.png`, CheXpert
//! `CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg`, SIIM's SOPInstanceUID, RSNA's
//! patientId), while a sample id is what the ingest source gave it (`dicom-<SOPInstanceUID>`, a
//! manifest's `sample_id` or image path, `mimic-<dicom_id>`). A label key matches a sample when,
//! after dropping an image extension (`.png`, `.jpg`, `.jpeg`, `.dcm`, `.dicom`) and a source
//! prefix (`dicom-`, `mimic-`) on either side:
//! 1. the two are equal, or
//! 2. one is a trailing run of whole path components of the other (`images_001/images/x.png`
//!    holds `x.png`; `train/patient1/study1/view1.jpg` ends `CheXpert-v1.0/train/patient1/…`),
//!    where that shorter run names one label only.
//!
//! Only known extensions are dropped, so dotted ids (DICOM UIDs) are compared whole.

use std::collections::HashMap;

use ecamp_eval::LabelSet;

/// File extensions a label key or sample id may carry that do not belong to its name.
const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "dcm", "dicom"];

/// Sample-id prefixes that ingest sources put before an image's own id.
const SOURCE_PREFIXES: [&str; 2] = ["dicom-", "mimic-"];

/// Finds the label item (caller's index) a sample id stands for.
pub struct KeyIndex {
    /// Exact key → index.
    exact: HashMap<String, usize>,
    /// Normalised key, and each trailing run of its path components → index; `None` where
    /// two items share it (an ambiguous name matches nothing).
    tails: HashMap<String, Option<usize>>,
    /// Whole normalised key → index; `None` where two items share it.
    whole: HashMap<String, Option<usize>>,
    /// One more than the largest index.
    slots: usize,
}

impl KeyIndex {
    /// Exact matching only: ids the caller already knows as sample ids.
    pub fn exact(ids: impl IntoIterator<Item = (String, usize)>) -> Self {
        let exact: HashMap<String, usize> = ids.into_iter().collect();
        let slots = exact.values().max().map_or(0, |m| m + 1);
        KeyIndex { exact, tails: HashMap::new(), whole: HashMap::new(), slots }
    }

    /// The label set's item keys, matched by the rules of this module.
    pub fn for_labels(labels: &LabelSet) -> Self {
        let mut index = Self::exact(labels.items.iter().enumerate().map(|(i, item)| (item.key.clone(), i)));
        for (i, item) in labels.items.iter().enumerate() {
            let key = normalise(&item.key);
            claim(&mut index.whole, key, i);
            for tail in tails(key) {
                claim(&mut index.tails, tail, i);
            }
        }
        index
    }

    /// One more than the largest index [`KeyIndex::find`] can return.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The item `sample_id` stands for, if any.
    pub fn find(&self, sample_id: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(sample_id) {
            return Some(i);
        }
        if self.tails.is_empty() {
            return None;
        }
        let id = normalise(sample_id);
        // The whole sample id as a tail of a label key, then the sample's own tails as whole
        // label keys (longest first).
        if let Some(&Some(i)) = self.tails.get(id) {
            return Some(i);
        }
        tails(id).skip(1).find_map(|t| self.whole.get(t).copied().flatten())
    }
}

/// Records that `name` leads to item `i`; a name two items claim leads nowhere.
fn claim(map: &mut HashMap<String, Option<usize>>, name: &str, i: usize) {
    map.entry(name.to_string()).and_modify(|v| *v = v.filter(|&j| j == i)).or_insert(Some(i));
}

/// `name` without a leading `./`, a source prefix and a known image extension.
fn normalise(name: &str) -> &str {
    let name = name.trim_start_matches("./");
    let name = SOURCE_PREFIXES.iter().find_map(|p| name.strip_prefix(p)).unwrap_or(name);
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && IMAGE_EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e)) => stem,
        _ => name,
    }
}

/// `name` and each shorter trailing run of its `/`-separated components, longest first.
fn tails(name: &str) -> impl Iterator<Item = &str> {
    std::iter::once(name).chain(name.match_indices('/').map(move |(at, _)| &name[at + 1..])).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ecamp_eval::{Item, Task};

    fn labels(keys: &[&str]) -> KeyIndex {
        let items = keys
            .iter()
            .map(|k| Item {
                key: k.to_string(),
                patient: None,
                targets: vec![0.0],
                boxes: vec![],
                mask: None,
                size: None,
            })
            .collect();
        KeyIndex::for_labels(&LabelSet { name: "t".into(), task: Task::MultiLabel, classes: vec!["c".into()], items })
    }

    #[test]
    fn label_keys_find_samples_of_every_source() {
        let idx = labels(&[
            "00000001_000.png",
            "CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg",
            "CheXpert-v1.0/train/patient00002/study1/view1_frontal.jpg",
            "1.2.276.0.7230010.3.1.4.8323329.5597.1517875188.959090",
        ]);
        assert_eq!(idx.find("00000001_000.png"), Some(0));
        assert_eq!(idx.find("00000001_000"), Some(0));
        assert_eq!(idx.find("./00000001_000.png"), Some(0));
        assert_eq!(idx.find("images_001/images/00000001_000.png"), Some(0));
        assert_eq!(idx.find("train/patient00002/study1/view1_frontal.jpg"), Some(2));
        assert_eq!(idx.find("dicom-1.2.276.0.7230010.3.1.4.8323329.5597.1517875188.959090"), Some(3));
    }

    #[test]
    fn dotted_ids_ambiguous_tails_and_partial_paths_match_nothing() {
        let idx = labels(&["phantom-0-00000000.959090", "a/study1/view1_frontal.jpg", "b/study1/view1_frontal.jpg"]);
        // A UID-like suffix is not an extension.
        assert_eq!(idx.find("phantom-0-00000000"), None);
        // Two labels share the tail: neither is chosen.
        assert_eq!(idx.find("study1/view1_frontal.jpg"), None);
        assert_eq!(idx.find("view1_frontal.jpg"), None);
        // Sharing a tail is not enough: one side must be a whole tail of the other.
        assert_eq!(idx.find("c/study1/view1_frontal.jpg"), None);
        assert_eq!(idx.find("x/a/study1/view1_frontal.jpg"), Some(1));
    }
}
