//! `ecamp probe`: the linear probe of spec §7.1 on a dataset snapshot and a label source —
//! frozen encoder, pooled features, a linear head; mean ROC-AUC (multi-label) or accuracy
//! (single-label) on a patient-level test split.

use std::process::ExitCode;

use anyhow::Context;
use burn::tensor::backend::Backend;
use ecamp_eval::labels::{LabelSet, Task};
use ecamp_eval::metrics::{accuracy, mean_auc};
use ecamp_model::eval::features::{CanvasBatch, GrayImage, encoder_inputs, probe_features};
use ecamp_model::eval::probe::{Objective, ProbeConfig, Rows, train_probe};
use ecamp_store::{Dataset, Snapshot};

use super::downstream::{Cpu, LoadedModel, SplitArgs, TaskArgs, for_each_image_batch, split_found};
use super::join::KeyIndex;
use super::pretrain::BackendArg;

/// Linear-probe an encoder on labelled samples of a dataset.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Label sources: phantom (the dataset's own phantom ground truth), chestxray14:Data_Entry_2017.csv,
chexpert:train.csv, rsna:stage_2_train_labels.csv, siim:train-rle.csv; phantom:ENTITY scores one
finding. A label row matches the sample whose id equals its key (image file name, path, patientId),
or, without an image extension and a source prefix (dicom-, mimic-), where one is a trailing run of
whole path components of the other (00000001_000.png finds images_001/images/00000001_000.png).
Items are split by patient (--split), the training part reduced to --fraction percent of its
patients (1 ⊂ 10 ⊂ 100, reproducibly); the head with the best validation score is tested.")]
pub struct Args {
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub probe: ProbeArgs,
    /// Where the encoder computes the features.
    #[arg(long, value_enum, default_value = "ndarray")]
    pub backend: BackendArg,
}

/// How the probe is trained (shared with `ecamp demo`).
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Probe optimizer steps.
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 1500)]
    pub steps: usize,
    /// Peak SGD learning rate.
    #[arg(value_parser = super::parse::positive, long, default_value_t = 0.1)]
    pub lr: f64,
    /// Probe batch size.
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 64)]
    pub batch_size: usize,
}

/// The outcome of one classification evaluation (linear probe or fine-tune).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeResult {
    /// `linear-probe` or `fine-tune`.
    pub mode: &'static str,
    /// Label source.
    pub labels: String,
    /// The weights probed.
    pub model: String,
    /// Snapshot the images came from.
    pub snapshot: String,
    /// `auc` (mean ROC-AUC over classes) or `accuracy`.
    pub metric: &'static str,
    /// The test score.
    pub score: Option<f64>,
    /// Per class: name and test AUC (multi-label only).
    pub classes: Vec<(String, Option<f64>)>,
    /// Items used for training, validation and test.
    pub sizes: (usize, usize, usize),
    /// Label rows without a sample in the snapshot.
    pub unmatched: usize,
    /// Percent of the training patients used.
    pub fraction: f64,
    /// Validation score of the kept head and its step.
    pub validation: (f64, usize),
    /// `(step, mean training loss, validation score)` at every validation.
    pub history: Vec<(usize, f64, f64)>,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let result = match a.backend {
        BackendArg::Ndarray => probe_on::<Cpu>(&a, &Default::default()).await?,
        BackendArg::Cuda => cuda::probe(&a).await?,
    };
    a.task.report(&result, summary_line(&result))?;
    Ok(ExitCode::SUCCESS)
}

async fn probe_on<B: Backend>(a: &Args, device: &B::Device) -> anyhow::Result<ProbeResult> {
    let t = a.task.open_on::<B>(device).await?;
    evaluate(&t.ds, &t.snap, &t.labels, &t.model, &a.task.split, &a.probe).await
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The features on CUDA device 0 (the head stays host code).
    pub async fn probe(a: &super::Args) -> anyhow::Result<super::ProbeResult> {
        let device = ecamp_model::cuda::device(0)?;
        crate::cmd::with_cuda_cause(super::probe_on::<burn::backend::Cuda>(a, &device).await)
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    //! Without the `cuda` feature the CUDA backend is not compiled in.
    pub async fn probe(_: &super::Args) -> anyhow::Result<super::ProbeResult> {
        anyhow::bail!(super::super::downstream::NO_CUDA)
    }
}

/// One line: mode, metric, score, split sizes and the model.
pub fn summary_line(r: &ProbeResult) -> String {
    let score = r.score.map_or("undefined".to_string(), |s| format!("{s:.4}"));
    // A class whose test split holds one label value has no AUC and is left out of the mean.
    let scored = r.classes.iter().filter(|c| c.1.is_some()).count();
    let over = if r.metric == "auc" && scored < r.classes.len() {
        format!(" (mean of the {scored} of {} classes with both labels in the test split)", r.classes.len())
    } else {
        String::new()
    };
    format!(
        "{} {}: test {} {score}{over} ({} train / {} val / {} test, {}% of training patients) — {}",
        r.mode, r.labels, r.metric, r.sizes.0, r.sizes.1, r.sizes.2, r.fraction, r.model
    )
}

/// Features of every labelled item found in the snapshot; `None` where no sample matched.
async fn features<B: Backend>(
    ds: &Dataset,
    snap: &Snapshot,
    labels: &LabelSet,
    model: &LoadedModel<B>,
    batch: usize,
) -> anyhow::Result<Vec<Option<Vec<f32>>>> {
    let wanted = KeyIndex::for_labels(labels);
    let mut out: Vec<Option<Vec<f32>>> = vec![None; labels.items.len()];
    let device = model.model.encoder.cls_token.device();
    let mut each = |idx: Vec<usize>, imgs: Vec<GrayImage>| -> anyhow::Result<()> {
        let rows = tokio::task::block_in_place(|| -> anyhow::Result<Vec<f32>> {
            let batch = CanvasBatch::new(&imgs);
            let x = encoder_inputs::<B>(&device, &batch.canvases(), model.config.img_size)?;
            let f = probe_features(&model.model.encoder, x);
            f.into_data().into_vec::<f32>().map_err(|e| anyhow::anyhow!("feature tensor: {e:?}"))
        })?;
        let d = rows.len() / idx.len().max(1);
        for (k, i) in idx.into_iter().enumerate() {
            out[i] = Some(rows[k * d..(k + 1) * d].to_vec());
        }
        Ok(())
    };
    for_each_image_batch(ds, snap, &wanted, batch.max(1), &mut each).await?;
    Ok(out)
}

/// Probes `model` on the labelled samples of `snap`.
pub async fn evaluate<B: Backend>(
    ds: &Dataset,
    snap: &Snapshot,
    labels: &LabelSet,
    model: &LoadedModel<B>,
    s: &SplitArgs,
    p: &ProbeArgs,
) -> anyhow::Result<ProbeResult> {
    let feats = features(ds, snap, labels, model, s.feature_batch).await?;
    let found: Vec<usize> = (0..feats.len()).filter(|&i| feats[i].is_some()).collect();
    let task = Prepared::new(labels, &found, s, &snap.id)?;
    let dim = feats[found[0]].as_ref().map_or(0, Vec::len);
    let x = Rows::new(found.len(), dim, found.iter().flat_map(|&i| feats[i].clone().unwrap_or_default()).collect())
        .context("features of unequal width")?;
    let (y, split, objective) = (&task.y, &task.split, task.objective);
    let cfg = ProbeConfig { lr: p.lr, batch_size: p.batch_size, steps: p.steps, ..ProbeConfig::default() };
    let fit = tokio::task::block_in_place(|| {
        train_probe(
            (&x.select(&task.train), &y.select(&task.train)),
            (&x.select(&split.val), &y.select(&split.val)),
            objective,
            &cfg,
            &|s: &Rows, t: &Rows| task.score(s, t),
        )
    })?;
    let test_scores = fit.head.scores(&x.select(&split.test), objective);
    let trained = Trained { scores: test_scores, best: (fit.best_score, fit.best_step), history: fit.history };
    Ok(task.result("linear-probe", labels, &model.origin, &snap.id, trained))
}

/// A classification task ready to train on: the found items split by patient, the training part
/// reduced to the fraction, and their targets (shared by `probe` and `finetune`).
pub struct Prepared {
    /// The head's loss.
    pub objective: Objective,
    /// `auc` or `accuracy`.
    pub metric: &'static str,
    /// Targets of the found items, in their order.
    pub y: Rows,
    /// The patient split of the found items.
    pub split: ecamp_eval::Split,
    /// Training items (the fraction of `split.train`).
    pub train: Vec<usize>,
    /// Label rows without a sample.
    pub unmatched: usize,
    /// Percent of the training patients used.
    pub fraction: f64,
}

/// What training left for the report: test scores and the validation trail.
pub struct Trained {
    /// Scores `[test, C]` of the test items.
    pub scores: Rows,
    /// Best validation score and its step.
    pub best: (f64, usize),
    /// `(step, mean training loss, validation score)` at every validation.
    pub history: Vec<(usize, f64, f64)>,
}

impl Prepared {
    /// Splits the items of `labels` at `found` (indices of label rows with a sample).
    pub fn new(labels: &LabelSet, found: &[usize], s: &SplitArgs, snapshot: &str) -> anyhow::Result<Self> {
        let (items, split, train) = split_found(labels, found, s, snapshot)?;
        let (objective, metric) = match labels.task {
            Task::MultiLabel => (Objective::MultiLabel, "auc"),
            Task::SingleLabel => (Objective::SingleLabel, "accuracy"),
        };
        let y = targets(&items, labels.classes.len(), objective);
        Ok(Self { objective, metric, y, split, train, unmatched: labels.len() - found.len(), fraction: s.fraction })
    }

    /// The task's score of `scores` against `targets` (NaN where undefined): what validation keeps.
    pub fn score(&self, scores: &Rows, targets: &Rows) -> f64 {
        score_of(scores, targets, self.objective).0.unwrap_or(f64::NAN)
    }

    /// The report of a trained classifier.
    pub fn result(
        &self,
        mode: &'static str,
        labels: &LabelSet,
        model: &str,
        snapshot: &str,
        t: Trained,
    ) -> ProbeResult {
        let (test, per_class) = score_of(&t.scores, &self.y.select(&self.split.test), self.objective);
        ProbeResult {
            mode,
            labels: labels.name.clone(),
            model: model.to_string(),
            snapshot: snapshot.to_string(),
            metric: self.metric,
            score: test,
            classes: labels.classes.iter().cloned().zip(per_class).collect(),
            sizes: (self.train.len(), self.split.val.len(), self.split.test.len()),
            unmatched: self.unmatched,
            fraction: self.fraction,
            validation: t.best,
            history: t.history,
        }
    }
}

/// Target rows: the label set's for multi-label tasks, one-hot of the single label otherwise.
fn targets(items: &[ecamp_eval::labels::Item], classes: usize, objective: Objective) -> Rows {
    let mut values = Vec::with_capacity(items.len() * classes);
    for it in items {
        match objective {
            Objective::MultiLabel => {
                values.extend(it.targets.iter().copied().chain(std::iter::repeat(f32::NAN)).take(classes))
            }
            Objective::SingleLabel => {
                let one = it.single_label();
                values.extend((0..classes).map(|c| if Some(c) == one { 1.0 } else { 0.0 }));
            }
        }
    }
    Rows { n: items.len(), width: classes, values }
}

/// The task's score and, for multi-label tasks, the per-class AUCs.
fn score_of(scores: &Rows, targets: &Rows, objective: Objective) -> (Option<f64>, Vec<Option<f64>>) {
    let rows = |r: &Rows| (0..r.n).map(|i| r.row(i).to_vec()).collect::<Vec<_>>();
    match objective {
        Objective::MultiLabel => mean_auc(&rows(scores), &rows(targets)),
        Objective::SingleLabel => {
            let labels: Vec<usize> =
                (0..targets.n).map(|i| targets.row(i).iter().position(|&t| t == 1.0).unwrap_or(usize::MAX)).collect();
            (accuracy(&rows(scores), &labels), Vec::new())
        }
    }
}
