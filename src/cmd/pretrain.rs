//! `ecamp pretrain`: ECAMP pre-training on a pinned snapshot, on CPU (ndarray) or CUDA.

use ecamp_ingest::files::{MAX_FILE_BYTES, read_regular};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use burn::backend::{Autodiff, NdArray};
use ecamp_ingest::vocab;
use ecamp_loader::sample::AugmentConfig;
use ecamp_loader::text::{TextConfig, TextPrep};
use ecamp_loader::{Loader, LoaderConfig};
use ecamp_model::EcampConfig;
use ecamp_model::train::metrics::{MetricsLog, StepMetrics};
use ecamp_model::train::{Summary, TrainConfig, fit};
use ecamp_store::{DataFile, Dataset, SnapshotRef};
use tokenizers::Tokenizer;

use super::print_json;

/// Pre-train ECAMP (MIM + context-guided SR + image-conditioned MLM) on a dataset snapshot.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The run folder gets metrics.jsonl (one line per step: the three losses, lr, data wait, step time),
checkpoints/step-NNNNNNNN/ (weights, optimizer, loader cursor, snapshot id, full config) and
checkpoints/latest. --resume DIR continues a run exactly (same per-step losses on ndarray): pass the
flags the run was started with (snapshot, model and training settings must match; --epochs,
--max-steps and --checkpoint-every may change). Resuming from an earlier checkpoint of the same run
rewinds it. One trainer per run folder at a time (run/.lock). Ctrl-C or SIGTERM stops after the
optimizer step in progress and saves a checkpoint (exit 130 / 143); a second one stops at once.
Defaults follow the preset: tiny = spec-tiny's 6 of 10 epochs, lr 1e-3, batch 16; base = the
official 120 of 200 epochs, lr 1.5e-4, batch 256.")]
pub struct Args {
    /// Dataset URL.
    #[arg(long, env = "ECAMP_DATASET")]
    dataset: String,
    /// Snapshot: snap-<hex>, latest, or S[:A[:L]] table versions.
    #[arg(long, default_value = "latest")]
    snapshot: SnapshotRef,
    /// Model preset.
    #[arg(long, default_value = "tiny", value_parser = ["tiny", "base"])]
    preset: String,
    /// Model config JSON (an `EcampConfig`), instead of the preset's sizes.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Training backend.
    #[arg(long, value_enum, default_value = "ndarray")]
    backend: BackendArg,
    /// Run folder (metrics, checkpoints).
    #[arg(long)]
    out: PathBuf,
    /// Continue from a checkpoint folder or a run folder (its latest checkpoint).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Start a fresh run from official-named weights (.pth or .safetensors), e.g. MAE ViT-B as the
    /// paper does: tensors the file has replace the initialisation, the rest keep it.
    #[arg(long, conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// WordPiece tokenizer JSON; default: the vocabulary the snapshot pins, or else the one
    /// stored in the dataset (`ecamp vocab build`).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Epochs to train.
    #[arg(value_parser = super::parse::count::<u64>, long)]
    epochs: Option<u64>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Warmup epochs.
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// Cosine horizon in epochs.
    #[arg(long)]
    horizon_epochs: Option<f64>,
    /// Batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    accum: u64,
    /// Clip the global gradient norm.
    #[arg(long)]
    clip_grad: Option<f64>,
    /// Global batch size.
    #[arg(value_parser = super::parse::count::<usize>, long)]
    batch_size: Option<usize>,
    /// Smallest RandomResizedCrop area, as a fraction of the image (ECAMP: 0.2).
    #[arg(long, default_value_t = 0.2)]
    min_scale: f64,
    /// Probability of a horizontal flip (ECAMP: 0.5).
    #[arg(long, default_value_t = 0.5)]
    flip_prob: f64,
    /// Compute dtype of the matmuls: bf16 is mixed precision as torch's autocast (parameters,
    /// norms, losses and the optimizer stay f32); half dtypes need `--backend cuda`.
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionArg,
    /// Seed of the data order, masking and dropout.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Devices to train on, data parallel, each fed by its own loader rank (CUDA: GPUs 0..N; on
    /// ndarray every device is the CPU, which exercises the code path only).
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 1)]
    devices: usize,
    /// Loader CPU threads in all (default: cores − 1, at least 1).
    #[arg(value_parser = super::parse::count::<usize>, long)]
    workers: Option<usize>,
    /// Loader prefetch budget in MiB (1 to 16777216, i.e. 16 TiB).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
    prefetch_mib: u64,
    /// Checkpoint every N optimizer steps (always at the end).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: u64,
    /// Stop after N batches in total (0: no limit); with --accum it must end an accumulation
    /// group (groups restart at each epoch).
    #[arg(long, default_value_t = 0)]
    max_steps: u64,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// CPU, burn's ndarray backend.
    Ndarray,
    /// NVIDIA GPU, burn's CUDA backend (builds with `--features cuda`).
    Cuda,
}

/// The compute dtype of the matmuls, as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// Everything in f32.
    F32,
    /// Matmuls in bfloat16, the rest f32 (mixed precision).
    Bf16,
    /// Matmuls in float16, the rest f32 (no loss scaling; for comparison).
    F16,
}

impl From<PrecisionArg> for ecamp_model::Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => Self::F32,
            PrecisionArg::Bf16 => Self::Bf16,
            PrecisionArg::F16 => Self::F16,
        }
    }
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut model = super::downstream::model_config(&a.preset, a.config.as_ref())?;
    let tiny = a.preset == "tiny";
    let mut train = if tiny { TrainConfig::tiny() } else { TrainConfig::official() };
    train.epochs = a.epochs.unwrap_or(train.epochs);
    train.lr = a.lr.unwrap_or(train.lr);
    train.warmup_epochs = a.warmup_epochs.unwrap_or(train.warmup_epochs);
    train.horizon_epochs = a.horizon_epochs.unwrap_or(train.horizon_epochs);
    train.accum = a.accum;
    train.clip_grad = a.clip_grad;
    train.seed = a.seed;
    train.precision = a.precision.into();
    train.checkpoint_every = a.checkpoint_every;
    train.max_steps = a.max_steps;
    train.init_weights = a.init.as_ref().map(|p| p.display().to_string());
    train.check().map_err(anyhow::Error::msg).context("invalid training settings")?;

    let ds = Dataset::open(&a.dataset).await.with_context(|| format!("cannot open dataset {}", a.dataset))?;
    // A pinned snapshot may pin its vocabulary too (the loader opens the snapshot itself).
    let pinned = match &a.snapshot {
        SnapshotRef::Id(id) => ds.read_manifest(id).await.with_context(|| format!("cannot open snapshot {id}"))?.vocab,
        SnapshotRef::Versions(_) => None,
    };
    let tok = tokenizer(&ds, pinned.as_ref(), a.tokenizer.as_deref()).await?;
    let tok = fit_vocabulary(tok, &mut model)?;
    model.check().map_err(anyhow::Error::msg).context("invalid model config")?;
    let text = TextPrep::new(&tok, TextConfig { max_len: model.max_len, ..TextConfig::default() })
        .context("the tokenizer lacks a token the text preparation needs")?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let world = a.devices.max(1);
    let workers = a.workers.unwrap_or(cores.saturating_sub(1).max(1));
    let mut loaders = Vec::with_capacity(world);
    for rank in 0..world {
        let cfg = LoaderConfig {
            seed: a.seed,
            batch_size: a.batch_size.unwrap_or(if tiny { 16 } else { 256 }),
            rank,
            world,
            workers: (workers / world).max(1),
            prefetch_bytes: (a.prefetch_mib << 20) / world as u64,
            augment: AugmentConfig { scale: (a.min_scale, 1.0), flip_prob: a.flip_prob, ..AugmentConfig::default() },
            ..LoaderConfig::default()
        };
        let (url, snap, text) = (a.dataset.clone(), a.snapshot.clone(), text.clone());
        let loader = tokio::task::spawn_blocking(move || Loader::open(&url, &snap, text, cfg))
            .await?
            .with_context(|| format!("cannot open loader rank {rank} on {}", a.dataset))?;
        loaders.push(loader);
    }
    if !a.quiet {
        let loader = &loaders[0];
        eprintln!(
            "pretrain: snapshot {} ({} samples, {} batches of {} per epoch), preset {}, {} epochs on {} {:?} device(s)",
            loader.snapshot().id,
            loader.rows(),
            loader.batches_per_epoch(),
            loader.config().batch_size,
            a.preset,
            train.epochs,
            world,
            a.backend
        );
    }
    let (out, resume, quiet, backend) = (a.out.clone(), a.resume.clone(), a.quiet, a.backend);
    let handlers = interrupt::install();
    let summary = tokio::task::spawn_blocking(move || {
        let mut line = ProgressLine::new(quiet, train.epochs);
        let mut progress = |m: &StepMetrics| line.show(m);
        match backend {
            BackendArg::Ndarray => {
                let devices = vec![Default::default(); loaders.len()];
                fit::<Autodiff<NdArray>>(&devices, &model, &train, &loaders, &out, resume.as_deref(), &mut progress)
                    .map_err(anyhow::Error::from)
            }
            BackendArg::Cuda => cuda::fit(&model, &train, &loaders, &out, resume.as_deref(), &mut progress),
        }
    })
    .await??;
    drop(handlers);
    let metrics = MetricsLog::read(&a.out.join("metrics.jsonl"))?;
    let plots = super::plots::write(&a.out, &metrics).context("cannot write the plots")?;
    report(&summary, &a.out, a.json)?;
    if !a.json {
        let names: Vec<String> = plots.iter().map(|p| p.display().to_string()).collect();
        println!("plots: {}", names.join(", "));
    }
    match summary.stopped_by {
        // The shell's convention for a process ended by a signal: 128 + its number.
        Some(signal) => {
            eprintln!(
                "stopped by signal {signal} after step {}; continue with --resume {}",
                summary.steps,
                a.out.display()
            );
            Ok(ExitCode::from((128 + signal).clamp(1, 255) as u8))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

mod interrupt {
    //! SIGINT and SIGTERM during pre-training: the first asks the trainer to stop after the
    //! optimizer step in progress and save a checkpoint; a second one ends the process at once.
    //! Unix only; elsewhere the signals keep their default effect.

    /// The handlers, installed until this is dropped; then the dispositions found at install
    /// time come back (a signal ends the process again during `ecamp demo`'s later steps).
    pub struct Handlers {
        #[cfg(unix)]
        previous: Vec<(libc::c_int, libc::sigaction)>,
    }

    /// Installs the handlers, except for a signal the process was told to ignore (a job started
    /// in the background by a non-interactive shell ignores SIGINT, and must keep doing so).
    pub fn install() -> Handlers {
        #[cfg(unix)]
        {
            let mut previous = Vec::new();
            for signal in [libc::SIGINT, libc::SIGTERM] {
                // SAFETY: plain sigaction calls on zero-initialised structs; `on_signal` only does
                // async-signal-safe work (an atomic load and store, `_exit`).
                unsafe {
                    let mut old: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 || old.sa_sigaction == libc::SIG_IGN {
                        continue;
                    }
                    let mut new: libc::sigaction = std::mem::zeroed();
                    new.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                    libc::sigemptyset(&mut new.sa_mask);
                    if libc::sigaction(signal, &new, std::ptr::null_mut()) == 0 {
                        previous.push((signal, old));
                    }
                }
            }
            Handlers { previous }
        }
        #[cfg(not(unix))]
        Handlers {}
    }

    impl Drop for Handlers {
        fn drop(&mut self) {
            #[cfg(unix)]
            for (signal, old) in &self.previous {
                // SAFETY: restores a disposition read by sigaction above.
                unsafe { libc::sigaction(*signal, old, std::ptr::null_mut()) };
            }
        }
    }

    #[cfg(unix)]
    extern "C" fn on_signal(signal: libc::c_int) {
        if ecamp_model::train::stop::requested().is_some() {
            // SAFETY: `_exit` is async-signal-safe and ends the process without unwinding.
            unsafe { libc::_exit(128 + signal) };
        }
        ecamp_model::train::stop::request(signal);
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The CUDA path (device 0).
    use super::*;
    use ecamp_model::train::Progress;

    pub fn fit(
        model: &EcampConfig,
        train: &TrainConfig,
        loaders: &[Loader],
        out: &Path,
        resume: Option<&Path>,
        progress: Progress<'_>,
    ) -> anyhow::Result<Summary> {
        type B = Autodiff<burn::backend::Cuda>;
        let devices = (0..loaders.len()).map(ecamp_model::cuda::device).collect::<Result<Vec<_>, _>>()?;
        let run = ecamp_model::train::fit::<B>(&devices, model, train, loaders, out, resume, progress);
        crate::cmd::with_cuda_cause(run.map_err(anyhow::Error::from))
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    //! Without the `cuda` feature the CUDA backend is not compiled in.
    use super::*;
    use ecamp_model::train::Progress;

    pub fn fit(
        _: &EcampConfig,
        _: &TrainConfig,
        _: &[Loader],
        _: &Path,
        _: Option<&Path>,
        _: Progress<'_>,
    ) -> anyhow::Result<Summary> {
        bail!(crate::cmd::downstream::NO_CUDA)
    }
}

/// The tokenizer: the given file, else the vocabulary the snapshot pins, else the one vocabulary
/// stored in the dataset.
pub(super) async fn tokenizer(
    ds: &Dataset,
    pinned: Option<&DataFile>,
    path: Option<&Path>,
) -> anyhow::Result<Tokenizer> {
    if let Some(path) = path {
        let bytes = read_regular(path, MAX_FILE_BYTES)
            .with_context(|| format!("cannot read the tokenizer {}", path.display()))?;
        return vocab::load(&bytes).with_context(|| format!("{} is not a usable tokenizer", path.display()));
    }
    if let Some(pin) = pinned {
        return vocab::fetch_pinned(ds, pin).await.context("cannot load the vocabulary the snapshot pins");
    }
    let stored = vocab::list_stored(ds).await.context("cannot list the dataset's vocabularies")?;
    match stored.as_slice() {
        [one] => vocab::fetch(ds, one).await.context("cannot load the dataset's vocabulary"),
        [] => bail!("the dataset has no stored vocabulary: run `ecamp vocab build` or pass --tokenizer"),
        many => {
            bail!("the dataset stores {} vocabularies ({}): choose one with --tokenizer", many.len(), many.join(", "))
        }
    }
}

/// Matches tokenizer and model: a larger vocabulary is cut to the model's (spec-tiny), a smaller
/// one shrinks the model's embedding and MLM head to it.
pub(super) fn fit_vocabulary(tok: Tokenizer, model: &mut EcampConfig) -> anyhow::Result<Tokenizer> {
    let size = tok.get_vocab_size(true);
    if size > model.vocab_size {
        return vocab::truncate(&tok, model.vocab_size).context("cannot cut the vocabulary to the model's size");
    }
    model.vocab_size = size;
    Ok(tok)
}

/// The live progress line on stderr.
struct ProgressLine {
    quiet: bool,
    epochs: u64,
}

impl ProgressLine {
    fn new(quiet: bool, epochs: u64) -> Self {
        Self { quiet, epochs }
    }

    fn show(&mut self, m: &StepMetrics) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rstep {:>6}  epoch {:>6.2}/{}  lr {:.2e}  mim {:.4}  sr {:.4}  mlm {:.4} (masked {:.3})  wait {:>6.1} ms  step {:>7.1} ms  {:>6.1} samples/s ",
            m.step,
            m.epoch,
            self.epochs,
            m.lr,
            m.mim,
            m.sr,
            m.mlm,
            m.mlm_masked,
            m.data_wait_s * 1e3,
            m.step_s * 1e3,
            m.samples_per_s
        );
        let _ = err.flush();
    }
}

/// Prints the summary.
fn report(s: &Summary, out: &Path, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(s);
    }
    eprintln!();
    println!(
        "trained {} steps ({} this run, {} optimizer steps) into {}",
        s.steps,
        s.steps_this_run,
        s.optimizer_steps,
        out.display()
    );
    let [a, b, c] = s.first_losses;
    let [x, y, z] = s.last_losses;
    println!("losses (mean of first / last 10 steps): mim {a:.4} → {x:.4}, sr {b:.4} → {y:.4}, mlm {c:.4} → {z:.4}");
    println!(
        "step {:.1} ms mean; data wait p50 {:.2} ms, p99 {:.2} ms",
        s.mean_step_s * 1e3,
        s.data_wait_p50_s * 1e3,
        s.data_wait_p99_s * 1e3
    );
    if s.skipped_samples > 0 {
        println!(
            "skipped {} sample(s) whose bytes failed their hash or did not decode (warnings above)",
            s.skipped_samples
        );
    }
    if let Some(c) = &s.checkpoint {
        println!("checkpoint: {}", c.display());
    }
    Ok(())
}
