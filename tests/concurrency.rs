//! Many writers, one table: 4 OS processes × 25 appends at the same time, on file:// and s3://.
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

/// Child mode: appends `APPENDS` batches to the dataset named in `ECAMP_TEST_CHILD_WRITER`.
/// In a normal test run the variable is unset and this returns at once.
#[test]
fn child_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (url, writer) = spec.split_once('|').expect("url|writer");
    runtime().block_on(async {
        let ds = Dataset::open(url).await.expect("open");
        for i in 0..APPENDS {
            let rows = sample_rows(&format!("w{writer}"), i * ROWS, ROWS);
            ds.append_samples(&rows, Some(AppTxn { app_id: format!("writer-{writer}"), seq: i as i64 }))
                .await
                .unwrap_or_else(|e| panic!("writer {writer} append {i}: {e}"));
        }
    });
}

fn contend(url: &str) {
    let rt = runtime();
    rt.block_on(Dataset::create(url)).expect("create");
    let exe = std::env::current_exe().expect("exe");
    let children: Vec<_> = (0..WRITERS)
        .map(|w| {
            Command::new(&exe)
                .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, format!("{url}|{w}"))
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
