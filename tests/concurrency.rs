//! Many writers, one table: 4 OS processes × 25 appends at the same time, on file:// and s3://,
//! first of disjoint rows, then of overlapping ones through the unique append.
//! The writers are this test binary re-run in child mode (see `child_writer`).

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};

use common::{runtime, s3_bucket, sample_rows, unique};
use ecamp_store::{AppTxn, Dataset, TableKind, TableLog};

const CHILD_ENV: &str = "ECAMP_TEST_CHILD_WRITER";
const WRITERS: usize = 4;
const APPENDS: usize = 25;
const ROWS: usize = 3;

/// Child mode: appends `APPENDS` batches to the dataset named in `ECAMP_TEST_CHILD_WRITER`
/// (`url|writer|plain` or `url|writer|unique`). In a normal test run the variable is unset and
/// this returns at once.
#[test]
fn child_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let (url, writer, mode) = (parts.next().expect("url"), parts.next().expect("writer"), parts.next().expect("mode"));
    let w: usize = writer.parse().expect("writer number");
    runtime().block_on(async {
        let ds = Dataset::open(url).await.expect("open");
        let mut keys = ds.sample_keys().await.expect("keys");
        for i in 0..APPENDS {
            let txn = Some(AppTxn { app_id: format!("writer-{writer}"), seq: i as i64 });
            let done = if mode == "unique" {
                // Writers 0 and 2 (and 1 and 3) write the same ids; writers 0 and 1 (and 2
                // and 3) the same images under different ids.
                let rows = sample_rows(&format!("t{}", w / 2), i * ROWS, ROWS);
                ds.append_samples_unique(rows, txn, &mut keys).await.map(|_| ())
            } else {
                ds.append_samples(&sample_rows(&format!("w{writer}"), i * ROWS, ROWS), txn).await.map(|_| ())
            };
            done.unwrap_or_else(|e| panic!("writer {writer} append {i}: {e}"));
        }
    });
}

/// Runs the `WRITERS` child writers in `mode` against `url`, all at once.
fn run_writers(url: &str, mode: &str) {
    let exe = std::env::current_exe().expect("exe");
    let children: Vec<_> = (0..WRITERS)
        .map(|w| {
            Command::new(&exe)
                .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, format!("{url}|{w}|{mode}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn writer")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(out.status.success(), "writer failed: {}", common::text(&out));
    }
}

fn contend(url: &str) {
    let rt = runtime();
    rt.block_on(Dataset::create(url)).expect("create");
    run_writers(url, "plain");
    rt.block_on(async {
        let ds = Dataset::open(url).await.expect("open");
        let log = ds.table(TableKind::Samples);
        let latest = log.latest_version().await.expect("latest");
        assert_eq!(latest as usize, WRITERS * APPENDS, "every append is one version after the create");
        let files = log.files(latest).await.expect("files");
        let rows = ds.read_samples(&files).await.expect("read");
        assert_eq!(rows.len(), WRITERS * APPENDS * ROWS);
        let ids: HashSet<_> = rows.iter().map(|r| r.sample_id.as_str()).collect();
        assert_eq!(ids.len(), rows.len(), "duplicate sample_id");
        let commits = log.history().await.expect("history").iter().filter(|c| c.operation == "WRITE").count();
        assert_eq!(commits, WRITERS * APPENDS);
    });
}

/// Four writers append overlapping rows at once: every image lands exactly once, under one id.
fn contend_unique(url: &str) {
    let rt = runtime();
    rt.block_on(Dataset::create(url)).expect("create");
    run_writers(url, "unique");
    rt.block_on(async {
        let ds = Dataset::open(url).await.expect("open");
        let log = ds.table(TableKind::Samples);
        let rows = ds.read_samples(&log.files(log.latest_version().await.expect("v")).await.expect("files")).await;
        let rows = rows.expect("read");
        assert_eq!(rows.len(), APPENDS * ROWS, "one row per distinct image");
        let ids: HashSet<_> = rows.iter().map(|r| r.sample_id.as_str()).collect();
        let hashes: HashSet<_> = rows.iter().map(|r| r.image_sha256.as_str()).collect();
        assert_eq!((ids.len(), hashes.len()), (rows.len(), rows.len()), "a duplicate id or image");
        // No commit is empty, and every upload that lost its race was deleted.
        let history = log.history().await.expect("history");
        assert!(history.iter().filter(|c| c.operation == "WRITE").all(|c| c.rows_added() > 0));
        let opts = ecamp_store::FsckOptions { grace: std::time::Duration::ZERO, ..Default::default() };
        let report = ds.fsck(&opts).await.expect("fsck");
        assert!(report.orphans.is_empty(), "orphans: {:?}", report.orphans);
    });
}

#[test]
fn four_processes_append_concurrently_on_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    contend(&format!("file://{}/ds", dir.path().display()));
}

#[test]
fn four_processes_append_concurrently_on_s3() {
    if let Some(bucket) = s3_bucket() {
        contend(&format!("s3://{bucket}/{}", unique("contend")));
    }
}

#[test]
fn four_processes_append_overlapping_rows_once_on_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    contend_unique(&format!("file://{}/ds", dir.path().display()));
}

#[test]
fn four_processes_append_overlapping_rows_once_on_s3() {
    if let Some(bucket) = s3_bucket() {
        contend_unique(&format!("s3://{bucket}/{}", unique("unique")));
    }
}
