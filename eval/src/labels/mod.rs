//! Ground-truth label sets: what each evaluation item is, how its image is found, and its targets, boxes
//! and masks. One parser per public label format, plus the phantom ground truth stored by ecamp itself.

mod chestxray14;
mod chexpert;
mod phantom;
mod rsna;
mod siim;
mod source;
mod table;

pub use chestxray14::{CHESTXRAY14_CLASSES, chestxray14};
pub use chexpert::{CHEXPERT_ALL, CHEXPERT_COMPETITION, ChexpertClasses, ChexpertOptions, chexpert};
pub use phantom::{PHANTOM_CLASSES, phantom_labels};
pub use rsna::{RSNA_IMAGE_SIZE, rsna};
pub use siim::{SIIM_IMAGE_SIZE, siim};
pub use source::{LabelSource, LoadOptions};
pub use table::open;

use crate::mask::Mask;
use std::str::FromStr;

/// Kind of task, which decides the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// Multi-label or binary classification (one sigmoid per class); scored by mean ROC-AUC.
    MultiLabel,
    /// Single-label classification (softmax over classes); scored by argmax accuracy.
    SingleLabel,
}

/// How uncertain labels (CheXpert `-1.0`, phantom `uncertain`) become targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Uncertain {
    /// U-Ones: uncertain counts as positive (1.0).
    #[default]
    Ones,
    /// U-Zeros: uncertain counts as negative (0.0).
    Zeros,
    /// U-Ignore: uncertain is left out of the metric for that class (NaN).
    Ignore,
}

impl Uncertain {
    /// Target value of an uncertain label under this policy.
    pub fn target(self) -> f32 {
        match self {
            Uncertain::Ones => 1.0,
            Uncertain::Zeros => 0.0,
            Uncertain::Ignore => f32::NAN,
        }
    }

    /// Policy name: `ones`, `zeros` or `ignore`.
    pub fn as_str(self) -> &'static str {
        match self {
            Uncertain::Ones => "ones",
            Uncertain::Zeros => "zeros",
            Uncertain::Ignore => "ignore",
        }
    }
}

impl FromStr for Uncertain {
    type Err = crate::EvalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ones" | "u-ones" => Ok(Uncertain::Ones),
            "zeros" | "u-zeros" => Ok(Uncertain::Zeros),
            "ignore" | "u-ignore" => Ok(Uncertain::Ignore),
            _ => Err(crate::EvalError::Invalid(format!("uncertain policy '{s}' (expected ones, zeros or ignore)"))),
        }
    }
}

impl std::fmt::Display for Uncertain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A labelled evaluation set: its classes and one [`Item`] per image.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelSet {
    /// Name of the source, e.g. `chexpert` or `phantom:effusion`.
    pub name: String,
    /// Task kind, which decides the metric.
    pub task: Task,
    /// Class names, in target order.
    pub classes: Vec<String>,
    /// The labelled images.
    pub items: Vec<Item>,
}

impl LabelSet {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Index of the class called `name`, if any.
    pub fn class_index(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c == name)
    }

    /// Target rows (items × classes) of the items at `indices`, in that order; out-of-range indices are skipped.
    pub fn targets_of(&self, indices: &[usize]) -> Vec<Vec<f32>> {
        indices.iter().filter_map(|&i| self.items.get(i)).map(|it| it.targets.clone()).collect()
    }
}

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Item {
    /// How the image is found: file name, relative path, RSNA patientId, SIIM ImageId or ecamp sample_id.
    pub key: String,
    /// Patient the image belongs to, for patient-level splits (None: the key stands for the patient).
    pub patient: Option<String>,
    /// One target per class: 1.0 positive, 0.0 negative, NaN ignored for this class.
    pub targets: Vec<f32>,
    /// Boxes `[x0, y0, x1, y1]` in pixels of the original image.
    pub boxes: Vec<[f32; 4]>,
    /// Binary segmentation mask at the original image size, where the source has one.
    pub mask: Option<Mask>,
    /// Original `(width, height)` when the source says.
    pub size: Option<(u32, u32)>,
}

impl Item {
    /// The patient for splitting: [`Item::patient`], or the key when there is none.
    pub fn patient_or_key(&self) -> &str {
        self.patient.as_deref().unwrap_or(&self.key)
    }

    /// For single-label tasks: the index of the one positive class, None unless exactly one target is 1.
    pub fn single_label(&self) -> Option<usize> {
        let mut found = None;
        for (i, &t) in self.targets.iter().enumerate() {
            if t == 1.0 {
                if found.is_some() {
                    return None;
                }
                found = Some(i);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncertain_policy_parses_and_maps() {
        assert_eq!("U-Ones".parse::<Uncertain>().unwrap(), Uncertain::Ones);
        assert_eq!("zeros".parse::<Uncertain>().unwrap().target(), 0.0);
        assert!("ignore".parse::<Uncertain>().unwrap().target().is_nan());
        assert!("maybe".parse::<Uncertain>().is_err());
    }

    #[test]
    fn single_label_needs_exactly_one_positive() {
        let item = |t: Vec<f32>| Item { targets: t, ..Item::default() };
        assert_eq!(item(vec![0.0, 1.0, 0.0]).single_label(), Some(1));
        assert_eq!(item(vec![1.0, 1.0]).single_label(), None);
        assert_eq!(item(vec![0.0, 0.0]).single_label(), None);
        assert_eq!(Item { key: "k".into(), ..Item::default() }.patient_or_key(), "k");
    }
}
