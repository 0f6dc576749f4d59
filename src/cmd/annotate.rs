//! `ecamp annotate-windows`: the SR window of every sample from a trained model's entity
//! attention (spec §6), written as a new annotations version that pre-training then uses.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;

use anyhow::{Context, bail};
use burn::tensor::{Int, Tensor, TensorData};
use ecamp_loader::text::{TextConfig, TextPrep};
use ecamp_model::EcampConfig;
use ecamp_model::eval::features::{CanvasBatch, GrayImage, encoder_inputs};
use ecamp_model::eval::windows::{Window, best_window, centre_window, entity_map};
use ecamp_store::{AnnotationRow, AppTxn, Dataset, Producer, SnapshotRef, TableKind};

use super::downstream::{Cpu, ModelArgs, for_each_image_batch, latest_annotations};
use super::join::KeyIndex;
use super::print_json;

/// Name of this job in the annotations' provenance.
pub const PRODUCER: &str = "entity-attention-window";

/// Compute each sample's SR window from entity cross-attention; append it as annotations.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
For every sample with a distilled context, the text \"[CLS] <context>\" and the image (centre
square crop, the pre-training resize) go through the model with mask ratio 0; the cross-attention
of the tokens of present or uncertain entities over the patch grid (max over heads, mean over
entity tokens) picks the window of the configured size with the largest summed attention.
Samples without such entities get the centre window. The context and entities are copied into the
new rows, so the loader, which takes each sample's newest annotation, sees both.")]
pub struct Args {
    /// Dataset URL.
    #[arg(long, env = "ECAMP_DATASET")]
    pub dataset: String,
    /// Snapshot to annotate: snap-<hex>, latest, or S[:A[:L]].
    #[arg(long, default_value = "latest")]
    pub snapshot: SnapshotRef,
    #[command(flatten)]
    pub model: ModelArgs,
    /// WordPiece tokenizer JSON; default: the vocabulary stored in the dataset.
    #[arg(long)]
    pub tokenizer: Option<std::path::PathBuf>,
    /// Samples per forward pass.
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 32)]
    pub batch_size: usize,
    /// Rows per commit.
    #[arg(value_parser = super::parse::count::<usize>, long, default_value_t = 4096)]
    pub batch_rows: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a run wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Annotated {
    /// Samples given an attention window.
    pub from_attention: usize,
    /// Samples without entity tokens, given the centre window.
    pub centre: usize,
    /// The annotations version written.
    pub annotations_version: u64,
    /// The windows, by sample id.
    #[serde(skip)]
    pub windows: HashMap<String, Window>,
}

/// Runs the command.
pub async fn run(a: Args) -> anyhow::Result<ExitCode> {
    let out = annotate(&a).await?;
    if a.json {
        print_json(&out)?;
    } else {
        println!(
            "{} attention window(s), {} centre window(s) (no entity) into annotations v{}",
            out.from_attention, out.centre, out.annotations_version
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Computes and appends the windows.
pub async fn annotate(a: &Args) -> anyhow::Result<Annotated> {
    if a.model.random {
        bail!("windows from a random model mean nothing: pass --checkpoint or --weights");
    }
    let ds = Dataset::open(&a.dataset).await.with_context(|| format!("cannot open dataset {}", a.dataset))?;
    let snap = ds.resolve(&a.snapshot).await.with_context(|| format!("cannot resolve {}", a.snapshot))?;
    let device = Default::default();
    let loaded = a.model.load::<Cpu>(&device)?;
    let mut config = loaded.config.clone();
    let tok = super::pretrain::tokenizer(&ds, snap.vocab.as_ref(), a.tokenizer.as_deref()).await?;
    let tok = super::pretrain::fit_vocabulary(tok, &mut config)?;
    // Another vocabulary gives the entity tokens other ids: the windows would be meaningless.
    let fingerprint = ecamp_loader::text::vocab_fingerprint(&tok);
    if let Some(trained) = &loaded.vocab
        && *trained != fingerprint
    {
        bail!(
            "the checkpoint was trained with vocabulary {trained}, the tokenizer here is {fingerprint}: \
             pass the training vocabulary with --tokenizer"
        );
    }
    let text = TextPrep::new(&tok, TextConfig { max_len: config.max_len, ..TextConfig::default() })
        .context("the tokenizer lacks a token the text preparation needs")?;

    let annotations = latest_annotations(&ds, &snap).await?;
    // Entity tokens to look at, per sample; samples without any keep the centre window.
    let mut jobs: Vec<Job> = Vec::new();
    let mut windows: HashMap<String, Window> = HashMap::new();
    let centre = centre_window(config.grid(), config.sr_window);
    let mut ids: Vec<&String> = annotations.keys().collect();
    ids.sort();
    for id in ids {
        let row = &annotations[id];
        let wanted: HashSet<&str> = row
            .entities
            .iter()
            .flatten()
            .filter(|e| e.status == "present" || e.status == "uncertain")
            .map(|e| e.name.as_str())
            .collect();
        let context = row.context.as_deref().unwrap_or("").trim();
        if wanted.is_empty() || context.is_empty() {
            windows.insert(id.clone(), centre);
            continue;
        }
        let (tokens, mask) =
            text.encode(&format!("[CLS] {context}")).with_context(|| format!("sample {id}: cannot tokenise"))?;
        let positions: Vec<usize> = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| text.is_entity(**t) && text.token(**t).is_some_and(|s| wanted.contains(s.as_str())))
            .map(|(p, _)| p)
            .collect();
        if positions.is_empty() {
            windows.insert(id.clone(), centre);
        } else {
            jobs.push(Job { id: id.clone(), tokens, mask, positions });
        }
    }
    let centre_count = windows.len();

    let wanted = KeyIndex::exact(jobs.iter().enumerate().map(|(i, j)| (j.id.clone(), i)));
    let (model, cfg) = (&loaded.model, &config);
    let mut each = |idx: Vec<usize>, imgs: Vec<GrayImage>| -> anyhow::Result<()> {
        let got = tokio::task::block_in_place(|| attention_windows(model, cfg, &jobs, &idx, &imgs))?;
        for (i, w) in idx.into_iter().zip(got) {
            windows.insert(jobs[i].id.clone(), w);
        }
        Ok(())
    };
    for_each_image_batch(&ds, &snap, &wanted, a.batch_size.max(1), &mut each).await?;

    let producer = Producer { distiller: PRODUCER.to_string(), model: Some(loaded.origin.clone()), prompt_hash: None };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let now = chrono::Utc::now().timestamp_micros();
    let mut rows: Vec<AnnotationRow> = annotations
        .into_values()
        .filter_map(|r| {
            let w = *windows.get(&r.sample_id)?;
            Some(AnnotationRow { sr_window: Some(w), producer: producer.clone(), created_at_us: now, ..r })
        })
        .collect();
    rows.sort_by(|x, y| x.sample_id.cmp(&y.sample_id));
    for (seq, chunk) in rows.chunks(a.batch_rows.max(1)).enumerate() {
        ds.append_annotations(chunk, Some(AppTxn { app_id: format!("windows-{run}"), seq: seq as i64 })).await?;
    }
    let version = ecamp_store::TableLog::latest_version(ds.table(TableKind::Annotations)).await?;
    Ok(Annotated {
        from_attention: windows.len() - centre_count,
        centre: centre_count,
        annotations_version: version,
        windows,
    })
}

/// One sample whose window comes from attention: its encoded context and entity positions.
struct Job {
    id: String,
    tokens: Vec<u32>,
    mask: Vec<u32>,
    positions: Vec<usize>,
}

/// The windows of one batch of images (`idx` into `jobs`).
fn attention_windows(
    model: &ecamp_model::Ecamp<Cpu>,
    config: &EcampConfig,
    jobs: &[Job],
    idx: &[usize],
    imgs: &[GrayImage],
) -> anyhow::Result<Vec<Window>> {
    let device = Default::default();
    let batch = CanvasBatch::new(imgs);
    let x = encoder_inputs::<Cpu>(&device, &batch.canvases(), config.img_size)?;
    let (n, t) = (idx.len(), config.max_len);
    let flat = |pick: fn(&Job) -> &Vec<u32>| -> Vec<i64> {
        idx.iter().flat_map(|&i| pick(&jobs[i]).iter().map(|&v| i64::from(v))).collect()
    };
    let ids = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(flat(|j| &j.tokens), [n, t]), &device);
    let mask: Vec<f32> = flat(|j| &j.mask).into_iter().map(|v| v as f32).collect();
    let mask = Tensor::<Cpu, 2>::from_data(TensorData::new(mask, [n, t]), &device);
    let probs = model.entity_attention(x, ids, mask);
    let [_, heads, _, l] = probs.dims();
    let values = probs.into_data().into_vec::<f32>().map_err(|e| anyhow::anyhow!("attention tensor: {e:?}"))?;
    let per = heads * t * l;
    Ok(idx
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            entity_map(&values[k * per..(k + 1) * per], heads, t, l, &jobs[i].positions)
                .map_or(centre_window(config.grid(), config.sr_window), |m| {
                    best_window(&m, config.grid(), config.sr_window)
                })
        })
        .collect())
}
