//! `ecamp fsck`: integrity check and orphan cleanup.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ecamp_store::{Dataset, FsckOptions, Verify};

use super::{human_bytes, print_json};

/// Arguments of `ecamp fsck`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 when every referenced file is intact (orphans alone do not fail), \
1 when an integrity problem was found, 2 when the check itself could not run.")]
pub struct Args {
    /// Dataset URL.
    #[arg(long, env = "ECAMP_DATASET")]
    dataset: String,
    /// Delete the orphan files found (files no commit and no pinned snapshot references).
    #[arg(long)]
    delete_orphans: bool,
    /// Files younger than this many seconds are never orphans (a live writer may commit them).
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    grace: u64,
    /// Check sizes only (one HEAD per file) instead of reading every byte to check hashes.
    #[arg(long)]
    sizes_only: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the check and prints its report.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ds = Dataset::open(&args.dataset).await.context("cannot open dataset")?;
    let opts = FsckOptions {
        delete_orphans: args.delete_orphans,
        grace: Duration::from_secs(args.grace),
        verify: if args.sizes_only { Verify::Sizes } else { Verify::Content },
    };
    let report = ds.fsck(&opts).await.with_context(|| format!("fsck of {} failed", ds.display()))?;
    if args.json {
        print_json(&report)?;
    } else {
        let versions: Vec<String> = report.versions.iter().map(|(k, v)| format!("{k} v{v}")).collect();
        println!("dataset {} ({})", ds.display(), versions.join(", "));
        println!("checked {} files: {} problem(s)", report.checked, report.problems.len());
        for p in &report.problems {
            println!("  PROBLEM {p}");
        }
        let orphan_bytes: u64 = report.orphans.iter().map(|o| o.size).sum();
        println!(
            "orphans: {} ({}){}",
            report.orphans.len(),
            human_bytes(orphan_bytes),
            if report.young > 0 {
                format!(", {} unreferenced file(s) younger than --grace left alone", report.young)
            } else {
                String::new()
            }
        );
        for o in &report.orphans {
            let state = if report.deleted.contains(&o.path) { "deleted" } else { "orphan" };
            println!("  {state} {} ({})", o.path, human_bytes(o.size));
        }
        if !report.orphans.is_empty() && !args.delete_orphans {
            println!("run again with --delete-orphans to remove them");
        }
    }
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
