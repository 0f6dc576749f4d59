//! Pre-training (spec §4): AdamW with timm's decay groups, warmup + cosine by fractional epoch,
//! gradient accumulation and optional global-norm clipping, checkpoints that resume bit for
//! bit, and per-step metrics. The loader runs ahead on its own threads while the device works.

pub mod checkpoint;
pub mod config;
pub mod inputs;
pub mod metrics;
pub mod optim;
pub mod run;
pub mod stop;

pub use config::TrainConfig;
pub use run::{Progress, Summary, fit};

use std::path::PathBuf;

/// Why training stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loader failed (bad data under `fail`, storage, ...).
    #[error(transparent)]
    Loader(#[from] ecamp_loader::LoaderError),
    /// A batch the augmentation cannot process.
    #[error(transparent)]
    Augment(#[from] crate::augment::AugmentError),
    /// Inconsistent settings.
    #[error("invalid training settings: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// A checkpoint is missing a part, is corrupt, or does not match this run.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Initial weights could not be loaded.
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightsError),
    /// A loss became NaN or infinite.
    #[error("step {step}: the {which} loss is not finite ({value})")]
    NonFinite {
        /// Global batch step.
        step: u64,
        /// Which loss.
        which: &'static str,
        /// Its value.
        value: f64,
    },
    /// A batch whose every sample was skipped as unusable.
    #[error("batch {batch} of epoch {epoch} has no usable sample; every one was skipped ({why})")]
    NoUsableSample {
        /// Batch index within the epoch.
        batch: u64,
        /// Epoch.
        epoch: u64,
        /// `sample: reason` of each skipped sample.
        why: String,
    },
    /// The data failed mid-run; what was trained before is said (and saved, when it could be).
    #[error("{cause}\n{progress}")]
    Stopped {
        /// What failed.
        cause: Box<TrainError>,
        /// Where the run's progress is: the checkpoint saved on the way out, the last periodic
        /// one, or that nothing could be kept.
        progress: String,
    },
}

/// Attaches a path to an IO error.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
