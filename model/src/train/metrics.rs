//! Per-step metrics: one JSON object per line in `metrics.jsonl`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{TrainError, io_err};

/// What one batch step measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepMetrics {
    /// Batches trained so far, this one included (global over epochs).
    pub step: u64,
    /// Optimizer steps taken so far.
    pub optimizer_step: u64,
    /// Fractional epoch at this batch (`epoch + index / batches_per_epoch`).
    pub epoch: f64,
    /// Learning rate in force.
    pub lr: f64,
    /// MIM loss.
    pub mim: f64,
    /// SR loss.
    pub sr: f64,
    /// MLM loss (official, all positions).
    pub mlm: f64,
    /// Unweighted cross-entropy over the masked positions (a metric).
    pub mlm_masked: f64,
    /// `mim + sr + mlm`.
    pub total: f64,
    /// Seconds the trainer waited for this batch.
    pub data_wait_s: f64,
    /// Seconds of the whole step (wait included).
    pub step_s: f64,
    /// Samples per second of this step (this rank).
    pub samples_per_s: f64,
    /// Global-norm of the gradients when clipping is on and an optimizer step was taken.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grad_norm: Option<f64>,
}

/// Appends [`StepMetrics`] to `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsLog {
    /// Opens `dir/metrics.jsonl`; on resume, lines after `keep_steps` (written after the
    /// checkpoint by the interrupted run) are dropped so that every step appears once.
    pub fn open(dir: &Path, keep_steps: u64) -> Result<Self, TrainError> {
        let path = dir.join("metrics.jsonl");
        let kept = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter(|l| serde_json::from_str::<StepMetrics>(l).is_ok_and(|m| m.step <= keep_steps))
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        // Replaced whole, so a crash here keeps the old file rather than a truncated one.
        let tmp = dir.join(".metrics.jsonl.tmp");
        std::fs::write(&tmp, kept).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        let file = OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
        Ok(Self { path, out: BufWriter::new(file) })
    }

    /// Writes one line (flushed, so a crash loses at most the current step).
    pub fn write(&mut self, m: &StepMetrics) -> Result<(), TrainError> {
        let line = serde_json::to_string(m).map_err(|e| io_err(&self.path)(std::io::Error::other(e)))?;
        writeln!(self.out, "{line}").and_then(|()| self.out.flush()).map_err(io_err(&self.path))
    }

    /// Reads every line of a `metrics.jsonl`.
    pub fn read(path: &Path) -> Result<Vec<StepMetrics>, TrainError> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        text.lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| TrainError::Checkpoint {
                    path: path.to_path_buf(),
                    reason: format!("line {}: {e}", i + 1),
                })
            })
            .collect()
    }
}
