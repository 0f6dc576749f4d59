//! Command-line interface: argument parsing and dispatch to one module per command.

mod annotate;
mod bench;
mod demo;
mod dense;
mod detect;
mod distill;
mod distiller;
mod downstream;
mod export;
mod finetune;
mod forward;
mod fsck;
mod ingest;
mod init;
mod join;
mod parse;
mod plots;
mod pretrain;
mod probe;
mod segment;
mod snapshot;
mod vocab;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `result` with the CUDA runtime's first failure (out of GPU memory, say) as the cause of its
/// error, since that failure surfaces in the caller as something else (a NaN loss).
#[cfg(feature = "cuda")]
pub fn with_cuda_cause<T>(result: anyhow::Result<T>) -> anyhow::Result<T> {
    result.map_err(|e| match ecamp_model::cuda::device_failure() {
        Some(failure) => anyhow::Error::new(failure).context(format!("{e:#}")),
        None => e,
    })
}

/// ecamp — entity-centred, context-aware medical vision-language pre-training, data-engine-first.
///
/// Datasets live at a URL: a local path or file://, memory:// (in-process), s3://BUCKET/PREFIX,
/// gs://BUCKET/PREFIX or az://CONTAINER/PREFIX. Cloud credentials and endpoints come from each
/// cloud's standard environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP,
/// GOOGLE_SERVICE_ACCOUNT, AZURE_STORAGE_ACCOUNT_NAME, ...); secrets are never printed.
#[derive(Debug, Parser)]
#[command(name = "ecamp", version, about, long_about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole job on built-in phantoms: ingest, pre-train, annotate windows, probe, report.
    Demo(demo::Args),
    /// Create an empty dataset (marker; samples, annotations and labels tables) at a URL.
    Init(init::Args),
    /// List, show, pin and compare snapshots (a pinned version of each table).
    #[command(subcommand)]
    Snapshot(snapshot::Command),
    /// Check every referenced file against its recorded size and hash; find orphan files.
    Fsck(fsck::Args),
    /// Add samples from sources (phantom, mimic-cxr, dicom, manifest, iu-xray) to a dataset.
    Ingest(ingest::Args),
    /// Re-derive a dataset's annotations with a distiller, or score the rules distiller.
    Distill(distill::Args),
    /// Build or import the WordPiece vocabulary.
    #[command(subcommand)]
    Vocab(vocab::Command),
    /// Export a checkpoint's image encoder as safetensors with timm's ViT names.
    Export(export::Args),
    /// One forward pass on given weights and batch; prints the three losses as JSON.
    Forward(forward::Args),
    /// Pre-train ECAMP on a dataset snapshot (CPU or CUDA), with exact resume.
    Pretrain(pretrain::Args),
    /// Linear-probe an encoder (checkpoint, imported weights or random) on labelled samples.
    Probe(probe::Args),
    /// Fine-tune an encoder end to end with a classification head on labelled samples.
    Finetune(finetune::Args),
    /// Train and score the SegViT-style segmentation head on a frozen encoder (Dice).
    Segment(segment::Args),
    /// Train and score the YOLOv3-style detection head on a frozen encoder (mAP).
    Detect(detect::Args),
    /// Compute SR windows from a trained model's entity attention (a new annotations version).
    AnnotateWindows(annotate::Args),
    /// Benchmarks, reported as ratios against a peer measured in the same run.
    #[command(subcommand)]
    Bench(bench::Command),
}

impl Cli {
    /// Whether the command trains a model (it sets the allocator up differently).
    pub fn is_training(&self) -> bool {
        matches!(
            self.command,
            Command::Pretrain(_)
                | Command::Forward(_)
                | Command::AnnotateWindows(_)
                | Command::Probe(_)
                | Command::Finetune(_)
                | Command::Segment(_)
                | Command::Detect(_)
                | Command::Demo(_)
                | Command::Bench(bench::Command::Model(_) | bench::Command::Loader(_))
        )
    }
}

/// Runs the parsed command; the exit code says whether it found problems.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(a) => demo::run(a).await,
        Command::Init(a) => init::run(a).await,
        Command::Snapshot(c) => snapshot::run(c).await,
        Command::Fsck(a) => fsck::run(a).await,
        Command::Ingest(a) => ingest::run(a).await,
        Command::Distill(a) => distill::run(a).await,
        Command::Vocab(c) => vocab::run(c).await,
        Command::Pretrain(a) => pretrain::run(a).await,
        Command::Forward(a) => forward::run(a).await,
        Command::Export(a) => export::run(a).await,
        Command::Probe(a) => probe::run(a).await,
        Command::Finetune(a) => finetune::run(a).await,
        Command::Segment(a) => segment::run(a).await,
        Command::Detect(a) => detect::run(a).await,
        Command::AnnotateWindows(a) => annotate::run(a).await,
        Command::Bench(c) => bench::run(c).await,
    }
}

/// Renders a byte count for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
