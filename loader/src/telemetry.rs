//! What the pipeline is doing, as numbers a trainer can log: how long the consumer waited per
//! batch, how full each queue is, how fast each stage runs and how many bytes are held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters the stages bump as they go (relaxed atomics: statistics, not synchronisation).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes_fetched: AtomicU64,
    pub row_groups_fetched: AtomicU64,
    pub fetch_retries: AtomicU64,
    pub samples_decoded: AtomicU64,
    pub samples_skipped: AtomicU64,
    pub worker_busy_ns: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A snapshot of one epoch's pipeline, cheap to take after every batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Telemetry {
    /// Batches handed to the consumer.
    pub batches: u64,
    /// Samples in those batches.
    pub samples: u64,
    /// Bad samples skipped so far.
    pub skipped: u64,
    /// Median time the consumer waited for a batch.
    pub wait_p50: Duration,
    /// 99th-percentile wait.
    pub wait_p99: Duration,
    /// Longest wait.
    pub wait_max: Duration,
    /// Sum of all waits: the time training was stalled by the loader.
    pub wait_total: Duration,
    /// Time since the epoch started.
    pub elapsed: Duration,
    /// Bytes fetched from the store.
    pub bytes_fetched: u64,
    /// Row groups fetched.
    pub row_groups_fetched: u64,
    /// Fetches retried after a transient store error.
    pub fetch_retries: u64,
    /// Samples through the CPU stage.
    pub samples_decoded: u64,
    /// Mean CPU-stage time per sample on one worker.
    pub decode_time_per_sample: Duration,
    /// Bytes of fetched row groups held right now.
    pub bytes_in_flight: u64,
    /// The byte budget in force (the configured one, or the order's working set when larger).
    pub budget_bytes: u64,
    /// Row groups fetched and waiting for the dispatcher.
    pub queue_row_groups: usize,
    /// Samples queued for the workers.
    pub queue_tasks: usize,
    /// Processed samples queued for batch assembly.
    pub queue_samples: usize,
    /// Ready batches queued for the consumer.
    pub queue_batches: usize,
}

impl Telemetry {
    /// Samples per second handed to the consumer.
    pub fn samples_per_sec(&self) -> f64 {
        self.samples as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Bytes per second fetched from the store.
    pub fn fetch_bytes_per_sec(&self) -> f64 {
        self.bytes_fetched as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The `q`-quantile (0..=1) of `waits`, by nearest rank; zero when empty.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let waits: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&waits, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&waits, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&waits, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
