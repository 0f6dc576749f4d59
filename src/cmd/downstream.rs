//! What the downstream commands (`probe`, `annotate-windows`, `demo`) share: which model to
//! evaluate, and streaming a snapshot's images through it in batches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use arrow_array::{Array, BinaryArray, StringArray, StructArray};
use burn::backend::NdArray;
use burn::config::Config;
use burn::tensor::backend::Backend;
use ecamp_eval::labels::{ChexpertClasses, LabelSet, LabelSource, LoadOptions, Uncertain, phantom_labels};
use ecamp_eval::split::{split_by_patient, subsample_by_patient};
use ecamp_loader::sample::{decode_gray, verify_sha256};
use ecamp_model::eval::features::GrayImage;
use ecamp_model::train::checkpoint;
use ecamp_model::weights::{LoadReport, load_official};
use ecamp_model::{Ecamp, EcampConfig};
use ecamp_store::{AnnotationRow, Dataset, Snapshot, SnapshotRef, TableKind, redact};

use super::join::KeyIndex;
use super::print_json;

/// The CPU backend the evaluation commands run on.
pub type Cpu = NdArray;

/// Why `--backend cuda` fails in a build without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub const NO_CUDA: &str = "this ecamp was built without CUDA; rebuild with `cargo build --release --features cuda`";

/// Largest image side decoded for evaluation (the ingest pipeline stores at most this).
const MAX_SIDE: usize = 16_384;

/// Which weights to evaluate: a checkpoint, official-named weights, or a fresh initialisation.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Checkpoint folder, or a run folder (its latest checkpoint) from `ecamp pretrain`.
    #[arg(long, conflicts_with_all = ["weights", "random"])]
    pub checkpoint: Option<PathBuf>,
    /// Weights in the official or timm naming (.pth or .safetensors, e.g. an imported PyTorch
    /// checkpoint or `ecamp export`); the whole image encoder must be in the file (a DDP
    /// `module.` prefix is dropped), other parts keep their initialisation.
    #[arg(long, conflicts_with = "random")]
    pub weights: Option<PathBuf>,
    /// A randomly initialised model (the baseline).
    #[arg(long)]
    pub random: bool,
    /// Model preset for --weights / --random.
    #[arg(long, default_value = "tiny", value_parser = ["tiny", "base"])]
    pub preset: String,
    /// Model config JSON (an `EcampConfig`) for --weights / --random, instead of the preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 42)]
    pub init_seed: u64,
}

/// Which data, ground truth and encoder a downstream command (probe, segment, detect) evaluates,
/// and where its results go.
#[derive(Debug, Clone, clap::Args)]
pub struct TaskArgs {
    /// Dataset URL.
    #[arg(long, env = "ECAMP_DATASET")]
    pub dataset: String,
    /// Snapshot: snap-<hex>, latest, or S[:A[:L]].
    #[arg(long, default_value = "latest")]
    pub snapshot: SnapshotRef,
    /// Ground truth: phantom[:ENTITY], chestxray14:FILE, chexpert:FILE, rsna:FILE or siim:FILE.
    #[arg(long, default_value = "phantom")]
    pub labels: LabelSource,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub split: SplitArgs,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What [`TaskArgs::open`] resolves.
pub struct Task<B: Backend = Cpu> {
    /// The dataset.
    pub ds: Dataset,
    /// The snapshot evaluated.
    pub snap: Snapshot,
    /// The ground truth.
    pub labels: LabelSet,
    /// The encoder.
    pub model: LoadedModel<B>,
}

impl TaskArgs {
    /// Opens the dataset and snapshot, reads the labels and loads the model on the CPU.
    pub async fn open(&self) -> anyhow::Result<Task> {
        self.open_on::<Cpu>(&Default::default()).await
    }

    /// [`TaskArgs::open`] with the model on `device`.
    pub async fn open_on<B: Backend>(&self, device: &B::Device) -> anyhow::Result<Task<B>> {
        let ds = Dataset::open(&self.dataset).await.with_context(|| format!("cannot open dataset {}", self.dataset))?;
        let snap = ds.resolve(&self.snapshot).await.with_context(|| format!("cannot resolve {}", self.snapshot))?;
        let labels = load_labels(&ds, &snap, &self.labels, &self.split).await?;
        let model = self.model.load::<B>(device)?;
        Ok(Task { ds, snap, labels, model })
    }

    /// Writes the result to `--out`, then prints it as JSON (`--json`) or as `line`. The JSON
    /// also records how it was made: the command line, the ecamp version, and the label and
    /// split settings, so that two result files can be told apart and either one repeated.
    pub fn report<T: serde::Serialize>(&self, result: &T, line: String) -> anyhow::Result<()> {
        let mut value = serde_json::to_value(result)?;
        if let Some(fields) = value.as_object_mut() {
            let s = &self.split;
            let made = serde_json::json!({
                "argv": std::env::args().map(|a| shown_arg(&a)).collect::<Vec<_>>(),
                "version": env!("CARGO_PKG_VERSION"),
                "label_source": self.labels.to_string(),
                "uncertain": format!("{:?}", s.uncertain).to_lowercase(),
                "split": [s.split.0, s.split.1, s.split.2],
                "split_seed": s.split_seed,
            });
            fields.insert("made_by".into(), made);
        }
        if let Some(path) = &self.out {
            write_json(path, &value)?;
        }
        if self.json {
            print_json(&value)
        } else {
            println!("{line}");
            Ok(())
        }
    }
}

/// A command-line argument safe to record: URLs (also in `--flag=URL`) with credentials masked.
fn shown_arg(arg: &str) -> String {
    match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") => format!("{flag}={}", shown_arg(value)),
        _ if arg.contains("://") => redact::url(arg),
        _ => redact::scrub(arg),
    }
}

/// A model ready for evaluation and where it came from.
pub struct LoadedModel<B: Backend> {
    /// The model.
    pub model: Ecamp<B>,
    /// Its sizes.
    pub config: EcampConfig,
    /// One line naming the weights (for reports).
    pub origin: String,
    /// The vocabulary fingerprint its text branch was trained with, when a checkpoint says.
    pub vocab: Option<String>,
}

impl ModelArgs {
    /// Loads the model these arguments name.
    pub fn load<B: Backend>(&self, device: &B::Device) -> anyhow::Result<LoadedModel<B>> {
        if let Some(path) = &self.checkpoint {
            let dir = checkpoint::locate(path)?;
            let (model, state) = checkpoint::load_model::<B>(&dir, device)?;
            let origin = format!("checkpoint {} (step {}, snapshot {})", dir.display(), state.step, state.snapshot_id);
            return Ok(LoadedModel { model, config: state.model, origin, vocab: state.vocab });
        }
        if self.weights.is_none() && !self.random {
            bail!("name the model to evaluate: --checkpoint DIR, --weights FILE or --random");
        }
        let config = model_config(&self.preset, self.config.as_ref())?;
        B::seed(device, self.init_seed);
        let mut model = config.init::<B>(device);
        let origin = match &self.weights {
            Some(path) => {
                let report = load_official(&mut model, path, true)
                    .with_context(|| format!("cannot load the weights {}", path.display()))?;
                require_encoder(path, &report)?;
                format!("weights {} ({} tensors loaded)", path.display(), report.applied)
            }
            None => {
                let sizes = match &self.config {
                    Some(path) => format!("config {}", path.display()),
                    None => format!("{} preset", self.preset),
                };
                format!("random init ({sizes}, seed {})", self.init_seed)
            }
        };
        Ok(LoadedModel { model, config, origin, vocab: None })
    }
}

/// Refuses weights that leave part of the image encoder at its random initialisation: evaluating
/// such a half-loaded encoder would report random-init scores under the file's name. The position
/// table is exempt (a fixed sin-cos table, identical in every checkpoint).
fn require_encoder(path: &Path, report: &LoadReport) -> anyhow::Result<()> {
    let absent: Vec<&str> = report
        .missing
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("encoder.") && *n != "encoder.pos_embed")
        .collect();
    if absent.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 6;
    let more = absent.len().saturating_sub(SHOWN);
    let list = absent[..absent.len().min(SHOWN)].join(", ");
    let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
    bail!(
        "{}: {} image-encoder tensor(s) are not in the file ({list}{tail}); it loaded {} tensor(s). \
         Give a file with the whole encoder in the official or timm naming (e.g. from `ecamp export`).",
        path.display(),
        absent.len(),
        report.applied
    )
}

/// The model sizes from a config file, else the preset.
pub fn model_config(preset: &str, config: Option<&PathBuf>) -> anyhow::Result<EcampConfig> {
    let c = match config {
        Some(path) => {
            let what = || format!("cannot read the model config {}", path.display());
            ecamp_ingest::files::check_regular(path, ecamp_ingest::files::MAX_FILE_BYTES).with_context(what)?;
            EcampConfig::load(path).with_context(what)?
        }
        None => EcampConfig::preset(preset).with_context(|| format!("unknown preset {preset}"))?,
    };
    c.check().map_err(anyhow::Error::msg).context("invalid model config")?;
    Ok(c)
}

/// Decodes the images of the snapshot's samples that `wanted` names (sample id → caller's index)
/// and hands them to `each` in batches of up to `batch` as `(indices, images)`, in file order.
/// Returns which indices were found. An image that fails its hash or does not decode, or a second
/// sample that names an index already found, is an error that names the sample.
pub async fn for_each_image_batch(
    ds: &Dataset,
    snap: &Snapshot,
    wanted: &KeyIndex,
    batch: usize,
    each: &mut dyn FnMut(Vec<usize>, Vec<GrayImage>) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<bool>> {
    let files = snap.table(TableKind::Samples).map(|p| p.files.clone()).unwrap_or_default();
    let mut seen: Vec<Option<String>> = vec![None; wanted.slots()];
    let (mut idx, mut imgs) = (Vec::new(), Vec::new());
    for f in &files {
        for b in ds.read_columns(TableKind::Samples, f, &["sample_id", "image", "image_sha256"]).await? {
            let ids = ecamp_store::schema::sample_ids(&b)?;
            let bytes = b
                .column_by_name("image")
                .and_then(|c| c.as_any().downcast_ref::<StructArray>())
                .and_then(|s| s.column_by_name("bytes"))
                .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
                .with_context(|| format!("samples/{}: column image.bytes missing or not binary", f.path))?;
            let hashes = b
                .column_by_name("image_sha256")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .with_context(|| format!("samples/{}: column image_sha256 missing or not text", f.path))?;
            for (row, id) in ids.iter().enumerate() {
                let Some(i) = wanted.find(id) else { continue };
                if let Some(first) = &seen[i] {
                    bail!(
                        "samples {first} and {id} both match one label row; give the samples distinct ids \
                         (e.g. a manifest's sample_id column) or name the rows by those ids"
                    );
                }
                let at = || format!("sample {id} (samples/{})", f.path);
                if bytes.is_null(row) {
                    bail!("{} has no stored image bytes", at());
                }
                verify_sha256(bytes.value(row), hashes.value(row)).with_context(at)?;
                let mut pixels = Vec::new();
                let (w, h) = decode_gray(bytes.value(row), MAX_SIDE, MAX_SIDE, &mut pixels)
                    .with_context(|| format!("{}: cannot decode its image", at()))?;
                imgs.push(GrayImage { width: w as u32, height: h as u32, pixels });
                idx.push(i);
                seen[i] = Some(id.to_string());
                if idx.len() == batch {
                    each(std::mem::take(&mut idx), std::mem::take(&mut imgs))?;
                }
            }
        }
    }
    if !idx.is_empty() {
        each(idx, imgs)?;
    }
    Ok(seen.into_iter().map(|s| s.is_some()).collect())
}

/// The annotation in force for each sample of the snapshot: the newest `created_at` wins, later
/// files (by path) on ties — the loader's rule.
pub async fn latest_annotations(ds: &Dataset, snap: &Snapshot) -> anyhow::Result<HashMap<String, AnnotationRow>> {
    let mut files = snap.table(TableKind::Annotations).map(|t| t.files.clone()).unwrap_or_default();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut joined: HashMap<String, AnnotationRow> = HashMap::new();
    for f in &files {
        for batch in ds.read_file(TableKind::Annotations, f).await? {
            let rows = ecamp_store::schema::annotation_rows(&batch)
                .with_context(|| format!("malformed annotations file annotations/{}", f.path))?;
            for row in rows {
                if joined.get(&row.sample_id).is_none_or(|a| row.created_at_us >= a.created_at_us) {
                    joined.insert(row.sample_id.clone(), row);
                }
            }
        }
    }
    Ok(joined)
}

/// The `(sample_id, labels JSON)` rows of the snapshot's labels table, in file order, one per
/// sample: the newest (the later file on a tie). An ingest interrupted between its labels and
/// samples commits labels its re-run labels again, so repeats are expected, not an error.
pub async fn label_rows(ds: &Dataset, snap: &Snapshot) -> anyhow::Result<Vec<(String, String)>> {
    let files = snap.table(TableKind::Labels).map(|t| t.files.clone()).unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut newest: HashMap<String, (usize, i64)> = HashMap::new();
    for f in &files {
        for batch in ds.read_file(TableKind::Labels, f).await? {
            let rows = ecamp_store::schema::label_rows(&batch)
                .with_context(|| format!("malformed labels file labels/{}", f.path))?;
            for r in rows {
                match newest.get_mut(&r.sample_id) {
                    Some((at, created)) => {
                        if r.created_at_us >= *created {
                            *created = r.created_at_us;
                            out[*at].1 = r.labels_json;
                        }
                    }
                    None => {
                        newest.insert(r.sample_id.clone(), (out.len(), r.created_at_us));
                        out.push((r.sample_id, r.labels_json));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// How labels are read and items split (shared by `probe`, `segment` and `detect`).
#[derive(Debug, Clone, clap::Args)]
pub struct SplitArgs {
    /// Uncertain labels (CheXpert -1, phantom "uncertain"): ones, zeros or ignore.
    #[arg(long, default_value = "ones")]
    pub uncertain: Uncertain,
    /// CheXpert: all 14 observations instead of the 5 competition classes.
    #[arg(long)]
    pub chexpert_all: bool,
    /// Percent of the training patients to use (1, 10, 100, ...; rounded, at least one patient).
    #[arg(value_parser = super::parse::percent, long, default_value_t = 100.0)]
    pub fraction: f64,
    /// Train/validation/test fractions of the patients.
    #[arg(long, default_value = "0.6,0.2,0.2", value_parser = parse_split)]
    pub split: (f64, f64, f64),
    /// Seed of the patient split and subsampling.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Images per encoder forward pass.
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 64)]
    pub feature_batch: usize,
}

fn parse_split(s: &str) -> Result<(f64, f64, f64), String> {
    let parts: Vec<f64> =
        s.split(',').map(|p| p.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    match parts.as_slice() {
        [a, b, c] if *a > 0.0 && *b > 0.0 && *c > 0.0 => Ok((*a, *b, *c)),
        _ => Err(format!("'{s}': three positive fractions TRAIN,VAL,TEST expected")),
    }
}

/// Writes a value as pretty JSON to a file.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// The label set a source names (phantom labels come from the snapshot's labels table).
pub async fn load_labels(
    ds: &Dataset,
    snap: &Snapshot,
    source: &LabelSource,
    p: &SplitArgs,
) -> anyhow::Result<LabelSet> {
    if let LabelSource::Phantom { focus } = source {
        let rows = label_rows(ds, snap).await?;
        if rows.is_empty() {
            bail!("snapshot {} has no labels rows (phantom ground truth comes from `--source phantom:N`)", snap.id);
        }
        return Ok(phantom_labels(rows, p.uncertain, focus.as_deref())?);
    }
    let options = LoadOptions {
        uncertain: p.uncertain,
        chexpert_classes: if p.chexpert_all { ChexpertClasses::All } else { ChexpertClasses::Competition },
        frontal_only: false,
    };
    source.load(&options).with_context(|| format!("cannot read the labels {source}"))
}

/// The found items of `labels`, their patient split and the training part reduced to the
/// fraction; an empty part is an error.
pub fn split_found(
    labels: &LabelSet,
    found: &[usize],
    p: &SplitArgs,
    snapshot: &str,
) -> anyhow::Result<(Vec<ecamp_eval::labels::Item>, ecamp_eval::Split, Vec<usize>)> {
    if found.is_empty() {
        bail!("none of the {} label rows of {} matches a sample of snapshot {snapshot}", labels.len(), labels.name);
    }
    let items: Vec<_> = found.iter().map(|&i| labels.items[i].clone()).collect();
    let split = split_by_patient(&items, p.split_seed, p.split)?;
    let train = subsample_by_patient(&split.train, &items, p.fraction / 100.0, p.split_seed)?;
    if train.is_empty() || split.val.is_empty() || split.test.is_empty() {
        bail!(
            "{} matched items give an empty part ({} train / {} val / {} test): use more samples or another --split",
            items.len(),
            train.len(),
            split.val.len(),
            split.test.len()
        );
    }
    Ok((items, split, train))
}

#[cfg(test)]
mod tests {
    use super::shown_arg;

    #[test]
    fn recorded_arguments_mask_url_credentials_also_after_an_equals_sign() {
        assert_eq!(shown_arg("--dataset=s3://u:pw@b/x?sig=SECRET"), "--dataset=s3://u:***@b/x?***");
        assert_eq!(shown_arg("s3://u:pw@b/x"), "s3://u:***@b/x");
        assert_eq!(shown_arg("--steps=50"), "--steps=50");
    }
}
