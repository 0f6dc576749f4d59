//! Ingest end to end through the CLI: incremental phantom growth, partitioned writers on S3,
//! a corpus of malformed inputs, real DICOM films, real IU X-ray reports, re-distillation and
//! vocabulary building.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Command;

use common::{ecamp, in_ci, iu_reports_into, jpeg, runtime, s3_bucket, text, unique, wheel_member};
use ecamp_store::{Dataset, TableKind, TableLog};

/// Runs `ecamp ingest ... --json` and returns the summary.
fn ingest(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["ingest", "--quiet", "--json", "--workers", "2"];
    all.extend_from_slice(args);
    let out = ecamp(&all);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("summary JSON: {e}\n{}", text(&out)))
}

/// Every sample id of the latest samples version, read back from the table.
fn sample_ids(url: &str) -> Vec<String> {
    runtime().block_on(async {
        let ds = Dataset::open(url).await.expect("open");
        let log = ds.table(TableKind::Samples);
        let files = log.files(log.latest_version().await.expect("v")).await.expect("files");
        let mut ids = Vec::new();
        for f in &files {
            for b in ds.read_columns(TableKind::Samples, f, &["sample_id"]).await.expect("ids") {
                ids.extend(ecamp_store::schema::sample_ids(&b).expect("ids"));
            }
        }
        ids
    })
}

#[test]
fn growing_phantom_source_adds_only_new_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}/cxr-demo", dir.path().display());
    let first = ingest(&["--dataset", &url, "--source", "phantom:500", "--image-size", "64"]);
    assert_eq!(first["ingested"], 500);
    let second = ingest(&["--dataset", &url, "--source", "phantom:800", "--image-size", "64"]);
    assert_eq!(second["ingested"], 300, "{second}");
    assert_eq!(second["duplicate_ids"], 500);
    let ids = sample_ids(&url);
    assert_eq!(ids.len(), 800);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 800);
    let list = ecamp(&["snapshot", "list", "--dataset", &url, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let samples: Vec<(u64, u64)> = v["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter(|r| r["table"] == "samples")
        .map(|r| (r["version"].as_u64().expect("v"), r["rows"].as_u64().expect("rows")))
        .collect();
    assert_eq!(samples, vec![(0, 0), (1, 500), (2, 800)]);
    // Every sample got its context and its ground truth.
    runtime().block_on(async {
        let ds = Dataset::open(&url).await.expect("open");
        for kind in [TableKind::Annotations, TableKind::Labels] {
            let log = ds.table(kind);
            let files = log.files(log.latest_version().await.expect("v")).await.expect("files");
            assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), 800, "{kind}");
        }
    });
}

/// Runs one `ecamp ingest --json` per entry of `extra` (each added to `common`) at the same
/// time, and returns their summaries.
fn ingest_together(common: &[&str], extra: &[Vec<String>]) -> Vec<serde_json::Value> {
    let children: Vec<_> = extra
        .iter()
        .map(|more| {
            Command::new(env!("CARGO_BIN_EXE_ecamp"))
                .args(["ingest", "--quiet", "--json", "--workers", "1"])
                .args(common)
                .args(more)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn ingest")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("wait");
            assert!(out.status.success(), "{}", text(&out));
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("summary JSON: {e}\n{}", text(&out)))
        })
        .collect()
}

/// Asserts that the dataset holds `n` samples with distinct ids.
fn assert_each_once(url: &str, n: usize) {
    let ids = sample_ids(url);
    assert_eq!(ids.len(), n);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), n);
}

/// A summary count.
fn count(s: &serde_json::Value, key: &str) -> u64 {
    s[key].as_u64().unwrap_or_else(|| panic!("{key} in {s}"))
}

#[test]
fn four_partitions_started_together_on_s3_ingest_each_sample_once() {
    let Some(bucket) = s3_bucket() else { return };
    let url = format!("s3://{bucket}/{}", unique("partitions"));
    let common = ["--dataset", &url, "--source", "phantom:120:3", "--image-size", "64", "--batch-rows", "10"];
    let parts: Vec<Vec<String>> = (0..4).map(|i| vec!["--partition".into(), format!("{i}/4")]).collect();
    let mut total = 0;
    for s in ingest_together(&common, &parts) {
        assert_eq!(count(&s, "other_partitions") + count(&s, "ingested"), 120);
        total += count(&s, "ingested");
    }
    assert_eq!(total, 120);
    assert_each_once(&url, 120);
}

/// Three unpartitioned ingests of one source started together: each sample lands once, and the
/// three summaries account for every listed item as ingested or a duplicate.
fn concurrent_unpartitioned_ingests(url: &str) {
    // Created first, so that no writer is still creating it while the others ingest.
    let init = ecamp(&["init", "--dataset", url]);
    assert!(init.status.success(), "{}", text(&init));
    let common = ["--dataset", url, "--source", "phantom:90:4", "--image-size", "64", "--batch-rows", "5"];
    let mut total = 0;
    for s in ingest_together(&common, &[vec![], vec![], vec![]]) {
        assert_eq!(count(&s, "ingested") + count(&s, "duplicate_ids") + count(&s, "duplicate_images"), 90, "{s}");
        total += count(&s, "ingested");
    }
    assert_eq!(total, 90);
    assert_each_once(url, 90);
}

#[test]
fn concurrent_unpartitioned_ingests_store_each_sample_once_on_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    concurrent_unpartitioned_ingests(&format!("file://{}/together", dir.path().display()));
}

#[test]
fn concurrent_unpartitioned_ingests_store_each_sample_once_on_s3() {
    if let Some(bucket) = s3_bucket() {
        concurrent_unpartitioned_ingests(&format!("s3://{bucket}/{}", unique("together")));
    }
}

/// Within one run, a repeated id and a repeated image are each stored once, also when they fall
/// into different commits.
#[test]
fn repeated_ids_and_images_within_a_run_land_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (a, b) = (jpeg(64, 64, 1), jpeg(64, 64, 2));
    let csv = format!(
        "sample_id,image,report\nx,{},FINDINGS: one.\ny,{},FINDINGS: same bytes.\nx,{},FINDINGS: same id.\nz,{},FINDINGS: two.\n",
        put(d, "a.jpg", &a),
        put(d, "a-copy.jpg", &a),
        put(d, "b.jpg", &b),
        put(d, "b2.jpg", &jpeg(64, 64, 3)),
    );
    std::fs::write(d.join("m.csv"), csv).expect("csv");
    let url = format!("file://{}/ds", d.display());
    let manifest = format!("manifest:{}", d.join("m.csv").display());
    let s = ingest(&["--dataset", &url, "--source", &manifest, "--image-size", "64", "--batch-rows", "1"]);
    assert_eq!(
        (s["ingested"].as_u64(), s["duplicate_ids"].as_u64(), s["duplicate_images"].as_u64()),
        (Some(2), Some(1), Some(1)),
        "{s}"
    );
    // Two workers: whichever of x and y commits first keeps the shared image.
    let mut ids = sample_ids(&url);
    ids.sort();
    assert!(ids == ["x", "z"] || ids == ["y", "z"], "{ids:?}");
}

/// Writes `bytes` to `dir/name` and returns the name.
fn put(dir: &Path, name: &str, bytes: &[u8]) -> String {
    std::fs::write(dir.join(name), bytes).expect("write");
    name.to_string()
}

/// A JPEG whose frame header claims `w`×`h` (the scan data stays small).
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let mut j = jpeg(32, 32, 1);
    let sof = j.windows(2).position(|m| m == [0xFF, 0xC0]).expect("baseline SOF0");
    j[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    j[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    j
}

fn iu_xml(uid: &str, findings: &str, images: &[&str]) -> String {
    let parents: String =
        images.iter().map(|i| format!("<parentImage id=\"{i}\"><figureId>F1</figureId></parentImage>")).collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><eCitation><uId id=\"{uid}\"/><MedlineCitation><Article><Abstract>\
         <AbstractText Label=\"FINDINGS\">{findings}</AbstractText><AbstractText Label=\"IMPRESSION\"></AbstractText>\
         </Abstract></Article></MedlineCitation><MeSH><major>normal</major></MeSH>{parents}</eCitation>"
    )
}

#[test]
fn malformed_inputs_are_rejected_with_their_reasons_and_valid_rows_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ok = |i: u32| jpeg(64, 64, i);
    let mut expected: BTreeMap<String, &str> = BTreeMap::new();
    // CSV manifest: 5 valid rows and 20 bad ones.
    let mut csv: Vec<u8> = b"image,report,sample_id\n".to_vec();
    // Rejects are matched by sample id, or by the end of their input ("manifest.csv:LINE").
    let mut row =
        |img: &str, report: &[u8], id: &str, key: Option<(String, &'static str)>, exp: &mut BTreeMap<String, &str>| {
            csv.extend_from_slice(format!("{img},").as_bytes());
            csv.extend_from_slice(report);
            csv.extend_from_slice(format!(",{id}\n").as_bytes());
            if let Some((k, r)) = key {
                exp.insert(k, r);
            }
        };
    let mut line = 1;
    for i in 0..5 {
        line += 1;
        let name = put(d, &format!("ok{i}.jpg"), &ok(i));
        row(&name, b"No acute process. No pneumothorax.", &format!("ok-{i}"), None, &mut expected);
    }
    let bad_images: Vec<(&str, Vec<u8>, &'static str)> = vec![
        ("zero.jpg", vec![], "empty-image"),
        ("text.jpg", b"this is not an image".to_vec(), "unknown-image-format"),
        ("gif.jpg", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(), "unknown-image-format"),
        ("half.jpg", ok(7)[..ok(7).len() / 2].to_vec(), "corrupt-image"),
        ("head.jpg", ok(8)[..10].to_vec(), "corrupt-image"),
        ("soi.jpg", vec![0xFF, 0xD8, 0xFF], "corrupt-image"),
        ("junk.jpg", [vec![0xFF, 0xD8, 0xFF, 0xE0], vec![0x42; 300]].concat(), "corrupt-image"),
        ("pngjunk.png", [b"\x89PNG\r\n\x1a\n".to_vec(), vec![7; 100]].concat(), "corrupt-image"),
        ("pngsig.png", b"\x89PNG\r\n\x1a\n".to_vec(), "corrupt-image"),
        ("bomb.jpg", jpeg_claiming(60000, 60000), "image-too-large"),
        ("tiny.jpg", jpeg(8, 8, 3), "image-too-small"),
    ];
    for (name, bytes, reason) in &bad_images {
        line += 1;
        put(d, name, bytes);
        row(name, b"Normal chest.", &format!("bad-{name}"), Some((format!("id:bad-{name}"), *reason)), &mut expected);
    }
    std::fs::create_dir(d.join("adir.jpg")).expect("dir");
    // A FIFO would block a worker forever on read, /dev/zero would fill memory.
    let fifo = std::process::Command::new("mkfifo").arg(d.join("fifo.jpg")).status().expect("mkfifo");
    assert!(fifo.success(), "mkfifo failed");
    // Image problems are found by the workers (matched by id); report problems while listing (by line).
    for (img, report, reason, by_id) in [
        ("missing.jpg", b"Normal.".as_slice(), "missing-file", true),
        ("adir.jpg", b"Normal.", "unreadable-file", true),
        ("fifo.jpg", b"Normal.", "unreadable-file", true),
        ("/dev/zero", b"Normal.", "unreadable-file", true),
        ("ok0.jpg", b"\"\"", "empty-report", false),
        ("ok1.jpg", b"\"   \"", "empty-report", false),
        ("ok2.jpg", b"caf\xe9 \xff report", "non-utf8-report", false),
    ] {
        line += 1;
        let id = format!("bad-r{line}");
        let key = if by_id { format!("id:{id}") } else { format!("at:manifest.csv:{line}") };
        row(img, report, &id, Some((key, reason)), &mut expected);
    }
    // Rows with the wrong number of fields, or no image.
    for raw in [b"ok3.jpg,Normal.\n".as_slice(), b"ok3.jpg,Normal.,id-x,extra\n", b",Normal.,id-y\n"] {
        line += 1;
        csv.extend_from_slice(raw);
        expected.insert(format!("at:manifest.csv:{line}"), "malformed-row");
    }
    std::fs::write(d.join("manifest.csv"), &csv).expect("csv");
    // JSONL manifest: 2 valid rows and 7 bad ones.
    put(d, "j0.jpg", &ok(20));
    put(d, "j1.jpg", &ok(21));
    let jsonl: Vec<(&[u8], Option<&str>)> = vec![
        (br#"{"image":"j0.jpg","report":"Small right pleural effusion.","sample_id":"j-0"}"#, None),
        (br#"{"image":"j1.jpg","report":"No pneumothorax.","sample_id":"j-1"}"#, None),
        (b"{not json", Some("malformed-row")),
        (b"[1, 2, 3]", Some("malformed-row")),
        (br#"{"report":"Normal."}"#, Some("malformed-row")),
        (br#"{"image":"j0.jpg","sample_id":"j-x"}"#, Some("malformed-row")),
        (br#"{"image":"j1.jpg","report":"","sample_id":"j-y"}"#, Some("empty-report")),
        (br#"{"image":"nowhere.jpg","report":"Normal.","sample_id":"j-z"}"#, None),
        (b"{\"image\":\"j0.jpg\",\"report\":\"\xff\xfe\"}", Some("non-utf8-report")),
    ];
    let mut body = Vec::new();
    for (i, (l, reason)) in jsonl.iter().enumerate() {
        body.extend_from_slice(l);
        body.push(b'\n');
        if let Some(r) = reason {
            expected.insert(format!("at:rows.jsonl:{}", i + 1), r);
        }
    }
    std::fs::write(d.join("rows.jsonl"), &body).expect("jsonl");
    expected.insert("id:j-z".into(), "missing-file");
    // IU X-ray tree: 1 valid image and 5 bad inputs.
    let iu = d.join("iu");
    std::fs::create_dir_all(iu.join("ecgen-radiology")).expect("dir");
    std::fs::create_dir_all(iu.join("images")).expect("dir");
    let reports = iu.join("ecgen-radiology");
    std::fs::write(reports.join("1.xml"), iu_xml("CXR1", "Heart size is normal.", &["CXR1_IM-1"])).expect("xml");
    put(&iu.join("images"), "CXR1_IM-1.jpg", &ok(30));
    std::fs::write(reports.join("2.xml"), &iu_xml("CXR2", "Normal.", &["CXR2_IM-1"])[..120]).expect("xml");
    std::fs::write(reports.join("3.xml"), iu_xml("CXR3", "   ", &["CXR3_IM-1"])).expect("xml");
    std::fs::write(reports.join("4.xml"), iu_xml("CXR4", "Normal.", &["CXR4_IM-1"])).expect("xml");
    std::fs::write(reports.join("5.xml"), [b"<eCitation>\xff\xfe".as_slice(), b"</eCitation>"].concat()).expect("xml");
    std::fs::write(reports.join("6.xml"), iu_xml("CXR6", "No effusion.", &["CXR6_IM-1"])).expect("xml");
    put(&iu.join("images"), "CXR6_IM-1.jpg", b"\xFF\xD8\xFF\xE0 broken");
    // An image id that climbs out of images/ to a valid JPEG (ok0.jpg, two levels up).
    std::fs::write(reports.join("7.xml"), iu_xml("CXR7", "Normal.", &["../../ok0"])).expect("xml");
    for (key, reason) in [
        ("id:iu-../../ok0", "malformed-xml"),
        ("at:2.xml", "malformed-xml"),
        ("at:3.xml", "empty-report"),
        ("id:iu-CXR4_IM-1", "missing-file"),
        ("at:5.xml", "non-utf8-report"),
        ("id:iu-CXR6_IM-1", "corrupt-image"),
    ] {
        expected.insert(key.to_string(), reason);
    }
    assert!(expected.len() >= 30, "only {} malformed inputs", expected.len());

    let url = format!("file://{}/ds", d.display());
    let rejects = d.join("rejects.jsonl");
    let manifest = format!("manifest:{}", d.join("manifest.csv").display());
    let rows = format!("manifest:{}", d.join("rows.jsonl").display());
    let iu_src = format!("iu-xray:{}", iu.display());
    let summary = ingest(&[
        "--dataset",
        &url,
        "--source",
        &manifest,
        "--source",
        &rows,
        "--source",
        &iu_src,
        "--image-size",
        "64",
        "--rejects",
        rejects.to_str().expect("utf8"),
    ]);
    assert_eq!(summary["ingested"], 8, "{summary}");
    let mut ids = sample_ids(&url);
    ids.sort();
    assert_eq!(ids, vec!["iu-CXR1_IM-1", "j-0", "j-1", "ok-0", "ok-1", "ok-2", "ok-3", "ok-4"]);

    // Every reject names its input and carries the expected reason.
    let got: Vec<serde_json::Value> = std::fs::read_to_string(&rejects)
        .expect("rejects file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("reject JSON"))
        .collect();
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (key, reason) in &expected {
        let hit = got.iter().find(|r| match key.split_once(':') {
            Some(("id", id)) => r["sample_id"].as_str() == Some(id),
            Some((_, at)) => r["input"].as_str().is_some_and(|i| i.ends_with(at)),
            None => false,
        });
        let hit = hit.unwrap_or_else(|| panic!("no reject for {key}: {got:#?}"));
        assert_eq!(hit["reason"], *reason, "{key}: {hit}");
        assert!(!hit["detail"].as_str().unwrap_or("").is_empty(), "{hit}");
        assert!(!hit["input"].as_str().unwrap_or("").is_empty(), "{hit}");
    }
    assert_eq!(
        summary["rejected"].as_object().map(|m| m.values().filter_map(|v| v.as_u64()).sum::<u64>()),
        Some(expected.len() as u64)
    );

    // With --on-error fail the run stops at the first bad input, naming it, exit status 2.
    let strict = ecamp(&[
        "ingest",
        "--quiet",
        "--dataset",
        &format!("file://{}/ds2", d.display()),
        "--source",
        &manifest,
        "--on-error",
        "fail",
        "--image-size",
        "64",
    ]);
    assert_eq!(strict.status.code(), Some(2), "{}", text(&strict));
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(err.starts_with("error: ") && err.contains("rejected"), "{}", text(&strict));

    // An unwritable --rejects stops the run before anything is committed (the list of rejects
    // would otherwise be lost after the data landed).
    let ds3 = d.join("ds3");
    let nowhere = d.join("no/such/dir/rejects.jsonl");
    let out = ecamp(&[
        "ingest",
        "--quiet",
        "--dataset",
        &format!("file://{}", ds3.display()),
        "--source",
        &manifest,
        "--image-size",
        "64",
        "--rejects",
        nowhere.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no/such/dir/rejects.jsonl"), "{}", text(&out));
    assert!(!ds3.exists(), "nothing may be written before the rejects file opens");
}

#[test]
fn real_dicom_films_ingest_and_both_encodings_agree() {
    let Some(unc) = wheel_member("pydicom_data-", "data_store/data/RG1_UNCR.dcm") else { return };
    let Some(j2k) = wheel_member("pydicom_data-", "data_store/data/RG1_J2KR.dcm") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let films = dir.path().join("films");
    std::fs::create_dir_all(&films).expect("dir");
    std::fs::write(films.join("RG1_UNCR.dcm"), &unc).expect("write");
    std::fs::write(films.join("RG1_J2KR.dcm"), &j2k).expect("write");
    let a = ecamp_ingest::source::dicom::decode_dicom_bytes("RG1_UNCR", &unc).expect("decode uncompressed");
    let b = ecamp_ingest::source::dicom::decode_dicom_bytes("RG1_J2KR", &j2k).expect("decode JPEG 2000");
    assert_eq!((a.width, a.height), (b.width, b.height));
    assert!(a.pixels == b.pixels, "both encodings must give identical pixels");
    let uid = a.study_instance_uid.clone().expect("study uid");
    let csv = dir.path().join("reports.csv");
    std::fs::write(&csv, format!("StudyInstanceUID,report\n{uid},\"PA chest. No acute cardiopulmonary process.\"\n"))
        .expect("csv");
    let url = format!("file://{}/ds", dir.path().display());
    let s = ingest(&[
        "--dataset",
        &url,
        "--source",
        &format!("dicom:{}", films.display()),
        "--reports",
        csv.to_str().expect("utf8"),
    ]);
    // The same film twice: one sample, the other is a duplicate (same SOP instance, same pixels).
    assert_eq!(s["ingested"], 1, "{s}");
    assert_eq!(s["duplicate_ids"].as_u64().unwrap_or(0) + s["duplicate_images"].as_u64().unwrap_or(0), 1, "{s}");
    runtime().block_on(async {
        let ds = Dataset::open(&url).await.expect("open");
        let files = ds.table(TableKind::Samples).files(1).await.expect("files");
        let rows = ds.read_samples(&files).await.expect("rows");
        let r = &rows[0];
        assert_eq!((r.orig_width, r.orig_height), (a.width as i32, a.height as i32));
        assert_eq!(r.width.min(r.height), 512);
        assert_eq!(r.view.as_deref(), Some("PA"));
        assert!(r.report.contains("No acute"));
    });
}

#[test]
fn real_iu_xray_reports_with_phantom_images_ingest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(all) = iu_reports_into(dir.path()) else { return };
    // The pairing is artificial: real IU X-ray reports, each image replaced by a phantom JPEG.
    let tree = dir.path().join("iu");
    std::fs::create_dir_all(tree.join("ecgen-radiology")).expect("dir");
    std::fs::create_dir_all(tree.join("images")).expect("dir");
    let mut names: Vec<_> =
        std::fs::read_dir(&all).expect("reports").filter_map(Result::ok).map(|e| e.path()).collect();
    names.sort();
    let (mut images, mut seed) = (0, 0u32);
    for p in names.iter().take(40) {
        let xml = std::fs::read_to_string(p).expect("xml");
        std::fs::write(tree.join("ecgen-radiology").join(p.file_name().expect("name")), &xml).expect("copy");
        let parsed = ecamp_ingest::source::iu_xray::parse_iu_report(&xml).expect("real report parses");
        for id in &parsed.image_ids {
            if parsed.report_text().is_some() {
                images += 1;
            }
            seed += 1;
            std::fs::write(tree.join("images").join(format!("{id}.jpg")), jpeg(64, 64, seed)).expect("img");
        }
    }
    let url = format!("file://{}/ds", dir.path().display());
    let s = ingest(&["--dataset", &url, "--source", &format!("iu-xray:{}", tree.display()), "--image-size", "64"]);
    assert_eq!(s["ingested"].as_u64(), Some(images as u64), "{s}");
    assert!(images > 40, "40 reports have more than 40 images ({images})");
}

#[test]
fn distill_again_and_build_vocabularies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}/ds", dir.path().display());
    ingest(&["--dataset", &url, "--source", "phantom:60:9", "--image-size", "64"]);
    let out = ecamp(&["distill", "--dataset", &url, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["distilled"], 60);
    assert_eq!(v["annotations_version"], 2, "a new annotations version, samples untouched");
    // An endpoint nobody answers: every report fails, the run says why and exits 2.
    let cache = dir.path().join("llm-cache").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ecamp"))
        .args(["distill", "--dataset", &url, "--distiller", "openai", "--endpoint", "http://127.0.0.1:9/v1"])
        .args(["--attempts", "1", "--request-timeout", "5", "--cache-dir", &cache])
        .env("OPENAI_API_KEY", "sk-test-secret-not-printed")
        .output()
        .expect("run ecamp");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("60 report(s) all failed") && err.contains("sample phantom-9-"), "{err}");
    assert!(!err.contains("sk-test-secret"), "{err}");
    let list = ecamp(&["snapshot", "list", "--dataset", &url, "--json"]);
    let l: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(l["versions"].as_array().expect("rows").iter().filter(|r| r["table"] == "samples").count(), 2);

    let built = ecamp(&["vocab", "build", "--dataset", &url, "--vocab-size", "500", "--json"]);
    assert!(built.status.success(), "{}", text(&built));
    let info: serde_json::Value = serde_json::from_slice(&built.stdout).expect("json");
    let path = dir.path().join("ds").join(info["path"].as_str().expect("path"));
    let tok = ecamp_ingest::vocab::load(&std::fs::read(&path).expect("stored vocab")).expect("valid tokenizer");
    assert!(tok.token_to_id("effusion").is_some() || tok.token_to_id("pneumothorax").is_some());

    let official = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mimic_wordpiece.json");
    if official.exists() || in_ci() {
        let imported =
            ecamp(&["vocab", "build", "--dataset", &url, "--tokenizer", official.to_str().expect("utf8"), "--json"]);
        assert!(imported.status.success(), "{}", text(&imported));
        let info: serde_json::Value = serde_json::from_slice(&imported.stdout).expect("json");
        assert_eq!(info["vocab_size"], 30000);
    }
}

#[test]
fn manifest_images_by_url_from_object_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut rows = String::from("image,report,sample_id\n");
    for i in 0..3u32 {
        let p = d.join(format!("u{i}.jpg"));
        std::fs::write(&p, jpeg(64, 64, 100 + i)).expect("write");
        rows.push_str(&format!("file://{},No acute process.,file-{i}\n", p.display()));
    }
    rows.push_str(&format!("file://{}/absent.jpg,Normal.,file-missing\n", d.display()));
    let mut expected = 3;
    if let Some(bucket) = s3_bucket() {
        let prefix = unique("urls");
        runtime().block_on(async {
            let loc = ecamp_store::Location::parse(&format!("s3://{bucket}/{prefix}")).expect("s3");
            for i in 0..2u32 {
                let body = object_store::PutPayload::from(jpeg(64, 64, 200 + i));
                object_store::ObjectStoreExt::put(loc.store().as_ref(), &loc.path(&format!("img {i}.jpg")), body)
                    .await
                    .expect("put");
            }
        });
        for i in 0..2 {
            rows.push_str(&format!("s3://{bucket}/{prefix}/img%20{i}.jpg,Small effusion.,s3-{i}\n"));
        }
        expected += 2;
    }
    std::fs::write(d.join("urls.csv"), rows).expect("csv");
    let url = format!("file://{}/ds", d.display());
    let s = ingest(&[
        "--dataset",
        &url,
        "--source",
        &format!("manifest:{}", d.join("urls.csv").display()),
        "--image-size",
        "64",
    ]);
    assert_eq!(s["ingested"], expected, "{s}");
    assert_eq!(s["rejected"]["missing-file"], 1, "{s}");
}
