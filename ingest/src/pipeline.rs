//! The ingest run: list sources, keep this partition's new items, prepare them on worker
//! threads, distil their reports, and commit batches (labels, annotations, then samples: the
//! samples commit is what makes a sample exist, so a crash in between only leaves annotation
//! rows that a later run supersedes).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::{Sender, bounded};
use ecamp_store::shard::sha256_hex;
use ecamp_store::{AnnotationRow, AppTxn, Dataset, LabelRow, Location, SampleKeys, SampleRow};
use object_store::ObjectStoreExt;
use tokio::runtime::Handle;

use crate::distill::Distiller;
use crate::error::{IngestError, Result};
use crate::files;
use crate::image::{self, Gray, ImageConfig};
use crate::source::{ImageInput, Item, Reject, ReportInput, SourceOptions, SourceSpec, dicom, partition_of};

/// What to do with a bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Record it as a reject and go on.
    Skip,
    /// Stop the run with an error naming it (committed batches stay).
    Fail,
}

/// Everything an ingest run needs.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Dataset URL (created if absent).
    pub dataset: String,
    /// The sources, in order.
    pub sources: Vec<SourceSpec>,
    /// Options of the sources.
    pub source_opts: SourceOptions,
    /// Image preparation.
    pub image: ImageConfig,
    /// Worker threads for reading and encoding images.
    pub workers: usize,
    /// This process's share of every source: (index, count).
    pub partition: (u32, u32),
    /// Rows per commit.
    pub batch_rows: usize,
    /// Image bytes per commit.
    pub batch_bytes: usize,
    /// Bad-input policy.
    pub on_error: OnError,
    /// Where to write rejects as JSONL (default: `_ecamp/rejects/<run>.jsonl` in the dataset).
    pub rejects: Option<PathBuf>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl IngestOptions {
    /// Options with defaults for `dataset` and `sources`.
    pub fn new(dataset: impl Into<String>, sources: Vec<SourceSpec>) -> Self {
        IngestOptions {
            dataset: dataset.into(),
            sources,
            source_opts: SourceOptions { phantom_size: 512, ..Default::default() },
            image: ImageConfig::default(),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            partition: (0, 1),
            batch_rows: 512,
            batch_bytes: 128 << 20,
            on_error: OnError::Skip,
            rejects: None,
            progress: false,
        }
    }

    /// Refuses settings that cannot work or would exhaust memory before any input is read; the
    /// message names the option.
    pub fn check(&self) -> Result<()> {
        let (part, parts) = self.partition;
        let rule = |ok: bool, why: String| if ok { Ok(()) } else { Err(IngestError::Option(why)) };
        rule(parts > 0 && part < parts, format!("--partition {part}/{parts}: need I < N"))?;
        rule((1..=MAX_WORKERS).contains(&self.workers), format!("--workers must be in 1..={MAX_WORKERS}"))?;
        rule(
            self.batch_rows > 0 && self.batch_bytes > 0,
            "--batch-rows and the commit byte size must be at least 1".into(),
        )?;
        let sizes = crate::image::MIN_SIDE..=MAX_IMAGE_SIZE;
        for size in [self.image.size, self.source_opts.phantom_size] {
            rule(sizes.contains(&size), format!("--image-size {size}: must be in {sizes:?}"))?;
        }
        Ok(())
    }
}

/// Most worker threads an ingest may start.
const MAX_WORKERS: usize = 1024;
/// Largest short side images are stored (and phantoms drawn) at: the model's largest input
/// side, and within the loader's 100-megapixel canvas for any usual aspect ratio.
const MAX_IMAGE_SIZE: u32 = 4096;

/// What a run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IngestSummary {
    /// Run id (also the application-transaction prefix of its commits).
    pub run_id: String,
    /// Items listed by the sources (all partitions).
    pub listed: usize,
    /// Items of other partitions.
    pub other_partitions: usize,
    /// New samples committed.
    pub ingested: usize,
    /// Items whose sample id was already in the dataset (or listed twice).
    pub duplicate_ids: usize,
    /// Items whose stored image bytes were already in the dataset.
    pub duplicate_images: usize,
    /// Rejected inputs by reason.
    pub rejected: BTreeMap<String, usize>,
    /// Reports the distiller failed on (stored without context).
    pub distill_failed: usize,
    /// Images passed through without re-encoding.
    pub passthrough: usize,
    /// Commits made to the samples table.
    pub commits: usize,
    /// Image bytes committed.
    pub image_bytes: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Where the rejects were written, if any.
    pub rejects_file: Option<String>,
}

impl IngestSummary {
    /// Total rejected inputs.
    pub fn rejected_total(&self) -> usize {
        self.rejected.values().sum()
    }
}

/// One prepared sample.
struct Prepared {
    sample: SampleRow,
    labels: Option<serde_json::Value>,
    passthrough: bool,
}

/// Reports of DICOM studies keyed by StudyInstanceUID and by AccessionNumber.
type DicomReports = HashMap<String, String>;

/// The reports CSV of DICOM sources, with a reject for each row that cannot be used (that row is
/// left out); only a file that cannot be read, or whose header lacks the columns, stops the run.
fn load_dicom_reports(opts: &SourceOptions) -> Result<(DicomReports, Vec<Reject>)> {
    let Some(path) = &opts.reports else { return Ok((HashMap::new(), Vec::new())) };
    let err = |d: String| IngestError::Source { source_kind: "dicom", detail: d };
    let shown = path.display().to_string();
    let bytes = crate::files::read_regular(path, crate::files::MAX_FILE_BYTES)
        .map_err(|e| err(format!("cannot read {shown}: {e}")))?;
    let (headers, records) =
        crate::source::csv_records(&bytes, &shown, "dicom").map_err(|e| err(format!("{shown}: {e}")))?;
    let headers: Vec<String> = headers.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
    let col = |names: &[&str]| headers.iter().find(|h| names.contains(&h.as_str())).cloned();
    let report = col(&["report", "text", "report_text"]).ok_or_else(|| err(format!("{shown}: no 'report' column")))?;
    let keys: Vec<String> = [
        col(&["studyinstanceuid", "study_instance_uid", "study_uid"]),
        col(&["accessionnumber", "accession_number", "accession"]),
    ]
    .into_iter()
    .flatten()
    .collect();
    if keys.is_empty() {
        return Err(err(format!("{shown}: needs a StudyInstanceUID or AccessionNumber column")));
    }
    let reason = |h: &str| if h == report { "non-utf8-report" } else { "malformed-row" };
    let (mut map, mut rejects) = (HashMap::new(), Vec::new());
    for rec in records {
        let mut row = match rec.and_then(|r| crate::source::csv_fields(&headers, &r, &shown, "dicom", reason)) {
            Ok(row) => row,
            Err(r) => {
                rejects.push(r);
                continue;
            }
        };
        let Some(text) = row.remove(&report) else { continue };
        for k in &keys {
            if let Some(v) = row.get(k).filter(|v| !v.trim().is_empty()) {
                map.insert(v.trim().to_string(), text.clone());
            }
        }
    }
    Ok((map, rejects))
}

/// Per-worker state: object stores by bucket, so URL images reuse connections.
struct Worker {
    cfg: ImageConfig,
    rt: Handle,
    dicom_reports: Arc<DicomReports>,
    stores: HashMap<String, Location>,
}

impl Worker {
    fn read_url(&mut self, url: &str) -> std::result::Result<Vec<u8>, (&'static str, String)> {
        let shown = ecamp_store::redact::url(url);
        let parsed = url::Url::parse(url).map_err(|e| ("missing-file", format!("{shown}: {e}")))?;
        if parsed.scheme().eq_ignore_ascii_case("file") {
            // The checks of a plain path: a FIFO would block a worker forever, a huge file fill memory.
            let path = parsed.to_file_path().map_err(|()| ("missing-file", format!("{shown}: not a local path")))?;
            return read_input_file(&path);
        }
        let path = object_store::path::Path::from_url_path(parsed.path())
            .map_err(|e| ("missing-file", format!("{shown}: {e}")))?;
        // One client per bucket: building one per image would be slow.
        let key = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or(""));
        let store = match self.stores.get(&key) {
            Some(loc) => loc.store().clone(),
            None => {
                let loc = Location::parse(&key).map_err(|e| ("unreadable-file", e.to_string()))?;
                let store = loc.store().clone();
                self.stores.insert(key, loc);
                store
            }
        };
        self.rt.block_on(read_object(store.as_ref(), &path, files::MAX_FILE_BYTES, &shown))
    }

    /// [`Worker::prepare`], with a panic in a third-party decoder turned into a reject.
    fn prepare_caught(&mut self, item: Item) -> std::result::Result<Prepared, Reject> {
        let (kind, input, id) = (item.source, input_name(&item), item.sample_id.clone());
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.prepare(item))).unwrap_or_else(|_| {
            Err(Reject::new(kind, input, "decoder-panic", "the image decoder panicked on this input").with_sample(&id))
        })
    }

    /// Reads, validates and encodes one item's image; resolves its report.
    fn prepare(&mut self, item: Item) -> std::result::Result<Prepared, Reject> {
        let kind = item.source;
        let input_name = input_name(&item);
        let rej = |reason: &str, detail: String| {
            Reject::new(kind, input_name.clone(), reason, detail).with_sample(&item.sample_id)
        };
        let mut sample_id = item.sample_id.clone();
        let mut subject_id = item.subject_id.clone();
        let mut study_id = item.study_id.clone();
        let mut view = item.view.clone();
        let mut labels = item.labels.clone();
        let mut report = match &item.report {
            ReportInput::Text(t) => Some(t.clone()),
            ReportInput::FromImage => None,
            ReportInput::Bad(r) => return Err(r.clone()),
        };
        let prepared = match &item.image {
            ImageInput::File(path) => {
                let bytes = read_input_file(path).map_err(|(r, d)| rej(r, d))?;
                image::prepare(&bytes, &self.cfg)
            }
            ImageInput::Url(url) => {
                let bytes = self.read_url(url).map_err(|(r, d)| rej(r, d))?;
                image::prepare(&bytes, &self.cfg)
            }
            ImageInput::Phantom { seed, index, size } => {
                let p = crate::phantom::generate(&crate::phantom::PhantomSpec { seed: *seed, size: *size }, *index);
                report = Some(p.report.clone());
                subject_id = Some(p.subject_id.clone());
                study_id = Some(p.study_id.clone());
                view = Some(p.view.clone());
                labels = Some(p.labels());
                image::prepare_gray(&Gray { width: p.width, height: p.height, pixels: p.pixels }, &self.cfg)
            }
            ImageInput::Dicom(path) => {
                regular_input_file(path).map_err(|(r, d)| rej(r, d))?;
                let d = dicom::decode_dicom_file(path).map_err(|e| rej(e.code(), e.to_string()))?;
                if let Some(uid) = &d.sop_instance_uid {
                    sample_id = format!("dicom-{uid}");
                }
                let found = [&d.study_instance_uid, &d.accession_number]
                    .into_iter()
                    .flatten()
                    .find_map(|k| self.dicom_reports.get(k.trim()).cloned());
                let text = found.ok_or_else(|| {
                    rej("missing-report", "no report for this StudyInstanceUID or AccessionNumber".into())
                })?;
                report = Some(text);
                subject_id = d.patient_id.clone();
                study_id = d.study_instance_uid.clone();
                view = d.view_position.clone().filter(|v| !v.is_empty());
                image::prepare_gray(&Gray { width: d.width, height: d.height, pixels: d.pixels }, &self.cfg)
            }
        };
        let img = prepared.map_err(|e| rej(e.code(), e.to_string()))?;
        let report = report.ok_or_else(|| rej("missing-report", "no report".into()))?;
        let report = crate::source::check_report(&report).map_err(|r| rej(r, "report is empty".into()))?;
        Ok(Prepared {
            sample: SampleRow {
                image_sha256: sha256_hex(&img.jpeg),
                sample_id,
                subject_id,
                study_id,
                view,
                image_path: item.image_name.clone(),
                width: img.width as i32,
                height: img.height as i32,
                orig_width: img.orig_width as i32,
                orig_height: img.orig_height as i32,
                report,
                source: kind.to_string(),
                ingested_at_us: chrono::Utc::now().timestamp_micros(),
                image: img.jpeg,
            },
            labels,
            passthrough: img.passthrough,
        })
    }
}

/// Reads an object of at most `max` bytes (`shown` in messages); its size is checked before it
/// is fetched, as a local file's is. Errors are (reject reason, detail).
async fn read_object(
    store: &dyn object_store::ObjectStore,
    path: &object_store::path::Path,
    max: u64,
    shown: &str,
) -> std::result::Result<Vec<u8>, (&'static str, String)> {
    let failed = |e: object_store::Error| match e {
        object_store::Error::NotFound { .. } => ("missing-file", format!("{shown}: not found")),
        other => ("unreadable-file", ecamp_store::redact::scrub(&other.to_string())),
    };
    let too_large = |size: u64| ("unreadable-file", format!("{shown}: {size} bytes, over the limit of {max}"));
    let size = store.head(path).await.map_err(failed)?.size;
    if size > max {
        return Err(too_large(size));
    }
    let bytes = store.get(path).await.map_err(failed)?.bytes().await.map_err(failed)?;
    // The object may have been replaced since the size was read.
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes.to_vec())
}

fn input_name(item: &Item) -> String {
    match &item.image {
        ImageInput::File(p) | ImageInput::Dicom(p) => p.display().to_string(),
        ImageInput::Url(u) => ecamp_store::redact::url(u),
        ImageInput::Phantom { seed, index, .. } => format!("phantom:{seed}#{index}"),
    }
}

/// Runs an ingest to completion. Blocking: call it from a thread, not from async code; store
/// operations run on `rt`.
pub fn ingest(opts: &IngestOptions, distiller: Arc<dyn Distiller>, rt: &Handle) -> Result<IngestSummary> {
    let started = Instant::now();
    opts.check()?;
    let (part, parts) = opts.partition;
    let run_id = format!("{}-p{part}of{parts}", uuid::Uuid::new_v4().simple());
    let mut summary = IngestSummary { run_id: run_id.clone(), ..Default::default() };
    // Opened before anything is committed: an unwritable path must not surface after the data
    // landed, with the list of what was rejected lost.
    let mut rejects_file = open_rejects(opts)?;
    let ds = rt.block_on(Dataset::create(&opts.dataset))?;
    // The listing skips ids the dataset held at the start; the committer checks each batch, by
    // id and by image hash, against the dataset as it is then (this run's and other writers'
    // commits included).
    let keys = rt.block_on(ds.sample_keys())?;
    let mut listed: HashSet<String> = HashSet::new();
    let (dicom_reports, mut entries) = if opts.sources.iter().any(|s| matches!(s, SourceSpec::Dicom(_))) {
        let (reports, bad_rows) = load_dicom_reports(&opts.source_opts)?;
        (Arc::new(reports), bad_rows.into_iter().map(Err).collect())
    } else {
        (Arc::default(), Vec::new())
    };
    for spec in &opts.sources {
        entries.extend(spec.list(&opts.source_opts)?);
    }

    let mut rejects: Vec<Reject> = Vec::new();
    let mut todo: Vec<Item> = Vec::new();
    for entry in entries {
        summary.listed += 1;
        // Split by the item's key in its source's listing (a manifest's image reference as
        // written, a path relative to the source root), so that machines mounting the data at
        // different paths agree on the split. Two rows with one id in two partitions are safe:
        // the commit admits each sample id and image once across writers.
        let key = match &entry {
            Ok(item) => item.key.clone(),
            Err(r) => r.input.clone(),
        };
        if partition_of(&key, parts) != part {
            summary.other_partitions += 1;
            continue;
        }
        match entry {
            Err(r) => rejects.push(r),
            // Known ids are skipped before any image is read: re-runs over a grown source are cheap.
            Ok(item) if keys.ids().contains(&item.sample_id) || !listed.insert(item.sample_id.clone()) => {
                summary.duplicate_ids += 1
            }
            Ok(item) => todo.push(item),
        }
    }
    drop(listed);
    if opts.on_error == OnError::Fail
        && let Some(r) = rejects.first()
    {
        let stop = IngestError::Rejected { input: r.input.clone(), reason: r.reason.clone(), detail: r.detail.clone() };
        // The list of what was rejected is the point of --rejects, also when it ends the run.
        write_rejects(&ds, rt, rejects_file.as_mut(), &run_id, &rejects)?;
        return Err(stop);
    }

    let bar = progress_bar(opts.progress, todo.len() as u64);
    let (work_tx, work_rx) = bounded::<Item>(opts.workers * 4);
    let (done_tx, done_rx) = bounded::<std::result::Result<Prepared, Reject>>(opts.workers * 4);
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..opts.workers.max(1) {
        let (rx, tx, stop) = (work_rx.clone(), done_tx.clone(), stop.clone());
        let mut worker = Worker {
            cfg: opts.image.clone(),
            rt: rt.clone(),
            dicom_reports: dicom_reports.clone(),
            stores: HashMap::new(),
        };
        handles.push(std::thread::spawn(move || {
            for item in rx {
                if stop.load(Ordering::Relaxed) || tx.send(worker.prepare_caught(item)).is_err() {
                    break;
                }
            }
        }));
    }
    drop((work_rx, done_tx));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || feed(todo, work_tx, stop))
    };

    // Commits run on their own thread, so workers keep decoding while a batch is distilled,
    // encoded and committed; the channel holds one batch, bounding memory to two batches.
    let (batch_tx, batch_rx) = bounded::<(i64, Vec<Prepared>)>(1);
    let committer = {
        let (ds, rt, distiller, run_id) = (ds.clone(), rt.clone(), distiller.clone(), run_id.clone());
        let mut keys = keys;
        std::thread::spawn(move || -> Result<IngestSummary> {
            let mut done = IngestSummary::default();
            for (seq, batch) in batch_rx {
                let at = Commit { ds: &ds, rt: &rt, run_id: &run_id, seq };
                commit(&at, distiller.as_ref(), batch, &mut keys, &mut done)?;
            }
            Ok(done)
        })
    };
    let mut batch: Vec<Prepared> = Vec::new();
    let mut batch_bytes = 0usize;
    let mut seq = 0i64;
    let mut outcome: Result<()> = Ok(());
    for result in done_rx.iter() {
        bar.inc(1);
        match result {
            Err(r) => {
                if opts.on_error == OnError::Fail {
                    outcome = Err(IngestError::Rejected {
                        input: r.input.clone(),
                        reason: r.reason.clone(),
                        detail: r.detail.clone(),
                    });
                    rejects.push(r);
                    break;
                }
                rejects.push(r);
            }
            // Duplicate images, and ids resolved from the image (DICOM SOP instance UIDs), are
            // dropped by the committer.
            Ok(p) => {
                batch_bytes += p.sample.image.len();
                batch.push(p);
                if batch.len() >= opts.batch_rows || batch_bytes >= opts.batch_bytes {
                    // A closed channel means the committer stopped on an error; it is reported below.
                    if batch_tx.send((seq, std::mem::take(&mut batch))).is_err() {
                        break;
                    }
                    seq += 1;
                    batch_bytes = 0;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(done_rx);
    let _ = feeder.join();
    for h in handles {
        // Workers catch panics per item, so a failed join is a bug; surface it.
        if h.join().is_err() {
            outcome = outcome.and(Err(IngestError::Option("an ingest worker panicked".into())));
        }
    }
    if outcome.is_ok() && !batch.is_empty() {
        let _ = batch_tx.send((seq, batch));
    }
    drop(batch_tx);
    match committer.join() {
        Ok(Ok(done)) => {
            summary.commits = done.commits;
            summary.ingested = done.ingested;
            summary.image_bytes = done.image_bytes;
            summary.passthrough = done.passthrough;
            summary.duplicate_ids += done.duplicate_ids;
            summary.duplicate_images += done.duplicate_images;
            summary.distill_failed = done.distill_failed;
        }
        Ok(Err(e)) => outcome = outcome.and(Err(e)),
        Err(_) => outcome = outcome.and(Err(IngestError::Option("the commit thread panicked".into()))),
    }
    bar.finish_and_clear();
    for r in &rejects {
        *summary.rejected.entry(r.reason.clone()).or_default() += 1;
    }
    if !rejects.is_empty() {
        summary.rejects_file = Some(write_rejects(&ds, rt, rejects_file.as_mut(), &run_id, &rejects)?);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    outcome.map(|()| summary)
}

fn feed(items: Vec<Item>, tx: Sender<Item>, stop: Arc<AtomicBool>) {
    for item in items {
        if stop.load(Ordering::Relaxed) || tx.send(item).is_err() {
            break;
        }
    }
}

fn progress_bar(show: bool, len: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} ingest [{bar:30}] {pos}/{len} images  {per_sec}  ETA {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Where a batch commits: the dataset, the runtime for its calls and the batch's transaction.
struct Commit<'a> {
    ds: &'a Dataset,
    rt: &'a Handle,
    run_id: &'a str,
    seq: i64,
}

/// Distils a batch's reports and commits labels, annotations, then samples. Rows that another
/// writer has committed since `keys` were read are dropped and counted as duplicates (their
/// labels and annotations too, unless that writer commits between those and the samples).
fn commit(
    at: &Commit,
    distiller: &dyn Distiller,
    batch: Vec<Prepared>,
    keys: &mut SampleKeys,
    summary: &mut IngestSummary,
) -> Result<()> {
    at.rt.block_on(at.ds.refresh_keys(keys))?;
    let admitted = keys.admit(batch, |p| &p.sample);
    summary.duplicate_ids += admitted.duplicate_ids;
    summary.duplicate_images += admitted.duplicate_images;
    let mut batch = admitted.rows;
    if batch.is_empty() {
        return Ok(());
    }
    batch.sort_by(|a, b| a.sample.sample_id.cmp(&b.sample.sample_id));
    let now = chrono::Utc::now().timestamp_micros();
    let reports: Vec<&str> = batch.iter().map(|p| p.sample.report.as_str()).collect();
    let producer = distiller.producer();
    let mut annotations = Vec::with_capacity(batch.len());
    let mut failed: HashSet<String> = HashSet::new();
    for (p, d) in batch.iter().zip(distiller.distill_batch(&reports)) {
        match d {
            Ok(d) => annotations.push(AnnotationRow {
                sample_id: p.sample.sample_id.clone(),
                context: Some(d.context),
                entities: Some(d.entities),
                sr_window: None,
                producer: producer.clone(),
                created_at_us: now,
            }),
            Err(_) => {
                failed.insert(p.sample.sample_id.clone());
            }
        }
    }
    let labels: Vec<LabelRow> = batch
        .iter()
        .filter_map(|p| {
            p.labels.as_ref().map(|l| LabelRow {
                sample_id: p.sample.sample_id.clone(),
                source: p.sample.source.clone(),
                labels_json: l.to_string(),
                created_at_us: now,
            })
        })
        .collect();
    let passthrough: HashSet<String> =
        batch.iter().filter(|p| p.passthrough).map(|p| p.sample.sample_id.clone()).collect();
    let samples: Vec<SampleRow> = batch.into_iter().map(|p| p.sample).collect();
    let txn = |table: &str| Some(AppTxn { app_id: format!("ingest-{}-{table}", at.run_id), seq: at.seq });
    let landed = at.rt.block_on(async {
        if !labels.is_empty() {
            at.ds.append_labels(&labels, txn("labels")).await?;
        }
        if !annotations.is_empty() {
            at.ds.append_annotations(&annotations, txn("annotations")).await?;
        }
        at.ds.append_samples_unique(samples, txn("samples"), keys).await
    })?;
    summary.duplicate_ids += landed.duplicate_ids;
    summary.duplicate_images += landed.duplicate_images;
    if landed.outcome.is_some() {
        summary.commits += 1;
    }
    let count = |set: &HashSet<String>| landed.committed.iter().filter(|s| set.contains(&s.sample_id)).count();
    summary.passthrough += count(&passthrough);
    summary.distill_failed += count(&failed);
    summary.ingested += landed.committed.len();
    summary.image_bytes += landed.committed.iter().map(|s| s.image.len() as u64).sum::<u64>();
    Ok(())
}

/// Checks an input file with [`files::check_regular`]; errors are (reject reason, detail).
fn regular_input_file(path: &std::path::Path) -> std::result::Result<(), (&'static str, String)> {
    files::check_regular(path, files::MAX_FILE_BYTES).map_err(|e| input_error(path, &e))
}

/// Reads an input file with [`files::read_regular`]; errors are (reject reason, detail).
fn read_input_file(path: &std::path::Path) -> std::result::Result<Vec<u8>, (&'static str, String)> {
    files::read_regular(path, files::MAX_FILE_BYTES).map_err(|e| input_error(path, &e))
}

fn input_error(path: &std::path::Path, e: &std::io::Error) -> (&'static str, String) {
    match e.kind() {
        std::io::ErrorKind::NotFound => ("missing-file", format!("{}: not found", path.display())),
        _ => ("unreadable-file", format!("{}: {e}", path.display())),
    }
}

/// `--rejects`, opened for appending (earlier runs' lines are kept); partitions running at
/// once each get their own file.
fn open_rejects(opts: &IngestOptions) -> Result<Option<(PathBuf, std::fs::File)>> {
    let Some(path) = &opts.rejects else { return Ok(None) };
    let (part, parts) = opts.partition;
    let path = if parts > 1 { path.with_extension(format!("p{part}of{parts}.jsonl")) } else { path.clone() };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| IngestError::Rejects { path: path.display().to_string(), message: e.to_string() })?;
    Ok(Some((path, file)))
}

/// Writes rejects as JSONL to `--rejects` or next to the dataset; returns where.
fn write_rejects(
    ds: &Dataset,
    rt: &Handle,
    file: Option<&mut (PathBuf, std::fs::File)>,
    run_id: &str,
    rejects: &[Reject],
) -> Result<String> {
    let mut body = Vec::new();
    for r in rejects {
        // Serialising our own plain struct cannot fail.
        body.extend(serde_json::to_vec(r).unwrap_or_default());
        body.push(b'\n');
    }
    match file {
        Some((path, file)) => {
            use std::io::Write;
            // Only a regular file can be synced: fsync of /dev/null or a pipe fails with EINVAL,
            // and would turn a run whose data has landed into an error.
            file.write_all(&body)
                .and_then(|()| file.metadata())
                .and_then(|meta| if meta.is_file() { file.sync_all() } else { Ok(()) })
                .map_err(|e| IngestError::Rejects { path: path.display().to_string(), message: e.to_string() })?;
            Ok(path.display().to_string())
        }
        None => {
            let rel = format!("_ecamp/rejects/{run_id}.jsonl");
            let loc = ds.location();
            rt.block_on(loc.store().put(&loc.path(&rel), body.into()))
                .map_err(|e| IngestError::Rejects { path: rel.clone(), message: e.to_string() })?;
            Ok(format!("{}/{rel}", ds.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_over_the_limit_is_refused_before_it_is_fetched() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let store = object_store::memory::InMemory::new();
        let path = object_store::path::Path::from("images/big.jpg");
        rt.block_on(store.put(&path, vec![0xFF; 100].into())).expect("put");
        let read = |max| rt.block_on(read_object(&store, &path, max, "memory://x/images/big.jpg"));
        assert_eq!(read(100).expect("at the limit").len(), 100);
        let (reason, detail) = read(99).expect_err("over the limit");
        assert_eq!(reason, "unreadable-file");
        assert!(detail.contains("100 bytes, over the limit of 99"), "{detail}");
        let missing = rt.block_on(read_object(&store, &"none.jpg".into(), 99, "memory://x/none.jpg"));
        assert_eq!(missing.expect_err("missing").0, "missing-file");
    }

    #[test]
    fn options_that_cannot_work_are_refused_by_name() {
        let ok = || IngestOptions { workers: 2, ..IngestOptions::new("memory://x", Vec::new()) };
        assert!(ok().check().is_ok());
        let refused = |opts: IngestOptions, says: &str| {
            let err = opts.check().expect_err(says).to_string();
            assert!(err.contains(says), "{err}");
        };
        refused(IngestOptions { partition: (4, 4), ..ok() }, "--partition 4/4");
        refused(IngestOptions { partition: (0, 0), ..ok() }, "--partition 0/0");
        refused(IngestOptions { workers: 0, ..ok() }, "--workers");
        refused(IngestOptions { workers: 1 << 40, ..ok() }, "--workers");
        refused(IngestOptions { batch_rows: 0, ..ok() }, "--batch-rows");
        refused(
            IngestOptions { image: ImageConfig { size: 100_000, ..ImageConfig::default() }, ..ok() },
            "--image-size 100000",
        );
        let mut zero_size_phantoms = ok();
        zero_size_phantoms.source_opts.phantom_size = 0;
        refused(zero_size_phantoms, "--image-size 0");
    }
}
