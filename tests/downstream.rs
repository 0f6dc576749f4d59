//! The downstream commands end to end on phantom datasets: `ecamp demo --quick`, `ecamp probe`
//! with the dataset's phantom labels and with a ChestX-ray14 label file, `ecamp finetune`, `ecamp annotate-windows`,
//! and their errors on bad input.

mod common;

use common::{ecamp, phantom_dataset, text};
use ecamp_store::schema::label_rows;
use ecamp_store::{Dataset, TableKind, TableLog};

#[test]
fn quick_demo_reports_probe_auc_against_random_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = dir.path().join("demo");
    let out = ecamp(&["demo", "--quick", "--dir", &demo.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let report = std::fs::read_to_string(demo.join("report.md")).expect("report.md");
    assert!(report.contains("| **mean AUC** |") && report.contains("snap-"), "{report}");
    assert!(report.contains("ecamp pretrain --dataset") && report.contains("ecamp probe --dataset"), "{report}");
    for f in ["auc.png", "run/losses.png", "run/data_wait.png"] {
        assert!(demo.join(f).is_file(), "{f} missing");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo.join("results.json")).expect("results.json")).expect("json");
    let probes = results["probe"].as_array().expect("probe results");
    assert_eq!(probes.len(), 2);
    let auc = |k: usize| probes[k]["score"].as_f64().expect("a defined mean AUC");
    for (k, p) in probes.iter().enumerate() {
        assert!((0.0..=1.0).contains(&auc(k)));
        assert_eq!(p["classes"].as_array().map(Vec::len), Some(7));
    }
    assert!(probes[0]["model"].as_str().is_some_and(|m| m.starts_with("checkpoint")));
    assert!(probes[1]["model"].as_str().is_some_and(|m| m.starts_with("random init")));
    let windows = &results["windows"];
    assert!(windows["n"].as_u64().is_some_and(|n| n > 10), "{windows}");
    eprintln!("quick demo: mean probe AUC pre-trained {:.3}, random init {:.3}; windows {windows}", auc(0), auc(1));

    // A folder the demo did not write is never cleared.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).expect("mkdir");
    std::fs::write(foreign.join("notes.txt"), "mine").expect("write");
    let out = ecamp(&["demo", "--quick", "--dir", &foreign.display().to_string()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not written by `ecamp demo`"), "{}", text(&out));
    assert!(foreign.join("notes.txt").is_file());
}

#[test]
fn probe_annotate_and_their_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = phantom_dataset(dir.path(), 60, 3);
    let run = dir.path().join("run").display().to_string();
    let out = ecamp(&["pretrain", "--dataset", &url, "--out", &run, "--batch-size", "8", "--max-steps", "2", "-q"]);
    assert!(out.status.success(), "{}", text(&out));

    // An ingest killed between its labels and samples commits labels those studies again on its
    // re-run: readers take the newest row per sample by time, not the last file (the split below
    // still counts 60, and the older broken rows appended last are never read).
    relabel(&url, 1, None);
    relabel(&url, -1, Some("{broken"));

    // Phantom labels from the dataset; the JSON names the weights and the split.
    let json = dir.path().join("probe.json");
    let out = ecamp(&[
        "probe",
        "--dataset",
        &url,
        "--checkpoint",
        &run,
        "--steps",
        "50",
        "--out",
        &json.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("probe phantom: test auc"), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("json");
    let sizes: Vec<u64> = r["sizes"].as_array().expect("sizes").iter().filter_map(|v| v.as_u64()).collect();
    assert_eq!(sizes.iter().sum::<u64>(), 60, "{r}");

    // The same encoder through exported weights, saved the DDP way (every name under
    // `module.`), probes identically; a file with only part of the encoder is refused.
    let exported = dir.path().join("encoder.safetensors");
    let out = ecamp(&["export", "--checkpoint", &run, "--out", &exported.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let bytes = std::fs::read(&exported).expect("exported");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let rename = |keep: &dyn Fn(&str) -> bool, path: &std::path::Path| {
        let views: Vec<(String, safetensors::tensor::TensorView)> =
            tensors.tensors().into_iter().filter(|(k, _)| keep(k)).map(|(k, v)| (format!("module.{k}"), v)).collect();
        safetensors::serialize_to_file(views, None, path).expect("write safetensors");
    };
    let ddp = dir.path().join("ddp.safetensors");
    rename(&|_| true, &ddp);
    let json2 = dir.path().join("probe-ddp.json");
    let out = ecamp(&[
        "probe",
        "--dataset",
        &url,
        "--weights",
        &ddp.display().to_string(),
        "--steps",
        "50",
        "--out",
        &json2.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r2: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json2).expect("json")).expect("json");
    assert_eq!(r2["score"], r["score"], "{r2} against {r}");
    // Each result says how it was made.
    assert_eq!(r2["made_by"]["label_source"], "phantom", "{r2}");
    assert!(r2["made_by"]["argv"].as_array().is_some_and(|a| a.iter().any(|v| v == "--weights")), "{r2}");
    let part = dir.path().join("norm-only.safetensors");
    rename(&|k| k.starts_with("norm."), &part);
    let out = ecamp(&["probe", "--dataset", &url, "--weights", &part.display().to_string(), "--steps", "5"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("norm-only.safetensors")
            && text(&out).contains("image-encoder tensor(s) are not in the file"),
        "{}",
        text(&out)
    );

    // Full fine-tuning: same split and scoring as the probe, the whole encoder trained.
    let out = ecamp(&[
        "finetune",
        "--dataset",
        &url,
        "--checkpoint",
        &run,
        "--steps",
        "6",
        "--batch-size",
        "8",
        "--eval-every",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(f["mode"], "fine-tune", "{f}");
    assert_eq!(f["sizes"], r["sizes"], "the probe's patient split: {f}");
    assert_eq!(f["classes"].as_array().map(Vec::len), r["classes"].as_array().map(Vec::len));
    assert!(f["validation"][1].as_u64().is_some_and(|s| s == 3 || s == 6), "{f}");
    let out = ecamp(&["finetune", "--dataset", &url, "--random", "--steps", "0"]);
    assert!(
        !out.status.success() && text(&out).contains("--steps") && text(&out).contains("at least 1"),
        "{}",
        text(&out)
    );
    if !cfg!(feature = "cuda") {
        for cmd in ["probe", "finetune"] {
            let out = ecamp(&[cmd, "--dataset", &url, "--random", "--backend", "cuda"]);
            assert!(!out.status.success() && text(&out).contains("--features cuda"), "{}", text(&out));
        }
    }

    // A phantom focus scores that finding alone.
    let out =
        ecamp(&["probe", "--dataset", &url, "--random", "--labels", "phantom:effusion", "--steps", "5", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(e["classes"].as_array().map(Vec::len), Some(1), "{e}");

    // A label file in the public ChestX-ray14 format, keyed by image file names whose stems
    // are the sample ids; one row names an image the dataset lacks.
    let csv = dir.path().join("Data_Entry_2017.csv");
    let mut rows = String::from(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n",
    );
    for i in 0..60 {
        let label = if i % 3 == 0 {
            "Effusion|Mass"
        } else if i % 3 == 1 {
            "No Finding"
        } else {
            "Cardiomegaly"
        };
        rows += &format!("phantom-3-{i:08}.png,{label},0,{},50,M,PA,64,64,0.1,0.1,\n", i / 3);
    }
    rows += "elsewhere.png,No Finding,0,999,50,M,PA,64,64,0.1,0.1,\n";
    std::fs::write(&csv, &rows).expect("write csv");
    let spec = format!("chestxray14:{}", csv.display());
    let out = ecamp(&["probe", "--dataset", &url, "--random", "--labels", &spec, "--steps", "20", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["unmatched"], 1);
    assert_eq!(r["classes"].as_array().map(Vec::len), Some(14));

    // A malformed row is an error naming the file and line.
    std::fs::write(&csv, rows.replace("phantom-3-00000004.png,No Finding", "phantom-3-00000004.png,Unicorns"))
        .expect("write csv");
    let out = ecamp(&["probe", "--dataset", &url, "--random", "--labels", &spec]);
    assert!(!out.status.success());
    assert!(text(&out).contains("Data_Entry_2017.csv") && text(&out).contains("line 6"), "{}", text(&out));
    // The same with Windows line endings: the line an editor shows.
    std::fs::write(
        &csv,
        rows.replace("phantom-3-00000004.png,No Finding", "phantom-3-00000004.png,Unicorns").replace('\n', "\r\n"),
    )
    .expect("write csv");
    let out = ecamp(&["probe", "--dataset", &url, "--random", "--labels", &spec]);
    assert!(text(&out).contains("line 6"), "{}", text(&out));

    // Missing label file, no model named, windows from a random model.
    let out = ecamp(&["probe", "--dataset", &url, "--random", "--labels", "chexpert:/nonexistent/train.csv"]);
    assert!(!out.status.success() && text(&out).contains("/nonexistent/train.csv"), "{}", text(&out));
    let out = ecamp(&["probe", "--dataset", &url]);
    assert!(!out.status.success() && text(&out).contains("--checkpoint DIR, --weights FILE or --random"));
    let out = ecamp(&["annotate-windows", "--dataset", &url, "--random"]);
    assert!(!out.status.success() && text(&out).contains("random model"), "{}", text(&out));

    // Segmentation and detection heads on the phantom masks and boxes: results against the
    // trivial baselines (quality is measured in BENCHMARKS.md; a few steps here).
    let out = ecamp(&["segment", "--dataset", &url, "--checkpoint", &run, "--steps", "8", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let (test, positive) = (r["test"][0].as_u64().unwrap_or(0), r["test"][1].as_u64().unwrap_or(0));
    assert!(test > 0 && positive > 0 && positive <= test, "{r}");
    let baseline = r["baseline_dice"].as_f64().expect("baseline");
    assert!((baseline - (test - positive) as f64 / test as f64).abs() < 1e-9, "{r}");
    assert!(r["dice"].as_f64().is_some_and(|d| (0.0..=1.0).contains(&d)), "{r}");
    let out = ecamp(&["detect", "--dataset", &url, "--random", "--steps", "4", "--batch-size", "8", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["baseline_map"], 0.0, "{r}");
    assert!(r["test"][1].as_u64().is_some_and(|b| b > 0), "{r}");
    assert!(r["map"].as_f64().is_some_and(|m| (0.0..=1.0).contains(&m)), "{r}");
    // Labels without masks or boxes cannot train them.
    std::fs::write(&csv, &rows).expect("write csv");
    let out = ecamp(&["segment", "--dataset", &url, "--random", "--labels", &spec]);
    assert!(!out.status.success() && text(&out).contains("no masks or boxes"), "{}", text(&out));
    let out = ecamp(&["detect", "--dataset", &url, "--random", "--labels", &spec]);
    assert!(!out.status.success() && text(&out).contains("no boxes"), "{}", text(&out));

    // Windows: every annotated sample gets one, in a new annotations version the loader sees.
    // Another vocabulary than the one trained with gives entities other ids: refused, and
    // nothing is committed.
    let official = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mimic_wordpiece.json");
    if std::path::Path::new(official).exists() {
        let out = ecamp(&["annotate-windows", "--dataset", &url, "--checkpoint", &run, "--tokenizer", official]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("trained with vocabulary"), "{}", text(&out));
    }
    let out = ecamp(&["annotate-windows", "--dataset", &url, "--checkpoint", &run, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let (att, centre) = (r["from_attention"].as_u64().unwrap_or(0), r["centre"].as_u64().unwrap_or(0));
    assert_eq!(att + centre, 60, "{r}");
    assert!(att > 0, "{r}");
    assert!(r["annotations_version"].as_u64().is_some_and(|v| v >= 2), "a new annotations version: {r}");
    // Pre-training on the annotated snapshot runs (the loader takes the windows).
    let run2 = dir.path().join("run2").display().to_string();
    let out = ecamp(&["pretrain", "--dataset", &url, "--out", &run2, "--batch-size", "8", "--max-steps", "1", "-q"]);
    assert!(out.status.success(), "{}", text(&out));

    // Newer labels are the ones read: newer broken rows break the probe, naming a sample.
    relabel(&url, 3, Some("{broken"));
    let out = ecamp(&["probe", "--dataset", &url, "--random", "--steps", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("phantom labels of phantom-"), "{}", text(&out));
}

/// Appends again the first 10 label rows of the dataset, `shift` microseconds newer (older when
/// negative), with `json` as their labels when given.
fn relabel(url: &str, shift: i64, json: Option<&str>) {
    common::runtime().block_on(async {
        let ds = Dataset::open(url).await.expect("open");
        let log = ds.table(TableKind::Labels);
        let files = log.files(log.latest_version().await.expect("latest")).await.expect("files");
        let mut rows = Vec::new();
        for f in &files {
            for b in ds.read_file(TableKind::Labels, f).await.expect("read labels") {
                rows.extend(label_rows(&b).expect("label rows"));
            }
        }
        rows.sort_by(|a, b| a.sample_id.cmp(&b.sample_id).then(a.created_at_us.cmp(&b.created_at_us)));
        rows.dedup_by(|b, a| a.sample_id == b.sample_id);
        rows.truncate(10);
        for r in &mut rows {
            r.created_at_us += shift;
            if let Some(json) = json {
                r.labels_json = json.to_string();
            }
        }
        ds.append_labels(&rows, None).await.expect("append the repeated labels");
    });
}
