//! The order of an epoch: a pure function of (snapshot id, seed, epoch), independent of how many
//! ranks or threads consume it.
//!
//! Row groups (the unit of a ranged read) are shuffled first; their rows then stream through a
//! bounded shuffle buffer of `shuffle_buffer` samples. The global sequence is cut into global
//! batches of `batch_size`; the last partial batch is dropped (drop-last), so every rank sees the
//! same number of batches. Rank `r` of `w` takes the contiguous slice `[b·r/w, b·(r+1)/w)` of each
//! global batch, so changing `w` between runs (elastic resumption) continues the same sequence.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::text::splitmix64;

/// One row group of one data file: what is fetched in one ranged read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Unit {
    /// Index of the data file in the snapshot's (sorted) file list.
    pub file: u32,
    /// Row group within the file.
    pub row_group: u32,
    /// Rows in the row group.
    pub rows: u32,
}

/// One sample's place in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleRef {
    /// Data file index.
    pub file: u32,
    /// Row group within the file.
    pub row_group: u32,
    /// Row within the row group.
    pub row: u32,
}

/// How an epoch is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderConfig {
    /// Run seed.
    pub seed: u64,
    /// Samples per global batch (all ranks together).
    pub batch_size: usize,
    /// Samples held in the shuffle buffer; 1 disables it.
    pub shuffle_buffer: usize,
}

/// Where a run stands: the whole resume state of the loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    /// Current epoch.
    pub epoch: u64,
    /// Samples of this epoch already consumed by all ranks together (a multiple of the batch size).
    pub samples: u64,
}

/// Why an order or a cursor cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// Batch size zero, or a rank outside the world.
    #[error("invalid order settings: {0}")]
    Invalid(String),
    /// A cursor that does not sit on a global batch boundary of this order.
    #[error("cursor at sample {samples} is not a multiple of the global batch size {batch_size}")]
    Misaligned {
        /// The cursor's sample count.
        samples: u64,
        /// The global batch size.
        batch_size: usize,
    },
}

/// The generator of one epoch's order; snapshot ids are hashed so any id string works.
fn order_rng(snapshot_id: &str, seed: u64, epoch: u64) -> ChaCha8Rng {
    // FNV-1a: stable across platforms and releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in snapshot_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let words = [splitmix64(h), splitmix64(seed ^ 0x5bd1_e995), splitmix64(epoch ^ 0x27d4_eb2f), 0x6f72_6465_722d_6c64];
    let mut key = [0u8; 32];
    for (chunk, w) in key.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// The global sample sequence of `epoch`, whole global batches only.
pub fn epoch_order(
    units: &[Unit],
    snapshot_id: &str,
    cfg: &OrderConfig,
    epoch: u64,
) -> Result<Vec<SampleRef>, OrderError> {
    if cfg.batch_size == 0 {
        return Err(OrderError::Invalid("batch size must be at least 1".into()));
    }
    let mut rng = order_rng(snapshot_id, cfg.seed, epoch);
    let mut order: Vec<Unit> = units.to_vec();
    // Fisher–Yates on the row groups: the IO order of the epoch.
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let capacity = cfg.shuffle_buffer.max(1);
    let total: usize = units.iter().map(|u| u.rows as usize).sum();
    let mut out = Vec::with_capacity(total);
    let mut buffer: Vec<SampleRef> = Vec::with_capacity(capacity);
    for u in &order {
        for row in 0..u.rows {
            let incoming = SampleRef { file: u.file, row_group: u.row_group, row };
            if buffer.len() < capacity {
                buffer.push(incoming);
            } else {
                let j = rng.random_range(0..capacity);
                out.push(std::mem::replace(&mut buffer[j], incoming));
            }
        }
    }
    for i in (1..buffer.len()).rev() {
        buffer.swap(i, rng.random_range(0..=i));
    }
    out.extend(buffer);
    out.truncate(out.len() / cfg.batch_size * cfg.batch_size);
    Ok(out)
}

/// The slice of a global batch that rank `rank` of `world` trains on.
pub fn rank_slice(batch: &[SampleRef], rank: usize, world: usize) -> Result<&[SampleRef], OrderError> {
    if world == 0 || rank >= world {
        return Err(OrderError::Invalid(format!("rank {rank} of world {world}")));
    }
    let b = batch.len();
    Ok(&batch[b * rank / world..b * (rank + 1) / world])
}

/// The batches rank `rank` of `world` reads from `cursor` to the end of the epoch.
pub fn rank_batches<'a>(
    order: &'a [SampleRef],
    batch_size: usize,
    cursor: &Cursor,
    rank: usize,
    world: usize,
) -> Result<impl Iterator<Item = &'a [SampleRef]> + 'a, OrderError> {
    if batch_size == 0 || world == 0 || rank >= world {
        return Err(OrderError::Invalid(format!("batch size {batch_size}, rank {rank} of world {world}")));
    }
    if !cursor.samples.is_multiple_of(batch_size as u64) {
        return Err(OrderError::Misaligned { samples: cursor.samples, batch_size });
    }
    let start = (cursor.samples as usize).min(order.len());
    Ok(order[start..].chunks(batch_size).map(move |b| &b[b.len() * rank / world..b.len() * (rank + 1) / world]))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn units() -> Vec<Unit> {
        (0..6u32)
            .flat_map(|f| (0..4u32).map(move |g| Unit { file: f, row_group: g, rows: 25 + (f * 4 + g) % 7 }))
            .collect()
    }

    fn cfg(buffer: usize) -> OrderConfig {
        OrderConfig { seed: 42, batch_size: 32, shuffle_buffer: buffer }
    }

    #[test]
    fn order_is_a_pure_function_and_a_permutation_with_drop_last() {
        let u = units();
        let a = epoch_order(&u, "snap-ab", &cfg(64), 0).expect("order");
        assert_eq!(a, epoch_order(&u, "snap-ab", &cfg(64), 0).expect("order"));
        assert_ne!(a, epoch_order(&u, "snap-ab", &cfg(64), 1).expect("order"), "epochs differ");
        assert_ne!(a, epoch_order(&u, "snap-cd", &cfg(64), 0).expect("order"), "snapshots differ");
        let total: usize = u.iter().map(|x| x.rows as usize).sum();
        assert_eq!(a.len(), total / 32 * 32, "only whole global batches");
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), a.len(), "each sample at most once");
    }

    #[test]
    fn ranks_are_disjoint_and_cover_every_batch() {
        let order = epoch_order(&units(), "snap-ab", &cfg(64), 3).expect("order");
        for world in [1, 2, 3, 5] {
            let mut seen = Vec::new();
            for batch in order.chunks(32) {
                let mut in_batch = Vec::new();
                for rank in 0..world {
                    in_batch.extend_from_slice(rank_slice(batch, rank, world).expect("slice"));
                }
                assert_eq!(in_batch, batch, "world {world}: ranks in order rebuild the batch");
                seen.extend(in_batch);
            }
            assert_eq!(seen, order);
        }
        assert!(rank_slice(&order[..32], 2, 2).is_err());
    }

    #[test]
    fn resume_and_elastic_resume_continue_the_global_sequence() {
        let order = epoch_order(&units(), "snap-ab", &cfg(64), 0).expect("order");
        let batches = order.len() / 32;
        let k = 2;
        // World 2 for k batches, then a cursor, then world 3.
        let mut got: Vec<SampleRef> = Vec::new();
        let first: Vec<Vec<&[SampleRef]>> = (0..2)
            .map(|r| rank_batches(&order, 32, &Cursor::default(), r, 2).expect("rank").take(k).collect())
            .collect();
        for b in 0..k {
            for rank_batches in &first {
                got.extend_from_slice(rank_batches[b]);
            }
        }
        let cursor = Cursor { epoch: 0, samples: (k * 32) as u64 };
        let rest: Vec<Vec<&[SampleRef]>> =
            (0..3).map(|r| rank_batches(&order, 32, &cursor, r, 3).expect("rank").collect()).collect();
        assert!(rest.iter().all(|r| r.len() == batches - k));
        for b in 0..batches - k {
            for rank_batches in &rest {
                got.extend_from_slice(rank_batches[b]);
            }
        }
        assert_eq!(got, order, "the union over ranks is the uninterrupted sequence");
        let bad = Cursor { epoch: 0, samples: 33 };
        assert!(matches!(rank_batches(&order, 32, &bad, 0, 1), Err(OrderError::Misaligned { .. })));
    }

    #[test]
    fn the_shuffle_buffer_mixes_row_groups() {
        let u = units();
        let same_group = |order: &[SampleRef]| {
            order.windows(2).filter(|w| (w[0].file, w[0].row_group) == (w[1].file, w[1].row_group)).count() as f64
                / (order.len() - 1) as f64
        };
        let none = epoch_order(&u, "snap-ab", &cfg(1), 0).expect("order");
        let mixed = epoch_order(&u, "snap-ab", &cfg(256), 0).expect("order");
        // Without a buffer rows of a group stay together; with 256 samples (~9 groups) they mostly do not.
        assert!(same_group(&none) > 0.9, "{}", same_group(&none));
        assert!(same_group(&mixed) < 0.3, "{}", same_group(&mixed));
    }
}
