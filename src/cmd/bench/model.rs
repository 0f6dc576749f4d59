//! `ecamp bench model`: the training step of the tiny (or base) model on burn's ndarray backend
//! against the same architecture in PyTorch on the CPU (`benches/model_peer/ecamp_torch.py
//! bench-step`), measured in the same run with the same threads, batch and optimizer. With
//! `--backend cuda` both run on GPU 0 (the peer with `torch.autocast` at the same precision),
//! and the model FLOP rate is reported.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::backend::{Autodiff, NdArray};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::ElementConversion;
use burn::tensor::backend::AutodiffBackend;
use ecamp_model::train::TrainConfig;
use ecamp_model::train::inputs::synthetic;
use ecamp_model::train::optim::TimmAdamW;
use ecamp_model::{EcampConfig, Precision};

use super::median;
use crate::cmd::pretrain::{BackendArg, PrecisionArg};
use crate::cmd::print_json;

/// Training-step time against PyTorch: on the CPU, or both on GPU 0 with `--backend cuda`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model preset.
    #[arg(long, default_value = "tiny", value_parser = ["tiny", "base"])]
    preset: String,
    /// Samples per step.
    #[arg(value_parser = super::super::parse::count::<usize>, long, default_value_t = 16)]
    batch_size: usize,
    /// Timed steps of each contender.
    #[arg(value_parser = super::super::parse::count::<usize>, long, default_value_t = 30)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// CPU threads of both (ndarray's rayon pool, torch.set_num_threads); default: all cores.
    #[arg(value_parser = super::super::parse::count::<usize>, long)]
    threads: Option<usize>,
    /// Python with torch (`benches/loader_peer/setup.sh` makes one); without it only ecamp runs.
    #[arg(long, env = "ECAMP_BENCH_PYTHON")]
    python: Option<PathBuf>,
    /// Backend of ecamp's step; the PyTorch peer runs on the same device.
    #[arg(long, value_enum, default_value = "ndarray")]
    backend: BackendArg,
    /// Compute dtype of the matmuls (half dtypes need `--backend cuda`).
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the benchmark.
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let config = EcampConfig::preset(&a.preset).context("unknown preset")?.with_hidden_dropout(0.1);
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    // rayon reads this when its global pool starts (at the first ndarray op).
    // SAFETY: set before any thread that reads the environment is started by this benchmark.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    let (steps, warmup, n) = (a.steps.max(1), a.warmup, a.batch_size);
    let (c, precision, backend) = (config.clone(), Precision::from(a.precision), a.backend);
    let mut ours = tokio::task::spawn_blocking(move || match backend {
        BackendArg::Ndarray => ecamp_steps::<Autodiff<NdArray>>(&c, n, warmup, steps, precision, &Default::default()),
        BackendArg::Cuda => cuda::steps(&c, n, warmup, steps, precision),
    })
    .await??;
    let ecamp_ms = median(&mut ours);
    let torch_ms = match &a.python {
        Some(py) => Some(torch_steps(py, &a.preset, n, warmup, steps, threads, backend, precision)?),
        None => None,
    };
    let ratio = torch_ms.map(|t| ecamp_ms / t);
    // Model FLOPs (forward + backward = 3 × forward), as MFU counts them.
    let tflops = 3.0 * config.forward_flops_per_sample() * n as f64 / (ecamp_ms * 1e-3) / 1e12;
    let device = format!("{backend:?}").to_lowercase();
    if a.json {
        print_json(&serde_json::json!({
            "preset": a.preset, "batch_size": n, "threads": threads, "steps": steps, "backend": device,
            "precision": precision.name(), "ecamp_step_ms": ecamp_ms, "samples_per_s": n as f64 / (ecamp_ms * 1e-3),
            "model_tflops_per_s": tflops, "pytorch_step_ms": torch_ms, "ratio_ecamp_over_pytorch": ratio,
        }))?;
    } else {
        println!("{} training step, batch {n}, {threads} threads, median of {steps} steps:", a.preset);
        let rate = if tflops < 1.0 {
            format!("{:.1} model GFLOP/s", tflops * 1e3)
        } else {
            format!("{tflops:.1} model TFLOP/s")
        };
        println!(
            "  ecamp (burn {device}, {}) : {ecamp_ms:>8.1} ms ({:.1} samples/s, {rate})",
            precision.name(),
            n as f64 / (ecamp_ms * 1e-3)
        );
        match (torch_ms, ratio) {
            (Some(t), Some(r)) => println!(
                "  PyTorch {} (eager)  : {t:>8.1} ms ({:.1} samples/s)\n  ratio ecamp / PyTorch: {r:.2}×",
                if backend == BackendArg::Cuda { "CUDA" } else { "CPU" },
                n as f64 / (t * 1e-3)
            ),
            _ => println!("  PyTorch: skipped (no --python)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Milliseconds per full step (forward, backward, AdamW), each step synced to the device.
fn ecamp_steps<A: AutodiffBackend>(
    config: &EcampConfig,
    n: usize,
    warmup: usize,
    steps: usize,
    precision: Precision,
    device: &A::Device,
) -> anyhow::Result<Vec<f64>> {
    if !precision.supported::<A>(device) {
        bail!("precision {} needs a backend with half floats (--backend cuda)", precision.name());
    }
    A::seed(device, 1);
    let mut model = config.init::<A>(device);
    let train = TrainConfig::tiny();
    let mut optim = TimmAdamW::new(&train).init::<A, ecamp_model::Ecamp<A>>();
    let batches: Vec<_> = (0..4).map(|_| synthetic::<A>(config, n, device)).collect();
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let losses = {
            let _autocast = ecamp_model::net::autocast::scope(precision);
            model.forward(batches[i % batches.len()].clone())
        };
        let total = losses.total.clone().into_scalar().elem::<f64>();
        if !total.is_finite() {
            bail!("step {i}: the loss is not finite");
        }
        let grads = GradientsParams::from_grads(losses.total.backward(), &model);
        model = optim.step(1e-3, model, grads);
        A::sync(device).map_err(|e| anyhow::anyhow!("step {i}: the device failed: {e:?}"))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if i >= warmup {
            times.push(ms);
        } else {
            // On a GPU the first steps include compiling every kernel: show that they end.
            eprintln!("warmup step {}/{warmup}: {ms:.1} ms", i + 1);
        }
    }
    Ok(times)
}

#[cfg(feature = "cuda")]
mod cuda {
    //! The step on GPU 0.
    use super::*;

    pub fn steps(c: &EcampConfig, n: usize, warmup: usize, steps: usize, p: Precision) -> anyhow::Result<Vec<f64>> {
        let device = ecamp_model::cuda::device(0)?;
        crate::cmd::with_cuda_cause(super::ecamp_steps::<Autodiff<burn::backend::Cuda>>(
            c, n, warmup, steps, p, &device,
        ))
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    //! Without the `cuda` feature the CUDA backend is not compiled in.
    use super::*;

    pub fn steps(_: &EcampConfig, _: usize, _: usize, _: usize, _: Precision) -> anyhow::Result<Vec<f64>> {
        bail!(crate::cmd::downstream::NO_CUDA)
    }
}

/// The PyTorch peer's median step in milliseconds, on the CPU or GPU 0 as `backend` says.
#[allow(clippy::too_many_arguments)]
fn torch_steps(
    py: &PathBuf,
    preset: &str,
    n: usize,
    warmup: usize,
    steps: usize,
    threads: usize,
    backend: BackendArg,
    precision: Precision,
) -> anyhow::Result<f64> {
    let script = std::path::Path::new("benches/model_peer/ecamp_torch.py");
    if !script.is_file() {
        bail!("{} not found: run the benchmark from the repository root", script.display());
    }
    let out = std::process::Command::new(py)
        .arg(script)
        .args(["bench-step", "--preset", preset])
        .args(["--batch-size", &n.to_string(), "--steps", &steps.to_string(), "--warmup", &warmup.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(match (backend, precision) {
            (BackendArg::Ndarray, _) => ["--device", "cpu", "--amp", "none"],
            (BackendArg::Cuda, Precision::F32) => ["--device", "cuda", "--amp", "none"],
            (BackendArg::Cuda, Precision::Bf16) => ["--device", "cuda", "--amp", "bf16"],
            (BackendArg::Cuda, Precision::F16) => ["--device", "cuda", "--amp", "f16"],
        })
        .output()
        .with_context(|| format!("cannot run {}", py.display()))?;
    if !out.status.success() {
        bail!("the PyTorch peer failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or(""))
        .with_context(|| format!("unexpected output from the PyTorch peer: {text}"))?;
    v["step_ms_median"].as_f64().context("the PyTorch peer printed no step_ms_median")
}
