//! Snapshots: one pinned version of each table, named by a hash of the pinned files' content.
//!
//! A pinned snapshot is also written as its own manifest under `_ecamp/snapshots/<id>.json`,
//! so it stays reproducible even if the Delta logs are cleaned, and opening it never lists.

use std::collections::BTreeMap;
use std::str::FromStr;

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};

use crate::dataset::Dataset;
use crate::error::{Result, StoreError};
use crate::log::TableLog;
use crate::schema::TableKind;
use crate::shard::{self, DataFile};

/// Dataset-relative folder of pinned snapshot manifests.
pub const SNAPSHOT_DIR: &str = "_ecamp/snapshots";
/// Format of snapshots pinned now: the id covers each table's version, its files' rows and the
/// pinned vocabulary too.
const FORMAT: &str = "ecamp-snapshot/2";
/// The first format: its id covers the files' paths, sizes and hashes only. Unpinned snapshots
/// (`latest`, table versions) keep these ids, which runs and their data order were keyed by
/// before format 2, and manifests pinned in it still open.
const FORMAT_1: &str = "ecamp-snapshot/1";
/// How many files are checked at once.
const CHECK_CONCURRENCY: usize = 16;

/// One table pinned at one version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TablePin {
    /// The pinned version.
    pub version: u64,
    /// The live files at that version, sorted by path.
    pub files: Vec<DataFile>,
}

impl TablePin {
    /// Total rows of the pinned files.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// Total bytes of the pinned files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// A pinned version of each table of a dataset, with its content-derived id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Manifest format tag.
    pub format: String,
    /// `snap-<hex>`, derived from the pinned files' paths, sizes and hashes.
    pub id: String,
    /// The pinned tables.
    pub tables: BTreeMap<TableKind, TablePin>,
    /// The vocabulary pinned with the tables (its path relative to the dataset, size and
    /// sha256; no rows): training on the id tokenises with exactly this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab: Option<DataFile>,
}

/// How a command names a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotRef {
    /// A pinned snapshot by id (`snap-…`).
    Id(String),
    /// Table versions `S[:A[:L]]` (samples, annotations, labels); a missing part means latest.
    Versions(TableVersions),
}

/// One optional version per table; `None` means the latest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableVersions {
    /// Samples version.
    pub samples: Option<u64>,
    /// Annotations version.
    pub annotations: Option<u64>,
    /// Labels version.
    pub labels: Option<u64>,
}

impl TableVersions {
    /// The requested version of `kind`.
    pub fn get(&self, kind: TableKind) -> Option<u64> {
        match kind {
            TableKind::Samples => self.samples,
            TableKind::Annotations => self.annotations,
            TableKind::Labels => self.labels,
        }
    }
}

impl SnapshotRef {
    /// The newest version of every table.
    pub const LATEST: SnapshotRef =
        SnapshotRef::Versions(TableVersions { samples: None, annotations: None, labels: None });
}

impl FromStr for SnapshotRef {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(hex) = s.strip_prefix("snap-") {
            return if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(SnapshotRef::Id(s.to_ascii_lowercase()))
            } else {
                Err(format!("'{s}' is not a snapshot id (snap- followed by hex digits)"))
            };
        }
        // An unset shell variable must not quietly mean "latest".
        if s.split(':').all(|p| p.trim().is_empty()) {
            return Err(format!("'{s}' is an empty snapshot reference: write latest, S[:A[:L]] or snap-<hex>"));
        }
        let parse = |p: Option<&str>| -> std::result::Result<Option<u64>, String> {
            let raw = p.unwrap_or("").trim();
            if raw == "v" {
                return Err("'v' is not a table version".to_string());
            }
            let p = raw.strip_prefix('v').unwrap_or(raw);
            if p.is_empty() || p == "latest" {
                Ok(None)
            } else {
                p.parse::<u64>().map(Some).map_err(|_| format!("'{p}' is not a table version"))
            }
        };
        let mut parts = s.split(':');
        let v = TableVersions {
            samples: parse(parts.next())?,
            annotations: parse(parts.next())?,
            labels: parse(parts.next())?,
        };
        if parts.next().is_some() {
            return Err(format!("'{s}': at most three versions (samples:annotations:labels)"));
        }
        Ok(SnapshotRef::Versions(v))
    }
}

impl std::fmt::Display for SnapshotRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |x: Option<u64>| x.map_or_else(|| "latest".to_string(), |x| x.to_string());
        match self {
            SnapshotRef::Id(id) => f.write_str(id),
            SnapshotRef::Versions(t) => write!(f, "{}:{}:{}", v(t.samples), v(t.annotations), v(t.labels)),
        }
    }
}

/// The content id of a set of pinned tables and, when pinned, a vocabulary, in manifest format
/// `format` (`FORMAT_1` ids cover less; see [`FORMAT`]).
pub fn snapshot_id(format: &str, tables: &BTreeMap<TableKind, TablePin>, vocab: Option<&DataFile>) -> String {
    let mut h = Sha256::new();
    h.update(format.as_bytes());
    for (kind, pin) in tables {
        if format != FORMAT_1 {
            h.update(format!("\n{}@{}", kind.name(), pin.version).as_bytes());
        }
        let mut files: Vec<&DataFile> = pin.files.iter().collect();
        files.sort();
        for f in files {
            h.update(format!("\n{}\t{}\t{}\t{}", kind.name(), f.path, f.size, f.sha256).as_bytes());
            if format != FORMAT_1 {
                h.update(format!("\t{}", f.rows).as_bytes());
            }
        }
    }
    if let Some(v) = vocab {
        h.update(format!("\nvocab\t{}\t{}\t{}", v.path, v.size, v.sha256).as_bytes());
    }
    format!("snap-{}", &hex::encode(h.finalize())[..32])
}

impl Snapshot {
    /// Builds a snapshot (and its id) from pinned tables.
    pub fn new(tables: BTreeMap<TableKind, TablePin>) -> Self {
        Snapshot { format: FORMAT_1.into(), id: snapshot_id(FORMAT_1, &tables, None), tables, vocab: None }
    }

    /// The same tables as a snapshot to pin, in the current format, with `vocab` (from
    /// [`Dataset::file_pin`]) when given; a new id. An already pinned snapshot is returned as is.
    pub fn to_pin(mut self, vocab: Option<DataFile>) -> Self {
        if self.format == FORMAT {
            return self;
        }
        self.format = FORMAT.into();
        self.id = snapshot_id(FORMAT, &self.tables, vocab.as_ref());
        self.vocab = vocab;
        self
    }

    /// The pin of table `kind`.
    pub fn table(&self, kind: TableKind) -> Option<&TablePin> {
        self.tables.get(&kind)
    }

    /// Dataset-relative path of every pinned file with its record.
    pub fn files(&self) -> impl Iterator<Item = (String, &DataFile)> {
        let tables =
            self.tables.iter().flat_map(|(k, p)| p.files.iter().map(move |f| (format!("{}/{}", k.name(), f.path), f)));
        tables.chain(self.vocab.iter().map(|v| (v.path.clone(), v)))
    }
}

/// Files and rows that differ between two snapshots, per table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableDiff {
    /// Version in the first snapshot.
    pub from_version: u64,
    /// Version in the second snapshot.
    pub to_version: u64,
    /// Files only in the second.
    pub added: Vec<DataFile>,
    /// Files only in the first.
    pub removed: Vec<DataFile>,
}

impl TableDiff {
    /// Rows in added files.
    pub fn rows_added(&self) -> u64 {
        self.added.iter().map(|f| f.rows).sum()
    }

    /// Rows in removed files.
    pub fn rows_removed(&self) -> u64 {
        self.removed.iter().map(|f| f.rows).sum()
    }
}

/// Compares two snapshots table by table.
pub fn diff(a: &Snapshot, b: &Snapshot) -> BTreeMap<TableKind, TableDiff> {
    let empty = TablePin { version: 0, files: Vec::new() };
    TableKind::ALL
        .iter()
        .map(|&k| {
            let (pa, pb) = (a.table(k).unwrap_or(&empty), b.table(k).unwrap_or(&empty));
            let only = |x: &TablePin, y: &TablePin| -> Vec<DataFile> {
                x.files.iter().filter(|f| !y.files.iter().any(|g| g.path == f.path)).cloned().collect()
            };
            (
                k,
                TableDiff {
                    from_version: pa.version,
                    to_version: pb.version,
                    added: only(pb, pa),
                    removed: only(pa, pb),
                },
            )
        })
        .collect()
}

/// How thoroughly to check a snapshot's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Existence and size (one HEAD per file).
    Sizes,
    /// Existence, size and sha256 of the content (reads every byte).
    Content,
}

impl Dataset {
    /// The snapshot of the given table versions (latest where `None`).
    pub async fn snapshot_at(&self, versions: TableVersions) -> Result<Snapshot> {
        let mut tables = BTreeMap::new();
        for kind in TableKind::ALL {
            let log = self.table(kind);
            let version = match versions.get(kind) {
                Some(v) => v,
                None => log.latest_version().await?,
            };
            tables.insert(kind, TablePin { version, files: log.files(version).await? });
        }
        Ok(Snapshot::new(tables))
    }

    /// Resolves a reference: a pinned id is read from its manifest and its files checked by size.
    pub async fn resolve(&self, r: &SnapshotRef) -> Result<Snapshot> {
        match r {
            SnapshotRef::Id(id) => self.open_snapshot(id, Verify::Sizes).await,
            SnapshotRef::Versions(v) => self.snapshot_at(*v).await,
        }
    }

    /// Writes the snapshot's manifest so it can be opened by id later. Idempotent.
    pub async fn pin(&self, snapshot: &Snapshot) -> Result<()> {
        let rel = format!("{SNAPSHOT_DIR}/{}.json", snapshot.id);
        let body = serde_json::to_vec_pretty(snapshot).map_err(|e| StoreError::Malformed {
            what: "snapshot manifest",
            path: rel.clone(),
            message: e.to_string(),
        })?;
        let loc = self.location();
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match loc.store().put_opts(&loc.path(&rel), PutPayload::from(body.clone()), opts).await {
            Ok(_) => Ok(()),
            // Same id means same content, unless the manifest there was damaged: then it is
            // written again from the snapshot, which its id describes exactly.
            Err(object_store::Error::AlreadyExists { .. }) => match self.read_manifest(&snapshot.id).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    tracing::warn!("rewriting the damaged manifest {rel} ({e})");
                    let path = loc.path(&rel);
                    loc.store().put(&path, PutPayload::from(body)).await.map_err(|e| loc.storage_error(&rel, &e))?;
                    self.read_manifest(&snapshot.id).await.map(|_| ())
                }
            },
            Err(e) => Err(loc.storage_error(&rel, &e)),
        }
    }

    /// Opens a pinned snapshot by id, checking the manifest against its id and every file
    /// against the manifest. Never lists the store.
    pub async fn open_snapshot(&self, id: &str, verify: Verify) -> Result<Snapshot> {
        let snap = self.read_manifest(id).await?;
        self.verify_files(&snap, verify).await?;
        Ok(snap)
    }

    /// Reads a pinned manifest and checks it against its id, without touching the data files.
    pub async fn read_manifest(&self, id: &str) -> Result<Snapshot> {
        let rel = format!("{SNAPSHOT_DIR}/{id}.json");
        let bytes = self
            .get_json(&rel)
            .await?
            .ok_or_else(|| StoreError::NoSuchSnapshot { id: id.to_string(), url: self.display() })?;
        let snap: Snapshot = serde_json::from_slice(&bytes).map_err(|e| StoreError::Malformed {
            what: "snapshot manifest",
            path: rel.clone(),
            message: e.to_string(),
        })?;
        if snap.format != FORMAT && snap.format != FORMAT_1 {
            return Err(StoreError::Malformed {
                what: "snapshot manifest",
                path: rel,
                message: format!("format {:?}; this build reads {FORMAT:?} and {FORMAT_1:?}", snap.format),
            });
        }
        if snap.id != id {
            return Err(StoreError::Integrity {
                path: rel,
                reason: format!("the manifest records the id {}", snap.id),
            });
        }
        let recomputed = snapshot_id(&snap.format, &snap.tables, snap.vocab.as_ref());
        if recomputed != id {
            return Err(StoreError::Integrity {
                path: rel,
                reason: format!("manifest content hashes to {recomputed}, not {id}"),
            });
        }
        Ok(snap)
    }

    /// The record (size, sha256; no rows) of a dataset file outside the tables, for pinning it.
    pub async fn file_pin(&self, rel: &str) -> Result<DataFile> {
        let bytes = self
            .get_json(rel)
            .await?
            .ok_or_else(|| StoreError::Integrity { path: rel.to_string(), reason: "file is missing".into() })?;
        Ok(DataFile { path: rel.to_string(), size: bytes.len() as u64, rows: 0, sha256: shard::sha256_hex(&bytes) })
    }

    /// Reads a pinned dataset file (from [`Self::file_pin`]), checking its size and sha256.
    pub async fn fetch_pinned(&self, pin: &DataFile) -> Result<bytes::Bytes> {
        shard::fetch_verified(self.location(), &pin.path, pin).await
    }

    /// Checks every file of `snap`, failing on the first that is missing or differs.
    pub async fn verify_files(&self, snap: &Snapshot, verify: Verify) -> Result<()> {
        let problems = self.check_files(snap.files().map(|(p, f)| (p, f.clone())).collect(), verify).await;
        match problems.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Checks files (dataset-relative path, record) concurrently; returns every problem found.
    pub async fn check_files(&self, files: Vec<(String, DataFile)>, verify: Verify) -> Vec<StoreError> {
        let loc = self.location().clone();
        futures::stream::iter(files)
            .map(|(rel, file)| {
                let loc = loc.clone();
                async move {
                    match verify {
                        Verify::Content => shard::fetch_verified(&loc, &rel, &file).await.map(|_| ()),
                        Verify::Sizes => match loc.store().head(&loc.path(&rel)).await {
                            Ok(meta) if meta.size == file.size => Ok(()),
                            Ok(meta) => Err(StoreError::Integrity {
                                path: rel.clone(),
                                reason: format!("size {} differs from the recorded {}", meta.size, file.size),
                            }),
                            Err(object_store::Error::NotFound { .. }) => {
                                Err(StoreError::Integrity { path: rel.clone(), reason: "file is missing".into() })
                            }
                            Err(e) => Err(loc.storage_error(&rel, &e)),
                        },
                    }
                    .map_err(|e| match e {
                        StoreError::Storage { message, .. }
                            if message.contains("not found") || message.contains("No such file") =>
                        {
                            StoreError::Integrity { path: rel.clone(), reason: "file is missing".into() }
                        }
                        other => other,
                    })
                }
            })
            .buffer_unordered(CHECK_CONCURRENCY)
            .filter_map(|r| async move { r.err() })
            .collect()
            .await
    }

    /// Ids of the pinned snapshots (lists `_ecamp/snapshots/`).
    pub async fn pinned_ids(&self) -> Result<Vec<String>> {
        let loc = self.location();
        let metas: Vec<_> = loc
            .store()
            .list(Some(&loc.path(SNAPSHOT_DIR)))
            .try_collect()
            .await
            .map_err(|e| loc.storage_error(SNAPSHOT_DIR, &e))?;
        let mut ids: Vec<String> = metas
            .iter()
            .filter_map(|m| m.location.filename().and_then(|n| n.strip_suffix(".json")).map(str::to_string))
            .filter(|n| n.starts_with("snap-"))
            .collect();
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_parse() {
        assert_eq!("snap-00ff".parse::<SnapshotRef>(), Ok(SnapshotRef::Id("snap-00ff".into())));
        let v = |s, a, l| SnapshotRef::Versions(TableVersions { samples: s, annotations: a, labels: l });
        assert_eq!("3".parse::<SnapshotRef>(), Ok(v(Some(3), None, None)));
        assert_eq!("v3:1".parse::<SnapshotRef>(), Ok(v(Some(3), Some(1), None)));
        assert_eq!("3::2".parse::<SnapshotRef>(), Ok(v(Some(3), None, Some(2))));
        assert!("1:2:3:4".parse::<SnapshotRef>().is_err());
        assert_eq!("latest".parse::<SnapshotRef>(), Ok(SnapshotRef::LATEST));
        assert!("snap-xyz".parse::<SnapshotRef>().is_err());
        assert!("x:y".parse::<SnapshotRef>().is_err());
        for empty in ["", " ", ":", "::", "v", "v:1"] {
            assert!(empty.parse::<SnapshotRef>().is_err(), "{empty:?}");
        }
    }

    #[test]
    fn id_depends_on_every_field() {
        let f = DataFile { path: "a".into(), size: 1, rows: 1, sha256: "00".into() };
        let pin = |f: DataFile| BTreeMap::from([(TableKind::Samples, TablePin { version: 0, files: vec![f] })]);
        let id = |f: DataFile| snapshot_id(FORMAT, &pin(f), None);
        let base = id(f.clone());
        assert_eq!(base, id(f.clone()));
        assert_ne!(base, id(DataFile { size: 2, ..f.clone() }));
        assert_ne!(base, id(DataFile { sha256: "01".into(), ..f.clone() }));
        assert_ne!(base, id(DataFile { path: "b".into(), ..f.clone() }));
        assert_ne!(base, id(DataFile { rows: 2, ..f.clone() }));
        let later = BTreeMap::from([(TableKind::Samples, TablePin { version: 1, files: vec![f.clone()] })]);
        assert_ne!(base, snapshot_id(FORMAT, &later, None), "the version is part of the id");
        // The first format's ids, which pinned manifests carry, stay as they were.
        let first = snapshot_id(FORMAT_1, &pin(f.clone()), None);
        assert_eq!(first, "snap-05eb36fec51f961d284dbbd90e3abf13", "as the first format computed it");
        // Unpinned snapshots keep first-format ids; pinning moves them to the current format once.
        let unpinned = Snapshot::new(pin(f.clone()));
        assert_eq!(unpinned.id, first);
        let pinned = unpinned.to_pin(None);
        assert_eq!((pinned.format.as_str(), pinned.id.as_str()), (FORMAT, base.as_str()));
        assert_eq!(pinned.clone().to_pin(None), pinned);
        assert_eq!(first, snapshot_id(FORMAT_1, &later, None));
        assert_eq!(first, snapshot_id(FORMAT_1, &pin(DataFile { rows: 2, ..f.clone() }), None));
        let vocab = DataFile { path: "_ecamp/vocab/v.json".into(), size: 9, rows: 0, sha256: "02".into() };
        let with = snapshot_id(FORMAT, &pin(f.clone()), Some(&vocab));
        assert_ne!(base, with, "the vocabulary is part of the id");
        assert_ne!(with, snapshot_id(FORMAT, &pin(f), Some(&DataFile { sha256: "03".into(), ..vocab })));
    }
}
