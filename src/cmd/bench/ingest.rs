//! `ecamp bench ingest`: ingest throughput against a plain copy of the same bytes into the same store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use ecamp_ingest::distill::Rules;
use ecamp_ingest::image::{Gray, ImageConfig, prepare_gray};
use ecamp_ingest::phantom::{PhantomSpec, generate};
use ecamp_ingest::{IngestOptions, SourceSpec, ingest};
use ecamp_store::Location;
use object_store::{ObjectStoreExt, PutPayload};

use super::median;
use crate::cmd::print_json;

/// Ingest throughput (manifest of ready 512 px grayscale JPEGs, passed through) against a plain
/// copy of the same bytes into the same store with the same number of threads.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of images.
    #[arg(value_parser = clap::value_parser!(u64).range(1..=1_000_000), long, default_value_t = 1000)]
    images: u64,
    /// Image side in pixels.
    #[arg(value_parser = clap::value_parser!(u32).range(16..=4096), long, default_value_t = 512)]
    size: u32,
    /// Threads for both contenders.
    #[arg(value_parser = super::super::parse::count::<usize>, long, default_value_t = 2)]
    workers: usize,
    /// Scratch folder for the source images (default: a temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Store URL both contenders write to (default: file:// under the scratch folder).
    #[arg(long)]
    store: Option<String>,
    /// Alternating rounds of copy and ingest; medians are reported.
    #[arg(value_parser = super::super::parse::count::<usize>, long, default_value_t = 3)]
    rounds: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the ingest benchmark.
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let Args { images, size, workers, dir, store, rounds, json } = a;
    let tmp = tempfile::tempdir().context("cannot create a scratch folder")?;
    let root = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let src = root.join("src");
    std::fs::create_dir_all(&src).with_context(|| format!("cannot create {}", src.display()))?;
    let store_url = store.unwrap_or_else(|| format!("file://{}/store", root.display()));

    eprintln!("preparing {images} phantom JPEGs of {size} px in {} ...", src.display());
    let cfg = ImageConfig { size, ..Default::default() };
    let mut manifest = String::from("image,report,sample_id\n");
    let mut total_bytes = 0u64;
    for i in 0..images {
        let p = generate(&PhantomSpec { seed: 11, size }, i);
        let img = prepare_gray(&Gray { width: p.width, height: p.height, pixels: p.pixels }, &cfg)
            .map_err(|e| anyhow::anyhow!("phantom {i}: {e}"))?;
        let name = format!("{}.jpg", p.sample_id);
        std::fs::write(src.join(&name), &img.jpeg)?;
        total_bytes += img.jpeg.len() as u64;
        manifest.push_str(&format!("{name},\"{}\",{}\n", p.report.replace('"', "'"), p.sample_id));
    }
    std::fs::write(src.join("manifest.csv"), manifest)?;
    let names: Vec<PathBuf> = std::fs::read_dir(&src)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();

    // Rounds alternate peer and contender into fresh prefixes, so page-cache and write-back
    // state hit both alike; medians are reported.
    let decode_rate = images as f64 / decode_secs(&names, &cfg, workers).await?;
    let (mut copy_rates, mut ingest_rates, mut passthrough) = (Vec::new(), Vec::new(), 0);
    for round in 0..rounds.max(1) {
        let base = store_url.trim_end_matches('/');
        copy_rates.push(images as f64 / copy_secs(&names, &format!("{base}/copy-{round}"), workers).await?);
        let (secs, summary) = ingest_secs(&src, &format!("{base}/dataset-{round}"), &cfg, workers).await?;
        anyhow::ensure!(summary.ingested as u64 == images, "ingested {} of {images} images", summary.ingested);
        passthrough = summary.passthrough;
        ingest_rates.push(images as f64 / secs);
    }
    let copy_rate = median(&mut copy_rates);
    let ingest_rate = median(&mut ingest_rates);
    let result = serde_json::json!({
        "benchmark": "ingest", "images": images, "size": size, "workers": workers, "rounds": rounds,
        "bytes": total_bytes, "passthrough": passthrough,
        "copy_images_per_s": copy_rates, "ingest_images_per_s": ingest_rates,
        "median_copy_images_per_s": copy_rate, "median_ingest_images_per_s": ingest_rate,
        "decode_only_images_per_s": decode_rate,
        "ratio": ingest_rate / copy_rate, "target": 0.5,
    });
    if json {
        print_json(&result)?;
    } else {
        println!(
            "ingest bench: {images} JPEGs of {size} px ({:.1} MiB), {workers} thread(s), {rounds} round(s), store {}",
            total_bytes as f64 / 1048576.0,
            ecamp_store::redact::url(&store_url)
        );
        let show = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
        println!("  plain copy   : {copy_rate:>8.1} images/s (median of {})", show(&copy_rates));
        println!(
            "  ecamp ingest : {ingest_rate:>8.1} images/s (median of {}; {passthrough} passed through)",
            show(&ingest_rates)
        );
        println!("  zune-jpeg decode only (ceiling of validated ingest): {decode_rate:>8.1} images/s");
        println!("  ratio ingest/copy = {:.2}x (target >= 0.5x)", ingest_rate / copy_rate);
    }
    Ok(ExitCode::SUCCESS)
}

/// Seconds to read each file and put its bytes under `url`, `workers` threads.
async fn copy_secs(names: &[PathBuf], url: &str, workers: usize) -> anyhow::Result<f64> {
    let loc = Location::parse(url).context("bad --store")?;
    let rt = tokio::runtime::Handle::current();
    let chunks: Vec<Vec<PathBuf>> =
        (0..workers.max(1)).map(|w| names.iter().skip(w).step_by(workers.max(1)).cloned().collect()).collect();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|files| {
                    let (loc, rt) = (loc.clone(), rt.clone());
                    s.spawn(move || -> anyhow::Result<()> {
                        for f in files {
                            let bytes = std::fs::read(&f)?;
                            let name = f.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                            rt.block_on(loc.store().put(&loc.path(&name), PutPayload::from(bytes)))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("copy thread panicked"))?)
        })
    })
    .await??;
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds to decode every file from memory with zune-jpeg, `workers` threads.
async fn decode_secs(names: &[PathBuf], cfg: &ImageConfig, workers: usize) -> anyhow::Result<f64> {
    let blobs: Vec<Vec<u8>> = names.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let cfg = cfg.clone();
    let per = blobs.len().div_ceil(workers.max(1)).max(1);
    let started = Instant::now();
    let ok = tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            let hs: Vec<_> = blobs
                .chunks(per)
                .map(|part| {
                    let cfg = &cfg;
                    s.spawn(move || part.iter().all(|b| ecamp_ingest::image::decode_gray(b, cfg).is_ok()))
                })
                .collect();
            hs.into_iter().all(|h| h.join().unwrap_or(false))
        })
    })
    .await?;
    anyhow::ensure!(ok, "a benchmark image failed to decode");
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds for a full ingest of the manifest in `src` into `url`.
async fn ingest_secs(
    src: &std::path::Path,
    url: &str,
    cfg: &ImageConfig,
    workers: usize,
) -> anyhow::Result<(f64, ecamp_ingest::IngestSummary)> {
    let mut opts = IngestOptions::new(url, vec![SourceSpec::Manifest(src.join("manifest.csv"))]);
    opts.workers = workers.max(1);
    opts.image = cfg.clone();
    let rt = tokio::runtime::Handle::current();
    let started = Instant::now();
    let summary = tokio::task::spawn_blocking(move || ingest(&opts, Arc::new(Rules::new()), &rt)).await??;
    Ok((started.elapsed().as_secs_f64(), summary))
}
