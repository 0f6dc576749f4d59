//! `ecamp bench`: benchmarks that report ratios against a peer measured in the same run.

mod ingest;
mod loader;
mod model;

use std::process::ExitCode;

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Ingest throughput (manifest of ready 512 px grayscale JPEGs, passed through) against a
    /// plain copy of the same bytes into the same store with the same number of threads.
    Ingest(ingest::Args),
    /// Loader throughput against pure zune-jpeg decoding of the same bytes on the same threads,
    /// and against the official ECAMP CPU pipeline in Python (torch DataLoader).
    Loader(loader::Args),
    /// Training-step time of the model on burn's ndarray backend against the same architecture
    /// in PyTorch on the CPU (`benches/model_peer/ecamp_torch.py`), or on GPU 0 with
    /// `--backend cuda`.
    Model(model::Args),
}

/// Runs a benchmark.
pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Ingest(a) => ingest::run(a).await,
        Command::Loader(a) => loader::run(a).await,
        Command::Model(a) => model::run(a).await,
    }
}

/// The median of `v` (upper median for even lengths); `v` must not be empty.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
