//! One rank's epoch, laid out before any byte is read: which samples it takes (from the order),
//! which row groups hold them and in what order they are first needed, which rows of each group
//! to fetch, and how many bytes must be held at once for the order to progress.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::error::LoaderError;
use crate::order::{Cursor, OrderConfig, epoch_order};
use crate::plan::Plan;

/// One sample of the rank's share of the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Index in the epoch's global sequence (seeds the sample's random draws).
    pub global: u64,
    /// The group it lives in, by first-use ordinal.
    pub group: u32,
    /// Its index among the rows fetched from that group.
    pub row: u32,
}

/// One rank batch: a contiguous run of slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// Global batch index within the epoch.
    pub index: u64,
    /// First slot.
    pub start: usize,
    /// One past the last slot.
    pub end: usize,
    /// Resume point after the batch.
    pub cursor: Cursor,
}

/// One ranged read: the rows of one row group this rank needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fetch {
    /// Data file index.
    pub file: u32,
    /// Row group within the file.
    pub row_group: u32,
    /// Rows to read, ascending.
    pub rows: Vec<u32>,
    /// Bytes charged against the budget while held (the group's projected size, pro rata, in whole KiB).
    pub bytes: u64,
    /// Last slot that uses it.
    pub last_use: usize,
}

/// The rank's epoch from a cursor on.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    pub slots: Vec<Slot>,
    pub spans: Vec<Span>,
    /// Fetches in first-use order (a slot's `group` indexes this).
    pub fetches: Vec<Fetch>,
    /// Most bytes that must be held at once for the order to advance.
    pub working_set: u64,
}

impl Schedule {
    /// Lays out epoch `cursor.epoch` from `cursor.samples` on for `rank` of `world`.
    pub fn build(
        plan: &Plan,
        snapshot_id: &str,
        order: &OrderConfig,
        cursor: Cursor,
        rank: usize,
        world: usize,
    ) -> Result<Schedule, LoaderError> {
        let sequence = epoch_order(&plan.units, snapshot_id, order, cursor.epoch)?;
        let batches = crate::order::rank_batches(&sequence, order.batch_size, &cursor, rank, world)?;
        let mut out = Schedule::default();
        let mut ordinal: HashMap<(u32, u32), u32> = HashMap::new();
        let mut picks: Vec<(u32, u32)> = Vec::new(); // (group ordinal, row in row group) per slot
        let first_batch = cursor.samples / order.batch_size as u64;
        let bs = order.batch_size;
        for (k, batch) in batches.enumerate() {
            let index = first_batch + k as u64;
            let start = out.slots.len();
            let offset = index as usize * bs + bs * rank / world;
            for (i, s) in batch.iter().enumerate() {
                let next = out.fetches.len() as u32;
                let g = *ordinal.entry((s.file, s.row_group)).or_insert(next);
                if g == next {
                    out.fetches.push(Fetch {
                        file: s.file,
                        row_group: s.row_group,
                        rows: Vec::new(),
                        bytes: 0,
                        last_use: 0,
                    });
                }
                let fetch = &mut out.fetches[g as usize];
                fetch.rows.push(s.row);
                fetch.last_use = start + i;
                picks.push((g, s.row));
                out.slots.push(Slot { global: (offset + i) as u64, group: g, row: 0 });
            }
            let cursor = Cursor { epoch: cursor.epoch, samples: (index + 1) * bs as u64 };
            out.spans.push(Span { index, start, end: out.slots.len(), cursor });
        }
        for f in &mut out.fetches {
            f.rows.sort_unstable();
            f.rows.dedup();
            let unit_rows =
                plan.metas[f.file as usize].metadata().row_group(f.row_group as usize).num_rows().max(1) as u64;
            let size = plan.unit_bytes[f.file as usize][f.row_group as usize];
            // Whole KiB: the budget semaphore counts KiB, and the working set must add up the same way.
            f.bytes = (size * f.rows.len() as u64).div_ceil(unit_rows).div_ceil(1024).max(1) * 1024;
        }
        for (slot, (g, row)) in out.slots.iter_mut().zip(picks) {
            // Rows are unique within a group, so the search always finds it.
            let rows = &out.fetches[g as usize].rows;
            slot.row = rows.binary_search(&row).unwrap_or_default() as u32;
        }
        out.working_set = working_set(&out);
        Ok(out)
    }
}

/// The largest sum of held bytes at any group's first use: groups fetched earlier whose last use
/// is still ahead cannot be released, so a smaller budget would stall the order.
fn working_set(s: &Schedule) -> u64 {
    let mut first_use = vec![usize::MAX; s.fetches.len()];
    for (i, slot) in s.slots.iter().enumerate() {
        let f = &mut first_use[slot.group as usize];
        *f = (*f).min(i);
    }
    let mut live: BinaryHeap<Reverse<(usize, u64)>> = BinaryHeap::new();
    let (mut held, mut max) = (0u64, 0u64);
    for (g, fetch) in s.fetches.iter().enumerate() {
        while let Some(Reverse((last, bytes))) = live.peek().copied() {
            if last >= first_use[g] {
                break;
            }
            live.pop();
            held -= bytes;
        }
        live.push(Reverse((fetch.last_use, fetch.bytes)));
        held += fetch.bytes;
        max = max.max(held);
    }
    max
}
