//! ecamp-eval: what the ground truth of a downstream evaluation is and how to score it — label sources
//! (ChestX-ray14, CheXpert, RSNA Pneumonia, SIIM-ACR, phantom ground truth), deterministic patient-level
//! splits, and the metrics of the ECAMP protocol (mean ROC-AUC, accuracy, Dice, COCO-style mAP).
//!
//! Pure data and arithmetic: no model, no tensors, no dataset store I/O.
#![warn(missing_docs)]

pub mod error;
pub mod labels;
pub mod mask;
pub mod metrics;
pub mod split;

pub use error::{EvalError, Result};
pub use labels::{Item, LabelSet, LabelSource, LoadOptions, Task, Uncertain};
pub use mask::Mask;
pub use split::Split;
