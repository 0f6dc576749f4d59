//! The public face: open a snapshot once, then iterate epochs of batches from any cursor.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError, bounded, select, unbounded};
use ecamp_store::{Dataset, Snapshot, SnapshotRef};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

use crate::batch::{Batch, Buffers};
use crate::config::LoaderConfig;
use crate::error::LoaderError;
use crate::order::{Cursor, OrderConfig};
use crate::plan::Plan;
use crate::schedule::Schedule;
use crate::stages::{self, AssembleQueues, Context};
use crate::telemetry::{Counters, Telemetry, quantile};
use crate::text::TextPrep;

/// An opened snapshot ready to stream epochs; cheap to share, each epoch has its own threads.
pub struct Loader {
    dataset: Dataset,
    snapshot: Snapshot,
    plan: Arc<Plan>,
    text: Arc<TextPrep>,
    cfg: LoaderConfig,
    runtime: Arc<IoRuntime>,
}

/// The loader's own IO runtime, so fetching never competes with (or depends on) the caller's.
struct IoRuntime(Option<Runtime>);

impl Drop for IoRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks; from inside a caller's async context that would panic.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Loader {
    /// Opens the dataset at `url`, resolves `snapshot` (a pinned id is checked file by file) and
    /// reads what every epoch needs. Blocking: call it from a plain thread (or `spawn_blocking`).
    pub fn open(url: &str, snapshot: &SnapshotRef, text: TextPrep, cfg: LoaderConfig) -> Result<Loader, LoaderError> {
        cfg.validate().map_err(LoaderError::Config)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ecamp-loader-io")
            .enable_all()
            .build()
            .map_err(|e| LoaderError::Internal(format!("cannot start the IO runtime: {e}")))?;
        let (dataset, snapshot, plan) = rt.block_on(async {
            let dataset = Dataset::open(url).await?;
            let snapshot = dataset.resolve(snapshot).await?;
            let plan = Plan::build(&dataset, &snapshot, cfg.canvas).await?;
            Ok::<_, LoaderError>((dataset, snapshot, plan))
        })?;
        Ok(Loader {
            dataset,
            snapshot,
            plan: Arc::new(plan),
            text: Arc::new(text),
            cfg,
            runtime: Arc::new(IoRuntime(Some(rt))),
        })
    }

    /// The snapshot being read.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Samples in the snapshot.
    pub fn rows(&self) -> u64 {
        self.plan.rows()
    }

    /// Batch canvas as (width, height).
    pub fn canvas(&self) -> (usize, usize) {
        self.plan.canvas
    }

    /// Global batches per epoch (drop-last).
    pub fn batches_per_epoch(&self) -> u64 {
        self.plan.rows() / self.cfg.batch_size as u64
    }

    /// The settings in force.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// The text preparation's vocabulary fingerprint (see [`crate::text::vocab_fingerprint`]).
    pub fn vocab_fingerprint(&self) -> &str {
        self.text.vocab_fingerprint()
    }

    /// Starts streaming epoch `cursor.epoch` from `cursor.samples` on; the batches are this rank's.
    pub fn epoch(&self, cursor: Cursor) -> Result<Epoch, LoaderError> {
        let cfg = &self.cfg;
        let order = OrderConfig { seed: cfg.seed, batch_size: cfg.batch_size, shuffle_buffer: cfg.shuffle_buffer };
        let schedule = Schedule::build(&self.plan, &self.snapshot.id, &order, cursor, cfg.rank, cfg.world)?;
        // The working set plus one fetch in flight (charged twice, see `stages::fetch`) must fit.
        let need = schedule.working_set + schedule.fetches.iter().map(|f| f.bytes).max().unwrap_or(0);
        if need > cfg.prefetch_bytes {
            tracing::warn!(
                "the prefetch budget of {} bytes is below this order's working set of {} bytes; holding the working set \
                 (lower the shuffle buffer or raise the budget)",
                cfg.prefetch_bytes,
                need
            );
        }
        let budget = cfg.prefetch_bytes.max(need);
        let budget_kib = u32::try_from(budget.div_ceil(1024)).unwrap_or(u32::MAX);
        let expected = schedule.spans.len();
        let ctx = Arc::new(Context {
            dataset: self.dataset.clone(),
            plan: self.plan.clone(),
            text: self.text.clone(),
            cfg: cfg.clone(),
            schedule,
            epoch: cursor.epoch,
            counters: Counters::default(),
            gauges: Default::default(),
            stop: Default::default(),
        });
        let semaphore = Arc::new(Semaphore::new(budget_kib as usize));
        let (groups_tx, groups_rx) = unbounded(); // bounded by the byte budget
        let (tasks_tx, tasks_rx) = bounded(2 * cfg.workers);
        let (outs_tx, outs_rx) = bounded(2 * cfg.workers);
        let (batches_tx, batches_rx) = bounded(cfg.prefetch_batches);
        let (errors_tx, errors_rx) = unbounded();
        let (spare_tx, spare_rx) = bounded(4 * cfg.workers + 8);
        let window = 4 * cfg.workers + 8;
        let (credits_tx, credits_rx) = bounded(window);
        for _ in 0..window {
            let _ = credits_tx.send(());
        }
        let pool = bounded(cfg.prefetch_batches + 2);
        for _ in 0..cfg.prefetch_batches + 2 {
            let _ = pool.0.send(Buffers::default());
        }
        let rt = self.runtime.0.as_ref().ok_or_else(|| LoaderError::Internal("IO runtime already shut down".into()))?;
        rt.spawn(stages::fetch(ctx.clone(), semaphore.clone(), budget_kib, groups_tx, errors_tx.clone()));
        let mut threads = Vec::with_capacity(cfg.workers + 2);
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|e| LoaderError::Internal(format!("cannot start a thread: {e}")))
        };
        let c = ctx.clone();
        threads.push(spawn(
            "ecamp-dispatch".into(),
            Box::new(move || stages::dispatch(&c, groups_rx, tasks_tx, credits_rx)),
        )?);
        for i in 0..cfg.workers {
            let (c, tasks, outs, spare) = (ctx.clone(), tasks_rx.clone(), outs_tx.clone(), spare_rx.clone());
            threads.push(spawn(format!("ecamp-worker-{i}"), Box::new(move || stages::work(&c, tasks, outs, spare)))?);
        }
        drop((tasks_rx, outs_tx, spare_rx));
        let c = ctx.clone();
        let queues = AssembleQueues {
            outs: outs_rx,
            batches: batches_tx,
            pool,
            spare: spare_tx,
            credits: credits_tx,
            errors: errors_tx,
        };
        threads.push(spawn("ecamp-assemble".into(), Box::new(move || stages::assemble(&c, queues)))?);
        Ok(Epoch {
            ctx,
            semaphore,
            budget_kib,
            batches: batches_rx,
            errors: errors_rx,
            threads,
            expected,
            delivered: 0,
            samples: 0,
            waits: Vec::with_capacity(expected),
            started: Instant::now(),
            done: false,
            _runtime: self.runtime.clone(),
        })
    }
}

/// One epoch being streamed: an iterator of this rank's batches, in order. Dropping it stops
/// and joins its threads.
pub struct Epoch {
    ctx: Arc<Context>,
    semaphore: Arc<Semaphore>,
    budget_kib: u32,
    batches: Receiver<Batch>,
    errors: Receiver<LoaderError>,
    threads: Vec<JoinHandle<()>>,
    expected: usize,
    delivered: usize,
    samples: u64,
    waits: Vec<Duration>,
    started: Instant,
    done: bool,
    _runtime: Arc<IoRuntime>,
}

impl Epoch {
    /// Batches this epoch will yield in all (from its cursor on).
    pub fn len(&self) -> usize {
        self.expected
    }

    /// Whether the cursor was already at the end of the epoch.
    pub fn is_empty(&self) -> bool {
        self.expected == 0
    }

    /// The pipeline's numbers so far.
    pub fn telemetry(&self) -> Telemetry {
        let mut waits = self.waits.clone();
        waits.sort_unstable();
        let c = &self.ctx.counters;
        let g = &self.ctx.gauges;
        let decoded = Counters::get(&c.samples_decoded);
        let free = self.semaphore.available_permits() as u64;
        Telemetry {
            batches: self.delivered as u64,
            samples: self.samples,
            skipped: Counters::get(&c.samples_skipped),
            wait_p50: quantile(&waits, 0.5),
            wait_p99: quantile(&waits, 0.99),
            wait_max: waits.last().copied().unwrap_or_default(),
            wait_total: waits.iter().sum(),
            elapsed: self.started.elapsed(),
            bytes_fetched: Counters::get(&c.bytes_fetched),
            row_groups_fetched: Counters::get(&c.row_groups_fetched),
            fetch_retries: Counters::get(&c.fetch_retries),
            samples_decoded: decoded,
            decode_time_per_sample: Duration::from_nanos(Counters::get(&c.worker_busy_ns) / decoded.max(1)),
            bytes_in_flight: (u64::from(self.budget_kib).saturating_sub(free)) * 1024,
            budget_bytes: u64::from(self.budget_kib) * 1024,
            queue_row_groups: g.groups.load(Ordering::Relaxed),
            queue_tasks: g.tasks.load(Ordering::Relaxed),
            queue_samples: g.outs.load(Ordering::Relaxed),
            queue_batches: self.batches.len(),
        }
    }

    fn receive(&mut self) -> Result<Option<Batch>, LoaderError> {
        match self.batches.try_recv() {
            Ok(b) => return Ok(Some(b)),
            Err(TryRecvError::Disconnected) => return self.ended(),
            Err(TryRecvError::Empty) => {}
        }
        select! {
            recv(self.batches) -> b => match b {
                Ok(b) => Ok(Some(b)),
                Err(_) => self.ended(),
            },
            recv(self.errors) -> e => match e {
                Ok(e) => Err(e),
                // Every stage has finished cleanly; the batches still queued are all there is.
                Err(_) => match self.batches.recv() {
                    Ok(b) => Ok(Some(b)),
                    Err(_) => self.ended(),
                },
            },
        }
    }

    /// The batch queue closed: an error, or the end of the epoch (checked against the schedule).
    fn ended(&mut self) -> Result<Option<Batch>, LoaderError> {
        if let Ok(e) = self.errors.try_recv() {
            return Err(e);
        }
        if self.delivered < self.expected {
            return Err(LoaderError::Internal(format!(
                "the pipeline stopped after {} of {} batches",
                self.delivered, self.expected
            )));
        }
        Ok(None)
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch, LoaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let t0 = Instant::now();
        match self.receive() {
            Ok(Some(batch)) => {
                self.waits.push(t0.elapsed());
                self.delivered += 1;
                self.samples += batch.len() as u64;
                Some(Ok(batch))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.ctx.stop.store(true, Ordering::Relaxed);
        self.semaphore.close();
        // Closing the consumer's end unblocks the assembler, whose exit unblocks the workers, and so on up.
        let (_, closed) = bounded(0);
        drop(std::mem::replace(&mut self.batches, closed));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
