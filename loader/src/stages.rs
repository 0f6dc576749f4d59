//! The stages of an epoch and the messages between them:
//!
//! ```text
//! fetch (async, on the loader's runtime) ─groups─► dispatch ─tasks─► workers ×N ─outs─► assemble ─batches─► consumer
//!        ▲ byte budget (semaphore)          ▲ window credits ◄───────────────────────────┘     buffers ◄─ Batch::drop
//! ```
//!
//! Every queue is a crossbeam channel; nothing on the per-sample path takes a lock. Memory is
//! bounded three ways: fetched row groups by the byte budget (a permit travels with each group
//! and is released when its last sample has been processed), samples between dispatch and
//! assembly by the window credits, and batches by the bounded batch queue (their buffers come
//! back through a pool when dropped).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_array::{Array, BinaryArray, RecordBatch, StringArray, StructArray};
use crossbeam_channel::{Receiver, Sender};
use ecamp_store::retry::Backoff;
use ecamp_store::{Dataset, TableKind};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::batch::{Batch, Buffers, Skipped};
use crate::config::{BadSamplePolicy, LoaderConfig};
use crate::error::LoaderError;
use crate::plan::{Plan, SAMPLE_COLUMNS};
use crate::region::Layout;
use crate::sample::{CropBox, decode_gray, fits, flip, random_resized_crop, verify_sha256};
use crate::schedule::{Fetch, Schedule};
use crate::telemetry::Counters;
use crate::text::{Prepared, TextPrep, sample_rng};

/// SR window offsets of the centre of the 3×3 candidate grid (spec §6), used without annotation.
const CENTRE_WINDOW: (i32, i32) = (1, 1);

/// What every stage of one epoch shares, read-only.
pub(crate) struct Context {
    pub dataset: Dataset,
    pub plan: Arc<Plan>,
    pub text: Arc<TextPrep>,
    pub cfg: LoaderConfig,
    pub schedule: Schedule,
    pub epoch: u64,
    pub counters: Counters,
    pub gauges: Gauges,
    pub stop: AtomicBool,
}

/// Queue depths as the stages last saw them.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    pub groups: AtomicUsize,
    pub tasks: AtomicUsize,
    pub outs: AtomicUsize,
    pub batches: AtomicUsize,
}

impl Gauges {
    fn set(gauge: &AtomicUsize, n: usize) {
        gauge.store(n, Ordering::Relaxed);
    }
}

impl Context {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The typed columns of one fetched record batch.
struct Columns {
    ids: StringArray,
    images: BinaryArray,
    hashes: StringArray,
    reports: StringArray,
}

/// The fetched rows of one row group; the permit returns its bytes to the budget on drop.
pub(crate) struct Group {
    file: u32,
    parts: Vec<(usize, Columns)>,
    _permit: OwnedSemaphorePermit,
}

/// One row of a group, borrowed.
struct Row<'a> {
    id: &'a str,
    image: Option<&'a [u8]>,
    sha256: &'a str,
    report: &'a str,
}

impl Group {
    fn new(
        plan: &Plan,
        file: u32,
        batches: Vec<RecordBatch>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Self, LoaderError> {
        let malformed = |message: String| LoaderError::Malformed { path: plan.file_path(file), message };
        let mut parts = Vec::with_capacity(batches.len());
        let mut start = 0;
        for b in &batches {
            let string = |name: &str| {
                b.column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                    .cloned()
                    .ok_or_else(|| malformed(format!("column {name} missing or not a string")))
            };
            let images = b
                .column_by_name("image")
                .and_then(|c| c.as_any().downcast_ref::<StructArray>())
                .and_then(|s| s.column_by_name("bytes"))
                .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
                .cloned()
                .ok_or_else(|| malformed("column image.bytes missing or not binary".into()))?;
            let cols = Columns {
                ids: string("sample_id")?,
                images,
                hashes: string("image_sha256")?,
                reports: string("report")?,
            };
            parts.push((start, cols));
            start += b.num_rows();
        }
        Ok(Group { file, parts, _permit: permit })
    }

    fn row(&self, i: usize) -> Option<Row<'_>> {
        let at = self.parts.partition_point(|(start, _)| *start <= i).checked_sub(1)?;
        let (start, c) = &self.parts[at];
        let j = i - start;
        if j >= c.ids.len() {
            return None;
        }
        Some(Row {
            id: string_at(&c.ids, j),
            image: c.images.is_valid(j).then(|| c.images.value(j)),
            sha256: string_at(&c.hashes, j),
            report: string_at(&c.reports, j),
        })
    }
}

/// The string at `i`, empty when null (a null hash or report then fails its check downstream).
fn string_at(a: &StringArray, i: usize) -> &str {
    if a.is_valid(i) { a.value(i) } else { "" }
}

/// Fetches the schedule's row groups in first-use order, at most `io_concurrency` at once, each
/// only after the budget has room for it; transient store errors are retried with backoff.
pub(crate) async fn fetch(
    ctx: Arc<Context>,
    budget: Arc<Semaphore>,
    budget_kib: u32,
    groups: Sender<Arc<Group>>,
    errors: Sender<LoaderError>,
) {
    let fetches = &ctx.schedule.fetches;
    let mut next = 0;
    let mut in_flight = FuturesOrdered::new();
    loop {
        if ctx.stopped() {
            return;
        }
        let can_start = next < fetches.len() && in_flight.len() < ctx.cfg.io_concurrency;
        // While a row group is read, its fetched pages and its decoded columns coexist: charge
        // twice its size until it is decoded, then give the fetch half back.
        let held = fetches.get(next).map_or(1, |f: &Fetch| f.bytes.div_ceil(1024).max(1));
        let charge = (2 * held).min(u64::from(budget_kib)) as u32;
        tokio::select! {
            biased;
            Some(done) = in_flight.next(), if !in_flight.is_empty() => match done {
                Ok(group) => {
                    if groups.send(Arc::new(group)).is_err() {
                        return;
                    }
                    Gauges::set(&ctx.gauges.groups, groups.len());
                }
                Err(e) => {
                    let _ = errors.send(e);
                    return;
                }
            },
            permit = budget.clone().acquire_many_owned(charge), if can_start => {
                let Ok(permit) = permit else { return }; // closed: the epoch was dropped
                in_flight.push_back(fetch_group(ctx.clone(), next, permit, held as usize));
                next += 1;
            }
            else => return,
        }
    }
}

/// [`fetch_row_group`], with a panic in the reading libraries turned into an error that names the
/// file and row group (a panicking fetch would otherwise end the epoch without saying where).
async fn fetch_group(
    ctx: Arc<Context>,
    index: usize,
    permit: OwnedSemaphorePermit,
    held_kib: usize,
) -> Result<Group, LoaderError> {
    let f = &ctx.schedule.fetches[index];
    let path = ctx.plan.file_path(f.file);
    let rg = f.row_group;
    let fetched =
        futures::FutureExt::catch_unwind(AssertUnwindSafe(fetch_row_group(ctx.clone(), index, permit, held_kib)));
    fetched.await.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        Err(LoaderError::Malformed { path, message: format!("reading row group {rg} failed: {what}") })
    })
}

async fn fetch_row_group(
    ctx: Arc<Context>,
    index: usize,
    mut permit: OwnedSemaphorePermit,
    held_kib: usize,
) -> Result<Group, LoaderError> {
    let f = &ctx.schedule.fetches[index];
    let (fi, rg) = (f.file as usize, f.row_group as usize);
    let file = &ctx.plan.files[fi];
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut attempt = 0;
    loop {
        match ctx.dataset.read_rows(TableKind::Samples, file, &ctx.plan.metas[fi], rg, &f.rows, &SAMPLE_COLUMNS).await {
            Ok(batches) => {
                if permit.num_permits() > held_kib {
                    drop(permit.split(permit.num_permits() - held_kib));
                }
                Counters::add(&ctx.counters.bytes_fetched, f.bytes);
                Counters::add(&ctx.counters.row_groups_fetched, 1);
                return Group::new(&ctx.plan, f.file, batches, permit);
            }
            Err(e) if e.is_transient() && attempt < ctx.cfg.io_retries && !ctx.stopped() => {
                attempt += 1;
                Counters::add(&ctx.counters.fetch_retries, 1);
                tracing::warn!("retrying {} row group {rg} (attempt {attempt}): {e}", ctx.plan.file_path(f.file));
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One sample to process.
pub(crate) struct Task {
    slot: usize,
    group: Arc<Group>,
}

/// Hands samples to the workers in schedule order, holding each group until its last use and
/// never more than the window's credits ahead of assembly.
pub(crate) fn dispatch(ctx: &Context, groups: Receiver<Arc<Group>>, tasks: Sender<Task>, credits: Receiver<()>) {
    let mut held: HashMap<u32, Arc<Group>> = HashMap::new();
    let mut received = 0u32;
    for (i, slot) in ctx.schedule.slots.iter().enumerate() {
        while received <= slot.group {
            let Ok(group) = groups.recv() else { return }; // fetch stopped: failed or dropped
            held.insert(received, group);
            received += 1;
        }
        let last = ctx.schedule.fetches[slot.group as usize].last_use == i;
        let group = if last { held.remove(&slot.group) } else { held.get(&slot.group).cloned() };
        let Some(group) = group else { return };
        if credits.recv().is_err() || tasks.send(Task { slot: i, group }).is_err() {
            return;
        }
        Gauges::set(&ctx.gauges.tasks, tasks.len());
    }
}

/// What the CPU stage made of one sample.
struct Processed {
    width: u32,
    height: u32,
    origin: (u32, u32),
    crop: CropBox,
    flip: bool,
    sr_window: (i32, i32),
    text: Prepared,
}

/// One sample's result, with the pixel buffer to copy from and recycle.
pub(crate) struct Out {
    slot: usize,
    file: u32,
    sample_id: String,
    pixels: Vec<u8>,
    result: Result<Processed, String>,
}

/// Runs the per-sample CPU work until the tasks run out.
pub(crate) fn work(ctx: &Context, tasks: Receiver<Task>, outs: Sender<Out>, spare: Receiver<Vec<u8>>) {
    // The region JPEG of the current sample (see `region`), reused across samples.
    let mut region_jpeg = Vec::new();
    for task in tasks.iter() {
        let t0 = Instant::now();
        let mut pixels = spare.try_recv().unwrap_or_default();
        let (sample_id, result) = match task.group.row(ctx.schedule.slots[task.slot].row as usize) {
            None => (String::new(), Err("row missing from its fetched row group".to_string())),
            Some(row) => {
                let global = ctx.schedule.slots[task.slot].global;
                let done = catch_unwind(AssertUnwindSafe(|| process(ctx, &row, global, &mut pixels, &mut region_jpeg)));
                (row.id.to_string(), done.unwrap_or_else(|_| Err("the decoder panicked".into())))
            }
        };
        let out = Out { slot: task.slot, file: task.group.file, sample_id, pixels, result };
        drop(task); // release the group (and maybe its budget) before blocking on the queue
        Counters::add(&ctx.counters.samples_decoded, 1);
        Counters::add(&ctx.counters.worker_busy_ns, t0.elapsed().as_nanos() as u64);
        if outs.send(out).is_err() {
            return;
        }
        Gauges::set(&ctx.gauges.outs, outs.len());
    }
}

fn process(
    ctx: &Context,
    row: &Row<'_>,
    global: u64,
    pixels: &mut Vec<u8>,
    region_jpeg: &mut Vec<u8>,
) -> Result<Processed, String> {
    let image = row.image.ok_or("no image bytes")?;
    verify_sha256(image, row.sha256).map_err(|e| e.to_string())?;
    let (cw, ch) = ctx.plan.canvas;
    // With restart markers the size comes from the header and the decode waits for the crop.
    let layout = if ctx.cfg.region_decode { Layout::parse(image) } else { None };
    let (w, h) = match &layout {
        Some(l) => {
            fits(l.width as usize, l.height as usize, cw, ch).map_err(|e| e.to_string())?;
            (l.width as usize, l.height as usize)
        }
        None => decode_gray(image, cw, ch, pixels).map_err(|e| e.to_string())?,
    };
    let ann = ctx.plan.annotations.get(row.id);
    // Text and image draw from separate streams of the sample's generator, so changing one
    // configuration does not move the other's draws.
    let mut text_rng = sample_rng(ctx.cfg.seed, ctx.epoch, global);
    let text = ctx
        .text
        .prepare_row(row.report, ann.and_then(|a| a.context.as_deref()), &mut text_rng)
        .map_err(|e| e.to_string())?;
    let mut image_rng: ChaCha8Rng = sample_rng(ctx.cfg.seed, ctx.epoch, global);
    image_rng.set_stream(1);
    let mut crop = random_resized_crop(w as u32, h as u32, &ctx.cfg.augment, &mut image_rng);
    let flip = flip(&ctx.cfg.augment, &mut image_rng);
    let (mut origin, mut size) = ((0, 0), (w as u32, h as u32));
    if let Some(l) = &layout {
        let region = l.region(crop.top, crop.left, crop.height, crop.width);
        let jpeg = match &region {
            Some(r) => {
                l.write_region(image, r, region_jpeg);
                region_jpeg.as_slice()
            }
            None => image,
        };
        let decoded = decode_gray(jpeg, cw, ch, pixels).map_err(|e| e.to_string())?;
        let (left, top, want) =
            region.map_or((0, 0, (w, h)), |r| (r.left, r.top, (r.width as usize, r.height as usize)));
        if decoded != want {
            return Err(format!("decoded {}x{} where the header promised {}x{}", decoded.0, decoded.1, want.0, want.1));
        }
        (origin, size) = ((left, top), (want.0 as u32, want.1 as u32));
        // The region contains the crop (`Layout::region`), so these do not underflow.
        crop.top -= top;
        crop.left -= left;
    }
    let sr_window = ann.and_then(|a| a.sr_window).unwrap_or(CENTRE_WINDOW);
    Ok(Processed { width: size.0, height: size.1, origin, crop, flip, sr_window, text })
}

/// The assembler's ends of its queues.
pub(crate) struct AssembleQueues {
    pub outs: Receiver<Out>,
    pub batches: Sender<Batch>,
    pub pool: (Sender<Buffers>, Receiver<Buffers>),
    pub spare: Sender<Vec<u8>>,
    pub credits: Sender<()>,
    pub errors: Sender<LoaderError>,
}

/// Puts processed samples into batches in schedule order and hands them to the consumer.
pub(crate) fn assemble(ctx: &Context, q: AssembleQueues) {
    let mut early: HashMap<usize, Out> = HashMap::new();
    let seq_len = ctx.text.config().max_len;
    for span in &ctx.schedule.spans {
        // The bounded batch queue is the backpressure; the pool only saves allocations, so a
        // consumer that keeps its batches gets fresh buffers instead of stalling the pipeline.
        let buffers = q.pool.1.try_recv().unwrap_or_default();
        let mut batch =
            Batch::new(ctx.epoch, span.index, span.cursor, ctx.plan.canvas, seq_len, buffers, q.pool.0.clone());
        for slot in span.start..span.end {
            let out = match early.remove(&slot) {
                Some(out) => out,
                None => loop {
                    let Ok(out) = q.outs.recv() else { return };
                    if out.slot == slot {
                        break out;
                    }
                    early.insert(out.slot, out);
                },
            };
            let _ = q.credits.send(());
            let global = ctx.schedule.slots[slot].global;
            match out.result {
                Ok(p) => {
                    batch.push_image(&out.pixels, p.width as usize, p.height as usize);
                    batch.sample_ids.push(out.sample_id);
                    batch.sample_indices.push(global);
                    batch.sizes.push((p.width, p.height));
                    batch.origins.push(p.origin);
                    batch.crops.push(p.crop);
                    batch.flips.push(p.flip);
                    batch.sr_windows.push(p.sr_window);
                    batch.input_ids.extend_from_slice(&p.text.ids);
                    batch.labels.extend_from_slice(&p.text.labels);
                    batch.attention_mask.extend_from_slice(&p.text.attention_mask);
                    batch.loss_weights.extend_from_slice(&p.text.weights);
                }
                Err(reason) => match ctx.cfg.on_bad_sample {
                    BadSamplePolicy::Skip => {
                        Counters::add(&ctx.counters.samples_skipped, 1);
                        tracing::warn!(
                            "skipping sample {} ({}): {reason}",
                            out.sample_id,
                            ctx.plan.file_path(out.file)
                        );
                        batch.skipped.push(Skipped { sample_id: out.sample_id, reason });
                    }
                    BadSamplePolicy::Fail => {
                        let path = ctx.plan.file_path(out.file);
                        let _ = q.errors.send(LoaderError::BadSample { sample_id: out.sample_id, path, reason });
                        return;
                    }
                },
            }
            let _ = q.spare.try_send(out.pixels);
        }
        if q.batches.send(batch).is_err() {
            return;
        }
        Gauges::set(&ctx.gauges.batches, q.batches.len());
    }
}
