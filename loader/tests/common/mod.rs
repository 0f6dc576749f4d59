//! Fixtures for the loader tests: real phantom studies (JPEG bytes, reports, rules-distilled
//! contexts) written into a real Delta dataset on local disk, with small row groups so an
//! epoch spans many ranged reads.
#![allow(dead_code)]

use ecamp_ingest::distill::{Distiller, Rules};
use ecamp_ingest::phantom::{PhantomSpec, generate};
use ecamp_loader::text::{TextConfig, TextPrep};
use ecamp_store::{AnnotationRow, Dataset, SampleRow, ShardOptions};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

/// The official tokenizer, next to the workspace as in CI.
pub const TOKENIZER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/mimic_wordpiece.json");

/// Text preparation with the official tokenizer; `None` (test skipped) only outside CI.
pub fn text() -> Option<TextPrep> {
    let tok = match Tokenizer::from_file(TOKENIZER) {
        Ok(t) => t,
        Err(e) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "official tokenizer missing at {TOKENIZER}: {e}");
            eprintln!("skipping: no tokenizer at {TOKENIZER}");
            return None;
        }
    };
    Some(TextPrep::new(&tok, TextConfig::default()).expect("text prep"))
}

/// A runtime for the fixture's async writes.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Grayscale JPEG at quality 90.
pub fn encode(pixels: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(pixels, w as u16, h as u16, jpeg_encoder::ColorType::Luma)
        .expect("encode");
    out
}

/// Sample row with a correct hash for `jpeg`.
pub fn row(id: &str, jpeg: Vec<u8>, w: u32, h: u32, report: &str) -> SampleRow {
    SampleRow {
        sample_id: id.to_string(),
        subject_id: None,
        study_id: None,
        view: Some("PA".into()),
        image_sha256: hex::encode(Sha256::digest(&jpeg)),
        image: jpeg,
        image_path: None,
        width: w as i32,
        height: h as i32,
        orig_width: w as i32,
        orig_height: h as i32,
        report: report.to_string(),
        source: "test".into(),
        ingested_at_us: 0,
    }
}

/// `n` phantom studies of `size` px and their rules-distilled annotations.
pub fn phantoms(n: u64, size: u32, seed: u64) -> (Vec<SampleRow>, Vec<AnnotationRow>) {
    let spec = PhantomSpec { seed, size };
    let rules = Rules::new();
    let mut samples = Vec::new();
    let mut anns = Vec::new();
    for i in 0..n {
        let p = generate(&spec, i);
        // The JPEG as `ecamp ingest` writes it (with restart markers, so regions decode).
        let gray = ecamp_ingest::image::Gray { width: p.width, height: p.height, pixels: p.pixels.clone() };
        let jpeg = ecamp_ingest::image::encode_jpeg(&gray, 95).expect("encode");
        let d = rules.distill_batch(&[p.report.as_str()]).pop().expect("one result").expect("distilled");
        anns.push(AnnotationRow {
            sample_id: p.sample_id.clone(),
            context: Some(d.context),
            entities: Some(d.entities),
            sr_window: Some(((i % 3) as i32, ((i / 3) % 3) as i32)),
            producer: rules.producer(),
            created_at_us: 1,
        });
        samples.push(row(&p.sample_id, jpeg, p.width, p.height, &p.report));
    }
    (samples, anns)
}

/// A dataset at a fresh temp dir holding `samples` (in appends of `per_append`) and `anns`,
/// written with row groups of about `row_group_bytes`.
pub fn dataset(
    samples: &[SampleRow],
    anns: &[AnnotationRow],
    per_append: usize,
    row_group_bytes: usize,
) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}/ds", dir.path().display());
    runtime().block_on(async {
        let opts = ShardOptions { row_group_bytes, ..Default::default() };
        let ds = Dataset::create(&url).await.expect("create").with_shard_options(opts);
        for chunk in samples.chunks(per_append.max(1)) {
            ds.append_samples(chunk, None).await.expect("append samples");
        }
        if !anns.is_empty() {
            ds.append_annotations(anns, None).await.expect("append annotations");
        }
    });
    (dir, url)
}

/// What identifies a sample's output in a batch: id, global index, crop, flip, window, text.
pub type SampleKey = (String, u64, (u32, u32, u32, u32), bool, (i32, i32), Vec<i64>, Vec<i64>);

/// Per-sample keys of a batch, in order.
pub fn keys(b: &ecamp_loader::Batch) -> Vec<SampleKey> {
    (0..b.len())
        .map(|i| {
            let c = b.crops[i];
            let l = b.seq_len;
            (
                b.sample_ids[i].clone(),
                b.sample_indices[i],
                (c.top, c.left, c.height, c.width),
                b.flips[i],
                b.sr_windows[i],
                b.input_ids[i * l..(i + 1) * l].to_vec(),
                b.labels[i * l..(i + 1) * l].to_vec(),
            )
        })
        .collect()
}
