//! Helpers shared by the end-to-end tests: backends, real JPEG rows, the CLI binary.
#![allow(dead_code)] // each test binary uses a different subset

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use ecamp_store::SampleRow;
use ecamp_store::shard::sha256_hex;
use jpeg_encoder::{ColorType, Encoder};

/// Whether we run under CI, where every backend must be available.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A process-unique name for a dataset.
pub fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{tag}-{}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), rand::random::<u32>())
}

/// The value of `var`, set by `.ci/run` for a test service (`what`), or `None` (printing why)
/// outside CI. Under CI a missing service is a failure, never a silent skip.
pub fn service_env(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(!in_ci(), "CI=true but {var} ({what}) is unset: .ci/run provides it");
            eprintln!("note: test needing {what} skipped (run `bash .ci/run`)");
            None
        }
    }
}

/// The S3 bucket of the test server on 127.0.0.1.
pub fn s3_bucket() -> Option<String> {
    service_env("ECAMP_TEST_S3_BUCKET", "an S3 server on 127.0.0.1")
}

/// One fresh dataset URL on each backend available: file, memory, and S3 when configured.
pub fn backends(tag: &str) -> Vec<(String, Option<tempfile::TempDir>)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    out.push((format!("file://{}/ds", dir.path().display()), Some(dir)));
    out.push((format!("memory://{}/ds", unique(tag)), None));
    if let Some(bucket) = s3_bucket() {
        out.push((format!("s3://{bucket}/{}", unique(tag)), None));
    }
    out
}

/// A real grayscale JPEG of `w`×`h` with a pattern that depends on `seed`.
pub fn jpeg(w: u16, h: u16, seed: u32) -> Vec<u8> {
    let mut px = Vec::with_capacity(w as usize * h as usize);
    for y in 0..h as u32 {
        for x in 0..w as u32 {
            px.push(((x * 7 + y * 3 + seed * 31) % 251) as u8);
        }
    }
    let mut out = Vec::new();
    Encoder::new(&mut out, 90).encode(&px, w, h, ColorType::Luma).expect("encode jpeg");
    out
}

/// `n` sample rows with ids `{tag}-{start..start+n}` and real JPEG images.
pub fn sample_rows(tag: &str, start: usize, n: usize) -> Vec<SampleRow> {
    (start..start + n)
        .map(|i| {
            let image = jpeg(32, 32, i as u32);
            SampleRow {
                sample_id: format!("{tag}-{i:06}"),
                subject_id: Some(format!("p{}", i / 3)),
                study_id: Some(format!("s{}", i / 2)),
                view: Some("PA".into()),
                image_sha256: sha256_hex(&image),
                image,
                image_path: Some(format!("{tag}-{i}.jpg")),
                width: 32,
                height: 32,
                orig_width: 64,
                orig_height: 64,
                report: format!("FINDINGS: study {i}. IMPRESSION: No acute process."),
                source: "test".into(),
                ingested_at_us: 1_700_000_000_000_000 + i as i64,
            }
        })
        .collect()
}

/// Runs the `ecamp` binary with `args`.
pub fn ecamp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ecamp")).args(args).output().expect("run ecamp")
}

/// stdout and stderr of an output, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A tokio runtime for a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// A file inside one of the wheels `.ci/run` downloads (pip download, never installed), or
/// `None` (printing why) outside CI. The folder is `ECAMP_TEST_WHEELS` or `.cache/wheels`.
pub fn wheel_member(wheel_prefix: &str, member: &str) -> Option<Vec<u8>> {
    let dir = std::env::var("ECAMP_TEST_WHEELS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/wheels"));
    let wheel = std::fs::read_dir(&dir).ok().and_then(|d| {
        d.filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(wheel_prefix)))
    });
    let Some(wheel) = wheel else {
        assert!(!in_ci(), "CI=true but no {wheel_prefix}*.whl in {} (.ci/run downloads it)", dir.display());
        eprintln!("note: {wheel_prefix} wheel not in {}: real-data test skipped (run `bash .ci/run`)", dir.display());
        return None;
    };
    let file = std::fs::File::open(&wheel).expect("open wheel");
    let mut zip = zip::ZipArchive::new(file).expect("wheel is a zip");
    let mut entry = zip.by_name(member).unwrap_or_else(|e| panic!("{member} not in {}: {e}", wheel.display()));
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut out).expect("read member");
    Some(out)
}

/// The real IU X-ray report XMLs (from torchxrayvision's wheel), extracted into `dir`.
pub fn iu_reports_into(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let tgz = wheel_member("torchxrayvision-", "torchxrayvision/data/NLMCXR_reports.tgz")?;
    tar::Archive::new(flate2::read::GzDecoder::new(tgz.as_slice())).unpack(dir).expect("unpack reports");
    Some(dir.join("ecgen-radiology"))
}

/// A dataset of `n` 64-px phantoms (source seed `seed`) under `dir/ds` with a WordPiece vocabulary
/// trained on their reports; returns its URL.
pub fn phantom_dataset(dir: &std::path::Path, n: u64, seed: u64) -> String {
    let url = dir.join("ds").display().to_string();
    let src = format!("phantom:{n}:{seed}");
    let out = ecamp(&["ingest", "--dataset", &url, "--source", &src, "--image-size", "64", "-q"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = ecamp(&["vocab", "build", "--dataset", &url, "--vocab-size", "600"]);
    assert!(out.status.success(), "{}", text(&out));
    url
}
