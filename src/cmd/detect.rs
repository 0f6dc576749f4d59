//! `ecamp detect`: the YOLOv3-style head of spec §7.3 on a frozen encoder, trained on boxes
//! (RSNA pneumonia, phantom ground truth) and scored by mAP over IoU 0.4–0.75 against the
//! no-box baseline.

use std::process::ExitCode;

use anyhow::bail;
use burn::backend::Autodiff;
use ecamp_eval::metrics::{DETECTION_IOU_THRESHOLDS, mean_average_precision};
use ecamp_model::eval::detect::{DetectConfig, DetectTrainConfig, Detection, train_detector};

use super::dense::{DenseSet, dense_set};
use super::downstream::{Cpu, Task, TaskArgs};

/// Train and score a detection head on a frozen encoder.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Label sources with boxes: phantom (every positive finding's box, one class; phantom:ENTITY for one
finding) and rsna:stage_2_train_labels.csv. mAP is COCO-style (101-point interpolation) averaged
over IoU thresholds 0.40, 0.45, ..., 0.75 on the test split, detections kept at objectness >=
--conf-thres after NMS at IoU 0.5. The baseline predicts no box and scores 0.")]
pub struct Args {
    #[command(flatten)]
    pub task: TaskArgs,
    /// Optimizer steps.
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 600)]
    pub steps: usize,
    /// Peak AdamW learning rate.
    #[arg(value_parser = super::parse::positive, long, default_value_t = 5e-4)]
    pub lr: f64,
    /// Images per step.
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 32)]
    pub batch_size: usize,
    /// Bottleneck expansion (the spec: 8 for 1 % and 10 % of the data, 4 for 100 %).
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 8)]
    pub expansion: usize,
    /// Objectness threshold at inference.
    #[arg(value_parser = super::parse::unit::<f32>, long, default_value_t = 0.5)]
    pub conf_thres: f32,
}

/// The outcome of a detection run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DetectResult {
    /// Label source.
    pub labels: String,
    /// The encoder.
    pub model: String,
    /// mAP over IoU 0.40–0.75 on the test split (None without any test box).
    pub map: Option<f64>,
    /// mAP of predicting no box.
    pub baseline_map: Option<f64>,
    /// Test images and test boxes.
    pub test: (usize, usize),
    /// Training and validation images.
    pub train_val: (usize, usize),
    /// Label rows without a sample.
    pub unmatched: usize,
    /// Validation mAP of the kept head and its step.
    pub validation: (f64, usize),
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let Task { ds, snap, labels, model } = a.task.open().await?;
    if labels.items.iter().all(|i| i.boxes.is_empty()) {
        bail!("the labels {} carry no boxes to detect", a.task.labels);
    }
    let set = dense_set(&ds, &snap, &labels, &model, &a.task.split).await?;
    let cfg = DetectConfig::for_encoder(model.config.vit_dim, model.config.grid(), model.config.img_size)
        .with_expansion(a.expansion);
    let t = DetectTrainConfig {
        lr: a.lr,
        steps: a.steps,
        batch_size: a.batch_size,
        eval_every: (a.steps / 10).max(1),
        conf_thres: a.conf_thres,
        ..DetectTrainConfig::default()
    };
    let result = tokio::task::block_in_place(|| detect(&set, &cfg, &t, &labels.name, &model.origin))?;
    let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
    let line = format!(
        "detect {}: test mAP@[0.40:0.75] {} (no-box baseline {}) on {} test images with {} boxes — {}",
        result.labels,
        f(result.map),
        f(result.baseline_map),
        result.test.0,
        result.test.1,
        result.model
    );
    a.task.report(&result, line)?;
    Ok(ExitCode::SUCCESS)
}

/// Boxes of the items at `indices`, in encoder-input pixels.
fn boxes(set: &DenseSet, indices: &[usize]) -> Vec<Vec<[f32; 4]>> {
    indices
        .iter()
        .map(|&i| {
            let view = set.views[i];
            let mapped = set.items[i].boxes.iter().map(|&b| view.map_box(b));
            // A box the centre crop cut away entirely is not a target.
            mapped.filter(|b| b[2] > b[0] && b[3] > b[1]).collect()
        })
        .collect()
}

fn detect(
    set: &DenseSet,
    cfg: &DetectConfig,
    t: &DetectTrainConfig,
    labels: &str,
    model: &str,
) -> anyhow::Result<DetectResult> {
    let (tx, ty) = (set.tokens.select(&set.train), boxes(set, &set.train));
    let (vx, vy) = (set.tokens.select(&set.split.val), boxes(set, &set.split.val));
    let map = |p: &[Vec<Detection>], truth: &[Vec<[f32; 4]>]| {
        mean_average_precision(p, truth, &DETECTION_IOU_THRESHOLDS).unwrap_or(f64::NAN)
    };
    let fit = train_detector::<Autodiff<Cpu>>(&Default::default(), cfg, (&tx, &ty), (&vx, &vy), t, &map)?;
    let (sx, sy) = (set.tokens.select(&set.split.test), boxes(set, &set.split.test));
    let pred = fit.model.predict(&sx, t.batch_size, t.conf_thres, t.nms_iou, &Default::default())?;
    let none: Vec<Vec<Detection>> = vec![Vec::new(); sy.len()];
    Ok(DetectResult {
        labels: labels.to_string(),
        model: model.to_string(),
        map: mean_average_precision(&pred, &sy, &DETECTION_IOU_THRESHOLDS),
        baseline_map: mean_average_precision(&none, &sy, &DETECTION_IOU_THRESHOLDS),
        test: (sy.len(), sy.iter().map(Vec::len).sum()),
        train_val: (set.train.len(), set.split.val.len()),
        unmatched: set.unmatched,
        validation: (fit.best_score, fit.best_step),
    })
}
