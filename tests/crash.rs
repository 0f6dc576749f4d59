//! Crash safety: a writer killed with SIGKILL at random points never leaves a visible partial
//! commit; a restarted writer completes the work exactly once; fsck finds the orphans and
//! `--delete-orphans` removes only them.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{ecamp, runtime, sample_rows, text};
use ecamp_store::{AppTxn, AppendOutcome, Dataset, TableKind, TableLog};

const CHILD_ENV: &str = "ECAMP_TEST_CRASH_WRITER";
const BATCHES: i64 = 150;
const ROWS: usize = 4;
const RUNS: usize = 12;
/// Kills that must land before the writer finishes.
const MIN_KILLS: usize = 10;

/// Child mode: appends batches 0..BATCHES (skipping those already committed), printing each
/// committed batch number. In a normal test run the variable is unset and this returns at once.
#[test]
fn crash_child() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    runtime().block_on(async {
        let ds = Dataset::open(&url).await.expect("open");
        for seq in 0..BATCHES {
            let rows = sample_rows("c", seq as usize * ROWS, ROWS);
            match ds.append_samples(&rows, Some(AppTxn { app_id: "crash-writer".into(), seq })).await.expect("append") {
                AppendOutcome::Committed(_) => println!("committed {seq}"),
                AppendOutcome::AlreadyCommitted => println!("skipped {seq}"),
            }
        }
        println!("done");
    });
}

fn committed_ids(url: &str) -> Vec<String> {
    runtime().block_on(async {
        let ds = Dataset::open(url).await.expect("open after crash");
        let log = ds.table(TableKind::Samples);
        let v = log.latest_version().await.expect("latest");
        let rows = ds.read_samples(&log.files(v).await.expect("files")).await.expect("read");
        let mut ids: Vec<String> = rows.into_iter().map(|r| r.sample_id).collect();
        ids.sort();
        ids
    })
}

fn expected_ids(batches: i64) -> Vec<String> {
    let mut ids: Vec<String> = sample_rows("c", 0, batches as usize * ROWS).into_iter().map(|r| r.sample_id).collect();
    ids.sort();
    ids
}

#[test]
fn sigkilled_writers_leave_no_partial_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}/ds", dir.path().display());
    runtime().block_on(Dataset::create(&url)).expect("create");
    let exe = std::env::current_exe().expect("exe");
    let mut printed = 0i64;
    let mut finished = false;
    let mut kills = 0;
    for run in 0..RUNS {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Let it commit a few batches, then kill it somewhere random.
        let delay = Duration::from_millis(100 + rand::random::<u64>() % 500);
        std::thread::sleep(delay);
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        let _ = reader.join();
        for line in rx.try_iter() {
            if let Some(n) = line.strip_prefix("committed ") {
                printed = printed.max(n.parse::<i64>().expect("seq") + 1);
            }
            finished |= line == "done";
        }
        // The table holds whole batches only: those reported, plus possibly the one whose
        // commit landed just before the kill.
        let ids = committed_ids(&url);
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "run {run}: duplicate rows");
        assert!(
            ids == expected_ids(printed) || ids == expected_ids(printed + 1),
            "run {run}: {} rows after {printed} reported batches",
            ids.len()
        );
        printed = (ids.len() / ROWS) as i64;
        if finished {
            break;
        }
        kills += 1;
    }
    assert!(kills >= MIN_KILLS, "only {kills} writers were killed before the work was done");

    // A restarted writer finishes the job exactly once.
    let out = Command::new(&exe)
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &url)
        .output()
        .expect("final writer");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(committed_ids(&url), expected_ids(BATCHES));

    // One certain orphan: a data file uploaded by a writer that died before committing it.
    let orphan = runtime().block_on(async {
        let ds = Dataset::open(&url).await.expect("open");
        let (bytes, rows) = ecamp_store::shard::encode(
            TableKind::Samples,
            &ecamp_store::schema::samples_batch(&sample_rows("orphan", 0, 2)).expect("batch"),
            &Default::default(),
        )
        .expect("encode")
        .remove(0);
        ecamp_store::shard::upload(ds.location(), TableKind::Samples, bytes, rows).await.expect("upload").path
    });

    let report = ecamp(&["fsck", "--dataset", &url, "--grace", "0", "--json"]);
    assert!(report.status.success(), "fsck must pass (orphans are not damage): {}", text(&report));
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).expect("json");
    let orphans: Vec<String> = json["orphans"]
        .as_array()
        .expect("orphans")
        .iter()
        .map(|o| o["path"].as_str().expect("path").to_string())
        .collect();
    assert!(orphans.contains(&format!("samples/{orphan}")), "{orphans:?}");

    let del = ecamp(&["fsck", "--dataset", &url, "--grace", "0", "--delete-orphans"]);
    assert!(del.status.success(), "{}", text(&del));
    for o in &orphans {
        assert!(!dir.path().join("ds").join(o).exists(), "{o} not deleted");
    }
    let after = ecamp(&["fsck", "--dataset", &url, "--grace", "0", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&after.stdout).expect("json");
    assert_eq!(json["orphans"].as_array().map(Vec::len), Some(0), "{}", text(&after));
    assert_eq!(json["problems"].as_array().map(Vec::len), Some(0), "{}", text(&after));
    // Deleting orphans lost nothing committed.
    assert_eq!(committed_ids(&url), expected_ids(BATCHES));
}

/// A commit emptied or garbled (a torn write on a filesystem without atomic rename, an
/// operator's mistake) or missing makes the files it added look orphaned: fsck reports it as
/// damage (exit 1, not "cannot run") and deletes nothing, so the data is still there once the
/// commit is restored.
#[test]
fn an_emptied_commit_is_damage_and_its_files_are_not_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}/ds", dir.path().display());
    let opts =
        |delete_orphans| ecamp_store::FsckOptions { delete_orphans, grace: Duration::ZERO, ..Default::default() };
    runtime().block_on(async {
        let ds = Dataset::create(&url).await.expect("create");
        for k in 0..2 {
            ds.append_samples(&sample_rows("e", k * 3, 3), None).await.expect("append");
        }
        let commit = dir.path().join("ds/samples/_delta_log/00000000000000000001.json");
        let saved = std::fs::read(&commit).expect("read commit");
        let damaged = |says: &'static str| {
            let ds = &ds;
            async move {
                let report = ds.fsck(&opts(true)).await.expect("fsck runs and reports");
                assert!(report.problems.iter().any(|p| p.contains(says)), "{says}: {report:?}");
                assert!(report.deleted.is_empty(), "{says}: {report:?}");
            }
        };
        std::fs::write(&commit, b"").expect("empty the commit");
        damaged("00000000000000000001.json: empty commit").await;
        // Readers refuse it instead of reading a table without that commit's files.
        let fresh = Dataset::open(&url).await.expect("open");
        let err = fresh.table(TableKind::Samples).files(1).await.expect_err("an empty commit").to_string();
        assert!(err.contains("commit 1 (_delta_log/00000000000000000001.json) is empty"), "{err}");
        // So does its history (`snapshot list`).
        let err = fresh.table(TableKind::Samples).history().await.expect_err("history").to_string();
        assert!(err.contains("is empty"), "{err}");
        std::fs::write(&commit, b"{\"add\": truncated").expect("garble the commit");
        damaged("00000000000000000001.json: line 1 is not a JSON action").await;
        // A missing commit: the error says which versions, not the kernel's path dump.
        std::fs::remove_file(&commit).expect("remove the commit");
        let err = ds.table(TableKind::Samples).files(2).await.expect_err("a gap in the log").to_string();
        assert!(err.contains("versions 1 to 1 are missing between commits 0 and 2"), "{err}");
        assert!(!err.contains("ParsedLogPath"), "{err}");
        damaged("samples/_delta_log: versions 1 to 1 are missing").await;
        std::fs::write(&commit, saved).expect("restore the commit");
    });
    assert_eq!(committed_ids(&url).len(), 6, "every committed row is still readable");
}

/// Past a Delta checkpoint (written every 100 commits), reading an old version replays the commits
/// before the checkpoint: an emptied one among them is refused there, while the latest version,
/// read from the checkpoint, is whole.
#[test]
fn an_emptied_commit_below_a_checkpoint_is_refused_for_old_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}/ds", dir.path().display());
    runtime().block_on(async {
        let ds = Dataset::create(&url).await.expect("create");
        for k in 0..101 {
            ds.append_samples(&sample_rows("c", k, 1), None).await.expect("append");
        }
        let log = dir.path().join("ds/samples/_delta_log");
        assert!(
            log.join("00000000000000000099.checkpoint.parquet").is_file(),
            "delta-rs checkpoints every 100 commits"
        );
        std::fs::write(log.join("00000000000000000030.json"), b"").expect("empty commit 30");
        let fresh = Dataset::open(&url).await.expect("open");
        let table = fresh.table(TableKind::Samples);
        assert_eq!(table.files(101).await.expect("latest, from the checkpoint").len(), 101);
        let err = table.files(50).await.expect_err("version 50 replays commit 30").to_string();
        assert!(err.contains("commit 30"), "{err}");
    });
}
