//! `ecamp finetune`: full fine-tuning of spec §7.1 on a dataset snapshot and a label source —
//! the whole encoder plus a `fc_norm` + linear head trained end to end on random resized crops;
//! mean ROC-AUC (multi-label) or accuracy (single-label) on a patient-level test split, scored
//! exactly as `ecamp probe` so the two compare line for line.

use std::process::ExitCode;

use anyhow::Context;
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use ecamp_eval::labels::LabelSet;
use ecamp_model::eval::features::GrayImage;
use ecamp_model::eval::finetune::{Classifier, FinetuneConfig, Labelled, finetune, predict};
use ecamp_model::eval::probe::{ProbeConfig, Rows};
use ecamp_model::net::vit::Encoder;
use ecamp_store::{Dataset, Snapshot};

use super::downstream::{Cpu, LoadedModel, SplitArgs, TaskArgs, for_each_image_batch};
use super::join::KeyIndex;
use super::pretrain::BackendArg;
use super::probe::{Prepared, ProbeResult, Trained, summary_line};

/// Fine-tune an encoder and a classification head on labelled samples of a dataset.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Label sources, matching, splits and --fraction are those of `ecamp probe`. Every parameter is
trained (SGD, momentum 0.9, warmup then cosine, global gradient norm clipped at 1.0) on
RandomResizedCrop (scale 0.08-1) and flip views; evaluation uses centre crops. The model with the
best validation score is tested. The labelled images are held decoded in memory (about one byte
per stored pixel).")]
pub struct Args {
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub tune: TuneArgs,
    /// Where the model trains.
    #[arg(long, value_enum, default_value = "ndarray")]
    pub backend: BackendArg,
}

/// How the fine-tune is trained.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    /// Optimizer steps.
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 600)]
    pub steps: usize,
    /// Peak SGD learning rate.
    #[arg(value_parser = super::parse::positive, long, default_value_t = 0.01)]
    pub lr: f64,
    /// Images per step.
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 64)]
    pub batch_size: usize,
    /// Validate every this many steps.
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 50)]
    pub eval_every: usize,
    /// Smallest crop area of RandomResizedCrop, as a fraction of the image (the official 0.08
    /// suits 224 px inputs; small inputs may lose the finding in so small a crop).
    #[arg(long, default_value_t = 0.08)]
    pub min_scale: f64,
    /// Seed of the head, the batch order and the crops.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let result = match a.backend {
        BackendArg::Ndarray => tune_on::<Autodiff<Cpu>>(&a, &Default::default()).await?,
        BackendArg::Cuda => cuda::tune(&a).await?,
    };
    a.task.report(&result, summary_line(&result))?;
    Ok(ExitCode::SUCCESS)
}

async fn tune_on<B: AutodiffBackend>(a: &Args, device: &B::Device) -> anyhow::Result<ProbeResult> {
    let t = a.task.open_on::<B::InnerBackend>(device).await?;
    evaluate::<B>(&t.ds, &t.snap, &t.labels, t.model, &a.task.split, &a.tune, device).await
}

#[cfg(feature = "cuda")]
mod cuda {
    //! Fine-tuning on CUDA device 0.
    pub async fn tune(a: &super::Args) -> anyhow::Result<super::ProbeResult> {
        let device = ecamp_model::cuda::device(0)?;
        crate::cmd::with_cuda_cause(super::tune_on::<burn::backend::Autodiff<burn::backend::Cuda>>(a, &device).await)
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    //! Without the `cuda` feature the CUDA backend is not compiled in.
    pub async fn tune(_: &super::Args) -> anyhow::Result<super::ProbeResult> {
        anyhow::bail!(super::super::downstream::NO_CUDA)
    }
}

/// Fine-tunes the encoder of `model` on the labelled samples of `snap` and tests the best one.
pub async fn evaluate<B: AutodiffBackend>(
    ds: &Dataset,
    snap: &Snapshot,
    labels: &LabelSet,
    model: LoadedModel<B::InnerBackend>,
    s: &SplitArgs,
    t: &TuneArgs,
    device: &B::Device,
) -> anyhow::Result<ProbeResult> {
    let mut decoded: Vec<Option<GrayImage>> = vec![None; labels.items.len()];
    let mut keep = |idx: Vec<usize>, imgs: Vec<GrayImage>| -> anyhow::Result<()> {
        for (i, img) in idx.into_iter().zip(imgs) {
            decoded[i] = Some(img);
        }
        Ok(())
    };
    for_each_image_batch(ds, snap, &KeyIndex::for_labels(labels), s.feature_batch.max(1), &mut keep).await?;
    let found: Vec<usize> = (0..decoded.len()).filter(|&i| decoded[i].is_some()).collect();
    let task = Prepared::new(labels, &found, s, &snap.id)?;
    let images: Vec<&GrayImage> = found.iter().filter_map(|&i| decoded[i].as_ref()).collect();
    let pick = |ix: &[usize]| ix.iter().map(|&k| images[k]).collect::<Vec<_>>();
    let (y, split, objective) = (&task.y, &task.split, task.objective);
    let cfg = FinetuneConfig {
        schedule: ProbeConfig {
            lr: t.lr,
            batch_size: t.batch_size,
            steps: t.steps,
            warmup: (t.steps / 12).max(1),
            eval_every: t.eval_every,
            seed: t.seed,
            ..ProbeConfig::default()
        },
        scale: (t.min_scale, 1.0),
        ..FinetuneConfig::default()
    };
    let encoder = Encoder::<B>::from_inner(model.model.encoder);
    let classifier = Classifier::new(encoder, model.config.img_size, labels.classes.len(), t.seed, device);
    let (train_images, val_images, test_images) = (pick(&task.train), pick(&split.val), pick(&split.test));
    let fit = tokio::task::block_in_place(|| {
        finetune::<B>(
            device,
            classifier,
            Labelled { images: &train_images, targets: &y.select(&task.train) },
            Labelled { images: &val_images, targets: &y.select(&split.val) },
            objective,
            &cfg,
            &|s: &Rows, t: &Rows| task.score(s, t),
        )
    })
    .context("fine-tuning failed")?;
    let scores =
        tokio::task::block_in_place(|| predict(&fit.model, &test_images, s.feature_batch.max(1), objective, device))?;
    let trained = Trained { scores, best: (fit.best_score, fit.best_step), history: fit.history };
    Ok(task.result("fine-tune", labels, &model.origin, &snap.id, trained))
}
