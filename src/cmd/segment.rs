//! `ecamp segment`: the SegViT-style head of spec §7.2 on a frozen encoder, trained on masks
//! (SIIM-ACR run-lengths, RSNA boxes as rectangles, phantom ground truth) and scored by per-image
//! Dice against the empty-mask baseline.

use std::process::ExitCode;

use anyhow::bail;
use burn::backend::Autodiff;
use ecamp_eval::metrics::mean_dice;
use ecamp_model::eval::probe::Rows;
use ecamp_model::eval::segment::{SegConfig, SegTrainConfig, predict, train_segmenter};

use super::dense::{DenseSet, dense_set};
use super::downstream::{Cpu, Task, TaskArgs};

/// Train and score a segmentation head on a frozen encoder.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Label sources with masks: phantom (union of the positive findings' masks; phantom:ENTITY for one
finding), siim:train-rle.csv, rsna:stage_2_train_labels.csv (boxes filled as rectangles). Images
without a mask count as empty. As in the SIIM protocol, training uses every positive image and as
many negatives. Dice is per image at threshold 0.5 (an empty truth scores 1 if the prediction is
empty, else 0), averaged over the test images; the baseline is the all-empty prediction.")]
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
}

/// The outcome of a segmentation run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SegResult {
    /// Label source.
    pub labels: String,
    /// The encoder.
    pub model: String,
    /// Mean per-image Dice on the test split.
    pub dice: f64,
    /// The same for the all-empty prediction.
    pub baseline_dice: f64,
    /// Mean Dice over the test images with a non-empty truth (the baseline scores 0 there).
    pub dice_positive: Option<f64>,
    /// Test images, and how many have a non-empty truth.
    pub test: (usize, usize),
    /// Training images (positives plus as many negatives) and validation images.
    pub train_val: (usize, usize),
    /// Label rows without a sample.
    pub unmatched: usize,
    /// Validation Dice of the kept head and its step.
    pub validation: (f64, usize),
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let Task { ds, snap, labels, model } = a.task.open().await?;
    if labels.items.iter().all(|i| i.mask.as_ref().is_none_or(|m| m.is_empty()) && i.boxes.is_empty()) {
        bail!("the labels {} carry no masks or boxes to segment", a.task.labels);
    }
    let set = dense_set(&ds, &snap, &labels, &model, &a.task.split).await?;
    let cfg = SegConfig::for_encoder(model.config.vit_dim, model.config.grid(), model.config.patch);
    let t = SegTrainConfig {
        lr: a.lr,
        steps: a.steps,
        batch_size: a.batch_size,
        warmup: (a.steps / 12).max(1),
        ..SegTrainConfig::default()
    };
    let result = tokio::task::block_in_place(|| segment(&set, &cfg, &t, &labels.name, &model.origin))?;
    let line = format!(
        "segment {}: test Dice {:.4} (empty-mask baseline {:.4}; positives only {}) on {} test images ({} positive) — {}",
        result.labels,
        result.dice,
        result.baseline_dice,
        result.dice_positive.map_or("n/a".into(), |d| format!("{d:.4}")),
        result.test.0,
        result.test.1,
        result.model
    );
    a.task.report(&result, line)?;
    Ok(ExitCode::SUCCESS)
}

/// Per-image masks at the encoder's input side (0/1 rows).
fn masks(set: &DenseSet, indices: &[usize]) -> Rows {
    let side = set.views.first().map_or(0, |v| v.side);
    let mut values = Vec::with_capacity(indices.len() * side * side);
    for &i in indices {
        match &set.items[i].mask {
            Some(m) => values.extend(set.views[i].map_mask(m)),
            None if !set.items[i].boxes.is_empty() => {
                let (w, h) = set.views[i].original;
                values.extend(set.views[i].map_mask(&ecamp_eval::Mask::from_boxes(w, h, &set.items[i].boxes)));
            }
            None => values.extend(std::iter::repeat_n(0.0, side * side)),
        }
    }
    Rows { n: indices.len(), width: side * side, values }
}

fn bits(r: &Rows) -> Vec<Vec<bool>> {
    (0..r.n).map(|i| r.row(i).iter().map(|&v| v > 0.5).collect()).collect()
}

fn segment(
    set: &DenseSet,
    cfg: &SegConfig,
    t: &SegTrainConfig,
    labels: &str,
    model: &str,
) -> anyhow::Result<SegResult> {
    // Every positive training image and as many random negatives (SIIM protocol). Negatives are
    // ranked by a hash of the seed and their key, so the draw does not depend on file order.
    let train_masks = masks(set, &set.train);
    let positive = |k: usize| train_masks.row(k).iter().any(|&v| v > 0.5);
    let (pos, mut neg): (Vec<usize>, Vec<usize>) = (0..set.train.len()).partition(|&k| positive(k));
    neg.sort_by_cached_key(|&k| ecamp_eval::split::patient_hash(t.seed, &set.items[set.train[k]].key));
    let keep: Vec<usize> = pos.iter().copied().chain(neg.iter().copied().take(pos.len().max(1))).collect();
    let train_idx: Vec<usize> = keep.iter().map(|&k| set.train[k]).collect();
    let (tx, ty) = (set.tokens.select(&train_idx), train_masks.select(&keep));
    let (vx, vy) = (set.tokens.select(&set.split.val), masks(set, &set.split.val));
    let score = |p: &[Vec<bool>], truth: &Rows| mean_dice(p, &bits(truth)).unwrap_or(f64::NAN);
    let fit = train_segmenter::<Autodiff<Cpu>>(&Default::default(), cfg, (&tx, &ty), (&vx, &vy), t, &score)?;
    let (sx, sy) = (set.tokens.select(&set.split.test), masks(set, &set.split.test));
    let truth = bits(&sy);
    let pred = predict(&fit.head, &sx, cfg.dim, t.batch_size, &Default::default())?;
    let empty: Vec<Vec<bool>> = truth.iter().map(|t| vec![false; t.len()]).collect();
    let pos_idx: Vec<usize> = (0..truth.len()).filter(|&i| truth[i].iter().any(|&b| b)).collect();
    let pick = |v: &[Vec<bool>]| pos_idx.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
    Ok(SegResult {
        labels: labels.to_string(),
        model: model.to_string(),
        dice: mean_dice(&pred, &truth).unwrap_or(f64::NAN),
        baseline_dice: mean_dice(&empty, &truth).unwrap_or(f64::NAN),
        dice_positive: mean_dice(&pick(&pred), &pick(&truth)),
        test: (truth.len(), pos_idx.len()),
        train_val: (keep.len(), set.split.val.len()),
        unmatched: set.unmatched,
        validation: (fit.best_score, fit.best_step),
    })
}
