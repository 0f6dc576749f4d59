//! `ecamp forward`: one forward pass on given weights and a given batch, the three losses as
//! JSON — for number-for-number checks against the official PyTorch code.

use ecamp_ingest::files::{MAX_FILE_BYTES, read_regular};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use burn::backend::NdArray;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use ecamp_model::loss::window_mask;
use ecamp_model::weights::load_official;
use ecamp_model::{EcampConfig, Inputs};
use safetensors::{Dtype, SafeTensors};

/// Run one forward pass (dropout off) and print the MIM, SR and MLM losses as JSON.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
--batch is a safetensors file with: big f32 [N,3,2S,2S] (normalised), noise f32 [N,L] (ascending
argsort = kept patches, as MAE), ids, labels, attention_mask i64 [N,T], weights f32 [N,T],
sr_window i64 [N,2] (label_i = row offset, label_j = column offset on the patch grid).
The encoder input is the bicubic (torch, no antialias) resize of big to S, done inside the model.
--weights is a .pth (a state dict or {\"model\": state dict}) or .safetensors in the official naming.")]
pub struct Args {
    /// Model preset.
    #[arg(long, default_value = "tiny", value_parser = ["tiny", "base"])]
    preset: String,
    /// Model config JSON (an `EcampConfig`), instead of the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Weights in the official naming.
    #[arg(long)]
    weights: PathBuf,
    /// The batch (safetensors).
    #[arg(long)]
    batch: PathBuf,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let config = super::downstream::model_config(&a.preset, a.config.as_ref())?;
    let losses = tokio::task::spawn_blocking(move || forward(&config, &a.weights, &a.batch)).await??;
    println!("{}", serde_json::to_string(&losses)?);
    Ok(ExitCode::SUCCESS)
}

/// The three losses and their sum.
#[derive(Debug, serde::Serialize)]
struct Output {
    mim: f64,
    sr: f64,
    mlm: f64,
    total: f64,
}

fn forward(config: &EcampConfig, weights: &Path, batch: &Path) -> anyhow::Result<Output> {
    type B = NdArray<f32>;
    let device = Default::default();
    let mut model = config.init::<B>(&device);
    load_official(&mut model, weights, false)?;
    let bytes = read_regular(batch, MAX_FILE_BYTES).with_context(|| format!("cannot read {}", batch.display()))?;
    let st =
        SafeTensors::deserialize(&bytes).with_context(|| format!("{} is not a safetensors file", batch.display()))?;
    let file = batch.display();
    let big = tensor_f32(&st, "big", 4).with_context(|| format!("{file}"))?;
    let n = big.1[0];
    if n == 0 {
        bail!("{file}: the batch is empty (big has N = 0)");
    }
    let (s2, g, t, l) = (config.big_size(), config.grid(), config.max_len, config.num_patches());
    if big.1 != [n, 3, s2, s2] {
        bail!("{file}: big has shape {:?}, the model needs [N, 3, {s2}, {s2}]", big.1);
    }
    let noise = tensor_f32(&st, "noise", 2).with_context(|| format!("{file}"))?;
    expect_shape(&noise.1, &[n, l], "noise", &file)?;
    let weights_t = tensor_f32(&st, "weights", 2).with_context(|| format!("{file}"))?;
    expect_shape(&weights_t.1, &[n, t], "weights", &file)?;
    let mut ints = Vec::new();
    for name in ["ids", "labels", "attention_mask"] {
        let (v, shape) = tensor_i64(&st, name).with_context(|| format!("{file}"))?;
        expect_shape(&shape, &[n, t], name, &file)?;
        ints.push(v);
    }
    let vocab = config.vocab_size as i64;
    if let Some(bad) = ints[0].iter().chain(&ints[1]).find(|&&v| !(0..vocab).contains(&v)) {
        bail!("{file}: token id {bad} is outside the vocabulary of {vocab}");
    }
    let (win, shape) = tensor_i64(&st, "sr_window").with_context(|| format!("{file}"))?;
    expect_shape(&shape, &[n, 2], "sr_window", &file)?;
    let windows: Vec<(i32, i32)> = win
        .chunks_exact(2)
        .map(|w| (w[0].clamp(0, i32::MAX as i64) as i32, w[1].clamp(0, i32::MAX as i64) as i32))
        .collect();
    let [ids, labels, attention] = <[Vec<i64>; 3]>::try_from(ints).map_err(|_| anyhow::anyhow!("three int tensors"))?;
    let int = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [n, t]), &device);
    let inputs = Inputs {
        big: Tensor::from_data(TensorData::new(big.0, [n, 3, s2, s2]), &device),
        imgs: None,
        noise: Tensor::from_data(TensorData::new(noise.0, [n, l]), &device),
        ids: int(ids),
        labels: int(labels),
        attention: Tensor::from_data(
            TensorData::new(attention.iter().map(|&m| m as f32).collect::<Vec<_>>(), [n, t]),
            &device,
        ),
        weights: Tensor::from_data(TensorData::new(weights_t.0, [n, t]), &device),
        window: Tensor::from_data(TensorData::new(window_mask(&windows, g, config.sr_window), [n, g, g]), &device),
    };
    let losses = model.forward(inputs);
    let v = |t: Tensor<B, 1>| t.into_scalar().elem::<f64>();
    let (mim, sr, mlm) = (v(losses.mim), v(losses.sr), v(losses.mlm));
    Ok(Output { mim, sr, mlm, total: mim + sr + mlm })
}

fn expect_shape(got: &[usize], want: &[usize], name: &str, file: &impl std::fmt::Display) -> anyhow::Result<()> {
    if got != want {
        bail!("{file}: {name} has shape {got:?}, expected {want:?}");
    }
    Ok(())
}

/// A float tensor of `rank` dimensions (f32, or f64 narrowed).
fn tensor_f32(st: &SafeTensors, name: &str, rank: usize) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
    let view = st.tensor(name).with_context(|| format!("no tensor {name:?}"))?;
    if view.shape().len() != rank {
        bail!("{name} has {} dimensions, expected {rank}", view.shape().len());
    }
    let data = view.data();
    let values = match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F64 => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32).collect(),
        other => bail!("{name} is {other:?}, expected F32"),
    };
    Ok((values, view.shape().to_vec()))
}

/// An integer tensor (i64, or i32 widened).
fn tensor_i64(st: &SafeTensors, name: &str) -> anyhow::Result<(Vec<i64>, Vec<usize>)> {
    let view = st.tensor(name).with_context(|| format!("no tensor {name:?}"))?;
    let data = view.data();
    let values = match view.dtype() {
        Dtype::I64 => data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).collect(),
        Dtype::I32 => data.chunks_exact(4).map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect(),
        other => bail!("{name} is {other:?}, expected I64"),
    };
    Ok((values, view.shape().to_vec()))
}
