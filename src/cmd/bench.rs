//! `ecamp bench`: benchmarks that report ratios against a peer measured in the same run.

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

use super::print_json;

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Ingest throughput (manifest of ready 512 px grayscale JPEGs, passed through) against a
    /// plain copy of the same bytes into the same store with the same number of threads.
    Ingest {
        /// Number of images.
        #[arg(long, default_value_t = 1000)]
        images: u64,
        /// Image side in pixels.
        #[arg(long, default_value_t = 512)]
        size: u32,
        /// Threads for both contenders.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Scratch folder for the source images (default: a temporary folder).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL both contenders write to (default: file:// under the scratch folder).
        #[arg(long)]
        store: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a benchmark.
pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::Ingest { images, size, workers, dir, store, json } = cmd;
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

    // Peer: read each file and put its bytes into the store, `workers` threads.
    let loc = Location::parse(&format!("{}/copy", store_url.trim_end_matches('/'))).context("bad --store")?;
    let rt = tokio::runtime::Handle::current();
    let started = Instant::now();
    let copy_loc = loc.clone();
    let chunks: Vec<Vec<PathBuf>> =
        (0..workers.max(1)).map(|w| names.iter().skip(w).step_by(workers.max(1)).cloned().collect()).collect();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|files| {
                    let (loc, rt) = (copy_loc.clone(), rt.clone());
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
    let copy_s = started.elapsed().as_secs_f64();

    // Ceiling: decoding the same JPEGs from memory with zune-jpeg (the validation ingest must do).
    let blobs: Vec<Vec<u8>> = names.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let started = Instant::now();
    let decode_cfg = cfg.clone();
    let per = blobs.len().div_ceil(workers.max(1)).max(1);
    tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            for part in blobs.chunks(per) {
                let cfg = &decode_cfg;
                s.spawn(move || part.iter().all(|b| ecamp_ingest::image::decode_gray(b, cfg).is_ok()));
            }
        })
    })
    .await?;
    let decode_s = started.elapsed().as_secs_f64();

    // Contender: the real ingest of the same images (validation, hashing, distillation, Parquet, commits).
    let mut opts = IngestOptions::new(
        format!("{}/dataset", store_url.trim_end_matches('/')),
        vec![SourceSpec::Manifest(src.join("manifest.csv"))],
    );
    opts.workers = workers.max(1);
    opts.image = cfg;
    let rt = tokio::runtime::Handle::current();
    let started = Instant::now();
    let summary = tokio::task::spawn_blocking(move || ingest(&opts, Arc::new(Rules::new()), &rt)).await??;
    let ingest_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(summary.ingested as u64 == images, "ingested {} of {images} images", summary.ingested);

    let copy_rate = images as f64 / copy_s;
    let ingest_rate = images as f64 / ingest_s;
    let result = serde_json::json!({
        "benchmark": "ingest", "images": images, "size": size, "workers": workers,
        "bytes": total_bytes, "passthrough": summary.passthrough,
        "copy_images_per_s": copy_rate, "ingest_images_per_s": ingest_rate,
        "decode_only_images_per_s": images as f64 / decode_s,
        "ratio": ingest_rate / copy_rate, "target": 0.5,
    });
    if json {
        print_json(&result)?;
    } else {
        println!(
            "ingest bench: {images} JPEGs of {size} px ({:.1} MiB), {workers} thread(s), store {store_url}",
            total_bytes as f64 / 1048576.0
        );
        println!("  plain copy : {copy_rate:>8.1} images/s");
        println!("  ecamp ingest: {ingest_rate:>8.1} images/s ({} passed through)", summary.passthrough);
        println!("  zune-jpeg decode only (ceiling of validated ingest): {:>8.1} images/s", images as f64 / decode_s);
        println!("  ratio ingest/copy = {:.2}x (target >= 0.5x)", ingest_rate / copy_rate);
    }
    Ok(ExitCode::SUCCESS)
}
