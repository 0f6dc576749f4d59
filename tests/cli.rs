//! The CLI end to end: snapshot commands on a real dataset, and bad input that must give one
//! clear error line and a non-zero exit, never a panic.

mod common;

use common::{ecamp, runtime, s3_bucket, sample_rows, text, unique};
use ecamp_store::Dataset;

/// Asserts `args` fails with exit 2 and one `error:` line containing every `needles` item.
fn fails_cleanly(args: &[&str], envs: &[(&str, &str)], needles: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ecamp"))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!err.contains("panicked"), "{}", text(&out));
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line: {}", text(&out));
    assert!(lines[0].starts_with("error: "), "{}", text(&out));
    for n in needles {
        assert!(lines[0].contains(n), "missing '{n}': {}", text(&out));
    }
}

#[test]
fn unknown_scheme_is_one_clear_line() {
    fails_cleanly(&["snapshot", "list", "--dataset", "ftp://host/ds"], &[], &["unknown URL scheme 'ftp'"]);
}

#[test]
fn scoring_the_distiller_on_no_reports_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let iu = dir.path().display().to_string();
    fails_cleanly(&["distill", "--evaluate", "--iu-reports", &iu], &[], &["no IU X-ray report", "nothing to score"]);
}

#[test]
fn a_directory_that_is_not_a_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().display().to_string();
    fails_cleanly(&["fsck", "--dataset", &url], &[], &["is not an ecamp dataset"]);
}

#[test]
fn wrong_credentials_are_refused_and_never_printed() {
    let secret = "TOPSECRET-not-base64-@@@";
    fails_cleanly(
        &["snapshot", "list", "--dataset", "az://container/ds"],
        &[("AZURE_STORAGE_ACCOUNT_NAME", "ecamptest"), ("AZURE_STORAGE_ACCOUNT_KEY", secret)],
        &["az://container/ds"],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ecamp"))
        .args(["snapshot", "list", "--dataset", "az://container/ds"])
        .env("AZURE_STORAGE_ACCOUNT_NAME", "ecamptest")
        .env("AZURE_STORAGE_ACCOUNT_KEY", secret)
        .output()
        .expect("run");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(secret), "{}", text(&out));
    fails_cleanly(
        &["snapshot", "list", "--dataset", "gs://bucket/ds"],
        &[("GOOGLE_SERVICE_ACCOUNT_KEY", "{\"type\": \"service_account\", \"private_key\": \"garbage\"}")],
        &["gs://bucket/ds"],
    );
}

#[test]
fn wrong_s3_credentials_are_refused_and_never_printed() {
    let Some(endpoint) = common::service_env("ECAMP_TEST_S3_STRICT_ENDPOINT", "an S3 server enforcing credentials")
    else {
        return;
    };
    let secret = "wrong-secret-9f8e7d6c";
    let envs = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "AKIAWRONGKEY"),
        ("AWS_SECRET_ACCESS_KEY", secret),
    ];
    fails_cleanly(
        &["snapshot", "list", "--dataset", "s3://ecamp-test/ds"],
        &envs,
        &["access denied", "InvalidAccessKeyId"],
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ecamp"))
        .args(["init", "--dataset", "s3://ecamp-test/ds"])
        .envs(envs)
        .output()
        .expect("run");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(secret), "{}", text(&out));
}

#[test]
fn a_bucket_that_does_not_exist() {
    if s3_bucket().is_none() {
        return;
    }
    let url = format!("s3://{}/ds", unique("nobucket"));
    fails_cleanly(&["snapshot", "list", "--dataset", &url], &[], &["does not exist"]);
}

#[test]
fn snapshot_commands_on_a_real_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}/ds", dir.path().display());
    let init = ecamp(&["init", "--dataset", &url]);
    assert!(init.status.success(), "{}", text(&init));
    // A reader that goes away (`| head -1`) ends ecamp quietly, not with a print panic.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ecamp"))
        .args(["snapshot", "list", "--dataset", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_ne!(out.status.code(), Some(101), "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", text(&out));
    // A folder holding other files is not made a dataset (fsck would call them orphans).
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(foreign.join("samples")).expect("mkdir");
    std::fs::write(foreign.join("samples/mine.txt"), "keep").expect("write");
    let out = ecamp(&["init", "--dataset", &foreign.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already holds files"), "{}", text(&out));
    runtime().block_on(async {
        let ds = Dataset::open(&url).await.expect("open");
        ds.append_samples(&sample_rows("a", 0, 10), None).await.expect("a");
        ds.append_samples(&sample_rows("a", 10, 7), None).await.expect("b");
    });
    let list = ecamp(&["snapshot", "list", "--dataset", &url]);
    assert!(list.status.success(), "{}", text(&list));
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.lines().any(|l| l.starts_with("samples") && l.contains(" 17 ")), "{listed}");

    let pin1 = ecamp(&["snapshot", "pin", "--dataset", &url, "1"]);
    let pin1b = ecamp(&["snapshot", "pin", "--dataset", &url, "1:0"]);
    let id1 = String::from_utf8_lossy(&pin1.stdout).trim().to_string();
    assert!(id1.starts_with("snap-"), "{}", text(&pin1));
    assert_eq!(id1, String::from_utf8_lossy(&pin1b.stdout).trim(), "same versions, same id");
    let id2 = String::from_utf8_lossy(&ecamp(&["snapshot", "pin", "--dataset", &url]).stdout).trim().to_string();
    assert_ne!(id1, id2);

    let show = ecamp(&["snapshot", "show", "--dataset", &url, &id1, "--verify", "--json"]);
    assert!(show.status.success(), "{}", text(&show));
    let snap: serde_json::Value = serde_json::from_slice(&show.stdout).expect("json");
    assert_eq!(snap["id"], id1.as_str());
    assert_eq!(snap["tables"]["samples"]["version"], 1);

    let diff = ecamp(&["snapshot", "diff", "--dataset", &url, &id1, &id2, "--json"]);
    assert!(diff.status.success(), "{}", text(&diff));
    let d: serde_json::Value = serde_json::from_slice(&diff.stdout).expect("json");
    let added: u64 = d["tables"]["samples"]["added"]
        .as_array()
        .expect("added")
        .iter()
        .map(|f| f["rows"].as_u64().expect("rows"))
        .sum();
    assert_eq!(added, 7);

    let clean = ecamp(&["fsck", "--dataset", &url]);
    assert!(clean.status.success(), "{}", text(&clean));

    // A truncated data file: fsck exits 1 and names it.
    let files: Vec<_> = std::fs::read_dir(dir.path().join("ds/samples"))
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .collect();
    let victim = files[0].path();
    let bytes = std::fs::read(&victim).expect("read");
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).expect("truncate");
    let bad = ecamp(&["fsck", "--dataset", &url]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    let name = victim.file_name().expect("name").to_string_lossy().to_string();
    assert!(String::from_utf8_lossy(&bad.stdout).contains(&name), "{}", text(&bad));
    // The latest pin holds every file, the damaged one included.
    assert!(!ecamp(&["snapshot", "show", "--dataset", &url, &id2, "--verify"]).status.success());
}
