//! Interop: the `deltalake` Python package (with pyarrow) opens a pinned version of an ecamp
//! table and reads the same row count, sample ids and image bytes as ecamp.

mod common;

use std::process::Command;

use common::{runtime, sample_rows, text};
use ecamp_store::shard::sha256_hex;
use ecamp_store::{Dataset, TableKind, TableVersions};

fn python() -> Option<String> {
    common::service_env("ECAMP_PYTHON", "a Python with deltalake and pyarrow")
}

#[test]
fn python_deltalake_reads_what_ecamp_wrote() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}/ds", dir.path().display());
    let (snap, rows) = runtime().block_on(async {
        let ds = Dataset::create(&url).await.expect("create");
        ds.append_samples(&sample_rows("py", 0, 12), None).await.expect("a");
        ds.append_samples(&sample_rows("py", 12, 9), None).await.expect("b");
        // A later append the pinned snapshot must not see.
        let snap = ds.snapshot_at(TableVersions { samples: Some(2), ..Default::default() }).await.expect("snap");
        ds.pin(&snap).await.expect("pin");
        ds.append_samples(&sample_rows("py", 21, 5), None).await.expect("c");
        let pinned = ds.open_snapshot(&snap.id, ecamp_store::Verify::Content).await.expect("open");
        let rows = ds.read_samples(&pinned.table(TableKind::Samples).expect("samples").files).await.expect("read");
        (pinned, rows)
    });
    let mut expected: Vec<(String, String)> =
        rows.iter().map(|r| (r.sample_id.clone(), sha256_hex(&r.image))).collect();
    expected.sort();
    let spec = serde_json::json!({
        "table": dir.path().join("ds/samples").display().to_string(),
        "version": snap.table(TableKind::Samples).expect("samples").version,
        "rows": rows.len(),
        "samples": expected,
    });
    let spec_path = dir.path().join("expected.json");
    std::fs::write(&spec_path, spec.to_string()).expect("write spec");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/check_delta.py");
    let out = Command::new(py).arg(script).arg(&spec_path).output().expect("run python");
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("interop ok: 21 rows"), "{}", text(&out));
}
