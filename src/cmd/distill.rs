//! `ecamp distill`: re-derive the annotations of a dataset (a new annotations version; image
//! bytes untouched), or score the rules distiller on IU X-ray reports.

use ecamp_ingest::files::{MAX_FILE_BYTES, read_regular};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use ecamp_ingest::distill::evaluate::evaluate;
use ecamp_ingest::distill::rules::RulesDistiller;
use ecamp_ingest::source::iu_xray::parse_iu_report;
use ecamp_store::{AnnotationRow, AppTxn, Dataset, SnapshotRef, TableKind};

use super::{distiller, print_json};

/// Arguments of `ecamp distill`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Dataset URL whose annotations to re-derive.
    #[arg(long, env = "ECAMP_DATASET", required_unless_present = "evaluate")]
    dataset: Option<String>,
    /// Snapshot whose samples to distil: snap-<hex>, latest, or S[:A[:L]].
    #[arg(long, default_value = "latest")]
    snapshot: SnapshotRef,
    #[command(flatten)]
    distiller: distiller::DistillerArgs,
    /// Reports per commit.
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 4096)]
    batch_rows: usize,
    /// Score the rules distiller against MeSH major tags of IU X-ray reports instead.
    #[arg(long, requires = "iu_reports")]
    evaluate: bool,
    /// IU X-ray report folder (the ecgen-radiology XML files) for --evaluate.
    #[arg(long)]
    iu_reports: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.evaluate {
        return run_evaluate(&args);
    }
    let Some(url) = &args.dataset else { bail!("--dataset is required") };
    let ds = Dataset::open(url).await.context("cannot open dataset")?;
    let snap = ds.resolve(&args.snapshot).await.with_context(|| format!("cannot resolve {}", args.snapshot))?;
    let rt = tokio::runtime::Handle::current();
    let distiller = args.distiller.build(rt)?;
    let producer = distiller.producer();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (mut done, mut failed, mut seq) = (0usize, 0usize, 0i64);
    let mut first_failure: Option<String> = None;
    let files = snap.table(TableKind::Samples).map(|p| p.files.clone()).unwrap_or_default();
    let mut pending: Vec<(String, String)> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        for b in ds.read_columns(TableKind::Samples, f, &["sample_id", "report"]).await? {
            let ids = ecamp_store::schema::sample_ids(&b)?;
            let reports = b
                .column_by_name("report")
                .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
                .context("report column is not text")?;
            pending.extend(ids.into_iter().zip(reports.iter().map(|r| r.unwrap_or_default().to_string())));
        }
        while pending.len() >= args.batch_rows || (i + 1 == files.len() && !pending.is_empty()) {
            let take: Vec<(String, String)> = pending.drain(..pending.len().min(args.batch_rows)).collect();
            let d = distiller.clone();
            let texts: Vec<String> = take.iter().map(|(_, r)| r.clone()).collect();
            let results = tokio::task::spawn_blocking(move || {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                d.distill_batch(&refs)
            })
            .await?;
            let now = chrono::Utc::now().timestamp_micros();
            let mut rows = Vec::new();
            for ((id, _), r) in take.into_iter().zip(results) {
                match r {
                    Ok(d) => rows.push(AnnotationRow {
                        sample_id: id,
                        context: Some(d.context),
                        entities: Some(d.entities),
                        sr_window: None,
                        producer: producer.clone(),
                        created_at_us: now,
                    }),
                    Err(e) => {
                        failed += 1;
                        first_failure.get_or_insert_with(|| format!("sample {id}: {e}"));
                    }
                }
            }
            // Many failures before any success are the endpoint or the key, not the reports:
            // stop instead of failing every later batch the same way.
            if rows.is_empty() && done == 0 && failed >= STOP_AFTER_FAILURES {
                let first = ecamp_store::redact::scrub(first_failure.as_deref().unwrap_or("no answer"));
                bail!(
                    "the first {failed} report(s) all failed to distil with {}, so the run stopped; the first: {first}",
                    producer.distiller
                );
            }
            done += rows.len();
            if !rows.is_empty() {
                ds.append_annotations(&rows, Some(AppTxn { app_id: format!("distill-{run}"), seq })).await?;
                seq += 1;
            }
        }
    }
    if let Some(first) = &first_failure {
        let first = ecamp_store::redact::scrub(first);
        if done == 0 {
            bail!(
                "every one of the {failed} report(s) failed to distil with {}; the first: {first}",
                producer.distiller
            );
        }
        eprintln!(
            "warning: {failed} report(s) failed to distil and keep their previous annotations; the first: {first}"
        );
    }
    let version = ecamp_store::TableLog::latest_version(ds.table(TableKind::Annotations)).await?;
    if args.json {
        print_json(&serde_json::json!({
            "distilled": done,
            "failed": failed,
            "first_failure": first_failure.as_deref().map(ecamp_store::redact::scrub),
            "annotations_version": version,
            "distiller": producer,
        }))?;
    } else {
        println!(
            "distilled {done} report(s) with {} ({failed} failed) into annotations v{version} of {}",
            producer.distiller,
            ds.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Reports failing in a row, with none distilled yet, that stop a run.
const STOP_AFTER_FAILURES: usize = 8;

fn run_evaluate(args: &Args) -> anyhow::Result<ExitCode> {
    let dir = args.iu_reports.as_ref().context("--iu-reports DIR is required with --evaluate")?;
    let dir = if dir.join("ecgen-radiology").is_dir() { dir.join("ecgen-radiology") } else { dir.clone() };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    paths.sort();
    let mut items: Vec<(String, Vec<String>)> = Vec::new();
    for p in &paths {
        let xml = read_regular(p, MAX_FILE_BYTES)
            .map_err(anyhow::Error::from)
            .and_then(|b| String::from_utf8(b).map_err(anyhow::Error::from))
            .with_context(|| format!("cannot read {}", p.display()))?;
        let r = parse_iu_report(&xml).with_context(|| format!("malformed report {}", p.display()))?;
        if let Some(text) = r.report_text() {
            items.push((text, r.mesh_major));
        }
    }
    if items.is_empty() {
        bail!(
            "{} holds no IU X-ray report with findings or an impression ({} XML file(s)); nothing to score",
            dir.display(),
            paths.len()
        );
    }
    let eval = evaluate(&RulesDistiller::new(), items.iter().map(|(t, m)| (t.as_str(), m.as_slice())));
    if args.json {
        print_json(&serde_json::json!({
            "reports": eval.reports,
            "mean_f1": eval.mean_f1,
            "findings": eval.findings.iter().map(|f| serde_json::json!({
                "entity": f.entity, "support": f.support, "precision": f.precision, "recall": f.recall, "f1": f.f1
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        println!("{}", eval.table());
    }
    Ok(ExitCode::SUCCESS)
}
