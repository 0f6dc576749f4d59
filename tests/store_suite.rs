//! The table suite, run unchanged against every backend: file://, memory:// and s3:// (moto).

mod common;

use bytes_flip::flip_one_byte;
use common::{backends, runtime, sample_rows};
use ecamp_store::{
    AnnotationRow, AppTxn, AppendOutcome, Dataset, Entity, FsckOptions, LabelRow, Producer, SnapshotRef, StoreError,
    TableKind, TableLog, TableVersions, Verify,
};

mod bytes_flip {
    use ecamp_store::Dataset;
    use object_store::{ObjectStoreExt, PutPayload};

    /// Overwrites one data file with a copy that has one byte flipped (same size).
    pub async fn flip_one_byte(ds: &Dataset, rel: &str) {
        let loc = ds.location();
        let path = loc.path(rel);
        let bytes = loc.store().get(&path).await.expect("get").bytes().await.expect("bytes");
        let mut v = bytes.to_vec();
        let mid = v.len() / 2;
        v[mid] ^= 0x5a;
        loc.store().put(&path, PutPayload::from(v)).await.expect("put");
    }
}

async fn suite(url: &str) {
    let ds = Dataset::create(url).await.unwrap_or_else(|e| panic!("create {url}: {e}"));
    // Creating again is a no-op that verifies the existing tables.
    Dataset::create(url).await.expect("create is idempotent");
    assert_eq!(ds.table(TableKind::Samples).latest_version().await.expect("v"), 0);

    let a = sample_rows("s", 0, 20);
    let b = sample_rows("s", 20, 15);
    let v1 = ds.append_samples(&a, Some(AppTxn { app_id: "w".into(), seq: 0 })).await.expect("append a");
    assert_eq!(v1, AppendOutcome::Committed(1));
    // The same batch retried (a writer that crashed after committing) is not written twice.
    let again = ds.append_samples(&a, Some(AppTxn { app_id: "w".into(), seq: 0 })).await.expect("retry a");
    assert_eq!(again, AppendOutcome::AlreadyCommitted);
    assert_eq!(
        ds.append_samples(&b, Some(AppTxn { app_id: "w".into(), seq: 1 })).await.expect("b"),
        AppendOutcome::Committed(2)
    );

    // Files of a version carry rows and the content hash recorded at write time.
    let files = ds.table(TableKind::Samples).files(2).await.expect("files");
    assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 35);
    assert!(files.iter().all(|f| f.sha256.len() == 64 && f.size > 0), "{files:?}");
    assert_eq!(ds.table(TableKind::Samples).files(1).await.expect("files v1").iter().map(|f| f.rows).sum::<u64>(), 20);

    // Rows read back are the rows written, image bytes included.
    let mut back = ds.read_samples(&files).await.expect("read");
    back.sort_by(|x, y| x.sample_id.cmp(&y.sample_id));
    let mut want = [a.clone(), b.clone()].concat();
    want.sort_by(|x, y| x.sample_id.cmp(&y.sample_id));
    assert_eq!(back, want);

    // Annotations: nested entities and nullable windows survive.
    let ann = vec![AnnotationRow {
        sample_id: "s-000000".into(),
        context: Some("There is pleural effusion.".into()),
        entities: Some(vec![Entity {
            name: "effusion".into(),
            status: "present".into(),
            descriptors: vec!["small".into()],
        }]),
        sr_window: Some((2, 5)),
        producer: Producer { distiller: "rules".into(), model: None, prompt_hash: None },
        created_at_us: 1,
    }];
    ds.append_annotations(&ann, None).await.expect("annotations");

    // Labels: ground truth kept apart from re-derivable annotations.
    let label = LabelRow {
        sample_id: "s-000001".into(),
        source: "test".into(),
        labels_json: r#"{"findings":[{"kind":"effusion","presence":"present"}]}"#.into(),
        created_at_us: 2,
    };
    ds.append_labels(std::slice::from_ref(&label), None).await.expect("labels");
    let lfiles = ds.table(TableKind::Labels).files(1).await.expect("label files");
    let lrows = ecamp_store::schema::label_rows(&ds.read_file(TableKind::Labels, &lfiles[0]).await.expect("read")[0])
        .expect("decode");
    assert_eq!(lrows, vec![label]);

    // Ranged reads of a projection: only the key columns, no image bytes.
    let keys = ds.read_columns(TableKind::Samples, &files[0], &["sample_id", "image_sha256"]).await.expect("columns");
    assert_eq!(keys.iter().map(|b| b.num_rows() as u64).sum::<u64>(), files[0].rows);
    assert!(keys.iter().all(|b| b.num_columns() == 2));

    // History: versions in order with their added rows.
    let hist = ds.table(TableKind::Samples).history().await.expect("history");
    assert_eq!(hist.iter().map(|c| c.version).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(hist[1].rows_added(), 20);
    assert_eq!(hist[2].txns, vec![("w".to_string(), 1)]);

    // Snapshots: same versions, same id; one more append, another id.
    let s1 =
        ds.snapshot_at(TableVersions { samples: Some(2), annotations: Some(1), labels: None }).await.expect("snap");
    let s1b = ds
        .snapshot_at(TableVersions { samples: Some(2), annotations: Some(1), labels: None })
        .await
        .expect("snap again");
    assert_eq!(s1.id, s1b.id);
    ds.pin(&s1).await.expect("pin");
    ds.pin(&s1).await.expect("pin twice");
    // A damaged manifest is rewritten by pinning again, not reported as pinned.
    {
        use object_store::{ObjectStoreExt, PutPayload};
        let manifest = ds.location().path(&format!("_ecamp/snapshots/{}.json", s1.id));
        ds.location().store().put(&manifest, PutPayload::from_static(b"garbage")).await.expect("damage");
        ds.read_manifest(&s1.id).await.expect_err("damaged");
        ds.pin(&s1).await.expect("pin repairs");
        assert_eq!(ds.read_manifest(&s1.id).await.expect("repaired"), s1);
    }
    let opened = ds.open_snapshot(&s1.id, Verify::Content).await.expect("open pinned");
    assert_eq!(opened, s1);
    assert_eq!(ds.resolve(&SnapshotRef::Id(s1.id.clone())).await.expect("resolve"), s1);
    assert_eq!(ds.pinned_ids().await.expect("ids"), vec![s1.id.clone()]);

    ds.append_samples(&sample_rows("s", 35, 5), None).await.expect("c");
    let s2 = ds.snapshot_at(TableVersions::default()).await.expect("latest");
    assert_ne!(s1.id, s2.id);
    let d = ecamp_store::snapshot::diff(&s1, &s2);
    assert_eq!(d[&TableKind::Samples].rows_added(), 5);
    assert_eq!(d[&TableKind::Annotations].rows_added(), 0);

    // A clean dataset passes fsck with no orphans.
    let report = ds.fsck(&FsckOptions { grace: std::time::Duration::ZERO, ..Default::default() }).await.expect("fsck");
    assert!(report.is_clean(), "{report:?}");
    assert!(report.orphans.is_empty(), "{report:?}");

    // One flipped byte in a pinned data file: an integrity error naming the file.
    let victim = format!("samples/{}", s1.table(TableKind::Samples).expect("pin").files[0].path);
    flip_one_byte(&ds, &victim).await;
    let err = ds.open_snapshot(&s1.id, Verify::Content).await.expect_err("flipped byte must be caught");
    assert!(matches!(&err, StoreError::Integrity { path, .. } if path == &victim), "{err}");
    let report = ds.fsck(&FsckOptions::default()).await.expect("fsck");
    assert!(!report.is_clean());
    assert!(report.problems.iter().any(|p| p.contains(&victim)), "{report:?}");

    // A version that does not exist is a clear error.
    let err = ds.table(TableKind::Samples).files(99).await.expect_err("no v99");
    assert!(err.to_string().contains("99"), "{err}");
    // Far beyond the log too (the kernel alone would scan backwards for hours).
    let err = ds.table(TableKind::Samples).files(1 << 40).await.expect_err("no v2^40");
    assert!(matches!(err, StoreError::NoSuchVersion { version, .. } if version == 1 << 40), "{err}");

    // A data file shorter than its commit says (replaced mid-run): reads past its end are errors,
    // not panics. S3 answers such a range with the bytes it has, which object_store's own range
    // coalescing then sliced out of bounds.
    short_file_reads_fail(&ds).await;
}

async fn short_file_reads_fail(ds: &Dataset) {
    use object_store::{ObjectStoreExt, PutPayload};
    use parquet::arrow::async_reader::AsyncFileReader;
    let loc = ds.location();
    let path = loc.path("samples/shortened.parquet");
    loc.store().put(&path, PutPayload::from(vec![7u8; 100])).await.expect("put");
    let mut reader = ecamp_store::reader::ShardReader::new(loc.store().clone(), path.clone(), Some(200));
    let err = reader.get_byte_ranges(vec![0..50, 60..150]).await.expect_err("coalesced ranges past the end");
    assert!(err.to_string().contains("shortened.parquet"), "{err}");
    reader.get_bytes(60..150).await.expect_err("a range past the end");
    assert_eq!(reader.get_bytes(10..20).await.expect("within the file").len(), 10);
    loc.store().delete(&path).await.expect("delete");
}

#[test]
fn table_suite_on_every_backend() {
    let rt = runtime();
    for (url, _dir) in backends("suite") {
        eprintln!("table suite on {url}");
        rt.block_on(suite(&url));
    }
}

#[test]
fn refuses_unknown_delta_protocol_features() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}/ds", dir.path().display());
    rt.block_on(async {
        let ds = Dataset::create(&url).await.expect("create");
        // A later writer upgraded the table to deletion vectors, which this build cannot read.
        let commit = r#"{"commitInfo":{"timestamp":1700000000000,"operation":"UPGRADE PROTOCOL"}}
{"protocol":{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["deletionVectors"],"writerFeatures":["deletionVectors"]}}
"#;
        std::fs::write(dir.path().join("ds/samples/_delta_log/00000000000000000001.json"), commit).expect("write");
        let err = ds.table(TableKind::Samples).latest_version().await.expect_err("must refuse");
        assert!(matches!(err, StoreError::UnsupportedProtocol { .. }), "{err}");
        assert!(err.to_string().contains("deletionVectors"), "{err}");
    });
}
