//! [`TableLog`] on Delta Lake (delta-rs, no datafusion). Everything delta-rs is kept here.

use std::collections::HashMap;
use std::sync::{Arc, Once};
use std::time::Duration;

use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake_core::kernel::{Action, Add, StructType, Transaction};
use deltalake_core::logstore::{
    LogStore, LogStoreFactory, LogStoreRef, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
    logstore_with,
};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaResult, DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{Result, StoreError};
use crate::location::Location;
use crate::log::{AppTxn, AppendOutcome, CommitRecord, TableLog};
use crate::retry::Backoff;
use crate::schema::{SCHEMA_VERSION, TableKind};
use crate::shard::DataFile;

/// Tag of an add action that holds the file's sha256.
const SHA_TAG: &str = "ecamp.sha256";
/// Table property that records the ecamp table layout version.
const SCHEMA_PROP: &str = "ecamp.schemaVersion";
/// Delta's own conflict-resolving retries per attempt (they do not sleep).
const DELTA_RETRIES: usize = 10;
/// Our attempts around delta's, each after a jittered sleep.
const COMMIT_ATTEMPTS: u32 = 60;

/// Reader features whose tables this build reads correctly.
const READER_FEATURES: &[&str] = &["timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"];
/// Writer features whose tables this build appends to correctly.
const WRITER_FEATURES: &[&str] =
    &["appendOnly", "invariants", "timestampNtz", "v2Checkpoint", "vacuumProtocolCheck", "checkpointProtection"];

#[derive(Debug, Default)]
struct PutIfAbsentFactory;

impl LogStoreFactory for PutIfAbsentFactory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(prefixed_store, root_store, location, options))
    }
}

/// Registers delta-rs's put-if-absent log store for the cloud schemes, whose stores we build
/// ourselves with object_store (so delta-rs's per-cloud crates are not needed).
fn register_cloud_schemes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let factories = logstore_factories();
        for scheme in ["s3://", "s3a://", "gs://", "az://", "azure://", "abfs://", "abfss://"] {
            if let Ok(url) = Url::parse(scheme) {
                factories.entry(url).or_insert_with(|| Arc::new(PutIfAbsentFactory));
            }
        }
    });
}

/// One table of a dataset, as a Delta Lake table.
#[derive(Clone)]
pub struct DeltaLog {
    kind: TableKind,
    shown: String,
    log_store: LogStoreRef,
    /// The newest state read so far; refreshed incrementally, so a long-running writer reads
    /// each commit once instead of replaying the log before every append.
    latest: Arc<tokio::sync::Mutex<Option<DeltaTable>>>,
    /// The dataset's store and this table's `_delta_log` folder in it.
    store: Arc<dyn ObjectStore>,
    log_dir: Path,
    /// The versions whose commits have been checked to be non-empty (one contiguous run).
    checked: Arc<std::sync::Mutex<std::ops::Range<u64>>>,
    /// `_last_checkpoint`'s version as first read; a later checkpoint only makes it lower than
    /// the newest, which checks more commits, never fewer.
    checkpoint_hint: Arc<tokio::sync::OnceCell<Option<u64>>>,
}

impl std::fmt::Debug for DeltaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaLog").field("table", &self.shown).finish_non_exhaustive()
    }
}

fn expected_schema(kind: TableKind) -> Result<StructType> {
    kind.schema().as_ref().try_into_kernel().map_err(|e| StoreError::delta(kind.name(), e))
}

fn is_not_a_table(err: &DeltaTableError) -> bool {
    if matches!(err, DeltaTableError::NotATable(_) | DeltaTableError::InvalidTableLocation(_)) {
        return true;
    }
    let msg = err.to_string();
    ["No files in log segment", "Path does not exist", "not a Delta table"].iter().any(|m| msg.contains(m))
}

/// Contention and network faults that a later attempt can get past.
fn is_retryable(err: &DeltaTableError) -> bool {
    lost_race(err)
        || match err {
            DeltaTableError::Transaction { source: TransactionError::ObjectStore { source } } => {
                crate::error::is_transient(source)
            }
            DeltaTableError::ObjectStore { source } => crate::error::is_transient(source),
            _ => false,
        }
}

/// A commit that failed because another writer committed the version it tried.
fn lost_race(err: &DeltaTableError) -> bool {
    match err {
        DeltaTableError::VersionAlreadyExists(_) => true,
        DeltaTableError::Transaction { source } => matches!(
            source,
            TransactionError::MaxCommitAttempts(_)
                | TransactionError::VersionAlreadyExists(_)
                | TransactionError::CommitConflict(_)
        ),
        _ => false,
    }
}

impl DeltaLog {
    /// Opens (without reading) the table `kind` of the dataset at `loc`.
    pub fn new(loc: &Location, kind: TableKind) -> Result<Self> {
        register_cloud_schemes();
        let url = loc.child_url(kind.name())?;
        let shown = format!("{}/{}", loc.display(), kind.name());
        let log_store = logstore_with(loc.store().clone(), &url, StorageConfig::default())
            .map_err(|e| StoreError::delta(&shown, e))?;
        let (store, log_dir) = (loc.store().clone(), loc.path(&format!("{}/_delta_log", kind.name())));
        Ok(DeltaLog {
            kind,
            shown,
            log_store,
            latest: Arc::default(),
            store,
            log_dir,
            checked: Arc::new(std::sync::Mutex::new(0..0)),
            checkpoint_hint: Arc::default(),
        })
    }

    /// The table's URL with secrets masked.
    pub fn display(&self) -> &str {
        &self.shown
    }

    /// The newest state of the table, read incrementally after the first call.
    async fn load_latest(&self) -> DeltaResult<DeltaTable> {
        let mut cached = self.latest.lock().await;
        if let Some(table) = cached.as_mut() {
            if table.update_incremental(None).await.is_ok() {
                return Ok(table.clone());
            }
            // Fall back to a full read (e.g. the log was rewritten under us).
            *cached = None;
        }
        let mut table = DeltaTable::new(self.log_store.clone());
        table.load().await?;
        *cached = Some(table.clone());
        Ok(table)
    }

    async fn load(&self, version: Option<u64>) -> Result<DeltaTable> {
        let res = match version {
            None => self.load_latest().await,
            Some(v) => {
                // The kernel scans backwards from `v` for a checkpoint, one listing per stride:
                // a version far beyond the log would take hours to be found missing. The cached
                // latest state is read incrementally, so this costs one short listing.
                if let Some(latest) = self.load_latest().await.ok().and_then(|t| t.version())
                    && v > latest
                {
                    return Err(StoreError::NoSuchVersion { table: self.shown.clone(), version: v, latest });
                }
                let mut table = DeltaTable::new(self.log_store.clone());
                table.load_version(v).await.map(|()| table)
            }
        };
        let table = match res {
            Ok(t) => t,
            Err(e) if is_not_a_table(&e) => {
                return Err(StoreError::Delta { table: self.shown.clone(), message: "no Delta table here".into() });
            }
            Err(e) => {
                if let (Some(v), Ok(latest)) = (version, self.log_store.get_latest_version(0).await)
                    && v > latest
                {
                    return Err(StoreError::NoSuchVersion { table: self.shown.clone(), version: v, latest });
                }
                return Err(self.delta_err(e));
            }
        };
        self.check_protocol(&table, false)?;
        if let Some(v) = table.version() {
            self.check_commits(v).await?;
        }
        Ok(table)
    }

    /// Refuses a zero-byte commit file up to `upto`. The Delta reader takes one for a commit that
    /// did nothing, so a commit file emptied by a crash or a careless copy would silently drop
    /// the files it added. Each version is listed once per process.
    async fn check_commits(&self, upto: u64) -> Result<()> {
        // A reader replays the commits after the newest checkpoint at or below the version it
        // reads; `_last_checkpoint` names the newest, which only helps versions above it.
        let start = match *self.checkpoint_hint.get_or_init(|| self.last_checkpoint()).await {
            Some(c) if c <= upto => c + 1,
            _ => 0,
        };
        let known = self.checked.lock().map(|r| r.clone()).unwrap_or(0..0);
        if known.start <= start && upto < known.end {
            return Ok(());
        }
        // Continue a run already checked from at or before `start`; otherwise check anew.
        let from = if known.start <= start && start <= known.end { known.end } else { start };
        let offset = Path::from(format!("{}/{from:020}", self.log_dir));
        let listed: Vec<_> = self
            .store
            .list_with_offset(Some(&self.log_dir), &offset)
            .try_collect()
            .await
            .map_err(|e| StoreError::storage(&self.shown, "_delta_log", &e))?;
        for meta in listed {
            let name = meta.location.filename().unwrap_or_default();
            let version = name.strip_suffix(".json").and_then(|v| v.parse::<u64>().ok());
            if let Some(v) = version.filter(|v| (from..=upto).contains(v))
                && meta.size == 0
            {
                return Err(self.empty_commit(v));
            }
        }
        if let Ok(mut r) = self.checked.lock() {
            *r = if from == r.end && r.start <= start { r.start..upto + 1 } else { start..upto + 1 };
        }
        Ok(())
    }

    fn empty_commit(&self, version: u64) -> StoreError {
        StoreError::Delta {
            table: self.shown.clone(),
            message: format!(
                "commit {version} (_delta_log/{version:020}.json) is empty, so the files it added are unknown; \
                 the table's history is damaged (`ecamp fsck` reports it)"
            ),
        }
    }

    /// The version of the table's newest Delta checkpoint, from `_delta_log/_last_checkpoint`.
    async fn last_checkpoint(&self) -> Option<u64> {
        let path = Path::from(format!("{}/_last_checkpoint", self.log_dir));
        let bytes = self.store.get(&path).await.ok()?.bytes().await.ok()?;
        serde_json::from_slice::<serde_json::Value>(&bytes).ok()?.get("version")?.as_u64()
    }

    fn delta_err(&self, e: DeltaTableError) -> StoreError {
        match e {
            DeltaTableError::ObjectStore { source } => StoreError::storage(&self.shown, "_delta_log", &source),
            other => match log_gap(&other.to_string()) {
                Some((before, after)) => StoreError::Delta {
                    table: self.shown.clone(),
                    message: format!(
                        "the log has a gap: versions {} to {} are missing between commits {before} and {after} \
                         (`ecamp fsck` reports it)",
                        before + 1,
                        after.saturating_sub(1)
                    ),
                },
                None => StoreError::delta(&self.shown, other),
            },
        }
    }

    /// Refuses tables whose protocol asks for features this build does not implement.
    fn check_protocol(&self, table: &DeltaTable, for_write: bool) -> Result<()> {
        let snapshot = table.snapshot().map_err(|e| self.delta_err(e))?;
        let protocol = snapshot.protocol();
        let mut missing: Vec<String> = Vec::new();
        match protocol.min_reader_version() {
            1 => {}
            2 => missing.push("columnMapping (reader version 2)".into()),
            3 => missing.extend(
                protocol
                    .reader_features()
                    .unwrap_or_default()
                    .iter()
                    .map(|f| f.to_string())
                    .filter(|f| !READER_FEATURES.contains(&f.as_str())),
            ),
            v => missing.push(format!("reader version {v}")),
        }
        if for_write {
            match protocol.min_writer_version() {
                1 | 2 => {}
                7 => missing.extend(
                    protocol
                        .writer_features()
                        .unwrap_or_default()
                        .iter()
                        .map(|f| f.to_string())
                        .filter(|f| !WRITER_FEATURES.contains(&f.as_str())),
                ),
                v => missing.push(format!("writer version {v}")),
            }
        }
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::UnsupportedProtocol { table: self.shown.clone(), features: missing.join(", ") })
        }
    }

    fn check_schema(&self, table: &DeltaTable) -> Result<()> {
        let snapshot = table.snapshot().map_err(|e| self.delta_err(e))?;
        let found = snapshot.schema();
        let want = expected_schema(self.kind)?;
        let names =
            |s: &StructType| s.fields().map(|f| format!("{}:{:?}", f.name(), f.data_type())).collect::<Vec<_>>();
        if names(found.as_ref()) != names(&want) {
            return Err(StoreError::SchemaMismatch {
                table: self.shown.clone(),
                reason: format!("columns {:?}, expected {:?}", names(found.as_ref()), names(&want)),
            });
        }
        let version = snapshot.metadata().configuration().get(SCHEMA_PROP).and_then(|v| v.parse::<u32>().ok());
        match version {
            Some(v) if v == SCHEMA_VERSION => Ok(()),
            Some(v) => Err(StoreError::SchemaVersion { url: self.shown.clone(), found: v, supported: SCHEMA_VERSION }),
            None => Err(StoreError::SchemaMismatch {
                table: self.shown.clone(),
                reason: format!("no '{SCHEMA_PROP}' property"),
            }),
        }
    }

    async fn create(&self) -> DeltaResult<DeltaTable> {
        let schema = expected_schema(self.kind).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        let mut config: HashMap<String, Option<String>> = HashMap::from([
            (SCHEMA_PROP.to_string(), Some(SCHEMA_VERSION.to_string())),
            // Time travel to any pinned version must keep working for years.
            ("delta.logRetentionDuration".to_string(), Some("interval 3650 days".to_string())),
            ("delta.deletedFileRetentionDuration".to_string(), Some("interval 3650 days".to_string())),
            ("delta.enableDeletionVectors".to_string(), Some("false".to_string())),
            ("delta.columnMapping.mode".to_string(), Some("none".to_string())),
        ]);
        if self.kind.append_only() {
            config.insert("delta.appendOnly".to_string(), Some("true".to_string()));
        }
        CreateBuilder::new()
            .with_log_store(self.log_store.clone())
            .with_table_name(self.kind.name())
            .with_comment(format!("ecamp {} table, layout version {SCHEMA_VERSION}", self.kind))
            .with_columns(schema.fields().cloned())
            .with_configuration(config)
            .with_raise_if_key_not_exists(false)
            .with_save_mode(SaveMode::ErrorIfExists)
            .await
    }

    fn add_action(file: &DataFile) -> Action {
        let stats = serde_json::json!({ "numRecords": file.rows });
        Action::Add(Add {
            path: file.path.clone(),
            partition_values: HashMap::new(),
            size: file.size as i64,
            modification_time: chrono::Utc::now().timestamp_millis(),
            data_change: true,
            stats: Some(stats.to_string()),
            tags: Some(HashMap::from([(SHA_TAG.to_string(), Some(file.sha256.clone()))])),
            ..Default::default()
        })
    }

    /// One commit attempt. With `base`, the commit lands as `base + 1` or not at all (`None`):
    /// delta-rs's own conflict resolution would let it land later, after writers whose rows
    /// the caller has not checked against.
    async fn try_append(
        &self,
        actions: &[Action],
        txn: &Option<AppTxn>,
        base: Option<u64>,
    ) -> DeltaResult<Option<AppendOutcome>> {
        let table = self.load_latest().await?;
        self.check_protocol(&table, true).map_err(|e| DeltaTableError::Generic(e.to_string()))?;
        let snapshot = table.snapshot()?;
        let retries = if base.is_some() { 0 } else { DELTA_RETRIES };
        let mut props = CommitProperties::default().with_max_retries(retries);
        if let Some(t) = txn {
            if let Some(done) = snapshot.transaction_version(self.log_store.as_ref(), &t.app_id).await?
                && done >= t.seq
            {
                return Ok(Some(AppendOutcome::AlreadyCommitted));
            }
            props = props.with_application_transaction(Transaction::new(&t.app_id, t.seq));
        }
        if base.is_some_and(|b| table.version() != Some(b)) {
            return Ok(None);
        }
        let op = DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
        let built = CommitBuilder::from(props)
            .with_actions(actions.to_vec())
            .build(Some(snapshot), self.log_store.clone(), op)
            .await;
        match built {
            Ok(commit) => Ok(Some(AppendOutcome::Committed(commit.version()))),
            Err(e) if base.is_some() && lost_race(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Self::try_append`] until it succeeds, sleeping between attempts that contention or a
    /// transient fault failed.
    async fn append_with(
        &self,
        files: &[DataFile],
        txn: &Option<AppTxn>,
        base: Option<u64>,
    ) -> Result<Option<AppendOutcome>> {
        let actions: Vec<Action> = files.iter().map(Self::add_action).collect();
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(3));
        let mut last = String::new();
        for _ in 0..COMMIT_ATTEMPTS {
            match self.try_append(&actions, txn, base).await {
                Ok(outcome) => return Ok(outcome),
                Err(e) if is_retryable(&e) => {
                    last = e.to_string();
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(DeltaTableError::Generic(msg)) if msg.contains("Delta protocol features") => {
                    return Err(StoreError::UnsupportedProtocol { table: self.shown.clone(), features: msg });
                }
                Err(e) => return Err(self.delta_err(e)),
            }
        }
        Err(StoreError::CommitFailed {
            table: self.shown.clone(),
            attempts: COMMIT_ATTEMPTS,
            message: crate::redact::scrub(&last),
        })
    }

    /// Parses one commit file into a [`CommitRecord`].
    fn parse_commit(&self, version: u64, bytes: &[u8]) -> Result<CommitRecord> {
        let mut rec = CommitRecord {
            version,
            timestamp_ms: None,
            operation: String::new(),
            added: Vec::new(),
            removed: Vec::new(),
            txns: Vec::new(),
        };
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let action: Action = serde_json::from_slice(line).map_err(|e| StoreError::Malformed {
                what: "delta commit",
                path: format!("{}/_delta_log/{version:020}.json line {}", self.shown, i + 1),
                message: e.to_string(),
            })?;
            match action {
                Action::CommitInfo(ci) => {
                    rec.timestamp_ms = ci.in_commit_timestamp.or(ci.timestamp);
                    rec.operation = ci.operation.unwrap_or_default();
                }
                Action::Add(add) => {
                    rec.added.push(data_file(&add.path, add.size, add.stats.as_deref(), add.tags.as_ref()))
                }
                Action::Remove(r) => rec.removed.push(r.path),
                Action::Txn(t) => rec.txns.push((t.app_id, t.version)),
                _ => {}
            }
        }
        Ok(rec)
    }
}

fn data_file(path: &str, size: i64, stats: Option<&str>, tags: Option<&HashMap<String, Option<String>>>) -> DataFile {
    let rows = stats
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        .and_then(|v| v.get("numRecords").and_then(|n| n.as_u64()))
        .unwrap_or(0);
    let sha256 = tags.and_then(|t| t.get(SHA_TAG).cloned().flatten()).unwrap_or_default();
    DataFile { path: path.to_string(), size: size.max(0) as u64, rows, sha256 }
}

/// The two commit versions around a gap, from the kernel's "found gap" error (whose own text
/// is two debug-printed paths).
fn log_gap(message: &str) -> Option<(u64, u64)> {
    if !message.contains("Expected contiguous commit files, but found gap") {
        return None;
    }
    let mut versions = message.split("version: ").skip(1).filter_map(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    });
    Some((versions.next()?, versions.next()?))
}

impl TableLog for DeltaLog {
    async fn ensure_created(&self) -> Result<()> {
        let table = match self.load(None).await {
            Ok(t) => t,
            Err(StoreError::Delta { message, .. }) if message == "no Delta table here" => {
                match self.create().await {
                    Ok(t) => t,
                    // Another writer may have won the race to version 0: use its table, or
                    // report why creating failed if there is none.
                    Err(create) => self.load(None).await.map_err(|_| self.delta_err(create))?,
                }
            }
            Err(e) => return Err(e),
        };
        self.check_schema(&table)
    }

    async fn latest_version(&self) -> Result<u64> {
        let table = self.load(None).await?;
        table.version().ok_or_else(|| StoreError::delta(&self.shown, "table has no version"))
    }

    async fn append(&self, files: Vec<DataFile>, txn: Option<AppTxn>) -> Result<AppendOutcome> {
        self.append_with(&files, &txn, None)
            .await?
            .ok_or_else(|| StoreError::delta(&self.shown, "an unconditional append reported a lost race"))
    }

    async fn append_after(
        &self,
        files: Vec<DataFile>,
        txn: Option<AppTxn>,
        base: u64,
    ) -> Result<Option<AppendOutcome>> {
        self.append_with(&files, &txn, Some(base)).await
    }

    async fn txn_version(&self, app_id: &str) -> Result<Option<i64>> {
        let table = self.load(None).await?;
        let snapshot = table.snapshot().map_err(|e| self.delta_err(e))?;
        snapshot.transaction_version(self.log_store.as_ref(), app_id).await.map_err(|e| self.delta_err(e))
    }

    async fn files(&self, version: u64) -> Result<Vec<DataFile>> {
        let table = self.load(Some(version)).await?;
        let snapshot = table.snapshot().map_err(|e| self.delta_err(e))?;
        let mut files: Vec<DataFile> = snapshot
            .log_data()
            .iter()
            .map(|view| {
                #[allow(deprecated)] // the Add view is the only accessor of per-file tags
                let add = view.add_action();
                data_file(&add.path, add.size, add.stats.as_deref(), add.tags.as_ref())
            })
            .collect();
        files.sort();
        Ok(files)
    }

    async fn history(&self) -> Result<Vec<CommitRecord>> {
        let latest = self.log_store.get_latest_version(0).await.map_err(|e| self.delta_err(e))?;
        self.commits(0, latest).await
    }

    async fn commits(&self, from: u64, to: u64) -> Result<Vec<CommitRecord>> {
        let mut out = Vec::with_capacity(to.saturating_sub(from).saturating_add(1).min(1 << 16) as usize);
        for version in from..=to {
            // Entries older than the log retention may be gone; skip them.
            if let Some(bytes) = self.log_store.read_commit_entry(version).await.map_err(|e| self.delta_err(e))? {
                if bytes.trim_ascii().is_empty() {
                    return Err(self.empty_commit(version));
                }
                out.push(self.parse_commit(version, &bytes)?);
            }
        }
        Ok(out)
    }
}
