//! `ecamp init`: create an empty dataset.

use std::process::ExitCode;

use anyhow::Context;
use ecamp_store::Dataset;

/// Arguments of `ecamp init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset URL (path, file://, memory://, s3://, gs://, az://).
    #[arg(long, env = "ECAMP_DATASET")]
    dataset: String,
}

/// Creates the dataset, or verifies it if it already exists.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ds = Dataset::create(&args.dataset).await.context("cannot create dataset")?;
    println!("dataset ready at {}", ds.display());
    Ok(ExitCode::SUCCESS)
}
