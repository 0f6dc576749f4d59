//! The loader end to end on a real Delta dataset of phantom studies: determinism across thread
//! counts, resume and elastic resume, rank coverage, the annotations join, bad samples, a
//! vanished file, and backpressure under the byte budget.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{SampleKey, dataset, keys, phantoms, row, text};
use ecamp_loader::{BadSamplePolicy, Batch, Cursor, Loader, LoaderConfig, LoaderError};
use ecamp_store::{AnnotationRow, Dataset, SnapshotRef};

fn cfg(workers: usize) -> LoaderConfig {
    LoaderConfig {
        seed: 7,
        batch_size: 8,
        workers,
        shuffle_buffer: 24,
        prefetch_bytes: 1 << 20,
        io_concurrency: 3,
        prefetch_batches: 2,
        ..Default::default()
    }
}

fn open(url: &str, cfg: LoaderConfig) -> Option<Loader> {
    let text = text()?;
    Some(Loader::open(url, &SnapshotRef::LATEST, text, cfg).expect("open"))
}

fn run(loader: &Loader, cursor: Cursor) -> Vec<Batch> {
    loader.epoch(cursor).expect("epoch").map(|b| b.expect("batch")).collect()
}

fn all_keys(batches: &[Batch]) -> Vec<SampleKey> {
    batches.iter().flat_map(keys).collect()
}

#[test]
fn batches_are_identical_across_runs_and_thread_counts() {
    let (samples, anns) = phantoms(60, 64, 1);
    let (_dir, url) = dataset(&samples, &anns, 25, 16 << 10);
    let Some(one) = open(&url, cfg(1)) else { return };
    let three = open(&url, cfg(3)).expect("open");
    assert_eq!(one.rows(), 60);
    assert_eq!(one.canvas(), (64, 64));
    let a = run(&one, Cursor::default());
    let b = run(&three, Cursor::default());
    let again = run(&three, Cursor::default());
    assert_eq!(a.len(), 7, "60 samples in batches of 8, drop-last");
    for ((x, y), z) in a.iter().zip(&b).zip(&again) {
        assert_eq!(keys(x), keys(y));
        assert_eq!(keys(y), keys(z));
        assert_eq!(x.pixels, y.pixels);
        assert_eq!(x.loss_weights, y.loss_weights);
        assert_eq!(x.attention_mask, y.attention_mask);
        assert_eq!(x.cursor, y.cursor);
        assert_eq!(x.pixels.len(), 8 * 64 * 64);
    }
    let ids: HashSet<&String> = a.iter().flat_map(|b| &b.sample_ids).collect();
    assert_eq!(ids.len(), 56, "every sample at most once");
    // Pixels are the decoded JPEG (the rows of it the crop needs): compare one sample with a
    // direct decode.
    let first = &a[0].sample_ids[0];
    let stored = samples.iter().find(|s| &s.sample_id == first).expect("sample");
    let mut direct = Vec::new();
    ecamp_loader::sample::decode_gray(&stored.image, 64, 64, &mut direct).expect("decode");
    let ((left, top), (w, h)) = (a[0].origins[0], a[0].sizes[0]);
    assert_eq!((left, w), (0, 64), "64-px phantoms have one restart segment per row");
    for y in 0..h as usize {
        let src = (top as usize + y) * 64;
        assert_eq!(&a[0].image(0)[y * 64..(y + 1) * 64], &direct[src..src + 64]);
    }
    // Masked ids differ from targets somewhere (masking happened) and weights sum to L per sample.
    assert!(a[0].input_ids != a[0].labels);
    let l = a[0].seq_len;
    for s in 0..a[0].len() {
        let sum: f32 = a[0].loss_weights[s * l..(s + 1) * l].iter().sum();
        assert!((sum - l as f32).abs() < 1e-2, "weights sum {sum}");
    }
    let other_epoch = run(&one, Cursor { epoch: 1, samples: 0 });
    assert_ne!(all_keys(&a), all_keys(&other_epoch), "epochs reshuffle");
}

/// The pixels under crop `i` of a batch, row by row.
fn crop_pixels(b: &Batch, i: usize) -> Vec<u8> {
    let c = b.crops[i];
    let img = b.image(i);
    (c.top..c.top + c.height)
        .flat_map(|y| {
            let at = y as usize * b.canvas_width + c.left as usize;
            img[at..at + c.width as usize].iter().copied()
        })
        .collect()
}

#[test]
fn decoding_only_the_crop_region_gives_the_pixels_of_a_full_decode() {
    // 256 px: four 64-px restart segments per row, so regions cut rows and columns.
    let (samples, anns) = phantoms(24, 256, 2);
    let (_dir, url) = dataset(&samples, &anns, 24, 256 << 10);
    let Some(region) = open(&url, cfg(2)) else { return };
    let whole = open(&url, LoaderConfig { region_decode: false, ..cfg(2) }).expect("open");
    let (a, b) = (run(&region, Cursor::default()), run(&whole, Cursor::default()));
    assert_eq!(a.len(), 3);
    let (mut regions, mut narrower) = (0, 0);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.sample_ids, &x.flips, &x.input_ids), (&y.sample_ids, &y.flips, &y.input_ids));
        for i in 0..x.len() {
            assert_eq!((y.origins[i], y.sizes[i]), ((0, 0), (256, 256)), "region_decode off decodes whole");
            let ((left, top), c) = (x.origins[i], x.crops[i]);
            assert_eq!((c.top + top, c.left + left, c.height, c.width), {
                let d = y.crops[i];
                (d.top, d.left, d.height, d.width)
            });
            assert_eq!(crop_pixels(x, i), crop_pixels(y, i), "sample {}", x.sample_ids[i]);
            regions += usize::from(x.sizes[i] != (256, 256));
            narrower += usize::from(x.sizes[i].0 < 256);
        }
    }
    assert!(regions >= 12 && narrower >= 4, "{regions} regions, {narrower} narrower than the image");
}

#[test]
fn resume_and_elastic_resume_continue_the_global_sequence() {
    let (samples, anns) = phantoms(72, 48, 2);
    let (_dir, url) = dataset(&samples, &anns, 72, 8 << 10);
    let Some(single) = open(&url, LoaderConfig { batch_size: 12, ..cfg(2) }) else { return };
    let whole = all_keys(&run(&single, Cursor::default()));
    assert_eq!(whole.len(), 72);

    // Plain resume: k batches, the cursor of the last one, a fresh loader from there.
    let k = 2;
    let mut first = single.epoch(Cursor::default()).expect("epoch");
    let head: Vec<Batch> = first.by_ref().take(k).map(|b| b.expect("batch")).collect();
    let cursor = head[k - 1].cursor;
    drop(first); // stopping mid-epoch joins the threads
    assert_eq!(cursor, Cursor { epoch: 0, samples: 24 });
    let resumed = open(&url, LoaderConfig { batch_size: 12, ..cfg(1) }).expect("open");
    let mut got = all_keys(&head);
    got.extend(all_keys(&run(&resumed, cursor)));
    assert_eq!(got, whole, "resume yields exactly the remaining batches");

    // Elastic: world 2 for k batches, world 3 afterwards; ranks of each batch in rank order.
    let ranks = |world: usize, cursor: Cursor, take: usize| -> Vec<Vec<Batch>> {
        (0..world)
            .map(|rank| {
                let l = open(&url, LoaderConfig { batch_size: 12, rank, world, ..cfg(2) }).expect("open");
                l.epoch(cursor).expect("epoch").take(take).map(|b| b.expect("batch")).collect()
            })
            .collect()
    };
    let interleave = |per_rank: &[Vec<Batch>]| -> Vec<SampleKey> {
        (0..per_rank[0].len()).flat_map(|b| per_rank.iter().flat_map(move |r| keys(&r[b]))).collect()
    };
    let before = ranks(2, Cursor::default(), k);
    let cursor = before[0][k - 1].cursor;
    assert_eq!(cursor, before[1][k - 1].cursor, "ranks agree on the cursor");
    let after = ranks(3, cursor, usize::MAX);
    assert!(after.iter().all(|r| r.len() == 6 - k));
    let mut union = interleave(&before);
    union.extend(interleave(&after));
    assert_eq!(union, whole, "union over ranks is the uninterrupted global sequence");
    // Disjoint ranks covering the epoch.
    let ids: Vec<&String> = union.iter().map(|k| &k.0).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 72);
}

#[test]
fn annotations_join_newest_wins_and_missing_windows_are_centred() {
    let (samples, mut anns) = phantoms(24, 48, 3);
    anns.truncate(12); // the last 12 samples have no annotation at all
    let (_dir, url) = dataset(&samples, &anns, 24, 1 << 20);
    let newer: Vec<AnnotationRow> =
        anns[..6].iter().map(|a| AnnotationRow { sr_window: Some((2, 2)), created_at_us: 5, ..a.clone() }).collect();
    common::runtime().block_on(async {
        let ds = Dataset::open(&url).await.expect("open");
        ds.append_annotations(&newer, None).await.expect("append");
    });
    let Some(loader) = open(&url, LoaderConfig { batch_size: 4, ..cfg(2) }) else { return };
    let mut seen = 0;
    for b in run(&loader, Cursor::default()) {
        for (id, w) in b.sample_ids.iter().zip(&b.sr_windows) {
            let i = samples.iter().position(|s| &s.sample_id == id).expect("known id");
            let want = match i {
                0..6 => (2, 2),
                6..12 => anns[i].sr_window.expect("window"),
                _ => (1, 1),
            };
            assert_eq!(*w, want, "sample {i}");
            seen += 1;
        }
    }
    assert_eq!(seen, 24);
}

#[test]
fn bad_samples_are_skipped_and_counted_or_fail_naming_the_sample() {
    let (mut samples, anns) = phantoms(30, 48, 4);
    // A truncated JPEG whose hash matches what is stored, and a bit flipped after hashing.
    let cut = samples[5].image[..samples[5].image.len() / 2].to_vec();
    samples[5] = row("bad-truncated", cut, 48, 48, "No acute findings.");
    let flipped = samples[9].image.len() / 2;
    samples[9].sample_id = "bad-bitflip".into();
    samples[9].image[flipped] ^= 0x10;
    let (_dir, url) = dataset(&samples, &anns, 30, 1 << 20);
    let Some(loader) = open(&url, LoaderConfig { batch_size: 6, ..cfg(2) }) else { return };
    let mut epoch = loader.epoch(Cursor::default()).expect("epoch");
    let batches: Vec<Batch> = epoch.by_ref().map(|b| b.expect("batch")).collect();
    let skipped: HashSet<String> = batches.iter().flat_map(|b| b.skipped.iter().map(|s| s.sample_id.clone())).collect();
    assert_eq!(skipped, HashSet::from(["bad-truncated".to_string(), "bad-bitflip".to_string()]));
    assert_eq!(epoch.telemetry().skipped, 2);
    assert_eq!(batches.iter().map(Batch::len).sum::<usize>(), 28, "every good sample delivered");
    let reasons: Vec<&str> = batches.iter().flat_map(|b| b.skipped.iter().map(|s| s.reason.as_str())).collect();
    assert!(reasons.iter().any(|r| r.contains("sha256")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("decode")), "{reasons:?}");

    let failing =
        open(&url, LoaderConfig { batch_size: 6, on_bad_sample: BadSamplePolicy::Fail, ..cfg(2) }).expect("open");
    let err = failing.epoch(Cursor::default()).expect("epoch").find_map(Result::err).expect("an error");
    match &err {
        LoaderError::BadSample { sample_id, path, .. } => {
            assert!(sample_id.starts_with("bad-"), "{err}");
            assert!(path.starts_with("samples/") && path.ends_with(".parquet"), "{err}");
        }
        other => panic!("expected a bad-sample error, got {other}"),
    }
}

#[test]
fn a_vanished_data_file_is_an_error_naming_it() {
    let (samples, anns) = phantoms(20, 48, 5);
    let (dir, url) = dataset(&samples, &anns, 10, 1 << 20);
    let Some(loader) = open(&url, LoaderConfig { batch_size: 4, ..cfg(1) }) else { return };
    let victim = loader.snapshot().table(ecamp_store::TableKind::Samples).expect("samples").files[0].path.clone();
    std::fs::remove_file(dir.path().join("ds/samples").join(&victim)).expect("remove");
    let err = loader.epoch(Cursor::default()).expect("epoch").find_map(Result::err).expect("an error");
    assert!(err.to_string().contains(&victim), "{err}");
}

#[test]
fn a_recorded_size_no_jpeg_can_have_is_refused_at_open_naming_the_file_and_row() {
    let (mut samples, anns) = phantoms(12, 48, 6);
    // The canvas is sized from these columns before any image is decoded.
    samples[7].width = i32::MAX;
    let (_dir, url) = dataset(&samples, &anns, 12, 1 << 20);
    let Some(text) = text() else { return };
    let Err(err) = Loader::open(&url, &SnapshotRef::LATEST, text, cfg(1)) else {
        panic!("a 2147483647-px-wide image opened");
    };
    let msg = err.to_string();
    assert!(matches!(err, LoaderError::Malformed { .. }), "{msg}");
    assert!(msg.contains("samples/") && msg.contains("row 7") && msg.contains("size 2147483647x"), "{msg}");
}

#[test]
fn a_slow_consumer_holds_fetching_to_the_byte_budget() {
    let (samples, anns) = phantoms(160, 96, 6);
    let (_dir, url) = dataset(&samples, &anns, 160, 24 << 10);
    let budget = 64 << 10;
    let config =
        LoaderConfig { batch_size: 4, shuffle_buffer: 1, prefetch_bytes: budget, prefetch_batches: 1, ..cfg(2) };
    let Some(loader) = open(&url, config) else { return };
    let table: u64 = loader.snapshot().table(ecamp_store::TableKind::Samples).expect("samples").bytes();
    let mut epoch = loader.epoch(Cursor::default()).expect("epoch");
    let first = epoch.next().expect("a batch").expect("batch");
    std::thread::sleep(Duration::from_millis(400)); // the pipeline fills up and must stop
    let t = epoch.telemetry();
    assert!(t.bytes_in_flight <= t.budget_bytes, "{t:?}");
    assert!(t.budget_bytes < table / 4, "budget {} vs table {table}", t.budget_bytes);
    assert!(t.bytes_fetched < table / 2, "fetched {} of {table} while the consumer slept", t.bytes_fetched);
    drop(first);
    let rest = epoch.by_ref().map(|b| b.expect("batch").len()).sum::<usize>();
    assert_eq!(rest + 4, 160);
    let t = epoch.telemetry();
    assert_eq!((t.batches, t.samples, t.samples_decoded), (40, 160, 160));
    assert!(t.wait_p50 <= t.wait_p99 && t.wait_p99 <= t.wait_max, "{t:?}");
    assert!(t.row_groups_fetched > 10, "{t:?}");
}
