//! `ecamp bench loader`: the loader's CPU side against (a) pure zune-jpeg decoding of the same
//! bytes from memory on the same number of threads and (b) the official ECAMP CPU pipeline
//! reproduced in Python (`benches/loader_peer/peer.py`: torch DataLoader, PIL, torchvision
//! transforms, HF tokenizers, the official masking) with the same number of workers.
//!
//! The loader leaves resize/flip/normalise to the device; the Python pipeline does them on its
//! CPU workers. So the comparison is reported twice: loader alone, and loader plus that pixel
//! work run by the consumer on burn's ndarray (CPU) backend (`ecamp_model::augment`: crop,
//! bicubic 448, flip, normalise, bicubic 224), which is what a CPU-only run pays.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use burn::backend::NdArray;
use ecamp_ingest::distill::Rules;
use ecamp_ingest::image::ImageConfig;
use ecamp_ingest::{IngestOptions, SourceSpec, ingest};
use ecamp_loader::text::{TextConfig, TextPrep};
use ecamp_loader::{Batch, Cursor, Loader, LoaderConfig};
use ecamp_model::SIDE_BIG;
use ecamp_model::augment::{AugmentError, Canvases};
use ecamp_store::{Dataset, Location, SnapshotRef, TableKind};

use super::median;
use crate::cmd::print_json;

/// Loader throughput against zune-jpeg decoding and the official Python pipeline.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Phantom studies to ingest when no --dataset is given. The default makes an epoch of ~5 s
    /// and ~620 MB (more than the prefetch budget), so the epoch's start (first row groups read,
    /// queues filling), which training hides by opening the next epoch early, weighs little.
    #[arg(value_parser = clap::value_parser!(u64).range(1..=1_000_000), long, default_value_t = 8000)]
    images: u64,
    /// Phantom image side in pixels.
    #[arg(value_parser = clap::value_parser!(u32).range(16..=4096), long, default_value_t = 512)]
    size: u32,
    /// Existing dataset URL to read instead of ingesting phantoms (the Python peer needs a local one).
    #[arg(long)]
    dataset: Option<String>,
    /// CPU threads of the loader, of the zune peer, and DataLoader workers of the Python peer.
    #[arg(value_parser = super::super::parse::count::<usize>, long, default_value_t = 2)]
    workers: usize,
    /// Global batch size.
    #[arg(value_parser = super::super::parse::count::<usize>, long, default_value_t = 32)]
    batch_size: usize,
    /// Prefetch budget in MiB.
    #[arg(value_parser = super::super::parse::count::<u64>, long, default_value_t = 256)]
    budget_mib: u64,
    /// Rounds of each contender (alternating); medians are reported.
    #[arg(value_parser = super::super::parse::count::<usize>, long, default_value_t = 3)]
    rounds: usize,
    /// WordPiece tokenizer JSON (the official one by default).
    #[arg(long, default_value = "../shared/data/mimic_wordpiece.json")]
    tokenizer: PathBuf,
    /// Python with torch, torchvision, pillow, tokenizers and pyarrow (`benches/loader_peer/setup.sh`
    /// makes one); without it the Python peer is skipped.
    #[arg(long, env = "ECAMP_BENCH_PYTHON")]
    python: Option<PathBuf>,
    /// Scratch folder (default: a temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the loader benchmark.
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::tempdir().context("cannot create a scratch folder")?;
    let root = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let url = match &a.dataset {
        Some(u) => u.clone(),
        None => {
            let url = format!("file://{}/dataset", root.display());
            eprintln!("ingesting {} phantom studies of {} px into {url} ...", a.images, a.size);
            let mut opts = IngestOptions::new(&url, vec![SourceSpec::Phantom { count: a.images, seed: 5 }]);
            opts.workers = a.workers.max(1);
            opts.image = ImageConfig { size: a.size, ..Default::default() };
            opts.source_opts.phantom_size = a.size;
            let rt = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || ingest(&opts, Arc::new(Rules::new()), &rt)).await??;
            url
        }
    };
    let tokenizer = tokenizers::Tokenizer::from_file(&a.tokenizer)
        .map_err(|e| anyhow::anyhow!("cannot load tokenizer {}: {e}", a.tokenizer.display()))?;
    let text = TextPrep::new(&tokenizer, TextConfig::default())?;
    let cfg = LoaderConfig {
        seed: 1,
        batch_size: a.batch_size,
        workers: a.workers.max(1),
        prefetch_bytes: a.budget_mib << 20,
        ..Default::default()
    };
    let open = |cfg: LoaderConfig| {
        let (u, t) = (url.clone(), text.clone());
        tokio::task::spawn_blocking(move || Loader::open(&u, &SnapshotRef::LATEST, t, cfg))
    };
    // The same loader decoding every image whole: what the crop-region decode saves.
    let whole = Arc::new(open(LoaderConfig { region_decode: false, ..cfg.clone() }).await??);
    let loader = Arc::new(open(cfg).await??);
    if loader.batches_per_epoch() == 0 {
        anyhow::bail!(
            "{url} has {} samples, fewer than one batch of {}: nothing to measure",
            loader.rows(),
            a.batch_size
        );
    }
    let jpegs = Arc::new(read_images(&url).await?);
    let workers = a.workers.max(1);
    let python_dir = local_dir(&url);

    let (mut load, mut load_nd, mut load_host, mut load_whole) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut zune, mut python) = (Vec::new(), Vec::new());
    let mut last = None;
    for round in 0..a.rounds.max(1) {
        let l = loader.clone();
        let (rate, tele) = tokio::task::spawn_blocking(move || epoch_rate(&l, round as u64, Pixels::Device)).await??;
        load.push(rate);
        last = Some(tele);
        let l = whole.clone();
        load_whole.push(tokio::task::spawn_blocking(move || epoch_rate(&l, round as u64, Pixels::Device)).await??.0);
        for (how, rates) in [(Pixels::Ndarray, &mut load_nd), (Pixels::Host, &mut load_host)] {
            let l = loader.clone();
            rates.push(tokio::task::spawn_blocking(move || epoch_rate(&l, round as u64, how)).await??.0);
        }
        let j = jpegs.clone();
        zune.push(tokio::task::spawn_blocking(move || zune_rate(&j, workers)).await??);
        if let (Some(py), Some(dir)) = (&a.python, &python_dir) {
            python.push(python_rate(py, dir, &a.tokenizer, workers, a.batch_size)?);
        }
    }
    let tele = last.unwrap_or_default();
    let (load, zune, load_whole) = (median(&mut load), median(&mut zune), median(&mut load_whole));
    let (load_nd, load_host) = (median(&mut load_nd), median(&mut load_host));
    let py = (!python.is_empty()).then(|| median(&mut python));
    let result = serde_json::json!({
        "benchmark": "loader", "samples": loader.rows(), "canvas": loader.canvas(), "workers": workers,
        "batch_size": a.batch_size, "rounds": a.rounds,
        "loader_samples_per_s": load, "loader_with_ndarray_augment_samples_per_s": load_nd,
        "loader_with_host_augment_samples_per_s": load_host,
        "zune_decode_samples_per_s": zune, "python_samples_per_s": py,
        "ratio_vs_zune": load / zune, "target_vs_zune": 0.9,
        "loader_whole_image_decode_samples_per_s": load_whole, "ratio_whole_image_decode_vs_zune": load_whole / zune,
        "ratio_vs_python": py.map(|p| load / p), "ratio_vs_python_with_ndarray_augment": py.map(|p| load_nd / p),
        "ratio_vs_python_with_host_augment": py.map(|p| load_host / p),
        "target_vs_python": 3.0,
        "wait_p50_ms": tele.wait_p50.as_secs_f64() * 1e3, "wait_p99_ms": tele.wait_p99.as_secs_f64() * 1e3,
        "decode_ms_per_sample": tele.decode_time_per_sample.as_secs_f64() * 1e3,
        "bytes_fetched": tele.bytes_fetched, "budget_bytes": tele.budget_bytes,
    });
    if a.json {
        print_json(&result)?;
    } else {
        println!(
            "loader bench: {} samples, canvas {:?}, {workers} thread(s), batch {}, {} round(s), {}",
            loader.rows(),
            loader.canvas(),
            a.batch_size,
            a.rounds,
            ecamp_store::redact::url(&url)
        );
        println!("  zune-jpeg decode from memory     : {zune:>8.1} samples/s");
        println!(
            "  ecamp loader (CPU side)          : {load:>8.1} samples/s  ratio {:.2}x (crop-region decode; target >= 0.9x)",
            load / zune
        );
        println!("  ecamp loader, whole-image decode : {load_whole:>8.1} samples/s  ratio {:.2}x", load_whole / zune);
        println!("  ecamp loader + augment on ndarray: {load_nd:>8.1} samples/s");
        println!("  ecamp loader + augment on host   : {load_host:>8.1} samples/s");
        match py {
            Some(p) => {
                println!("  official pipeline (Python)       : {p:>8.1} samples/s");
                println!(
                    "  ratio vs Python: {:.2}x without, {:.2}x / {:.2}x with the pixel work on ndarray / host (target >= 3x)",
                    load / p,
                    load_nd / p,
                    load_host / p
                );
            }
            None => println!("  official pipeline (Python)       : skipped (pass --python, local dataset only)"),
        }
        println!(
            "  consumer wait p50 {:.2} ms, p99 {:.2} ms; {:.2} ms CPU per sample",
            tele.wait_p50.as_secs_f64() * 1e3,
            tele.wait_p99.as_secs_f64() * 1e3,
            tele.decode_time_per_sample.as_secs_f64() * 1e3
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Samples per second over one epoch; with `augment`, the consumer also does the pixel work the
/// device would do.
fn epoch_rate(loader: &Loader, epoch: u64, augment: Pixels) -> anyhow::Result<(f64, ecamp_loader::Telemetry)> {
    let mut aug = Augment::new();
    let mut epoch = loader.epoch(Cursor { epoch, samples: 0 })?;
    let started = Instant::now();
    let cpu0 = process_cpu_secs();
    let mut n = 0;
    for batch in epoch.by_ref() {
        let batch = batch?;
        aug.run(&batch, augment)?;
        n += batch.len();
    }
    let wall = started.elapsed().as_secs_f64();
    eprintln!(
        "  loader{epoch_no}: {n} samples in {wall:.2} s, process CPU {:.2} cores",
        (process_cpu_secs() - cpu0) / wall,
        epoch_no = augment.label()
    );
    Ok((n as f64 / wall, epoch.telemetry()))
}

/// User + system CPU seconds of this process so far.
fn process_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// Where the consumer does the device's pixel work in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pixels {
    /// Not at all (left to a device): the loader alone.
    Device,
    /// burn's ndarray backend (`ecamp_model::augment`).
    Ndarray,
    /// The same arithmetic as plain host code (`ecamp_model::host::augment_host`).
    Host,
}

impl Pixels {
    fn label(self) -> &'static str {
        match self {
            Pixels::Device => "",
            Pixels::Ndarray => " + augment on ndarray",
            Pixels::Host => " + augment on host",
        }
    }
}

/// The device's pixel work run on burn's ndarray (CPU) backend: crop, bicubic 448, flip,
/// normalise, bicubic 224 (`ecamp_model::augment`).
struct Augment {
    device: burn::tensor::Device<NdArray>,
    crops: Vec<(u32, u32, u32, u32)>,
}

impl Augment {
    fn new() -> Self {
        Augment { device: Default::default(), crops: Vec::new() }
    }

    fn run(&mut self, b: &Batch, how: Pixels) -> Result<(), AugmentError> {
        if b.is_empty() || how == Pixels::Device {
            return Ok(());
        }
        self.crops.clear();
        self.crops.extend(b.crops.iter().map(|c| (c.top, c.left, c.height, c.width)));
        let canvases = Canvases {
            pixels: &b.pixels,
            n: b.len(),
            height: b.canvas_height,
            width: b.canvas_width,
            crops: &self.crops,
            flips: &b.flips,
        };
        if how == Pixels::Ndarray {
            let (big, imgs) = ecamp_model::augment::<NdArray>(&self.device, &canvases, SIDE_BIG)?;
            // Wait for the values, as a training step would before using them.
            let _ = (big.into_data(), imgs.into_data());
        } else {
            ecamp_model::host::augment_host(&canvases, SIDE_BIG)?;
        }
        Ok(())
    }
}

/// Every stored JPEG of the latest snapshot, in memory.
async fn read_images(url: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let ds = Dataset::open(url).await?;
    let snap = ds.resolve(&SnapshotRef::LATEST).await?;
    let files = snap.table(TableKind::Samples).map(|t| t.files.clone()).unwrap_or_default();
    Ok(ds.read_samples(&files).await?.into_iter().map(|r| r.image).collect())
}

/// Samples per second of strict zune-jpeg grayscale decoding, `workers` threads, from memory.
fn zune_rate(jpegs: &[Vec<u8>], workers: usize) -> anyhow::Result<f64> {
    let per = jpegs.len().div_ceil(workers).max(1);
    let started = Instant::now();
    let ok = std::thread::scope(|s| {
        let hs: Vec<_> = jpegs
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    part.iter().all(|j| ecamp_loader::sample::decode_gray(j, 1 << 14, 1 << 14, &mut out).is_ok())
                })
            })
            .collect();
        hs.into_iter().all(|h| h.join().unwrap_or(false))
    });
    anyhow::ensure!(ok, "a stored image failed to decode");
    Ok(jpegs.len() as f64 / started.elapsed().as_secs_f64())
}

/// The dataset's folder when it is on local disk (the Python peer reads Parquet files directly).
fn local_dir(url: &str) -> Option<PathBuf> {
    match Location::parse(url).ok()?.backend() {
        ecamp_store::Backend::File => {
            let path = url.strip_prefix("file://").unwrap_or(url);
            Some(PathBuf::from(path))
        }
        _ => None,
    }
}

/// Samples per second of the Python peer (one JSON line on its stdout).
fn python_rate(python: &Path, dir: &Path, tokenizer: &Path, workers: usize, batch: usize) -> anyhow::Result<f64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/loader_peer/peer.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg("--dataset-dir")
        .arg(dir)
        .arg("--tokenizer")
        .arg(tokenizer)
        .args(["--workers", &workers.to_string(), "--batch-size", &batch.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    anyhow::ensure!(out.status.success(), "{} {} failed ({})", python.display(), script.display(), out.status);
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).with_context(|| format!("unexpected peer output: {line}"))?;
    v["samples_per_s"].as_f64().context("peer output without samples_per_s")
}
