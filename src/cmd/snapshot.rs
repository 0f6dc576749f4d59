//! `ecamp snapshot list|show|pin|diff`.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use ecamp_store::snapshot::diff;
use ecamp_store::{Dataset, Snapshot, SnapshotRef, TableKind, TableLog, Verify};

use super::{human_bytes, print_json};

/// Dataset URL shared by the snapshot commands.
#[derive(Debug, clap::Args)]
pub struct DatasetArg {
    /// Dataset URL (path, file://, memory://, s3://, gs://, az://).
    #[arg(long, env = "ECAMP_DATASET")]
    dataset: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The snapshot subcommands.
///
/// A snapshot is written as `snap-<hex>` (a pinned id), `latest`, or table versions `S[:A[:L]]`
/// (samples version S, annotations version A, labels version L; a missing or `latest` part means
/// the newest).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the versions of each table (time, rows, bytes) and the pinned snapshots.
    List(DatasetArg),
    /// Show a snapshot's tables, versions, files, rows, bytes and id.
    Show {
        #[command(flatten)]
        ds: DatasetArg,
        /// The snapshot: snap-<hex>, latest, or S[:A[:L]].
        #[arg(default_value = "latest")]
        snapshot: SnapshotRef,
        /// Also read every file and check its sha256 (default: sizes only).
        #[arg(long)]
        verify: bool,
        /// List every file.
        #[arg(long)]
        files: bool,
    },
    /// Pin table versions and the vocabulary: write their manifest and print the snapshot id.
    ///
    /// The vocabulary is the one stored in the dataset (`ecamp vocab build`), or the one named
    /// with --vocab when it stores several; training on the id then tokenises with it.
    Pin {
        #[command(flatten)]
        ds: DatasetArg,
        /// Versions to pin: latest or S[:A[:L]].
        #[arg(default_value = "latest")]
        snapshot: SnapshotRef,
        /// The stored vocabulary to pin (`_ecamp/vocab/<hash>.json`, or just `<hash>`).
        #[arg(long)]
        vocab: Option<String>,
    },
    /// Files and rows added (and removed) between two snapshots or versions.
    Diff {
        #[command(flatten)]
        ds: DatasetArg,
        /// The older snapshot.
        from: SnapshotRef,
        /// The newer snapshot.
        #[arg(default_value = "latest")]
        to: SnapshotRef,
    },
}

/// Runs one snapshot subcommand.
pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::List(a) => list(a).await,
        Command::Show { ds, snapshot, verify, files } => show(ds, snapshot, verify, files).await,
        Command::Pin { ds, snapshot, vocab } => pin(ds, snapshot, vocab).await,
        Command::Diff { ds, from, to } => diff_cmd(ds, from, to).await,
    }
}

async fn open(a: &DatasetArg) -> anyhow::Result<Dataset> {
    Dataset::open(&a.dataset).await.context("cannot open dataset")
}

#[derive(serde::Serialize)]
struct VersionRow {
    table: &'static str,
    version: u64,
    time: Option<String>,
    operation: String,
    rows_added: u64,
    rows: u64,
    bytes_added: u64,
    bytes: u64,
}

async fn list(a: DatasetArg) -> anyhow::Result<ExitCode> {
    let ds = open(&a).await?;
    let mut out = Vec::new();
    for kind in TableKind::ALL {
        let history = ds.table(kind).history().await.with_context(|| format!("cannot read the {kind} log"))?;
        let mut live: HashMap<String, (u64, u64)> = HashMap::new();
        for c in history {
            for f in &c.added {
                live.insert(f.path.clone(), (f.rows, f.size));
            }
            for p in &c.removed {
                live.remove(p);
            }
            out.push(VersionRow {
                table: kind.name(),
                version: c.version,
                time: c
                    .timestamp_ms
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
                operation: c.operation.clone(),
                rows_added: c.rows_added(),
                rows: live.values().map(|v| v.0).sum(),
                bytes_added: c.bytes_added(),
                bytes: live.values().map(|v| v.1).sum(),
            });
        }
    }
    let pinned = ds.pinned_ids().await?;
    if a.json {
        print_json(&serde_json::json!({ "versions": out, "pinned": pinned }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("dataset {}", ds.display());
    println!(
        "{:<12} {:>7}  {:<23} {:<14} {:>10} {:>10} {:>11}",
        "TABLE", "VERSION", "TIME", "OPERATION", "+ROWS", "ROWS", "BYTES"
    );
    for r in &out {
        println!(
            "{:<12} {:>7}  {:<23} {:<14} {:>10} {:>10} {:>11}",
            r.table,
            r.version,
            r.time.as_deref().unwrap_or("-"),
            r.operation,
            r.rows_added,
            r.rows,
            human_bytes(r.bytes)
        );
    }
    println!("pinned snapshots: {}", if pinned.is_empty() { "none".to_string() } else { pinned.join(", ") });
    Ok(ExitCode::SUCCESS)
}

async fn show(a: DatasetArg, r: SnapshotRef, verify: bool, list_files: bool) -> anyhow::Result<ExitCode> {
    let ds = open(&a).await?;
    let snap = ds.resolve(&r).await.with_context(|| format!("cannot resolve snapshot {r}"))?;
    if verify {
        ds.verify_files(&snap, Verify::Content).await.with_context(|| format!("snapshot {} is damaged", snap.id))?;
    }
    if a.json {
        print_json(&snap)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("snapshot {}", snap.id);
    if let Some(v) = &snap.vocab {
        println!("  {:<12} {}  {:>11}  sha256 {}", "vocabulary", v.path, human_bytes(v.size), v.sha256);
    }
    for (kind, pin) in &snap.tables {
        println!(
            "  {:<12} version {:>5}  {:>5} files  {:>10} rows  {:>11}",
            kind.name(),
            pin.version,
            pin.files.len(),
            pin.rows(),
            human_bytes(pin.bytes())
        );
        if list_files {
            for f in &pin.files {
                println!("    {}  {:>8} rows  {:>11}  sha256 {}", f.path, f.rows, human_bytes(f.size), f.sha256);
            }
        }
    }
    if verify {
        println!("all files verified (size and sha256)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn pin(a: DatasetArg, r: SnapshotRef, vocab: Option<String>) -> anyhow::Result<ExitCode> {
    let ds = open(&a).await?;
    let snap = pin_snapshot(&ds, &r, vocab).await?;
    if a.json {
        print_json(
            &serde_json::json!({ "id": snap.id, "versions": snap.tables.iter().map(|(k, p)| (k.name(), p.version)).collect::<HashMap<_, _>>() }),
        )?;
    } else {
        println!("{}", snap.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Pins `r` with the dataset's vocabulary (`vocab`, or the only one stored) and returns the
/// pinned snapshot; `ecamp demo` pins this way too.
pub async fn pin_snapshot(ds: &Dataset, r: &SnapshotRef, vocab: Option<String>) -> anyhow::Result<Snapshot> {
    let snap = ds.resolve(r).await.with_context(|| format!("cannot resolve {r}"))?;
    let snap = match r {
        SnapshotRef::Id(id) if vocab.is_some() => {
            bail!("{id} is pinned already; pin table versions (e.g. latest) to choose its vocabulary")
        }
        SnapshotRef::Id(_) => snap,
        SnapshotRef::Versions(_) => {
            let pin = match vocab_to_pin(ds, vocab).await? {
                Some(path) => {
                    // Checked before it is pinned: a vocabulary edited after it was stored is refused.
                    ecamp_ingest::vocab::fetch(ds, &path).await.context("cannot pin the vocabulary")?;
                    Some(ds.file_pin(&path).await.with_context(|| format!("cannot read {path}"))?)
                }
                None => None,
            };
            snap.to_pin(pin)
        }
    };
    ds.pin(&snap).await.context("cannot write the snapshot manifest")?;
    Ok(snap)
}

/// The stored vocabulary a new pin records: the one named, or the only one stored.
async fn vocab_to_pin(ds: &Dataset, named: Option<String>) -> anyhow::Result<Option<String>> {
    use ecamp_ingest::vocab::{VOCAB_DIR, list_stored};
    let stored = list_stored(ds).await.context("cannot list the dataset's vocabularies")?;
    match named {
        Some(n) => {
            let path =
                if n.contains('/') { n.clone() } else { format!("{VOCAB_DIR}/{}.json", n.trim_end_matches(".json")) };
            if !stored.contains(&path) {
                bail!("the dataset stores no vocabulary {n} (it stores: {})", stored.join(", "));
            }
            Ok(Some(path))
        }
        None => match stored.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            many => bail!(
                "the dataset stores {} vocabularies ({}): choose the one to pin with --vocab",
                many.len(),
                many.join(", ")
            ),
        },
    }
}

async fn diff_cmd(a: DatasetArg, from: SnapshotRef, to: SnapshotRef) -> anyhow::Result<ExitCode> {
    let ds = open(&a).await?;
    let sa = ds.resolve(&from).await.with_context(|| format!("cannot resolve {from}"))?;
    let sb = ds.resolve(&to).await.with_context(|| format!("cannot resolve {to}"))?;
    let d = diff(&sa, &sb);
    if a.json {
        print_json(&serde_json::json!({ "from": sa.id, "to": sb.id, "tables": d }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} -> {}", sa.id, sb.id);
    for (kind, t) in &d {
        println!(
            "  {:<12} v{} -> v{}: +{} files (+{} rows), -{} files (-{} rows)",
            kind.name(),
            t.from_version,
            t.to_version,
            t.added.len(),
            t.rows_added(),
            t.removed.len(),
            t.rows_removed()
        );
    }
    Ok(ExitCode::SUCCESS)
}
