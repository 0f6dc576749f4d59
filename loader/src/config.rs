//! What a loader is asked to do: the run's order, its share of it, and its resource limits.

use crate::sample::AugmentConfig;

/// Most pixels of a batch canvas per image (ingest's default decode limit): canvases are
/// allocated from the recorded sizes, so a row that lies about its size must not make them
/// unbounded.
pub(crate) const MAX_CANVAS_PIXELS: u64 = 100_000_000;

/// Most threads (CPU workers, concurrent reads) or prefetched batches a setting may ask for.
const MAX_THREADS: usize = 1024;

/// What to do with a sample whose bytes fail their hash or do not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadSamplePolicy {
    /// Leave it out of its batch, count it and log its id (the batch is one sample shorter).
    #[default]
    Skip,
    /// Stop the epoch with an error naming the sample and its file.
    Fail,
}

/// Loader settings; `Default` is a single-rank run with ECAMP's augmentation ranges.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Run seed: with the snapshot id and the epoch it fixes the order and every random draw.
    pub seed: u64,
    /// Samples per global batch, all ranks together.
    pub batch_size: usize,
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// Threads doing the per-sample CPU work (hash, decode, crop draw, text).
    pub workers: usize,
    /// Bytes of fetched row groups held at once (the prefetch budget).
    pub prefetch_bytes: u64,
    /// Row-group fetches in flight at once.
    pub io_concurrency: usize,
    /// Ready batches queued ahead of the consumer.
    pub prefetch_batches: usize,
    /// Samples held in the order's shuffle buffer (see `order`).
    pub shuffle_buffer: usize,
    /// What to do with a bad sample.
    pub on_bad_sample: BadSamplePolicy,
    /// Crop and flip ranges.
    pub augment: AugmentConfig,
    /// Pixel canvas (width, height) of a batch; `None` takes the largest image of the snapshot.
    pub canvas: Option<(usize, usize)>,
    /// Retries of a row-group fetch that failed with a transient store error.
    pub io_retries: u32,
    /// Decode only the restart segments under each sample's crop when the JPEG has restart
    /// markers (what `ecamp ingest` writes); the device sees the same pixels either way.
    pub region_decode: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            seed: 0,
            batch_size: 32,
            rank: 0,
            world: 1,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            prefetch_bytes: 256 << 20,
            io_concurrency: 8,
            prefetch_batches: 4,
            shuffle_buffer: 1024,
            on_bad_sample: BadSamplePolicy::Skip,
            augment: AugmentConfig::default(),
            canvas: None,
            io_retries: 30,
            region_decode: true,
        }
    }
}

impl LoaderConfig {
    /// Checks the settings against each other; the message says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.world == 0 || self.rank >= self.world {
            return Err(format!("rank {} is outside a world of {}", self.rank, self.world));
        }
        if self.batch_size < self.world {
            return Err(format!(
                "global batch size {} is smaller than the world size {}: some ranks would get empty batches",
                self.batch_size, self.world
            ));
        }
        if [self.workers, self.io_concurrency, self.prefetch_batches].iter().any(|n| !(1..=MAX_THREADS).contains(n)) {
            return Err(format!("workers, io concurrency and prefetch batches must each be in 1..={MAX_THREADS}"));
        }
        if self.prefetch_bytes == 0 {
            return Err("the prefetch budget must be at least one byte".into());
        }
        if let Some((w, h)) = self.canvas
            && (w == 0 || h == 0 || (w as u64).saturating_mul(h as u64) > MAX_CANVAS_PIXELS)
        {
            return Err(format!("canvas {w}x{h} is empty or over {MAX_CANVAS_PIXELS} pixels"));
        }
        let AugmentConfig { scale: (s0, s1), ratio: (r0, r1), flip_prob } = self.augment;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return Err(format!("crop scale {s0}..{s1} is not a range inside (0, 1]"));
        }
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return Err(format!("crop aspect ratio {r0}..{r1} is not a positive range"));
        }
        if !(0.0..=1.0).contains(&flip_prob) {
            return Err(format!("flip probability {flip_prob} is outside [0, 1]"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_augment(augment: AugmentConfig) -> Result<(), String> {
        LoaderConfig { augment, ..LoaderConfig::default() }.validate()
    }

    #[test]
    fn augmentation_ranges_are_checked() {
        let ok = AugmentConfig::default();
        assert_eq!(with_augment(ok), Ok(()));
        assert_eq!(with_augment(AugmentConfig { scale: (1.0, 1.0), flip_prob: 0.0, ..ok }), Ok(()));
        for (augment, says) in [
            (AugmentConfig { scale: (0.0, 1.0), ..ok }, "crop scale"),
            (AugmentConfig { scale: (0.8, 0.5), ..ok }, "crop scale"),
            (AugmentConfig { scale: (0.2, 1.5), ..ok }, "crop scale"),
            (AugmentConfig { scale: (f64::NAN, 1.0), ..ok }, "crop scale"),
            (AugmentConfig { ratio: (0.0, 1.0), ..ok }, "aspect ratio"),
            (AugmentConfig { ratio: (1.0, f64::INFINITY), ..ok }, "aspect ratio"),
            (AugmentConfig { flip_prob: 1.5, ..ok }, "flip probability"),
            (AugmentConfig { flip_prob: f64::NAN, ..ok }, "flip probability"),
        ] {
            let err = with_augment(augment).expect_err("an invalid range");
            assert!(err.contains(says), "{augment:?}: {err}");
        }
    }
}
