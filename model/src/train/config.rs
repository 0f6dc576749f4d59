//! The optimisation settings ([`TrainConfig`]) and the learning-rate schedule.

use burn::config::Config;

use crate::net::autocast::Precision;

/// Everything about optimisation that a checkpoint must carry to resume exactly.
#[derive(Config, Debug, PartialEq)]
pub struct TrainConfig {
    /// Epochs to train (the run stops here, possibly before the cosine horizon).
    pub epochs: u64,
    /// Peak learning rate (absolute, no batch scaling, as the official run).
    pub lr: f64,
    /// Floor of the cosine.
    #[config(default = 0.0)]
    pub min_lr: f64,
    /// Linear-warmup length in (fractional) epochs.
    pub warmup_epochs: f64,
    /// Cosine horizon in epochs, separate from `epochs` (official: 200 vs 120 trained).
    pub horizon_epochs: f64,
    /// AdamW β1.
    #[config(default = 0.9)]
    pub beta1: f64,
    /// AdamW β2.
    #[config(default = 0.95)]
    pub beta2: f64,
    /// AdamW ε.
    #[config(default = 1e-8)]
    pub eps: f64,
    /// Decoupled weight decay, applied to parameters with ≥ 2 dimensions only.
    #[config(default = 0.05)]
    pub weight_decay: f64,
    /// Batches per optimizer step.
    #[config(default = 1)]
    pub accum: u64,
    /// Clip the global gradient norm to this value (off in the official run).
    pub clip_grad: Option<f64>,
    /// Seed of the MAE masking noise and the dropout streams (the loader has its own).
    #[config(default = 42)]
    pub seed: u64,
    /// Write a checkpoint every this many optimizer steps (0 = only at the end).
    #[config(default = 0)]
    pub checkpoint_every: u64,
    /// Stop after this many batches in total (0 = no limit); for smoke runs and benchmarks.
    #[config(default = 0)]
    pub max_steps: u64,
    /// Official-named weights (`.pth` / safetensors) to start a fresh run from, as the paper
    /// starts from MAE ViT-B: the tensors the file has replace the initialisation, the others
    /// keep it; a shape mismatch is an error.
    pub init_weights: Option<String>,
    /// Compute dtype of the matmuls (mixed precision; half dtypes need a GPU backend).
    #[config(default = "Precision::F32")]
    pub precision: Precision,
}

impl TrainConfig {
    /// Spec-tiny's schedule: 6 epochs trained, 2 of warmup, a 10-epoch horizon, lr 1e-3.
    pub fn tiny() -> Self {
        Self::new(6, 1e-3, 2.0, 10.0)
    }

    /// The official schedule: 120 of 200 epochs, 40 of warmup, lr 1.5e-4.
    pub fn official() -> Self {
        Self::new(120, 1.5e-4, 40.0, 200.0)
    }

    /// `util/lr_sched.py`: linear warmup, then half-cosine to `min_lr` at the horizon.
    pub fn lr_at(&self, epoch: f64) -> f64 {
        if epoch < self.warmup_epochs {
            self.lr * epoch / self.warmup_epochs
        } else {
            let progress = (epoch - self.warmup_epochs) / (self.horizon_epochs - self.warmup_epochs);
            self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }

    /// Checks the settings; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        let rule = |ok: bool, why: &str| if ok { Ok(()) } else { Err(why.to_string()) };
        rule(self.epochs > 0, "epochs must be at least 1")?;
        rule(self.lr > 0.0 && self.lr.is_finite(), "lr must be positive")?;
        rule(self.warmup_epochs > 0.0, "warmup_epochs must be positive")?;
        rule(self.horizon_epochs > self.warmup_epochs, "horizon_epochs must exceed warmup_epochs")?;
        rule(self.accum >= 1, "accum must be at least 1")?;
        rule((0.0..1.0).contains(&self.beta1) && (0.0..1.0).contains(&self.beta2), "betas must be in [0, 1)")?;
        rule(self.clip_grad.is_none_or(|c| c > 0.0), "clip_grad must be positive")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_schedule() {
        let c = TrainConfig::official();
        assert_eq!(c.lr_at(0.0), 0.0);
        assert!((c.lr_at(20.0) - 0.75e-4).abs() < 1e-15);
        assert!((c.lr_at(40.0) - 1.5e-4).abs() < 1e-15);
        // Training stops at 120 of the 200-epoch horizon: half the peak.
        assert!((c.lr_at(120.0) - 0.75e-4).abs() < 1e-12);
        assert!(c.lr_at(200.0).abs() < 1e-15);
    }
}
