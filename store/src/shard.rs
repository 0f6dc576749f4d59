//! Parquet data files ("shards"): writer settings that suit images, content hashing at write
//! time, and whole-file reads.

use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};
use crate::location::Location;
use crate::schema::{SCHEMA_VERSION, TableKind};

/// A committed (or about to be committed) data file of a table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct DataFile {
    /// Path relative to the table directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Number of rows.
    pub rows: u64,
    /// Lower-case hex sha256 of the file's bytes, recorded at write time.
    pub sha256: String,
}

/// Tuning of the shard writer.
#[derive(Debug, Clone)]
pub struct ShardOptions {
    /// Target size of one row group in bytes (small, for shuffled reads).
    pub row_group_bytes: usize,
    /// Target size of one file in bytes.
    pub file_bytes: usize,
    /// zstd level for text columns.
    pub zstd_level: i32,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions { row_group_bytes: 4 << 20, file_bytes: 256 << 20, zstd_level: 3 }
    }
}

/// Columns that hold already-compressed bytes: stored plain.
const RAW_COLUMNS: &[&[&str]] = &[&["image", "bytes"]];

fn writer_properties(kind: TableKind, opts: &ShardOptions) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(opts.zstd_level)
        .map_err(|e| StoreError::InvalidRows { table: kind.to_string(), reason: e.to_string() })?;
    let hf = serde_json::json!({
        "info": {"features": {"image": {"_type": "Image"}}}
    });
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("sample_id"), EnabledStatistics::Chunk)
        // Row groups are cut by bytes in `write_file`; this only caps pathological row counts.
        .set_max_row_group_row_count(Some(1 << 20))
        .set_key_value_metadata(Some(vec![
            KeyValue::new("ecamp.schema_version".into(), SCHEMA_VERSION.to_string()),
            KeyValue::new("ecamp.table".into(), kind.name().to_string()),
            KeyValue::new("huggingface".into(), hf.to_string()),
        ]));
    for col in RAW_COLUMNS {
        let path = ColumnPath::new(col.iter().map(|s| s.to_string()).collect());
        b = b
            .set_column_compression(path.clone(), Compression::UNCOMPRESSED)
            .set_column_dictionary_enabled(path, false);
    }
    Ok(b.build())
}

/// Encodes `batch` rows into one or more Parquet files of about `file_bytes` each, cutting row
/// groups at about `row_group_bytes`. Returns the encoded files with their row counts.
pub fn encode(kind: TableKind, batch: &RecordBatch, opts: &ShardOptions) -> Result<Vec<(Bytes, u64)>> {
    let props = writer_properties(kind, opts)?;
    let perr = |e: parquet::errors::ParquetError| StoreError::Parquet {
        path: format!("<new {kind} file>"),
        message: e.to_string(),
    };
    let mut files = Vec::new();
    let mut start = 0usize;
    let n = batch.num_rows();
    // Rows are written in small slices so row groups and files can be cut close to their targets.
    while start < n || (n == 0 && files.is_empty()) {
        let mut writer = ArrowWriter::try_new(Vec::new(), kind.schema(), Some(props.clone())).map_err(perr)?;
        let mut rows = 0u64;
        while start < n {
            let len = 8.min(n - start);
            writer.write(&batch.slice(start, len)).map_err(perr)?;
            start += len;
            rows += len as u64;
            if writer.in_progress_size() >= opts.row_group_bytes {
                writer.flush().map_err(perr)?;
            }
            if writer.bytes_written() + writer.in_progress_size() >= opts.file_bytes {
                break;
            }
        }
        let buf = writer.into_inner().map_err(perr)?;
        files.push((Bytes::from(buf), rows));
        if n == 0 {
            break;
        }
    }
    Ok(files)
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Uploads an encoded file under `table_dir` with a fresh unique name; never overwrites.
pub async fn upload(loc: &Location, kind: TableKind, bytes: Bytes, rows: u64) -> Result<DataFile> {
    let name = format!("part-{}.zstd.parquet", uuid::Uuid::new_v4());
    let rel = format!("{}/{}", kind.name(), name);
    let path = loc.path(&rel);
    let sha256 = sha256_hex(&bytes);
    let size = bytes.len() as u64;
    put_new(loc.store(), &path, bytes).await.map_err(|e| loc.storage_error(&rel, &e))?;
    Ok(DataFile { path: name, size, rows, sha256 })
}

/// Writes `bytes` at `path` unless something is already there; large files go multipart.
pub(crate) async fn put_new(
    store: &Arc<dyn ObjectStore>,
    path: &object_store::path::Path,
    bytes: Bytes,
) -> object_store::Result<()> {
    const MULTIPART: usize = 64 << 20;
    if bytes.len() < MULTIPART {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        store.put_opts(path, PutPayload::from(bytes), opts).await.map(|_| ())
    } else {
        // Names are fresh UUIDs, so a multipart upload cannot clobber another file.
        const PART: usize = 16 << 20;
        let mut upload = store.put_multipart(path).await?;
        let mut result = Ok(());
        for start in (0..bytes.len()).step_by(PART) {
            let part = bytes.slice(start..(start + PART).min(bytes.len()));
            if let Err(e) = upload.put_part(PutPayload::from(part)).await {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            result = upload.complete().await.map(|_| ());
        }
        if result.is_err() {
            // Parts of a failed upload are billed until aborted and invisible to fsck.
            let _ = upload.abort().await;
        }
        result
    }
}

/// Reads a whole data file and decodes it, after checking its size and hash against `file`.
pub async fn read_file(loc: &Location, kind: TableKind, file: &DataFile) -> Result<Vec<RecordBatch>> {
    let rel = format!("{}/{}", kind.name(), file.path);
    let bytes = fetch_verified(loc, &rel, file).await?;
    let perr = |e: parquet::errors::ParquetError| StoreError::Parquet { path: rel.clone(), message: e.to_string() };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(perr)?.build().map_err(perr)?;
    reader.map(|b| b.map_err(|e| StoreError::Parquet { path: rel.clone(), message: e.to_string() })).collect()
}

/// Downloads a data file and checks it against its recorded size and sha256.
pub async fn fetch_verified(loc: &Location, rel: &str, file: &DataFile) -> Result<Bytes> {
    let path = loc.path(rel);
    let bytes = loc
        .store()
        .get(&path)
        .await
        .map_err(|e| loc.storage_error(rel, &e))?
        .bytes()
        .await
        .map_err(|e| loc.storage_error(rel, &e))?;
    check_bytes(rel, file, &bytes)?;
    Ok(bytes)
}

/// Checks `bytes` against the size and hash recorded for `file`.
pub fn check_bytes(rel: &str, file: &DataFile, bytes: &[u8]) -> Result<()> {
    if bytes.len() as u64 != file.size {
        return Err(StoreError::Integrity {
            path: rel.to_string(),
            reason: format!("size {} differs from the recorded {}", bytes.len(), file.size),
        });
    }
    let got = sha256_hex(bytes);
    if got != file.sha256 {
        return Err(StoreError::Integrity {
            path: rel.to_string(),
            reason: format!("sha256 {got} differs from the recorded {}", file.sha256),
        });
    }
    Ok(())
}
