//! The training loop ([`fit`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, MultiGradientsParams, Optimizer};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::DeviceOps;
use ecamp_loader::{Cursor, Loader};

use super::checkpoint::{self, FORMAT, RunState};
use super::inputs::to_inputs;
use super::metrics::{MetricsLog, StepMetrics};
use super::optim::{Optim, TimmAdamW, clip_global_norm};
use super::{TrainConfig, TrainError};
use crate::config::EcampConfig;
use crate::ecamp::Ecamp;
use crate::net::autocast;

/// Receives every step's metrics (for a live progress line).
pub type Progress<'a> = &'a mut dyn FnMut(&StepMetrics);

/// What a finished `fit` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Batches trained in total (resumed runs included).
    pub steps: u64,
    /// Optimizer steps in total.
    pub optimizer_steps: u64,
    /// Batches trained by this call.
    pub steps_this_run: u64,
    /// Mean of the first and the last up to 10 steps of this call: (mim, sr, mlm) each.
    pub first_losses: [f64; 3],
    /// See `first_losses`.
    pub last_losses: [f64; 3],
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// Data-wait quantiles over this call's steps, seconds: p50, p99.
    pub data_wait_p50_s: f64,
    /// See `data_wait_p50_s`.
    pub data_wait_p99_s: f64,
    /// Mean step time of this call, seconds.
    pub mean_step_s: f64,
    /// Samples the loader skipped in this call (hash mismatch, undecodable image), over all ranks.
    pub skipped_samples: u64,
    /// Why the run ended before its end, when [`super::stop::request`] asked it to (the code
    /// given there, e.g. a signal number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<i32>,
}

/// Starts a run in `run_dir` (fresh, or from the checkpoint `resume` names) and trains until
/// `train.epochs` (or `train.max_steps`).
///
/// Data parallel over `devices`: `loaders[d]` must be rank `d` of a world of `devices.len()` on
/// the same snapshot and settings; each step every device runs forward and backward on its rank's
/// slice of the global batch (the loss scaled by 1/world, so the summed gradients are those of
/// the global batch) and burn's multi-device optimizer step (`step_multi`) sums the gradients.
/// One device is the plain single-device loop.
#[allow(clippy::too_many_arguments)]
pub fn fit<B: AutodiffBackend>(
    devices: &[B::Device],
    model_config: &EcampConfig,
    train: &TrainConfig,
    loaders: &[Loader],
    run_dir: &Path,
    resume: Option<&Path>,
    progress: Progress<'_>,
) -> Result<Summary, TrainError> {
    model_config.check().map_err(TrainError::Config)?;
    train.check().map_err(TrainError::Config)?;
    let world = devices.len();
    check_ranks(loaders, world)?;
    if world > 1 && train.clip_grad.is_some() {
        return Err(TrainError::Config("gradient clipping is single-device only for now".into()));
    }
    let (lead, device) = (&loaders[0], &devices[0]);
    if !train.precision.supported::<B>(device) {
        return Err(TrainError::Config(format!(
            "precision {} needs a backend with half floats (CUDA); {} computes in f32 only",
            train.precision.name(),
            B::name(device)
        )));
    }
    let per_epoch = lead.batches_per_epoch();
    if per_epoch == 0 {
        return Err(TrainError::Config(format!(
            "the snapshot has {} samples, fewer than one batch of {}",
            lead.rows(),
            lead.config().batch_size
        )));
    }
    // The official loop drops a partial accumulation group at each epoch's end, and a run that
    // stops inside a group cannot save it: both would train batches that are never applied.
    if train.accum > per_epoch {
        return Err(TrainError::Config(format!(
            "accum {} is more than the {per_epoch} batches of an epoch: no optimizer step would ever run",
            train.accum
        )));
    }
    // Groups restart at each epoch, so a stop lands on a boundary when its place in the epoch
    // does (an epoch's end always is one).
    if train.max_steps > 0 && !(train.max_steps % per_epoch).is_multiple_of(train.accum) {
        return Err(TrainError::Config(format!(
            "max steps {} would end inside an accumulation group (accum {}, {per_epoch} batches per epoch, \
             groups restarting at each epoch): its last batches would never be applied or saved",
            train.max_steps, train.accum
        )));
    }
    std::fs::create_dir_all(run_dir).map_err(super::io_err(run_dir))?;
    // Held until the run returns: a second trainer on this folder would interleave its metrics
    // and checkpoints with ours.
    let _lock = checkpoint::lock_run(run_dir)?;
    refuse_existing_run(run_dir, resume)?;
    let fresh = RunState {
        format: FORMAT,
        step: 0,
        optimizer_steps: 0,
        epoch: 0,
        samples: 0,
        snapshot_id: lead.snapshot().id.clone(),
        loader_seed: lead.config().seed,
        batch_size: lead.config().batch_size,
        world: world as u64,
        augment: lead.config().augment,
        vocab: Some(lead.vocab_fingerprint().to_string()),
        model: model_config.clone(),
        train: train.clone(),
    };
    // Weight init draws from the backend's RNG: seed it so a run is reproducible.
    B::seed(device, train.seed);
    let mut model: Ecamp<B> = model_config.init(device);
    let mut optim: Optim<B> = TimmAdamW::new(train).init();
    let mut state = fresh;
    if let (None, Some(init)) = (resume, &train.init_weights) {
        let report = crate::weights::load_official(&mut model, Path::new(init), true)?;
        tracing::info!(
            "initial weights from {init}: {} tensors loaded, {} kept their initialisation, {} unused",
            report.applied,
            report.missing.len(),
            report.unused.len()
        );
    }
    if let Some(path) = resume {
        let dir = checkpoint::locate(path)?;
        let saved = checkpoint::load_state(&dir)?;
        check_resume(&dir, &saved, &state)?;
        (model, optim) = checkpoint::load_tensors(&dir, model, optim, device)?;
        // A checkpoint from before fingerprints were recorded gets this run's from now on.
        state = RunState { train: train.clone(), vocab: saved.vocab.clone().or(state.vocab), ..saved };
        if state.epoch >= train.epochs || (train.max_steps > 0 && state.step >= train.max_steps) {
            return Err(TrainError::Config(format!(
                "{} is at step {} (epoch {}), already past this run's end ({} epochs{}): nothing to train",
                dir.display(),
                state.step,
                state.epoch,
                train.epochs,
                if train.max_steps > 0 { format!(", --max-steps {}", train.max_steps) } else { String::new() }
            )));
        }
        // Rewinding a run to an earlier checkpoint of its own: from now on that one is its
        // latest, so that an interruption resumes where the metrics continue.
        checkpoint::point_latest_at(run_dir, &dir)?;
    }
    let mut log = MetricsLog::open(run_dir, state.step)?;

    let batch_size = lead.config().batch_size as u64;
    let mut cursor = Cursor { epoch: state.epoch, samples: state.samples };
    let mut accumulators: Vec<GradientsAccumulator<Ecamp<B>>> =
        devices.iter().map(|_| GradientsAccumulator::new()).collect();
    let mut pending = 0u64;
    let mut lr = train.lr_at(cursor.epoch as f64 + cursor.samples as f64 / batch_size as f64 / per_epoch as f64);
    let mut record = Record::default();
    let mut last_checkpoint = None;
    // (step, epoch, samples) of the last save: the end-of-run save is skipped only when it would
    // write the same state (an epoch's end moves the cursor without a step).
    let mut last_saved = None;
    let start_step = state.step;
    let limit_reached = |step: u64| train.max_steps > 0 && step >= train.max_steps;
    let scale = (train.accum * world as u64) as f64;

    let mut ahead: Option<Vec<ecamp_loader::Epoch>> = None;
    // A data failure mid-run (a shard gone, every sample of a batch unusable) ends the loop here
    // so that the steps trained so far are saved below before the error is returned.
    let mut failed: Option<TrainError> = None;
    'epochs: while cursor.epoch < train.epochs && !limit_reached(state.step) {
        let mut streams = match ahead.take() {
            Some(s) => s,
            None => match loaders.iter().map(|l| l.epoch(cursor)).collect::<Result<Vec<_>, _>>() {
                Ok(s) => s,
                Err(e) => {
                    failed = Some(e.into());
                    break 'epochs;
                }
            },
        };
        loop {
            let t0 = Instant::now();
            let mut batches = Vec::with_capacity(world);
            for stream in &mut streams {
                match stream.next() {
                    Some(Ok(b)) => batches.push(b),
                    Some(Err(e)) => {
                        failed = Some(e.into());
                        break 'epochs;
                    }
                    None => break,
                }
            }
            let wait = t0.elapsed().as_secs_f64();
            if batches.len() < world {
                break;
            }
            let (it, epoch, next_cursor) = (batches[0].index, batches[0].epoch, batches[0].cursor);
            // Start the next epoch's pipelines two batches early so that their first reads and
            // decodes overlap this epoch's last steps (both hold their budget briefly).
            if ahead.is_none() && it + 2 >= per_epoch && epoch + 1 < train.epochs {
                let next = Cursor { epoch: epoch + 1, samples: 0 };
                match loaders.iter().map(|l| l.epoch(next)).collect::<Result<Vec<_>, _>>() {
                    Ok(s) => ahead = Some(s),
                    Err(e) => {
                        failed = Some(e.into());
                        break 'epochs;
                    }
                }
            }
            if it.is_multiple_of(train.accum) {
                lr = train.lr_at(epoch as f64 + it as f64 / per_epoch as f64);
            }
            for batch in &batches {
                record.skipped += batch.skipped.len() as u64;
                if batch.is_empty() {
                    let why: Vec<String> =
                        batch.skipped.iter().map(|s| format!("{}: {}", s.sample_id, s.reason)).collect();
                    failed = Some(TrainError::NoUsableSample {
                        batch: batch.index,
                        epoch: batch.epoch,
                        why: why.join("; "),
                    });
                    break 'epochs;
                }
            }
            let mut values = [0.0f64; 4];
            for (d, (batch, dev)) in batches.iter().zip(devices).enumerate() {
                // Dropout draws from the backend RNG: one seed per step (and device) makes a
                // resumed run repeat it.
                B::seed(dev, step_seed(train.seed, state.step * world as u64 + d as u64));
                let inputs = to_inputs::<B>(batch, model_config, train.seed, dev)?;
                let replica = if world == 1 { model.clone() } else { model.clone().fork(dev) };
                let losses = {
                    let _autocast = autocast::scope(train.precision);
                    replica.forward(inputs)
                };
                let got = [&losses.mim, &losses.sr, &losses.mlm, &losses.mlm_masked]
                    .map(|t| t.clone().into_scalar().elem::<f64>());
                for (which, value) in ["MIM", "SR", "MLM"].into_iter().zip(got) {
                    if !value.is_finite() {
                        return Err(TrainError::NonFinite { step: state.step + 1, which, value });
                    }
                }
                for (v, g) in values.iter_mut().zip(got) {
                    *v += g / world as f64;
                }
                let loss = if scale > 1.0 { losses.total.div_scalar(scale) } else { losses.total };
                let grads = GradientsParams::from_grads(loss.backward(), &replica);
                accumulators[d].accumulate(&replica, grads);
            }
            pending += 1;
            let mut grad_norm = None;
            // The official loop steps when (it + 1) % accum == 0 and zeroes the gradients at
            // each epoch start, so groups never straddle epochs.
            if (it + 1).is_multiple_of(train.accum) {
                if world == 1 {
                    let mut grads = accumulators[0].grads();
                    if let Some(max) = train.clip_grad {
                        grad_norm = Some(clip_global_norm(&model, &mut grads, max));
                    }
                    model = optim.step(lr, model, grads);
                } else {
                    let grads =
                        accumulators.iter_mut().zip(devices).map(|(acc, dev)| (acc.grads(), dev.id())).collect();
                    model = optim.step_multi(lr, model, MultiGradientsParams { grads });
                }
                state.optimizer_steps += 1;
                pending = 0;
            }
            let stepped = pending == 0;
            if it + 1 == per_epoch && pending > 0 {
                // The official loop drops an epoch's partial group at its end; dropping it at the
                // last batch instead lets a run that stops here save a whole state.
                accumulators = devices.iter().map(|_| GradientsAccumulator::new()).collect();
                pending = 0;
            }
            cursor = next_cursor;
            state.step += 1;
            (state.epoch, state.samples) = (cursor.epoch, cursor.samples);
            let step_s = t0.elapsed().as_secs_f64();
            let samples: usize = batches.iter().map(|b| b.len()).sum();
            let m = StepMetrics {
                step: state.step,
                optimizer_step: state.optimizer_steps,
                epoch: epoch as f64 + (it + 1) as f64 / per_epoch as f64,
                lr,
                mim: values[0],
                sr: values[1],
                mlm: values[2],
                mlm_masked: values[3],
                total: values[0] + values[1] + values[2],
                data_wait_s: wait,
                step_s,
                samples_per_s: samples as f64 / step_s,
                grad_norm,
            };
            log.write(&m)?;
            record.push(&m);
            progress(&m);
            let every = train.checkpoint_every;
            if stepped && every > 0 && state.optimizer_steps.is_multiple_of(every) {
                last_checkpoint = Some(checkpoint::save(run_dir, &model, &optim, &state)?);
                last_saved = Some((state.step, state.epoch, state.samples));
            }
            if limit_reached(state.step) {
                break 'epochs;
            }
            // A stop request waits for the accumulation group, so the checkpoint below holds
            // every batch trained.
            if pending == 0
                && let Some(why) = super::stop::requested()
            {
                tracing::warn!("stop requested ({why}): saving a checkpoint at step {}", state.step);
                break 'epochs;
            }
        }
        // Epoch done: the official loop drops a partial accumulation group here.
        accumulators = devices.iter().map(|_| GradientsAccumulator::new()).collect();
        pending = 0;
        cursor = Cursor { epoch: cursor.epoch + 1, samples: 0 };
        (state.epoch, state.samples) = (cursor.epoch, cursor.samples);
    }
    let saved_now = last_saved == Some((state.step, state.epoch, state.samples));
    let saving = pending == 0 && state.step > start_step && !saved_now;
    if saving {
        last_checkpoint = Some(checkpoint::save(run_dir, &model, &optim, &state)?);
    }
    if let Some(source) = failed {
        let progress = match &last_checkpoint {
            Some(dir) if saving || saved_now => format!(
                "the {} step(s) trained before it are saved in {}; fix the cause and resume with --resume {}",
                state.step - start_step,
                dir.display(),
                run_dir.display()
            ),
            Some(dir) => format!(
                "steps since the last checkpoint ({}) are lost (the failure came inside an accumulation group); \
                 fix the cause and resume with --resume {}",
                dir.display(),
                run_dir.display()
            ),
            None if state.step > start_step => format!(
                "the {} step(s) trained are lost: the failure came inside an accumulation group, before any checkpoint",
                state.step - start_step
            ),
            None => "nothing was trained since the run started or resumed, so no checkpoint was written".into(),
        };
        return Err(TrainError::Stopped { cause: Box::new(source), progress });
    }
    let mut summary = record.summary(&state, state.step - start_step, last_checkpoint);
    let finished = cursor.epoch >= train.epochs || limit_reached(state.step);
    summary.stopped_by = super::stop::requested().filter(|_| !finished);
    Ok(summary)
}

/// Loader `d` must be rank `d` of `world`, all on one snapshot with the same order and augmentation settings.
fn check_ranks(loaders: &[Loader], world: usize) -> Result<(), TrainError> {
    if world == 0 || loaders.len() != world {
        return Err(TrainError::Config(format!("{} loaders for {world} devices", loaders.len())));
    }
    let first = &loaders[0];
    let order = |l: &Loader| {
        let c = l.config();
        (c.seed, c.batch_size, c.shuffle_buffer, c.augment)
    };
    for (d, l) in loaders.iter().enumerate() {
        let c = l.config();
        if c.rank != d || c.world != world {
            return Err(TrainError::Config(format!(
                "loader {d} is rank {} of {}, expected {d} of {world}",
                c.rank, c.world
            )));
        }
        if l.snapshot().id != first.snapshot().id || order(l) != order(first) {
            return Err(TrainError::Config(format!(
                "loader {d} differs from loader 0 in snapshot, order or augmentation settings"
            )));
        }
    }
    Ok(())
}

/// The fields two configs differ in, as `name saved → now`, leaving out `free` ones.
fn config_diff<T: serde::Serialize + std::fmt::Debug>(saved: &T, now: &T, free: &[&str]) -> String {
    // Both through JSON text, as `saved` came from state.json: floats then compare exactly.
    let value = |x: &T| serde_json::to_string(x).and_then(|s| serde_json::from_str::<serde_json::Value>(&s));
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (value(saved), value(now)) else {
        return format!("{saved:?} → {now:?}");
    };
    let diffs: Vec<String> = a
        .iter()
        .filter(|(k, v)| !free.contains(&k.as_str()) && b.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k} {v} → {}", b.get(k).unwrap_or(&serde_json::Value::Null)))
        .collect();
    diffs.join(", ")
}

/// Training settings a resumed run may change: how long it runs, how often it saves, and the
/// initial weights (which a resume replaces with the checkpoint's).
const RESUME_FREE: &[&str] = &["epochs", "max_steps", "checkpoint_every", "init_weights"];

/// Training into `run_dir` would truncate the metrics and replace the checkpoints of a run it
/// already holds: refused, unless resuming that same run. A folder whose run stopped before
/// its first checkpoint has nothing to resume and is reused; one whose checkpoints are damaged
/// is not (it still holds the metrics and whatever checkpoints are intact).
fn refuse_existing_run(run_dir: &Path, resume: Option<&Path>) -> Result<(), TrainError> {
    if !checkpoint::has_checkpoints(run_dir) {
        return Ok(());
    }
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if let Some(from) = resume
        && canonical(from).starts_with(canonical(run_dir))
    {
        return Ok(());
    }
    Err(TrainError::Config(format!(
        "{} already holds a run with checkpoints: continue it with --resume {0}, or choose another --out",
        run_dir.display()
    )))
}

/// A resumed run must continue the same data and model.
fn check_resume(dir: &Path, saved: &RunState, now: &RunState) -> Result<(), TrainError> {
    let mismatch = |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason: format!("was trained with {what} {a:?}, this run has {b:?}"),
    };
    if saved.snapshot_id != now.snapshot_id {
        return Err(mismatch("snapshot", &saved.snapshot_id, &now.snapshot_id));
    }
    let differs = |what: &str, diff: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason: format!("was trained with other {what}: {diff}"),
    };
    if saved.model != now.model {
        return Err(differs("model settings", config_diff(&saved.model, &now.model, &[])));
    }
    if let (Some(a), Some(b)) = (&saved.vocab, &now.vocab)
        && a != b
    {
        return Err(mismatch("vocabulary (fingerprint)", a, b));
    }
    if saved.augment != now.augment {
        return Err(mismatch("augmentation", &saved.augment, &now.augment));
    }
    if saved.world != now.world {
        return Err(mismatch("devices", &saved.world, &now.world));
    }
    if (saved.loader_seed, saved.batch_size) != (now.loader_seed, now.batch_size) {
        return Err(mismatch(
            "loader (seed, batch size)",
            &(saved.loader_seed, saved.batch_size),
            &(now.loader_seed, now.batch_size),
        ));
    }
    // Every other setting changes the trajectory: a resumed run would not be the run it continues.
    let train = config_diff(&saved.train, &now.train, RESUME_FREE);
    if !train.is_empty() {
        return Err(differs("training settings (pass the same flags as the run it continues)", train));
    }
    Ok(())
}

/// The dropout seed of global step `step`.
fn step_seed(seed: u64, step: u64) -> u64 {
    // splitmix64 of a mix, so neighbouring steps get unrelated streams.
    let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step.wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// This call's steps, for the summary.
#[derive(Default)]
struct Record {
    losses: Vec<[f64; 3]>,
    waits: Vec<f64>,
    steps: Vec<f64>,
    skipped: u64,
}

impl Record {
    fn push(&mut self, m: &StepMetrics) {
        self.losses.push([m.mim, m.sr, m.mlm]);
        self.waits.push(m.data_wait_s);
        self.steps.push(m.step_s);
    }

    fn summary(mut self, state: &RunState, steps_this_run: u64, checkpoint: Option<PathBuf>) -> Summary {
        let mean = |rows: &[[f64; 3]]| {
            let n = rows.len().max(1) as f64;
            [0, 1, 2].map(|k| rows.iter().map(|r| r[k]).sum::<f64>() / n)
        };
        let k = self.losses.len().min(10);
        self.waits.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if self.waits.is_empty() { 0.0 } else { self.waits[((self.waits.len() - 1) as f64 * p).round() as usize] }
        };
        Summary {
            steps: state.step,
            optimizer_steps: state.optimizer_steps,
            steps_this_run,
            first_losses: mean(&self.losses[..k]),
            last_losses: mean(&self.losses[self.losses.len() - k..]),
            checkpoint,
            data_wait_p50_s: q(0.5),
            data_wait_p99_s: q(0.99),
            mean_step_s: self.steps.iter().sum::<f64>() / self.steps.len().max(1) as f64,
            skipped_samples: self.skipped,
            stopped_by: None,
        }
    }
}
