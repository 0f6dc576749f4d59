//! ecamp-store: dataset tables on object storage.
//!
//! A dataset is a URL (`file://`, `memory://`, `s3://`, `gs://`, `az://`) holding three Delta Lake
//! tables, `samples`, `annotations` and `labels`, plus ecamp's own small documents under `_ecamp/`
//! (the dataset marker and pinned snapshot manifests). This crate owns the table format:
//! schemas, Parquet writer settings, commits, snapshots and integrity checks. It knows
//! nothing about images or ECAMP beyond the column layout.

#![warn(missing_docs)]

pub mod dataset;
pub mod delta;
pub mod error;
pub mod fsck;
pub mod keys;
pub mod location;
pub mod log;
pub mod reader;
pub mod redact;
pub mod retry;
pub mod schema;
pub mod shard;
pub mod snapshot;

pub use dataset::Dataset;
pub use error::{Result, StoreError};
pub use fsck::{FsckOptions, FsckReport};
pub use keys::{Admitted, SampleKeys, UniqueAppend};
pub use location::{Backend, Location};
pub use log::{AppTxn, AppendOutcome, CommitRecord, TableLog};
/// Parquet metadata of one data file, loaded once by readers and reused for every row-group read.
pub use parquet::arrow::arrow_reader::ArrowReaderMetadata as FileMetadata;
pub use reader::{RowGroupSize, row_group_sizes};
pub use schema::{AnnotationRow, Entity, LabelRow, Producer, SCHEMA_VERSION, SampleRow, TableKind};
pub use shard::{DataFile, ShardOptions};
pub use snapshot::{Snapshot, SnapshotRef, TablePin, TableVersions, Verify};
