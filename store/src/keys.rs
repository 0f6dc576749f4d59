//! Exactly-once samples across writers that do not coordinate. [`SampleKeys`] holds the sample
//! ids and image hashes of the samples table as of one version and is brought up to date by
//! reading only the files committed since; [`Dataset::append_samples_unique`] commits rows only
//! on the version its keys describe, so no row lands whose id or image another writer added in
//! the meantime. Two ingests of one source started together therefore store each sample once.

use std::collections::HashSet;
use std::time::Duration;

use crate::dataset::Dataset;
use crate::error::{Result, StoreError};
use crate::log::{AppTxn, AppendOutcome, TableLog};
use crate::retry::Backoff;
use crate::schema::{self, SampleRow, TableKind};
use crate::shard::DataFile;

/// Commit races a unique append may lose before it gives up. Each loss means another writer
/// committed, so the dataset as a whole keeps moving; this bounds one writer's wait.
const RACES: u32 = 500;

/// The sample ids and image hashes a samples table holds at one version (from
/// [`Dataset::sample_keys`]).
#[derive(Debug, Clone)]
pub struct SampleKeys {
    version: u64,
    ids: HashSet<String>,
    hashes: HashSet<String>,
}

/// Rows sorted into those new to a table and the duplicates dropped.
#[derive(Debug)]
pub struct Admitted<T> {
    /// Rows whose id and image hash are both new (the first of equal rows in the input).
    pub rows: Vec<T>,
    /// Rows dropped because their sample id is already held.
    pub duplicate_ids: usize,
    /// Rows dropped because their image hash is already held under another id.
    pub duplicate_images: usize,
}

/// What [`Dataset::append_samples_unique`] did.
#[derive(Debug, Default)]
pub struct UniqueAppend {
    /// The commit made (or found already made); `None` when every row was a duplicate.
    pub outcome: Option<AppendOutcome>,
    /// The rows committed.
    pub committed: Vec<SampleRow>,
    /// Rows dropped because another writer had added their sample id.
    pub duplicate_ids: usize,
    /// Rows dropped because another writer had added their image under another id.
    pub duplicate_images: usize,
}

impl SampleKeys {
    /// The samples-table version these keys describe.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The sample ids held.
    pub fn ids(&self) -> &HashSet<String> {
        &self.ids
    }

    /// Keeps the items of `items` whose row (`row(item)`) has a new id and a new image hash,
    /// in their order; of items equal in either, the first is kept.
    pub fn admit<T>(&self, items: Vec<T>, row: impl Fn(&T) -> &SampleRow) -> Admitted<T> {
        let mut out = Admitted { rows: Vec::with_capacity(items.len()), duplicate_ids: 0, duplicate_images: 0 };
        let (mut ids, mut hashes) = (HashSet::new(), HashSet::new());
        for item in items {
            let r = row(&item);
            if self.ids.contains(&r.sample_id) || !ids.insert(r.sample_id.clone()) {
                out.duplicate_ids += 1;
            } else if self.hashes.contains(&r.image_sha256) || !hashes.insert(r.image_sha256.clone()) {
                out.duplicate_images += 1;
            } else {
                out.rows.push(item);
            }
        }
        out
    }

    /// Whether the table holds `row`'s id or image.
    fn holds(&self, row: &SampleRow) -> bool {
        self.ids.contains(&row.sample_id) || self.hashes.contains(&row.image_sha256)
    }

    fn insert(&mut self, ids: impl IntoIterator<Item = String>, hashes: impl IntoIterator<Item = String>) {
        self.ids.extend(ids);
        self.hashes.extend(hashes);
    }
}

impl Dataset {
    /// The sample ids and image hashes of the latest samples version (reads only those columns).
    pub async fn sample_keys(&self) -> Result<SampleKeys> {
        let log = self.table(TableKind::Samples);
        let version = log.latest_version().await?;
        let mut keys = SampleKeys { version, ids: HashSet::new(), hashes: HashSet::new() };
        self.read_keys(&log.files(version).await?, &mut keys).await?;
        Ok(keys)
    }

    /// Brings `keys` to the latest samples version, reading only the files committed since.
    pub async fn refresh_keys(&self, keys: &mut SampleKeys) -> Result<()> {
        let log = self.table(TableKind::Samples);
        let latest = log.latest_version().await?;
        if latest == keys.version {
            return Ok(());
        }
        // A log rewritten behind us, expired entries or removed files: the commits alone no
        // longer say what the table holds, so read it whole.
        if latest < keys.version {
            *keys = self.sample_keys().await?;
            return Ok(());
        }
        let commits = log.commits(keys.version + 1, latest).await?;
        if commits.len() as u64 != latest - keys.version || commits.iter().any(|c| !c.removed.is_empty()) {
            *keys = self.sample_keys().await?;
            return Ok(());
        }
        let added: Vec<DataFile> = commits.into_iter().flat_map(|c| c.added).collect();
        self.read_keys(&added, keys).await?;
        keys.version = latest;
        Ok(())
    }

    async fn read_keys(&self, files: &[DataFile], keys: &mut SampleKeys) -> Result<()> {
        for f in files {
            for b in self.read_columns(TableKind::Samples, f, &["sample_id", "image_sha256"]).await? {
                let hashes = b
                    .column_by_name("image_sha256")
                    .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
                    .ok_or_else(|| StoreError::InvalidRows {
                        table: TableKind::Samples.to_string(),
                        reason: format!("{} has no string column image_sha256", f.path),
                    })?;
                let hashes: Vec<String> = hashes.iter().flatten().map(str::to_string).collect();
                keys.insert(schema::sample_ids(&b)?, hashes);
            }
        }
        Ok(())
    }

    /// Appends the rows of `rows` whose sample id and image hash the table does not hold, as
    /// one commit that lands only on the version `keys` describe: when another writer commits
    /// first, `keys` are brought up to date, rows it added are dropped, and the append is tried
    /// again. `keys` end up holding the committed rows. With `txn`, a batch already committed
    /// by an earlier attempt of the same writer is not written again.
    pub async fn append_samples_unique(
        &self,
        rows: Vec<SampleRow>,
        txn: Option<AppTxn>,
        keys: &mut SampleKeys,
    ) -> Result<UniqueAppend> {
        let log = self.table(TableKind::Samples);
        let mut out = UniqueAppend::default();
        let mut rows = rows;
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
        let mut races = 0u32;
        if let Some(t) = &txn
            && self.is_committed(TableKind::Samples, t).await?
        {
            return Ok(landed(out, rows, AppendOutcome::AlreadyCommitted, keys));
        }
        'fresh: loop {
            self.refresh_keys(keys).await?;
            let admitted = keys.admit(rows, |r| r);
            out.duplicate_ids += admitted.duplicate_ids;
            out.duplicate_images += admitted.duplicate_images;
            rows = admitted.rows;
            if rows.is_empty() {
                return Ok(out);
            }
            let files = self.upload(TableKind::Samples, &schema::samples_batch(&rows)?).await?;
            loop {
                let base = keys.version;
                if let Some(outcome) = log.append_after(files.clone(), txn.clone(), base).await? {
                    if let AppendOutcome::Committed(v) = outcome {
                        keys.version = v;
                    }
                    return Ok(landed(out, rows, outcome, keys));
                }
                // A commit whose answer was lost to a fault and then retried reads as a lost
                // race: our own files, already in the log, must not be discarded.
                if let Some(v) = self.committed_after(&files, base).await? {
                    self.refresh_keys(keys).await?;
                    return Ok(landed(out, rows, AppendOutcome::Committed(v), keys));
                }
                races += 1;
                if races >= RACES {
                    self.discard(TableKind::Samples, &files).await;
                    return Err(StoreError::CommitFailed {
                        table: log.display().to_string(),
                        attempts: races,
                        message: "other writers committed first every time".into(),
                    });
                }
                tokio::time::sleep(backoff.next_delay()).await;
                if let Err(e) = self.refresh_keys(keys).await {
                    self.discard(TableKind::Samples, &files).await;
                    return Err(e);
                }
                if rows.iter().any(|r| keys.holds(r)) {
                    // The uploaded files hold rows that are no longer new: write them anew.
                    self.discard(TableKind::Samples, &files).await;
                    continue 'fresh;
                }
            }
        }
    }

    /// The version after `base` that added `files`, if one did.
    async fn committed_after(&self, files: &[DataFile], base: u64) -> Result<Option<u64>> {
        let log = self.table(TableKind::Samples);
        let latest = log.latest_version().await?;
        let Some(first) = files.first().filter(|_| latest > base) else {
            return Ok(None);
        };
        let commits = log.commits(base + 1, latest).await?;
        Ok(commits.iter().find(|c| c.added.iter().any(|f| f.path == first.path)).map(|c| c.version))
    }
}

/// The result of an append that landed: `rows` recorded in `keys` and in `out`.
fn landed(mut out: UniqueAppend, rows: Vec<SampleRow>, outcome: AppendOutcome, keys: &mut SampleKeys) -> UniqueAppend {
    keys.insert(rows.iter().map(|r| r.sample_id.clone()), rows.iter().map(|r| r.image_sha256.clone()));
    out.outcome = Some(outcome);
    out.committed = rows;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, hash: &str) -> SampleRow {
        SampleRow {
            sample_id: id.into(),
            subject_id: None,
            study_id: None,
            view: None,
            image_sha256: hash.into(),
            image: Vec::new(),
            image_path: None,
            width: 1,
            height: 1,
            orig_width: 1,
            orig_height: 1,
            report: String::new(),
            source: "test".into(),
            ingested_at_us: 0,
        }
    }

    #[test]
    fn admit_drops_held_and_repeated_ids_and_images_keeping_the_first() {
        let mut keys = SampleKeys { version: 0, ids: HashSet::new(), hashes: HashSet::new() };
        keys.insert(["a".to_string()], ["ha".to_string()]);
        let rows = vec![
            row("a", "h1"), // held id
            row("b", "ha"), // held image
            row("c", "hc"), // new
            row("c", "hx"), // repeated id
            row("d", "hc"), // repeated image
            row("e", "he"), // new
        ];
        let a = keys.admit(rows, |r| r);
        let kept: Vec<&str> = a.rows.iter().map(|r| r.sample_id.as_str()).collect();
        assert_eq!(kept, ["c", "e"]);
        assert_eq!((a.duplicate_ids, a.duplicate_images), (2, 2));
        assert!(keys.holds(&row("z", "ha")) && keys.holds(&row("a", "hz")) && !keys.holds(&row("c", "hc")));
    }
}
