//! Whole ingest runs over real files (JPEGs, PNGs, CSV and JSONL manifests written here) into a
//! local dataset: what lands, what is rejected and why.

use std::path::Path;
use std::sync::Arc;

use ecamp_ingest::distill::Rules;
use ecamp_ingest::image::{Gray, encode_jpeg};
use ecamp_ingest::{IngestError, IngestOptions, IngestSummary, OnError, SourceSpec, ingest};

/// A real grayscale JPEG, distinct per `seed`.
fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let pixels = (0..w * h).map(|i| ((i % w) * 7 + (i / w) * 3 + seed * 31) as u8).collect();
    encode_jpeg(&Gray { width: w, height: h, pixels }, 90).expect("encode")
}

/// Writes `bytes` to `dir/name`, creating folders.
fn put(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

/// Options for ingesting `sources` into `dir/ds` with rejects in `dir/rejects.jsonl`.
fn options(dir: &Path, sources: &[&str]) -> IngestOptions {
    let sources = sources.iter().map(|s| s.parse::<SourceSpec>().expect("source")).collect();
    let mut opts = IngestOptions::new(format!("file://{}", dir.join("ds").display()), sources);
    opts.workers = 2;
    opts.image.size = 32;
    opts.rejects = Some(dir.join("rejects.jsonl"));
    opts
}

/// Runs an ingest on a runtime of its own.
fn run(opts: &IngestOptions) -> ecamp_ingest::Result<IngestSummary> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    ingest(opts, Arc::new(Rules::new()), rt.handle())
}

/// The sample ids of the dataset at `dir/ds`, sorted.
fn sample_ids(dir: &Path) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let url = format!("file://{}", dir.join("ds").display());
    let keys = rt.block_on(async { ecamp_store::Dataset::open(&url).await?.sample_keys().await }).expect("keys");
    let mut ids: Vec<String> = keys.ids().iter().cloned().collect();
    ids.sort();
    ids
}

/// The rejects written to `dir/rejects.jsonl`.
fn rejects(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("rejects.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("reject JSON"))
        .collect()
}

#[test]
fn weekly_manifests_with_the_same_relative_paths_both_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for (week, seed) in [("week-48", 1), ("week-49", 2)] {
        put(d, &format!("{week}/images/0001.jpg"), &jpeg(48, 48, seed));
        put(d, &format!("{week}/manifest.csv"), b"image,report\nimages/0001.jpg,No acute process.\n");
    }
    let first = format!("manifest:{}", d.join("week-48/manifest.csv").display());
    let second = format!("manifest:{}", d.join("week-49/manifest.csv").display());
    let summary = run(&options(d, &[&first, &second])).expect("ingest");
    assert_eq!((summary.ingested, summary.duplicate_ids), (2, 0), "{summary:?}");
    let expected: Vec<String> =
        ["week-48", "week-49"].iter().map(|w| d.join(w).join("images/0001.jpg").display().to_string()).collect();
    assert_eq!(sample_ids(d), expected);
}

#[test]
fn bad_rows_of_the_dicom_reports_csv_are_rejected_and_the_run_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir(d.join("films")).expect("mkdir");
    // Line 3 is short, line 4 has a latin-1 report; line 5 is fine.
    let csv = b"StudyInstanceUID,report\n1.2.3,Normal chest.\n1.2.4\n1.2.5,Pleural effusion caf\xe9\n1.2.6,\"No pneumothorax.\"\n";
    put(d, "reports.csv", csv);
    let mut opts = options(d, &[&format!("dicom:{}", d.join("films").display())]);
    opts.source_opts.reports = Some(d.join("reports.csv"));
    let summary = run(&opts).expect("a bad row must not stop the run");
    assert_eq!(summary.rejected_total(), 2, "{summary:?}");
    let got: Vec<(String, String)> = rejects(d)
        .iter()
        .map(|r| {
            (r["input"].as_str().unwrap_or_default().to_string(), r["reason"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    let at = |line: u32| d.join("reports.csv").display().to_string() + &format!(":{line}");
    assert_eq!(got, [(at(3), "malformed-row".to_string()), (at(4), "non-utf8-report".to_string())]);
}

#[test]
fn file_urls_are_checked_like_plain_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    put(d, "ok.jpg", &jpeg(48, 48, 3));
    // Sparse: over the 1 GiB limit on disk in no time, and never read.
    let big = std::fs::File::create(d.join("big.jpg")).expect("create");
    big.set_len(ecamp_ingest::files::MAX_FILE_BYTES + 1).expect("set_len");
    let fifo = std::process::Command::new("mkfifo").arg(d.join("fifo.jpg")).status().expect("mkfifo");
    assert!(fifo.success(), "mkfifo failed");
    let url = |name: &str| format!("file://{}", d.join(name).display());
    let csv = format!(
        "image,report,sample_id\n{},Normal.,ok\n{},Normal.,big\n{},Normal.,fifo\n",
        url("ok.jpg"),
        url("big.jpg"),
        url("fifo.jpg")
    );
    put(d, "manifest.csv", csv.as_bytes());
    let opts = options(d, &[&format!("manifest:{}", d.join("manifest.csv").display())]);
    // A FIFO read would block forever: wait a bounded time for the run instead.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The receiver is gone only after a timeout, which fails the test anyway.
        let _ = tx.send(run(&opts));
    });
    let summary = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the run hangs").expect("ingest");
    assert_eq!(summary.ingested, 1, "{summary:?}");
    let mut got: Vec<(String, String)> = rejects(d)
        .iter()
        .map(|r| (r["sample_id"].as_str().unwrap_or_default().into(), r["reason"].as_str().unwrap_or_default().into()))
        .collect();
    got.sort();
    assert_eq!(got, [("big".into(), "unreadable-file".into()), ("fifo".into(), "unreadable-file".into())]);
}

#[test]
fn rejects_can_go_to_dev_null() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    put(d, "ok.jpg", &jpeg(48, 48, 4));
    put(d, "manifest.csv", b"image,report\nok.jpg,Normal.\nmissing.jpg,Normal.\n");
    let mut opts = options(d, &[&format!("manifest:{}", d.join("manifest.csv").display())]);
    opts.rejects = Some("/dev/null".into());
    let summary = run(&opts).expect("rejects written to /dev/null");
    assert_eq!((summary.ingested, summary.rejected_total()), (1, 1), "{summary:?}");
}

#[test]
fn on_error_fail_still_writes_a_listing_reject() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    put(d, "ok.jpg", &jpeg(48, 48, 5));
    put(d, "manifest.csv", b"image,report\nok.jpg,Normal.\nok.jpg,Normal.,extra\n");
    let mut opts = options(d, &[&format!("manifest:{}", d.join("manifest.csv").display())]);
    opts.on_error = OnError::Fail;
    let err = run(&opts).expect_err("stops at the malformed row");
    assert!(matches!(&err, IngestError::Rejected { reason, .. } if reason == "malformed-row"), "{err}");
    let got = rejects(d);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0]["input"].as_str().is_some_and(|i| i.ends_with("manifest.csv:3")), "{got:?}");
}
