//! `ecamp vocab build`: train (or import) the WordPiece vocabulary of a snapshot.

use ecamp_ingest::files::{MAX_FILE_BYTES, read_regular};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ecamp_ingest::vocab;
use ecamp_store::{Dataset, SnapshotRef};

use super::print_json;

/// The vocab subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Train a WordPiece vocabulary on a snapshot's reports and contexts (or import a
    /// tokenizer.json) and store it under _ecamp/vocab/<hash>.json.
    Build {
        /// Dataset URL.
        #[arg(long, env = "ECAMP_DATASET")]
        dataset: String,
        /// Snapshot to train on: snap-<hex>, latest, or S[:A[:L]].
        #[arg(long, default_value = "latest")]
        snapshot: SnapshotRef,
        /// Largest vocabulary size, special tokens included.
        #[arg(long, default_value_t = 30000)]
        vocab_size: usize,
        /// Use this tokenizer.json (e.g. the official mimic_wordpiece.json) instead of training.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command.
pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    let Command::Build { dataset, snapshot, vocab_size, tokenizer, json } = cmd;
    let ds = Dataset::open(&dataset).await.context("cannot open dataset")?;
    let info = match tokenizer {
        Some(path) => {
            let bytes =
                read_regular(&path, MAX_FILE_BYTES).with_context(|| format!("cannot read {}", path.display()))?;
            let tok = vocab::load(&bytes).with_context(|| format!("{} is not a usable tokenizer", path.display()))?;
            vocab::store(&ds, &tok).await?
        }
        None => {
            let snap = ds.resolve(&snapshot).await.with_context(|| format!("cannot resolve {snapshot}"))?;
            vocab::build(&ds, &snap, vocab_size).await.context("cannot build the vocabulary")?
        }
    };
    if json {
        print_json(&info)?;
    } else {
        println!("vocabulary of {} tokens stored at {}/{}", info.vocab_size, ds.display(), info.path);
    }
    Ok(ExitCode::SUCCESS)
}
