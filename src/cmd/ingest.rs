//! `ecamp ingest`: add samples from sources to a dataset, incrementally and in parallel.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ecamp_ingest::image::ImageConfig;
use ecamp_ingest::{IngestOptions, OnError, SourceOptions, SourceSpec, ingest};

use super::{distiller, human_bytes, print_json};

/// Arguments of `ecamp ingest`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Sources (repeat --source):
  phantom:COUNT[:SEED]   built-in synthetic chest radiographs with reports and ground truth
  mimic-cxr:ROOT         MIMIC-CXR-JPG 2.0 layout; needs --reports (the MIMIC-CXR reports tree)
  dicom:DIR              DICOM files; needs --reports CSV (StudyInstanceUID or AccessionNumber, report)
  manifest:FILE          CSV or JSONL rows: image (path or URL), report, optional sample_id, subject_id, study_id, view
                         (without sample_id the id is the image's absolute path, or its URL)
  iu-xray:DIR            IU X-ray: DIR/ecgen-radiology/*.xml and DIR/images/<parentImage id>.png|jpg|jpeg (any case)

Re-running over a grown source adds only new samples (same sample id or same image bytes are skipped).
Writers running at once, partitioned or not, store each sample once: every batch is checked against
what the others committed meanwhile before it commits.
Bad inputs are rejected with a reason and listed as JSONL (--rejects, default: _ecamp/rejects/ in the dataset).
Exit status: 0 when the run completed (rejects included), 2 when it stopped on an error
(with --on-error fail: the first bad input); batches committed before an error stay committed.")]
pub struct Args {
    /// Dataset URL (created if absent).
    #[arg(long, env = "ECAMP_DATASET")]
    dataset: String,
    /// A source KIND:ARG (repeatable).
    #[arg(long = "source", required = true, value_name = "KIND:ARG")]
    sources: Vec<SourceSpec>,
    /// Reports: the MIMIC-CXR reports tree, or the DICOM reports CSV.
    #[arg(long)]
    reports: Option<PathBuf>,
    /// Keep only these view positions (mimic-cxr), e.g. PA,AP.
    #[arg(long, value_delimiter = ',')]
    views: Vec<String>,
    /// Short side of stored images, in pixels.
    #[arg(long, default_value_t = 512)]
    image_size: u32,
    /// Worker threads reading and encoding images (default: all cores).
    #[arg(value_parser = super::parse::count::<usize>, long)]
    workers: Option<usize>,
    /// Ingest only partition I of N of every source, so N processes can share the work.
    #[arg(long, value_name = "I/N", default_value = "0/1", value_parser = parse_partition)]
    partition: (u32, u32),
    /// Samples per commit.
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 512)]
    batch_rows: usize,
    /// What to do with a bad input.
    #[arg(long, value_enum, default_value = "skip")]
    on_error: OnErrorArg,
    /// Append rejected inputs (JSONL) to this file instead of writing them next to the dataset
    /// (opened before the run starts, so an unwritable path stops it before anything commits).
    #[arg(long)]
    rejects: Option<PathBuf>,
    #[command(flatten)]
    distiller: distiller::DistillerArgs,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Bad-input policy on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OnErrorArg {
    /// Reject the input, record why, and go on.
    Skip,
    /// Stop at the first bad input.
    Fail,
}

fn parse_partition(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or("expected I/N, e.g. 0/4")?;
    let (i, n) = (i.parse::<u32>().map_err(|e| e.to_string())?, n.parse::<u32>().map_err(|e| e.to_string())?);
    if n == 0 || i >= n { Err(format!("need 0 <= I < N, got {i}/{n}")) } else { Ok((i, n)) }
}

/// Runs the ingest and prints its summary.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut opts = IngestOptions::new(&args.dataset, args.sources.clone());
    opts.source_opts = SourceOptions {
        reports: args.reports.clone(),
        views: args.views.iter().map(|v| v.trim().to_ascii_uppercase()).collect(),
        phantom_size: args.image_size,
    };
    opts.image = ImageConfig { size: args.image_size, ..Default::default() };
    if let Some(w) = args.workers {
        opts.workers = w.max(1);
    }
    opts.partition = args.partition;
    opts.batch_rows = args.batch_rows.max(1);
    opts.on_error = match args.on_error {
        OnErrorArg::Skip => OnError::Skip,
        OnErrorArg::Fail => OnError::Fail,
    };
    opts.rejects = args.rejects.clone();
    opts.progress = !args.quiet && !args.json;
    let rt = tokio::runtime::Handle::current();
    let distiller = args.distiller.build(rt.clone())?;
    let summary = tokio::task::spawn_blocking(move || ingest(&opts, distiller, &rt))
        .await
        .context("ingest worker panicked")?
        .context("ingest failed")?;
    if args.json {
        print_json(&summary)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rate = summary.ingested as f64 / summary.seconds.max(1e-9);
    println!(
        "ingested {} new samples in {} commit(s): {} of images, {:.1} images/s, {:.1} s",
        summary.ingested,
        summary.commits,
        human_bytes(summary.image_bytes),
        rate,
        summary.seconds
    );
    println!(
        "listed {} ({} in other partitions); duplicates: {} by sample id, {} by image hash; {} passed through unchanged",
        summary.listed, summary.other_partitions, summary.duplicate_ids, summary.duplicate_images, summary.passthrough
    );
    if summary.distill_failed > 0 {
        println!("distiller failed on {} report(s): stored without context", summary.distill_failed);
    }
    if summary.rejected.is_empty() {
        println!("rejected: none");
    } else {
        let reasons: Vec<String> = summary.rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!(
            "rejected: {} ({}) -> {}",
            summary.rejected_total(),
            reasons.join(", "),
            summary.rejects_file.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}
