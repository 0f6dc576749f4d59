//! A dataset: one URL, one shared object store, and its two tables.

use arrow_array::RecordBatch;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::delta::DeltaLog;
use crate::error::{Result, StoreError};
use crate::location::Location;
use crate::log::{AppTxn, AppendOutcome, TableLog};
use crate::schema::{self, AnnotationRow, LabelRow, SCHEMA_VERSION, SampleRow, TableKind};
use crate::shard::{self, DataFile, ShardOptions};

/// Dataset-relative path of the marker that makes a prefix an ecamp dataset.
pub const MARKER: &str = "_ecamp/dataset.json";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Marker {
    format: String,
    schema_version: u32,
    created_at: String,
    tables: Vec<String>,
}

/// An open ecamp dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    loc: Location,
    /// One log per table, indexed by `TableKind as usize`.
    tables: [DeltaLog; 3],
    shard: ShardOptions,
}

impl Dataset {
    fn new(loc: Location) -> Result<Self> {
        let tables = [
            DeltaLog::new(&loc, TableKind::Samples)?,
            DeltaLog::new(&loc, TableKind::Annotations)?,
            DeltaLog::new(&loc, TableKind::Labels)?,
        ];
        Ok(Dataset { loc, tables, shard: ShardOptions::default() })
    }

    /// Creates the dataset at `url` (marker and both tables), or opens it if it exists.
    /// Safe to call from many processes at once.
    pub async fn create(url: &str) -> Result<Self> {
        let ds = Self::new(Location::parse(url)?)?;
        let marker = Marker {
            format: "ecamp-dataset".into(),
            schema_version: SCHEMA_VERSION,
            created_at: chrono::Utc::now().to_rfc3339(),
            tables: TableKind::ALL.iter().map(|k| k.name().to_string()).collect(),
        };
        let body = serde_json::to_vec_pretty(&marker).map_err(|e| StoreError::Malformed {
            what: "dataset marker",
            path: MARKER.into(),
            message: e.to_string(),
        })?;
        if ds.get_json(MARKER).await?.is_none() {
            let mut probe = ds.loc.store().list(Some(ds.loc.prefix()));
            let occupied = probe.try_next().await.map_err(|e| ds.loc.storage_error("", &e))?.is_some();
            // A creator writes the marker before anything else: files with a marker that has
            // appeared meanwhile are a concurrent creator's (partitions starting together).
            if occupied && ds.get_json(MARKER).await?.is_none() {
                return Err(StoreError::NotEmpty { url: ds.loc.display(), marker: MARKER.into() });
            }
        }
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match ds.loc.store().put_opts(&ds.loc.path(MARKER), PutPayload::from(body), opts).await {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(ds.loc.storage_error(MARKER, &e)),
        }
        ds.read_marker().await?;
        for t in &ds.tables {
            t.ensure_created().await?;
        }
        Ok(ds)
    }

    /// Opens an existing dataset; refuses a URL that holds none.
    pub async fn open(url: &str) -> Result<Self> {
        let ds = Self::new(Location::parse(url)?)?;
        ds.read_marker().await?;
        Ok(ds)
    }

    async fn read_marker(&self) -> Result<()> {
        let Some(bytes) = self.get_json(MARKER).await? else {
            return Err(self.diagnose_missing().await);
        };
        let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| StoreError::Malformed {
            what: "dataset marker",
            path: format!("{}/{MARKER}", self.loc.display()),
            message: e.to_string(),
        })?;
        if marker.schema_version != SCHEMA_VERSION {
            return Err(StoreError::SchemaVersion {
                url: self.loc.display(),
                found: marker.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// Tells a missing bucket or bad credentials apart from a prefix that is simply not a dataset.
    async fn diagnose_missing(&self) -> StoreError {
        let mut probe = self.loc.store().list(Some(self.loc.prefix()));
        match probe.try_next().await {
            Err(e) => self.loc.storage_error("", &e),
            Ok(_) => StoreError::NotADataset { url: self.loc.display(), marker: MARKER.into() },
        }
    }

    /// Where the dataset lives.
    pub fn location(&self) -> &Location {
        &self.loc
    }

    /// The dataset URL with secrets masked.
    pub fn display(&self) -> String {
        self.loc.display()
    }

    /// The transaction log of table `kind`.
    pub fn table(&self, kind: TableKind) -> &DeltaLog {
        &self.tables[kind as usize]
    }

    /// Overrides the shard writer's tuning (row group and file sizes).
    pub fn with_shard_options(mut self, opts: ShardOptions) -> Self {
        self.shard = opts;
        self
    }

    /// Whether `txn` (or a later batch of the same writer) is already committed to `kind`.
    pub async fn is_committed(&self, kind: TableKind, txn: &AppTxn) -> Result<bool> {
        Ok(self.table(kind).txn_version(&txn.app_id).await?.is_some_and(|seq| seq >= txn.seq))
    }

    /// Writes `batch` as new data files of `kind` and commits them as one version.
    /// With `txn`, the append happens at most once however often it is retried.
    pub async fn append_batch(
        &self,
        kind: TableKind,
        batch: &RecordBatch,
        txn: Option<AppTxn>,
    ) -> Result<AppendOutcome> {
        if let Some(t) = &txn
            && self.is_committed(kind, t).await?
        {
            return Ok(AppendOutcome::AlreadyCommitted);
        }
        let files = self.upload(kind, batch).await?;
        self.table(kind).append(files, txn).await
    }

    /// Writes `batch` as new, not yet committed data files of `kind`.
    pub(crate) async fn upload(&self, kind: TableKind, batch: &RecordBatch) -> Result<Vec<DataFile>> {
        let mut files = Vec::new();
        for (bytes, rows) in shard::encode(kind, batch, &self.shard)? {
            files.push(shard::upload(&self.loc, kind, bytes, rows).await?);
        }
        Ok(files)
    }

    /// Deletes data files that were uploaded but will never be committed. A file that cannot be
    /// deleted is left for `fsck --delete-orphans`.
    pub(crate) async fn discard(&self, kind: TableKind, files: &[DataFile]) {
        for f in files {
            let rel = format!("{}/{}", kind.name(), f.path);
            if let Err(e) = self.loc.store().delete(&self.loc.path(&rel)).await {
                tracing::warn!(file = %rel, error = %self.loc.storage_error(&rel, &e), "cannot delete an uncommitted data file; fsck will list it as an orphan");
            }
        }
    }

    /// Appends sample rows as one commit.
    pub async fn append_samples(&self, rows: &[SampleRow], txn: Option<AppTxn>) -> Result<AppendOutcome> {
        self.append_batch(TableKind::Samples, &schema::samples_batch(rows)?, txn).await
    }

    /// Appends annotation rows as one commit.
    pub async fn append_annotations(&self, rows: &[AnnotationRow], txn: Option<AppTxn>) -> Result<AppendOutcome> {
        self.append_batch(TableKind::Annotations, &schema::annotations_batch(rows)?, txn).await
    }

    /// Appends label rows as one commit.
    pub async fn append_labels(&self, rows: &[LabelRow], txn: Option<AppTxn>) -> Result<AppendOutcome> {
        self.append_batch(TableKind::Labels, &schema::labels_batch(rows)?, txn).await
    }

    /// Reads a whole data file of `kind`, verifying its size and hash first.
    pub async fn read_file(&self, kind: TableKind, file: &DataFile) -> Result<Vec<RecordBatch>> {
        shard::read_file(&self.loc, kind, file).await
    }

    /// Reads all rows of the samples files given (e.g. a snapshot's).
    pub async fn read_samples(&self, files: &[DataFile]) -> Result<Vec<SampleRow>> {
        let mut rows = Vec::new();
        for f in files {
            for b in self.read_file(TableKind::Samples, f).await? {
                rows.extend(schema::sample_rows(&b)?);
            }
        }
        Ok(rows)
    }

    /// Reads a small JSON document of ours at a dataset-relative path; `None` if absent.
    pub(crate) async fn get_json(&self, rel: &str) -> Result<Option<Bytes>> {
        match self.loc.store().get(&self.loc.path(rel)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.loc.storage_error(rel, &e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.loc.storage_error(rel, &e)),
        }
    }
}
