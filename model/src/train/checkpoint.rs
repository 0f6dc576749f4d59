//! Checkpoints: `DIR/checkpoints/step-NNNNNNNN/{model.mpk, optim.mpk, state.json}`, written to a
//! temporary folder and renamed into place, then named in `DIR/checkpoints/latest`; a crash
//! mid-write never leaves a checkpoint that looks complete.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;

use super::optim::Optim;
use super::{TrainConfig, TrainError, io_err};
use crate::config::EcampConfig;
use crate::ecamp::Ecamp;
use ecamp_loader::sample::AugmentConfig;

/// Version of the checkpoint layout.
pub const FORMAT: u32 = 1;

/// Everything besides the tensors that resuming needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    /// Layout version ([`FORMAT`]).
    pub format: u32,
    /// Batches trained.
    pub step: u64,
    /// Optimizer steps taken.
    pub optimizer_steps: u64,
    /// Loader cursor: the epoch to continue.
    pub epoch: u64,
    /// Loader cursor: samples of that epoch already consumed by all ranks.
    pub samples: u64,
    /// The pinned dataset snapshot trained on.
    pub snapshot_id: String,
    /// Loader seed (the order depends on it).
    pub loader_seed: u64,
    /// Global batch size.
    pub batch_size: usize,
    /// Devices trained on (one loader rank each; the dropout seeds depend on it). Checkpoints
    /// from before it was recorded: 1.
    #[serde(default = "one_device")]
    pub world: u64,
    /// The loader's augmentation ranges (checkpoints from before this field: ECAMP's, the only ones then).
    #[serde(default)]
    pub augment: AugmentConfig,
    /// Fingerprint of the vocabulary trained with (`ecamp_loader::text::vocab_fingerprint`);
    /// absent in checkpoints from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab: Option<String>,
    /// Model sizes and loss switches.
    pub model: EcampConfig,
    /// Optimisation settings.
    pub train: TrainConfig,
}

fn one_device() -> u64 {
    1
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

fn ckpt_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), reason: e.to_string() }
}

/// Writes a checkpoint under `run_dir/checkpoints/` and returns its folder.
pub fn save<B: AutodiffBackend>(
    run_dir: &Path,
    model: &Ecamp<B>,
    optim: &Optim<B>,
    state: &RunState,
) -> Result<PathBuf, TrainError> {
    let root = run_dir.join("checkpoints");
    let name = format!("step-{:08}", state.step);
    let done = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    model.clone().save_file(tmp.join("model"), &recorder()).map_err(|e| ckpt_err(&tmp, e))?;
    recorder().record(optim.to_record(), tmp.join("optim")).map_err(|e| ckpt_err(&tmp, e))?;
    write_checksums(&tmp)?;
    let json = serde_json::to_string_pretty(state).map_err(|e| ckpt_err(&tmp, e))?;
    std::fs::write(tmp.join("state.json"), json).map_err(io_err(tmp.join("state.json")))?;
    // On disk before the renames make it the checkpoint: a power loss must not leave a named
    // checkpoint with empty files.
    for name in ["model.mpk", "optim.mpk", CHECKSUMS, "state.json"] {
        sync(&tmp.join(name))?;
    }
    sync(&tmp)?;
    // Replacing a checkpoint of the same step (a rewound run saving again, or the end of a run
    // moving the cursor past its last epoch): the old one is moved aside, not deleted, until the
    // new one is in place, so a crash leaves a whole checkpoint (`locate` falls back to the
    // newest whole one).
    let old = root.join(format!(".{name}.old"));
    if done.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
        }
        std::fs::rename(&done, &old).map_err(io_err(&done))?;
    }
    std::fs::rename(&tmp, &done).map_err(io_err(&done))?;
    sync(&root)?;
    write_latest(&root, &name)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(done)
}

/// Names checkpoint `name` in `root/latest`, atomically and durably.
fn write_latest(root: &Path, name: &str) -> Result<(), TrainError> {
    let latest = root.join("latest");
    let latest_tmp = root.join(".latest.tmp");
    std::fs::write(&latest_tmp, name).map_err(io_err(&latest_tmp))?;
    sync(&latest_tmp)?;
    std::fs::rename(&latest_tmp, &latest).map_err(io_err(&latest))?;
    sync(root)
}

/// Flushes a file, or a folder's entries, to the disk.
fn sync(path: &Path) -> Result<(), TrainError> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(io_err(path))
}

/// Makes `ckpt` the latest checkpoint of `run_dir` when it is one of that run's own (a resume
/// from an earlier checkpoint of the run); checkpoints elsewhere leave `run_dir` alone.
pub fn point_latest_at(run_dir: &Path, ckpt: &Path) -> Result<(), TrainError> {
    let root = run_dir.join("checkpoints");
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let ckpt = canonical(ckpt);
    match (ckpt.parent(), ckpt.file_name().and_then(|n| n.to_str())) {
        (Some(parent), Some(name)) if parent == canonical(&root) => write_latest(&root, name),
        _ => Ok(()),
    }
}

/// The step a checkpoint folder (`step-NNNNNNNN`) was saved at.
fn step_of(dir: &Path) -> Option<u64> {
    dir.file_name()?.to_str()?.strip_prefix("step-")?.parse().ok()
}

/// Whether `run_dir` holds checkpoints, intact or not (a `latest` file or a `step-*` folder).
pub fn has_checkpoints(run_dir: &Path) -> bool {
    let root = run_dir.join("checkpoints");
    root.join("latest").exists() || !step_dirs(&root).is_empty()
}

/// The `step-*` folders under `root`, oldest step first.
fn step_dirs(root: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<(u64, PathBuf)> =
        entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).filter_map(|p| Some((step_of(&p)?, p))).collect();
    dirs.sort();
    dirs
}

/// An exclusive lock on a run folder, held while it lives.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// Locks `run_dir` for one trainer (`run_dir/.lock`); refused while another process holds it.
/// The operating system releases the lock when the process ends, however it ends.
pub fn lock_run(run_dir: &Path) -> Result<RunLock, TrainError> {
    let path = run_dir.join(".lock");
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(TrainError::Config(format!(
            "another process is training into {} (it holds {}); wait for it, or choose another --out",
            run_dir.display(),
            path.display()
        ))),
        // Some network and FUSE file systems have no locks: train unguarded rather than not at all.
        Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            tracing::warn!(
                "{} cannot be locked on this file system ({e}); nothing stops a second trainer",
                path.display()
            );
            Ok(RunLock { _file: file })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
    }
}

/// The tensor files of a checkpoint, as listed in its [`CHECKSUMS`].
const TENSOR_FILES: [&str; 2] = ["model.mpk", "optim.mpk"];

/// `sha256sum`-format digests of [`TENSOR_FILES`] (`sha256sum -c SHA256SUMS` checks them too).
pub const CHECKSUMS: &str = "SHA256SUMS";

fn sha256_file(path: &Path) -> Result<String, TrainError> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut hash = Sha256::new();
    std::io::copy(&mut file, &mut hash).map_err(io_err(path))?;
    Ok(hex::encode(hash.finalize()))
}

fn write_checksums(dir: &Path) -> Result<(), TrainError> {
    let mut out = String::new();
    for name in TENSOR_FILES {
        out.push_str(&format!("{}  {name}\n", sha256_file(&dir.join(name))?));
    }
    let path = dir.join(CHECKSUMS);
    std::fs::write(&path, out).map_err(io_err(&path))
}

/// Checks `file` of the checkpoint `dir` against its [`CHECKSUMS`] line; checkpoints written
/// before checksums existed have none and pass.
fn verify(dir: &Path, file: &str) -> Result<(), TrainError> {
    let sums = dir.join(CHECKSUMS);
    let text = match std::fs::read_to_string(&sums) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ckpt_err(&sums, e)),
    };
    let Some(want) = text.lines().find_map(|l| l.split_once("  ").filter(|(_, n)| *n == file).map(|(h, _)| h)) else {
        return Err(ckpt_err(&sums, format!("lists no digest of {file}")));
    };
    let path = dir.join(file);
    let got = sha256_file(&path)?;
    if got != want {
        return Err(ckpt_err(&path, format!("content changed since it was written (sha256 {got}, recorded {want})")));
    }
    Ok(())
}

/// The checkpoint folder `path` names: a checkpoint itself, or a run folder (its latest). When
/// a run folder's `latest` is missing or names a folder without `state.json` (a crash between
/// the steps of a save), its newest checkpoint that has one is used, with a warning.
pub fn locate(path: &Path) -> Result<PathBuf, TrainError> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let root = path.join("checkpoints");
    let latest = root.join("latest");
    let problem = match std::fs::read_to_string(&latest) {
        Ok(name) => {
            let dir = root.join(name.trim());
            if dir.join("state.json").is_file() {
                return Ok(dir);
            }
            ckpt_err(&dir, "named by checkpoints/latest but has no state.json")
        }
        Err(e) => ckpt_err(path, format!("neither a checkpoint (no state.json) nor a run folder ({latest:?}: {e})")),
    };
    match step_dirs(&root).into_iter().rev().find(|(_, d)| d.join("state.json").is_file()) {
        Some((_, dir)) => {
            tracing::warn!("{problem}; using {}, the newest checkpoint with a state.json", dir.display());
            Ok(dir)
        }
        None => Err(problem),
    }
}

/// Reads a checkpoint's state.
pub fn load_state(dir: &Path) -> Result<RunState, TrainError> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let state: RunState = serde_json::from_str(&text).map_err(|e| ckpt_err(&path, e))?;
    if state.format != FORMAT {
        return Err(ckpt_err(&path, format!("layout version {} (this build reads {FORMAT})", state.format)));
    }
    // The sizes are multiplied into allocations and divided by before any weight is read.
    state.model.check().map_err(|e| ckpt_err(&path, format!("invalid model config: {e}")))?;
    state.train.check().map_err(|e| ckpt_err(&path, format!("invalid training settings: {e}")))?;
    Ok(state)
}

/// A checkpoint's model for inference (any backend, no optimizer) and its state.
pub fn load_model<B: burn::tensor::backend::Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(Ecamp<B>, RunState), TrainError> {
    let state = load_state(dir)?;
    verify(dir, "model.mpk")?;
    let model = state
        .model
        .init::<B>(device)
        .load_file(dir.join("model"), &recorder(), device)
        .map_err(|e| ckpt_err(&dir.join("model.mpk"), e))?;
    Ok((model, state))
}

/// A model and its optimizer, as loaded from a checkpoint.
pub type Loaded<B> = (Ecamp<B>, Optim<B>);

/// Loads a checkpoint's weights into `model` and its moments into `optim`.
pub fn load_tensors<B: AutodiffBackend>(
    dir: &Path,
    model: Ecamp<B>,
    optim: Optim<B>,
    device: &B::Device,
) -> Result<Loaded<B>, TrainError> {
    for file in TENSOR_FILES {
        verify(dir, file)?;
    }
    let model =
        model.load_file(dir.join("model"), &recorder(), device).map_err(|e| ckpt_err(&dir.join("model.mpk"), e))?;
    let record = recorder().load(dir.join("optim"), device).map_err(|e| ckpt_err(&dir.join("optim.mpk"), e))?;
    Ok((model, optim.load_record(record)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> RunState {
        RunState {
            format: FORMAT,
            step: 0,
            optimizer_steps: 0,
            epoch: 0,
            samples: 0,
            snapshot_id: "snap-test".into(),
            loader_seed: 0,
            batch_size: 8,
            world: 1,
            augment: AugmentConfig::default(),
            vocab: None,
            model: EcampConfig::tiny(),
            train: TrainConfig::tiny(),
        }
    }

    fn write(dir: &Path, state: &RunState) {
        std::fs::write(dir.join("state.json"), serde_json::to_vec(state).expect("serialise")).expect("write");
    }

    #[test]
    fn a_state_with_impossible_sizes_is_refused_naming_the_file_and_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &state());
        assert_eq!(load_state(dir.path()).expect("valid state").model, EcampConfig::tiny());
        let mut bad = state();
        bad.model.patch = 0;
        write(dir.path(), &bad);
        let err = load_state(dir.path()).expect_err("patch 0").to_string();
        assert!(err.contains("state.json") && err.contains("patch"), "{err}");
        let mut bad = state();
        bad.train.epochs = 0;
        write(dir.path(), &bad);
        let err = load_state(dir.path()).expect_err("epochs 0").to_string();
        assert!(err.contains("epochs"), "{err}");
    }
}
