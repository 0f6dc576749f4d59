//! Whole ingest runs over real files (JPEGs, PNGs, CSV and JSONL manifests written here) into a
//! local dataset: what lands, what is rejected and why.

use std::path::Path;
use std::sync::Arc;

use ecamp_ingest::distill::Rules;
use ecamp_ingest::image::{Gray, encode_jpeg};
use ecamp_ingest::{IngestOptions, IngestSummary, SourceSpec, ingest};

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
