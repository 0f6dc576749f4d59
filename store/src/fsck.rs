//! Integrity check of a whole dataset: referenced files against their records, and orphans
//! (files no commit references, left by crashed writers) found and, on request, removed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::dataset::Dataset;
use crate::error::{Result, StoreError};
use crate::log::TableLog;
use crate::schema::TableKind;
use crate::shard::DataFile;
use crate::snapshot::{SNAPSHOT_DIR, Verify};

/// What `fsck` should do.
#[derive(Debug, Clone)]
pub struct FsckOptions {
    /// Delete the orphans found.
    pub delete_orphans: bool,
    /// Files younger than this are not orphans: a live writer may be about to commit them.
    pub grace: Duration,
    /// Check content hashes (reads every byte) rather than sizes only.
    pub verify: Verify,
}

impl Default for FsckOptions {
    fn default() -> Self {
        FsckOptions { delete_orphans: false, grace: Duration::from_secs(3600), verify: Verify::Content }
    }
}

/// A file no version of any table and no pinned snapshot references.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Orphan {
    /// Dataset-relative path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// The outcome of [`Dataset::fsck`].
#[derive(Debug, Default, serde::Serialize)]
pub struct FsckReport {
    /// Files checked against their records.
    pub checked: usize,
    /// Latest version of each table.
    pub versions: BTreeMap<String, u64>,
    /// Integrity problems, one line each (missing file, size or hash mismatch, bad manifest).
    pub problems: Vec<String>,
    /// Unreferenced files older than the grace period.
    pub orphans: Vec<Orphan>,
    /// Unreferenced files too young to judge.
    pub young: usize,
    /// Orphans deleted (only with `delete_orphans`).
    pub deleted: Vec<String>,
}

impl FsckReport {
    /// Whether the dataset is intact (orphans are garbage, not damage).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Whether a name inside `_delta_log/` is a leftover of an interrupted write.
fn is_log_leftover(name: &str) -> bool {
    name.contains('#') || name.ends_with(".tmp") || name.starts_with(".tmp") || name.starts_with("_commit_")
}

impl Dataset {
    /// Checks every file referenced by the latest version of each table and by every pinned
    /// snapshot, and lists (optionally deletes) orphans.
    pub async fn fsck(&self, opts: &FsckOptions) -> Result<FsckReport> {
        // Ages count from before the logs are read: a file written while the check runs (which
        // can take hours on a large bucket) is younger than that, whatever the grace period.
        let started = chrono::Utc::now();
        let mut report = FsckReport::default();
        let mut referenced: BTreeSet<String> = BTreeSet::new();
        let mut to_check: BTreeMap<String, DataFile> = BTreeMap::new();
        // An unreadable commit or manifest means we cannot know what it references: then
        // nothing is deleted (an emptied commit would make its files look orphaned).
        let mut references_known = true;
        for kind in TableKind::ALL {
            let problems = self.log_problems(kind).await?;
            let damaged = !problems.is_empty();
            references_known &= !damaged;
            report.problems.extend(problems);
            match self.table_files(kind).await {
                Ok((history, latest, files)) => {
                    referenced.extend(history.iter().map(|p| format!("{}/{p}", kind.name())));
                    report.versions.insert(kind.name().to_string(), latest);
                    to_check.extend(files.into_iter().map(|f| (format!("{}/{}", kind.name(), f.path), f)));
                }
                // The damage found above is why the log does not read: it is the report.
                Err(_) if damaged => {}
                Err(e) => return Err(e),
            }
        }
        // Live files are referenced even when the commits that added them were cleaned from the log.
        referenced.extend(to_check.keys().cloned());
        for id in self.pinned_ids().await? {
            match self.read_manifest(&id).await {
                Ok(snap) => {
                    for (rel, f) in snap.files() {
                        referenced.insert(rel.clone());
                        to_check.entry(rel).or_insert_with(|| f.clone());
                    }
                }
                Err(e @ (StoreError::Integrity { .. } | StoreError::Malformed { .. })) => {
                    references_known = false;
                    report.problems.push(format!("snapshot {id}: {e}"));
                }
                Err(e) => return Err(e),
            }
        }
        for (rel, f) in &to_check {
            if f.sha256.is_empty() {
                report.problems.push(format!("{rel}: no content hash recorded in its commit"));
            }
        }
        report.checked = to_check.len();
        for e in self.check_files(to_check.into_iter().collect(), opts.verify).await {
            match e {
                StoreError::Integrity { .. } => report.problems.push(e.to_string()),
                // Not damage: the check itself could not run (network, credentials).
                other => return Err(other),
            }
        }
        report.problems.sort();

        let loc = self.location();
        for kind in TableKind::ALL {
            let dir = loc.path(kind.name());
            let metas: Vec<_> =
                loc.store().list(Some(&dir)).try_collect().await.map_err(|e| loc.storage_error(kind.name(), &e))?;
            for m in metas {
                let Some(rel) = loc.relative(&m.location) else {
                    continue;
                };
                let in_log = rel.starts_with(&format!("{}/_delta_log/", kind.name()));
                let name = m.location.filename().unwrap_or_default();
                let unreferenced = if in_log { is_log_leftover(name) } else { !referenced.contains(&rel) };
                if !unreferenced {
                    continue;
                }
                let age = (started - m.last_modified).to_std().unwrap_or_default();
                if age < opts.grace {
                    report.young += 1;
                } else {
                    report.orphans.push(Orphan { path: rel, size: m.size });
                }
            }
        }
        if opts.delete_orphans && !references_known {
            report.problems.push("orphans not deleted: a commit or a pinned snapshot manifest is unreadable".into());
        } else if opts.delete_orphans {
            // A writer that wrote its files before the check started may have committed them
            // since: read again the tables that moved on.
            for kind in TableKind::ALL {
                let latest = self.table(kind).latest_version().await?;
                if report.versions.get(kind.name()) != Some(&latest) {
                    let (history, _, files) = self.table_files(kind).await?;
                    referenced.extend(
                        history.iter().chain(files.iter().map(|f| &f.path)).map(|p| format!("{}/{p}", kind.name())),
                    );
                }
            }
            for o in &report.orphans {
                // Never delete anything a commit or a pin references, whatever the listing says.
                if referenced.contains(&o.path) || o.path.starts_with(SNAPSHOT_DIR) {
                    continue;
                }
                loc.store().delete(&loc.path(&o.path)).await.map_err(|e| loc.storage_error(&o.path, &e))?;
                report.deleted.push(o.path.clone());
            }
        }
        Ok(report)
    }

    /// Every data file path `kind`'s log history adds, its latest version, and that version's files.
    async fn table_files(&self, kind: TableKind) -> Result<(Vec<String>, u64, Vec<DataFile>)> {
        let log = self.table(kind);
        let added = log.history().await?.into_iter().flat_map(|c| c.added.into_iter().map(|f| f.path)).collect();
        let latest = log.latest_version().await?;
        Ok((added, latest, log.files(latest).await?))
    }

    /// Commits of `kind`'s log that say nothing readable (empty, or a line that is not JSON),
    /// and versions missing between two listed commits.
    async fn log_problems(&self, kind: TableKind) -> Result<Vec<String>> {
        let loc = self.location();
        let dir = format!("{}/_delta_log", kind.name());
        let metas: Vec<_> =
            loc.store().list(Some(&loc.path(&dir))).try_collect().await.map_err(|e| loc.storage_error(&dir, &e))?;
        let commits: BTreeMap<u64, String> = metas
            .iter()
            .filter_map(|m| {
                let stem = m.location.filename()?.strip_suffix(".json")?;
                let version = stem.parse().ok().filter(|_| stem.len() == 20)?;
                Some((version, format!("{dir}/{stem}.json")))
            })
            .collect();
        let mut problems = Vec::new();
        let mut previous: Option<u64> = None;
        for (&version, rel) in &commits {
            if let Some(p) = previous
                && version != p + 1
            {
                problems.push(format!("{dir}: versions {} to {} are missing", p + 1, version - 1));
            }
            previous = Some(version);
            let bytes = async { loc.store().get(&loc.path(rel)).await?.bytes().await }
                .await
                .map_err(|e| loc.storage_error(rel, &e))?;
            let mut lines = bytes.split(|&b| b == b'\n').enumerate().filter(|(_, l)| !l.trim_ascii().is_empty());
            match lines.next() {
                None => problems.push(format!("{rel}: empty commit")),
                Some(first) => {
                    if let Some((i, _)) = std::iter::once(first)
                        .chain(lines)
                        .find(|(_, l)| serde_json::from_slice::<serde_json::Value>(l).is_err())
                    {
                        problems.push(format!("{rel}: line {} is not a JSON action", i + 1));
                    }
                }
            }
        }
        Ok(problems)
    }
}
