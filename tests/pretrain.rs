//! `ecamp pretrain` end to end on phantom studies: a run interrupted at step k and resumed gives
//! the same per-step losses, bit for bit, as the uninterrupted run (ndarray, dropout on,
//! gradient accumulation across the interruption, an epoch boundary crossed); resuming against
//! another snapshot is refused.

mod common;

use std::path::Path;

use common::{ecamp, phantom_dataset, text};
use ecamp_model::train::metrics::{MetricsLog, StepMetrics};

/// The test runs' pre-training arguments: batch 8, accumulation 2, one worker, a checkpoint per
/// optimizer step, 3 epochs; `extra` last.
fn pretrain_args<'a>(url: &'a str, run: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["pretrain", "--dataset", url, "--out", run, "--batch-size", "8", "--accum", "2", "-q"];
    args.extend_from_slice(&["--workers", "1", "--checkpoint-every", "1", "--epochs", "3"]);
    args.extend_from_slice(extra);
    args
}

/// `ecamp ARGS` with its output captured, to spawn and signal.
fn ecamp_command(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ecamp"));
    cmd.args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd
}

fn pretrain(url: &str, run: &Path, extra: &[&str]) {
    let run = run.display().to_string();
    let out = ecamp(&pretrain_args(url, &run, extra));
    assert!(out.status.success(), "{}", text(&out));
}

/// The deterministic part of a step's metrics (timings dropped).
fn numbers(m: &StepMetrics) -> (u64, u64, u64, [u64; 6]) {
    let bits = [m.epoch, m.lr, m.mim, m.sr, m.mlm, m.mlm_masked].map(f64::to_bits);
    (m.step, m.optimizer_step, m.epoch.to_bits(), bits)
}

/// The deterministic part of every step of a run folder's metrics.
fn steps(run: &Path) -> Vec<(u64, u64, u64, [u64; 6])> {
    MetricsLog::read(&run.join("metrics.jsonl")).expect("metrics").iter().map(numbers).collect()
}

/// Waits until `run` has logged `n` steps, then sends `child` SIGINT and waits for it to end.
#[cfg(unix)]
fn interrupt_after(child: std::process::Child, run: &Path, n: usize) -> std::process::Output {
    signal_after(child, run, n, libc::SIGINT)
}

/// Sends `signal` to `child` once `run` has logged `n` steps, and waits for it.
fn signal_after(child: std::process::Child, run: &Path, n: usize, signal: libc::c_int) -> std::process::Output {
    let metrics = run.join("metrics.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < n {
        assert!(std::time::Instant::now() < deadline, "fewer than {n} steps within two minutes");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: signalling our own child by its pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
    child.wait_with_output().expect("wait")
}

#[test]
fn interrupted_and_resumed_run_repeats_every_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = phantom_dataset(dir.path(), 48, 7); // 6 batches of 8 per epoch
    let whole = dir.path().join("whole");
    pretrain(&url, &whole, &["--max-steps", "10"]);
    let parted = dir.path().join("parted");
    pretrain(&url, &parted, &["--max-steps", "4"]);
    pretrain(&url, &parted, &["--max-steps", "10", "--resume", &parted.display().to_string()]);

    let a = MetricsLog::read(&whole.join("metrics.jsonl")).expect("metrics");
    let b = MetricsLog::read(&parted.join("metrics.jsonl")).expect("metrics");
    assert_eq!(a.len(), 10);
    assert_eq!(a.iter().map(numbers).collect::<Vec<_>>(), b.iter().map(numbers).collect::<Vec<_>>());
    assert!(a.iter().all(|m| m.mim.is_finite() && m.sr.is_finite() && m.mlm.is_finite()));
    // Accumulation of 2: one optimizer step per two batches; epoch 1 starts at step 7.
    assert_eq!(a[9].optimizer_step, 5);
    assert!((a[6].epoch - (1.0 + 1.0 / 6.0)).abs() < 1e-12, "{}", a[6].epoch);
    // Warmup: lr rises from 0.
    assert_eq!(a[0].lr, 0.0);
    assert!(a[2].lr > a[0].lr);
    assert!(whole.join("checkpoints/latest").is_file());

    // The encoder exports with timm's names and PyTorch layouts.
    let st = dir.path().join("encoder.safetensors");
    let out = ecamp(&["export", "--checkpoint", &whole.display().to_string(), "--out", &st.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let bytes = std::fs::read(&st).expect("read export");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let shape = |n: &str| tensors.tensor(n).map(|t| t.shape().to_vec()).unwrap_or_default();
    assert_eq!(shape("blocks.0.attn.qkv.weight"), vec![192, 64], "torch Linear layout (out, in)");
    assert_eq!(shape("patch_embed.proj.weight"), vec![64, 3, 4, 4]);
    assert_eq!(shape("norm.weight"), vec![64]);
    assert_eq!(shape("pos_embed"), vec![1, 65, 64]);
    assert!(tensors.names().iter().all(|n| !n.starts_with("decoder") && !n.starts_with("text")), "encoder only");

    // An existing file is never overwritten.
    let out = ecamp(&["export", "--checkpoint", &whole.display().to_string(), "--out", &st.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already exists") && text(&out).contains("--out"), "{}", text(&out));

    // A checkpoint whose tensors changed after they were written is refused, naming the file.
    let latest = std::fs::read_to_string(whole.join("checkpoints/latest")).expect("latest");
    let mpk = whole.join("checkpoints").join(latest.trim()).join("model.mpk");
    let saved = std::fs::read(&mpk).expect("read model.mpk");
    let mut flipped = saved.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    std::fs::write(&mpk, &flipped).expect("flip a byte");
    let st2 = dir.path().join("flipped.safetensors").display().to_string();
    let out = ecamp(&["export", "--checkpoint", &whole.display().to_string(), "--out", &st2]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("model.mpk") && text(&out).contains("content changed"), "{}", text(&out));
    std::fs::write(&mpk, &saved).expect("restore model.mpk");

    // A fresh run can start from official-named (here: timm-named encoder) weights; a file that
    // is not a weights file is a clear error.
    let init = dir.path().join("init");
    pretrain(&url, &init, &["--max-steps", "2", "--init", &st.display().to_string()]);
    let started = MetricsLog::read(&init.join("metrics.jsonl")).expect("metrics");
    assert_ne!(started[0].mim.to_bits(), a[0].mim.to_bits(), "the trained encoder changes the first loss");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").expect("write");
    let run = dir.path().join("junk-run").display().to_string();
    let out = ecamp(&["pretrain", "--dataset", &url, "--out", &run, "--init", &junk.display().to_string(), "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.safetensors"), "{}", text(&out));
    // A valid weights file whose names match nothing would silently leave the initialisation.
    let unrelated = dir.path().join("unrelated.safetensors");
    let one = 1f32.to_le_bytes();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &one).expect("view");
    safetensors::serialize_to_file([("head.weight", view)], None, &unrelated).expect("write safetensors");
    let out = ecamp(&["pretrain", "--dataset", &url, "--out", &run, "--init", &unrelated.display().to_string(), "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("head.weight"), "{}", text(&out));

    // A fresh run into a folder holding one would truncate its metrics: refused, history kept.
    let out = ecamp(&["pretrain", "--dataset", &url, "--out", &whole.display().to_string(), "--max-steps", "1", "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"), "{}", text(&out));
    assert_eq!(MetricsLog::read(&whole.join("metrics.jsonl")).expect("metrics").len(), 10);
    // Resuming a run already past the requested end says so instead of "0 steps this run".
    let out = ecamp(&[
        "pretrain",
        "--dataset",
        &url,
        "--out",
        &whole.display().to_string(),
        "--resume",
        &whole.display().to_string(),
        "--batch-size",
        "8",
        "--accum",
        "2",
        "--max-steps",
        "6",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already past"), "{}", text(&out));
    // Nor may another run be resumed into it.
    let (whole_s, parted_s) = (whole.display().to_string(), parted.display().to_string());
    let out =
        ecamp(&["pretrain", "--dataset", &url, "--out", &whole_s, "--resume", &parted_s, "--max-steps", "12", "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a run"), "{}", text(&out));

    // New studies make a new snapshot: resuming on it would change the data, so it is refused.
    let out = ecamp(&["ingest", "--dataset", &url, "--source", "phantom:8:99", "--image-size", "64", "-q"]);
    assert!(out.status.success(), "{}", text(&out));
    let run = whole.display().to_string();
    let out = ecamp(&["pretrain", "--dataset", &url, "--out", &run, "--resume", &run, "--batch-size", "8", "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("snapshot") && !err.contains("panicked"), "{}", text(&out));
}

/// The failure modes of a run folder: a save cut short (newest checkpoint without state.json),
/// a rewound resume interrupted, a resume with other settings, and a second trainer.
#[test]
fn damaged_rewound_changed_and_concurrent_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = phantom_dataset(dir.path(), 48, 7);
    let whole = dir.path().join("whole");
    pretrain(&url, &whole, &["--max-steps", "10"]);
    let want = steps(&whole);
    let run = dir.path().join("run");
    let run_s = run.display().to_string();
    pretrain(&url, &run, &["--max-steps", "6"]);
    let ckpt = |step: u64| run.join(format!("checkpoints/step-{step:08}"));

    // A save cut short: the newest checkpoint lacks its state.json. A fresh run is still
    // refused (the folder holds a run); resuming falls back to the newest whole checkpoint.
    std::fs::remove_file(ckpt(6).join("state.json")).expect("damage");
    let out = ecamp(&["pretrain", "--dataset", &url, "--out", &run_s, "--max-steps", "1", "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a run"), "{}", text(&out));
    assert_eq!(MetricsLog::read(&run.join("metrics.jsonl")).expect("metrics").len(), 6, "history kept");
    pretrain(&url, &run, &["--max-steps", "8", "--resume", &run_s]);
    assert_eq!(steps(&run), want[..8], "resumed from step 4, the damaged step 6 saved anew");
    assert!(ckpt(6).join("state.json").is_file());

    // Rewound to step 2 and killed from step 3 on: resuming the run continues from the
    // rewound trajectory, where its metrics end, not from step 8 of the abandoned one.
    let step2 = ckpt(2).display().to_string();
    let child = ecamp_command(&pretrain_args(&url, &run_s, &["--max-steps", "10", "--resume", &step2]))
        .spawn()
        .expect("spawn pretrain");
    let killed = signal_after(child, &run, 3, libc::SIGKILL);
    assert!(!killed.status.success(), "{}", text(&killed));
    pretrain(&url, &run, &["--max-steps", "10", "--resume", &run_s]);
    assert_eq!(steps(&run), want, "every step once, as in the uninterrupted run");

    // Other training settings would make another run: refused, naming them.
    let out = ecamp(&[
        "pretrain",
        "--dataset",
        &url,
        "--out",
        &run_s,
        "--resume",
        &run_s,
        "--batch-size",
        "8",
        "--accum",
        "2",
        "--epochs",
        "3",
        "--lr",
        "0.0005",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("training settings") && err.contains("lr 0.001 → 0.0005"), "{}", text(&out));

    // A run whose last periodic save fell on its last batch is finished: resuming it says so.
    let one = dir.path().join("one-epoch").display().to_string();
    let args = ["pretrain", "--dataset", &url, "--out", &one, "--batch-size", "8", "--accum", "2", "--epochs", "1"];
    let out = ecamp(&[&args[..], &["--checkpoint-every", "1", "-q"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let out = ecamp(&[&args[..], &["--checkpoint-every", "1", "--resume", &one, "-q"]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already past"), "{}", text(&out));

    // A second trainer on the same folder is refused while the first holds it.
    let lock = std::fs::File::open(run.join(".lock")).expect("lock file");
    lock.lock().expect("hold the lock");
    let out = ecamp(&["pretrain", "--dataset", &url, "--out", &run_s, "--resume", &run_s, "--max-steps", "12", "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another process is training"), "{}", text(&out));
    drop(lock);
}

/// Ctrl-C (SIGINT) during training saves a checkpoint at the next optimizer step and exits with
/// 130; resuming from it repeats the uninterrupted run.
#[cfg(unix)]
#[test]
fn interrupt_saves_a_checkpoint_to_resume_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = phantom_dataset(dir.path(), 48, 7);
    let whole = dir.path().join("whole");
    pretrain(&url, &whole, &["--max-steps", "12"]);
    let run = dir.path().join("run");
    let run_s = run.display().to_string();
    // No periodic checkpoints: without the stop, an interrupt would leave nothing to resume.
    let child =
        ecamp_command(&["pretrain", "--dataset", &url, "--out", &run_s, "--batch-size", "8", "--accum", "2", "-q"])
            .args(["--workers", "1", "--checkpoint-every", "0", "--epochs", "3", "--max-steps", "12"])
            .spawn()
            .expect("spawn pretrain");
    let out = interrupt_after(child, &run, 3);
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let stopped = steps(&run).len() as u64;
    assert!(stopped < 12 && stopped.is_multiple_of(2), "stopped at step {stopped}, an optimizer step");
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).expect("latest");
    assert_eq!(latest.trim(), format!("step-{stopped:08}"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"), "{}", text(&out));
    pretrain(&url, &run, &["--max-steps", "12", "--resume", &run_s]);
    assert_eq!(steps(&run), steps(&whole));
}

/// A pinned snapshot fixes the vocabulary: a second one built later changes nothing for runs
/// on the id, and an edited pinned vocabulary is refused.
#[test]
fn a_pinned_snapshot_fixes_the_vocabulary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = phantom_dataset(dir.path(), 16, 7);
    let out = ecamp(&["snapshot", "pin", "--dataset", &url]);
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let show = text(&ecamp(&["snapshot", "show", "--dataset", &url, &id]));
    assert!(show.contains("vocabulary") && show.contains("_ecamp/vocab/"), "{show}");
    let run = |name: &str| {
        let run = dir.path().join(name);
        pretrain(&url, &run, &["--snapshot", &id, "--max-steps", "2"]);
        steps(&run)
    };
    let before = run("before");
    let out = ecamp(&["vocab", "build", "--dataset", &url, "--vocab-size", "300"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(run("after"), before, "the run on the id still tokenises with the pinned vocabulary");

    // With two stored vocabularies a new pin must name one.
    let out = ecamp(&["snapshot", "pin", "--dataset", &url]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--vocab"), "{}", text(&out));

    // The pinned file edited in place (same name) is refused, naming it.
    let pinned = show.lines().find(|l| l.contains("_ecamp/vocab/")).and_then(|l| l.split_whitespace().nth(1));
    let path = Path::new(&url).join(pinned.expect("the pinned vocabulary's path"));
    let mut json = std::fs::read_to_string(&path).expect("vocabulary");
    json = json.replacen("\"[UNK]\"", "\"[UNQ]\"", 1);
    std::fs::write(&path, json).expect("edit");
    let run_s = dir.path().join("edited").display().to_string();
    let out = ecamp(&["pretrain", "--dataset", &url, "--snapshot", &id, "--out", &run_s, "--max-steps", "1", "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(pinned.expect("path")), "{}", text(&out));

    // An empty reference (an unset shell variable) is not "latest".
    let out = ecamp(&["pretrain", "--dataset", &url, "--snapshot", "", "--out", &run_s, "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("empty snapshot reference"), "{}", text(&out));
}

/// A run started with SIGINT ignored (as a script's background jobs are) keeps ignoring it.
#[cfg(unix)]
#[test]
fn an_ignored_interrupt_stays_ignored() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = phantom_dataset(dir.path(), 48, 7);
    let run = dir.path().join("run");
    let run_s = run.display().to_string();
    let mut cmd = ecamp_command(&[
        "pretrain",
        "--dataset",
        &url,
        "--out",
        &run_s,
        "--batch-size",
        "8",
        "-q",
        "--max-steps",
        "12",
    ]);
    // SAFETY: only signal(2), which is async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        })
    };
    let out = interrupt_after(cmd.spawn().expect("spawn pretrain"), &run, 2);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(steps(&run).len(), 12, "the run went on to its end");
}

#[test]
fn resume_from_a_folder_without_a_checkpoint_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = phantom_dataset(dir.path(), 16, 7);
    let nothing = dir.path().join("nothing");
    std::fs::create_dir_all(&nothing).expect("mkdir");
    let run = dir.path().join("run").display().to_string();
    let out = ecamp(&["pretrain", "--dataset", &url, "--out", &run, "--resume", &nothing.display().to_string(), "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing") && err.contains("checkpoint"), "{}", text(&out));
}

/// `--min-scale` and `--flip-prob` reach the loader (other crops, other first losses); ranges
/// outside what the augmentation can draw are refused before training starts.
#[test]
fn augmentation_flags_change_the_crops_and_bad_ranges_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = phantom_dataset(dir.path(), 16, 7);
    let (official, whole) = (dir.path().join("official"), dir.path().join("whole"));
    pretrain(&url, &official, &["--max-steps", "2"]);
    pretrain(&url, &whole, &["--max-steps", "2", "--min-scale", "1", "--flip-prob", "0"]);
    // Batches that would never reach an optimizer step: refused before training.
    let never = dir.path().join("never").display().to_string();
    for (accum, says) in [("4", "no optimizer step"), ("2", "would end inside an accumulation group")] {
        let out = ecamp(&[
            "pretrain",
            "--dataset",
            &url,
            "--out",
            &never,
            "--batch-size",
            "8",
            "--accum",
            accum,
            "--max-steps",
            "3",
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(says), "{}", text(&out));
    }
    // Three batches per epoch in groups of two: the epoch's last batch ends a (partial, dropped)
    // group, so a run stopping there is saved.
    let odd = dir.path().join("odd");
    let odd_s = odd.display().to_string();
    let out = ecamp(&[
        "pretrain",
        "--dataset",
        &url,
        "--out",
        &odd_s,
        "--batch-size",
        "5",
        "--accum",
        "2",
        "--max-steps",
        "3",
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let latest = std::fs::read_to_string(odd.join("checkpoints/latest")).expect("latest");
    assert_eq!(latest.trim(), "step-00000003");
    let first = |run: &Path| MetricsLog::read(&run.join("metrics.jsonl")).expect("metrics")[0].mim.to_bits();
    assert_ne!(first(&official), first(&whole), "whole-image crops give another first batch");
    // Resuming with other augmentation would not repeat the run: refused, naming the setting.
    let resume = whole.display().to_string();
    let out = ecamp(&["pretrain", "--dataset", &url, "--out", &resume, "--resume", &resume, "--batch-size", "8", "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("augmentation"), "{}", text(&out));
    let run = dir.path().join("bad").display().to_string();
    for (flag, value, says) in [("--min-scale", "0", "crop scale"), ("--flip-prob", "2", "flip probability")] {
        let out = ecamp(&["pretrain", "--dataset", &url, "--out", &run, flag, value, "-q"]);
        assert!(!out.status.success(), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says) && !err.contains("panicked"), "{}", text(&out));
    }
}

/// Two data-parallel devices (both the CPU on ndarray, which exercises burn's multi-device
/// optimizer step) split each global batch between two loader ranks: before any update the
/// image losses equal the single-device run's on the same global batch; training goes on.
#[test]
fn two_devices_train_on_the_same_global_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = phantom_dataset(dir.path(), 32, 7);
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    pretrain(&url, &one, &["--max-steps", "4"]);
    pretrain(&url, &two, &["--max-steps", "4", "--devices", "2"]);
    let a = MetricsLog::read(&one.join("metrics.jsonl")).expect("metrics");
    let b = MetricsLog::read(&two.join("metrics.jsonl")).expect("metrics");
    assert_eq!((a.len(), b.len()), (4, 4));
    // MIM and SR have no dropout: the mean of two half-batch losses is the full batch's.
    for (x, y) in [(a[0].mim, b[0].mim), (a[0].sr, b[0].sr)] {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "{x} vs {y}");
    }
    assert_eq!(b[3].optimizer_step, 2, "accumulation of 2 on two devices");
    assert!(b.iter().all(|m| m.mim.is_finite() && m.sr.is_finite() && m.mlm.is_finite()));
    assert!(two.join("checkpoints/latest").is_file());
    // The dropout seeds and the per-device batches depend on the device count: a resume on
    // another count would not continue the run.
    let two_s = two.display().to_string();
    let out = ecamp(&[
        "pretrain",
        "--dataset",
        &url,
        "--out",
        &two_s,
        "--resume",
        &two_s,
        "--batch-size",
        "8",
        "--accum",
        "2",
        "--epochs",
        "3",
        "--max-steps",
        "6",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("devices 2"), "{}", text(&out));
}

/// Samples whose bytes do not decode are skipped with a warning naming them and counted in the
/// summary; a batch they leave empty stops the run naming them, not deep in the augmentation.
#[test]
fn undecodable_samples_are_reported_and_an_emptied_batch_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = phantom_dataset(dir.path(), 16, 7);
    let mut bad = common::sample_rows("bad", 0, 2);
    for r in &mut bad {
        r.image.truncate(r.image.len() / 2);
        r.image_sha256 = ecamp_store::shard::sha256_hex(&r.image);
    }
    common::runtime().block_on(async {
        let ds = ecamp_store::Dataset::open(&url).await.expect("open");
        ds.append_samples(&bad, None).await.expect("append the truncated images");
    });
    let run = |name: &str, batch: &str| {
        let out = dir.path().join(name).display().to_string();
        ecamp(&["pretrain", "--dataset", &url, "--out", &out, "--batch-size", batch, "--epochs", "1", "--workers", "1"])
    };
    // Batches of 3 over 18 samples: every sample is drawn, and 2 bad ones cannot empty a batch.
    let out = run("skip", "3");
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("skipped 2 sample(s)"), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipping sample bad-000000"), "{}", text(&out));
    // The two rows appended without annotations are announced, not trained silently without context.
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 of 18 samples"), "{}", text(&out));
    let out = run("empty", "1");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no usable sample"), "{}", text(&out));
    // The steps before the failing batch are saved, and the error says where. (Where the bad
    // samples fall in the order depends on the ingest's file names, so on the run.)
    let trained = steps(&dir.path().join("empty")).len();
    let err = String::from_utf8_lossy(&out.stderr);
    if trained == 0 {
        assert!(err.contains("nothing was trained"), "{}", text(&out));
        assert!(!dir.path().join("empty/checkpoints/latest").exists());
    } else {
        let latest = std::fs::read_to_string(dir.path().join("empty/checkpoints/latest")).expect("latest");
        assert_eq!(latest.trim(), format!("step-{trained:08}"));
        assert!(err.contains(&format!("the {trained} step(s) trained before it are saved")), "{}", text(&out));
    }
}
