//! The table-format boundary: what ecamp needs from a transaction log, and nothing more.
//! The loader and the CLI see only these types; delta-rs stays inside [`crate::delta`].

use std::future::Future;

use crate::error::Result;
use crate::shard::DataFile;

/// An application transaction marker, for exactly-once appends: a commit carrying
/// `(app_id, seq)` is skipped when the table already holds `seq` or later for `app_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTxn {
    /// Stable id of the writer (e.g. an ingest run and its partition).
    pub app_id: String,
    /// Monotonic batch number within that writer.
    pub seq: i64,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The files were committed as this version.
    Committed(u64),
    /// The transaction marker was already present: nothing was written again.
    AlreadyCommitted,
}

/// One version of a table as recorded in its log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommitRecord {
    /// The version number.
    pub version: u64,
    /// Commit time, milliseconds since the Unix epoch.
    pub timestamp_ms: Option<i64>,
    /// Operation name as recorded (e.g. `CREATE TABLE`, `WRITE`).
    pub operation: String,
    /// Files added by this commit.
    pub added: Vec<DataFile>,
    /// Paths of files removed by this commit.
    pub removed: Vec<String>,
    /// Application transactions recorded by this commit.
    pub txns: Vec<(String, i64)>,
}

impl CommitRecord {
    /// Rows added by this commit.
    pub fn rows_added(&self) -> u64 {
        self.added.iter().map(|f| f.rows).sum()
    }

    /// Bytes added by this commit.
    pub fn bytes_added(&self) -> u64 {
        self.added.iter().map(|f| f.size).sum()
    }
}

/// A table's transaction log: create, append, list the files of a version, and its history.
pub trait TableLog: Send + Sync {
    /// Creates the table if it does not exist; verifies it if it does. Safe to race.
    fn ensure_created(&self) -> impl Future<Output = Result<()>> + Send;

    /// The latest committed version, checking the protocol is readable.
    fn latest_version(&self) -> impl Future<Output = Result<u64>> + Send;

    /// Commits `files` as one new version, retrying through contention.
    fn append(&self, files: Vec<DataFile>, txn: Option<AppTxn>) -> impl Future<Output = Result<AppendOutcome>> + Send;

    /// Commits `files` as version `base + 1` or not at all: `Ok(None)` when another writer
    /// committed after `base`, so that the caller can re-check what it read and try again.
    fn append_after(
        &self,
        files: Vec<DataFile>,
        txn: Option<AppTxn>,
        base: u64,
    ) -> impl Future<Output = Result<Option<AppendOutcome>>> + Send;

    /// The highest batch number committed by writer `app_id`, if any.
    fn txn_version(&self, app_id: &str) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// The live files of `version`.
    fn files(&self, version: u64) -> impl Future<Output = Result<Vec<DataFile>>> + Send;

    /// Every commit from version 0 to the latest still in the log, oldest first.
    fn history(&self) -> impl Future<Output = Result<Vec<CommitRecord>>> + Send;

    /// The commits `from..=to` still in the log, oldest first.
    fn commits(&self, from: u64, to: u64) -> impl Future<Output = Result<Vec<CommitRecord>>> + Send;
}
