//! Metrics of the ECAMP downstream protocol (spec §7): mean ROC-AUC and accuracy for classification, per-image
//! Dice for segmentation, COCO-style mean average precision for detection.
//!
//! Inputs are plain slices of scores and targets; pairing predictions with items is the caller's job, so a
//! length mismatch between predictions and targets is a programming error and panics (see each `# Panics`).

mod accuracy;
mod auc;
mod detection;
mod dice;

pub use accuracy::{accuracy, argmax};
pub use auc::{mean_auc, roc_auc};
pub use detection::{COCO_MAX_DETECTIONS, DETECTION_IOU_THRESHOLDS, iou, mean_average_precision};
pub use dice::{dice_per_image, mean_dice};
