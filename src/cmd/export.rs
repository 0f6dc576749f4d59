//! `ecamp export`: a checkpoint's image encoder as safetensors with timm's ViT names, for
//! downstream use in PyTorch (`timm.create_model(..., pretrained=False).load_state_dict`).

use std::path::PathBuf;
use std::process::ExitCode;

use burn::backend::NdArray;
use ecamp_model::train::checkpoint;
use ecamp_model::weights::save_encoder_timm;

/// Export the image encoder of a checkpoint (or a run folder's latest) as timm-named safetensors.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint folder, or a run folder (its latest checkpoint).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Output file (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.out.exists() {
        anyhow::bail!("{} already exists: remove it or choose another --out", a.out.display());
    }
    let dir = checkpoint::locate(&a.checkpoint)?;
    let (model, state) = checkpoint::load_model::<NdArray>(&dir, &Default::default())?;
    save_encoder_timm(&model, &a.out)?;
    println!(
        "encoder of {} (step {}, snapshot {}) written to {}",
        dir.display(),
        state.step,
        state.snapshot_id,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
