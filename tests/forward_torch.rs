//! `ecamp forward` against the PyTorch re-implementation of the official model
//! (`benches/model_peer/ecamp_torch.py`): a state dict written by PyTorch in the official naming
//! loads completely and gives the same three losses; a missing or mis-shaped tensor is a clear
//! error naming it; repeated runs and different ndarray thread counts give identical losses.
//!
//! Needs a Python with torch: `ECAMP_TORCH_PYTHON`, else `.venv-bench/bin/python`
//! (`benches/loader_peer/setup.sh` makes it); without one the test says so and returns.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::text;

fn torch_python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("ECAMP_TORCH_PYTHON").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-bench/bin/python")),
    ];
    let found = candidates
        .into_iter()
        .flatten()
        .find(|p| Command::new(p).args(["-c", "import torch"]).output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        eprintln!("skipping: no Python with torch (set ECAMP_TORCH_PYTHON or run benches/loader_peer/setup.sh)");
    }
    found
}

fn script(py: &Path, args: &[&str]) -> String {
    let s = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/model_peer/ecamp_torch.py");
    let out = Command::new(py).arg(s).args(args).output().expect("run python");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn losses(json: &str) -> [f64; 3] {
    let v: serde_json::Value = serde_json::from_str(json.lines().last().unwrap_or("")).expect("json");
    ["mim", "sr", "mlm"].map(|k| v[k].as_f64().expect("loss"))
}

fn forward(weights: &Path, batch: &Path, threads: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecamp"));
    cmd.args(["forward", "--preset", "tiny", "--weights"]).arg(weights).arg("--batch").arg(batch);
    if let Some(t) = threads {
        cmd.env("RAYON_NUM_THREADS", t);
    }
    cmd.output().expect("run ecamp")
}

/// Rewrites a safetensors file of f32 tensors: `edit` returns each tensor's new shape (data cut
/// or zero-padded to fit) or `None` to drop it.
fn rewrite(from: &Path, to: &Path, edit: impl Fn(&str, Vec<usize>) -> Option<Vec<usize>>) {
    use safetensors::tensor::TensorView;
    let bytes = std::fs::read(from).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut owned = Vec::new();
    for (name, view) in st.tensors() {
        let Some(shape) = edit(&name, view.shape().to_vec()) else { continue };
        let mut data = view.data().to_vec();
        data.resize(shape.iter().product::<usize>() * 4, 0);
        owned.push((name, shape, view.dtype(), data));
    }
    let views: Vec<(String, TensorView)> =
        owned.iter().map(|(n, s, dt, d)| (n.clone(), TensorView::new(*dt, s.clone(), d).expect("view"))).collect();
    safetensors::serialize_to_file(views, None, to).expect("write");
}

#[test]
fn official_state_dict_from_pytorch_gives_the_same_losses() {
    let Some(py) = torch_python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (pth, st, batch) =
        (dir.path().join("w.pth"), dir.path().join("w.safetensors"), dir.path().join("b.safetensors"));
    let (pth_s, st_s, batch_s) = (pth.display().to_string(), st.display().to_string(), batch.display().to_string());
    script(&py, &["init", "--preset", "tiny", "--seed", "3", "--out", &pth_s, "--safetensors", &st_s, "--wrap-model"]);
    script(&py, &["batch", "--preset", "tiny", "--n", "3", "--seed", "5", "--out", &batch_s]);
    let want = losses(&script(&py, &["forward", "--preset", "tiny", "--weights", &pth_s, "--batch", &batch_s]));

    let mut runs = Vec::new();
    for (weights, threads) in [(&pth, None), (&pth, Some("1")), (&st, Some("2"))] {
        let out = forward(weights, &batch, threads);
        assert!(out.status.success(), "{}", text(&out));
        runs.push(losses(&String::from_utf8_lossy(&out.stdout)));
    }
    println!("torch f64 {want:?}\necamp     {:?}", runs[0]);
    for (got, want) in runs[0].iter().zip(want) {
        assert!((got - want).abs() <= 1e-5 * want.abs().max(1e-3), "{got} vs {want}");
    }
    // Bitwise the same across runs, thread counts and file formats.
    assert!(runs.iter().all(|r| r.map(f64::to_bits) == runs[0].map(f64::to_bits)), "{runs:?}");

    // A missing tensor and a mis-shaped one are errors that name it.
    let gap = "bert_encoder.model.bert.context_fusion_layer.gap_mlp.weight";
    let missing = dir.path().join("missing.safetensors");
    rewrite(&st, &missing, |name, shape| (name != gap).then_some(shape));
    let out = forward(&missing, &batch, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(err.contains("missing") && err.contains("gap_mlp.weight"), "{}", text(&out));
    let bad = dir.path().join("bad.safetensors");
    rewrite(&st, &bad, |name, shape| {
        Some(if name == "decoder_pred.weight" { vec![shape[0] / 2, shape[1]] } else { shape })
    });
    let out = forward(&bad, &batch, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(err.contains("decoder_pred") && !err.contains("panicked"), "{}", text(&out));
}
