//! Ranged, async reads of one data file: parquet's `AsyncFileReader` on our object store, so
//! readers fetch the footer and only the row groups and columns they need.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::{AsyncFileReader, MetadataSuffixFetch};
use parquet::errors::ParquetError;
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::schema::types::SchemaDescriptor;

use crate::dataset::Dataset;
use crate::error::{Result, StoreError};
use crate::schema::TableKind;
use crate::shard::DataFile;

/// Footer bytes fetched in the first request; covers the metadata of typical shards.
const FOOTER_PREFETCH: usize = 64 << 10;

fn to_parquet(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

/// An [`AsyncFileReader`] over one object of a store.
#[derive(Debug, Clone)]
pub struct ShardReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: Option<u64>,
}

impl ShardReader {
    /// A reader of `path`; pass the size when known (from the commit) to save a request.
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, size: Option<u64>) -> Self {
        ShardReader { store, path, size }
    }
}

impl ShardReader {
    /// `range` of the object, refused unless the store returned exactly that many bytes. A file
    /// replaced by a shorter one mid-read answers short on some stores, and object_store's own
    /// range coalescing would then slice past the end and panic.
    async fn fetch(&self, range: Range<u64>) -> parquet::errors::Result<Bytes> {
        let want = range.end.saturating_sub(range.start);
        let got = self.store.get_range(&self.path, range.clone()).await.map_err(to_parquet)?;
        if got.len() as u64 != want {
            return Err(ParquetError::EOF(format!(
                "{}: asked for bytes {}..{} and got {} bytes: the file is shorter than its commit says",
                self.path,
                range.start,
                range.end,
                got.len()
            )));
        }
        Ok(got)
    }
}

impl AsyncFileReader for ShardReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.fetch(range).await }.boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        // Nearby ranges coalesce into fewer requests, each checked for its length.
        async move {
            let this = &*self;
            object_store::coalesce_ranges(&ranges, |r| this.fetch(r), object_store::OBJECT_STORE_COALESCE_DEFAULT).await
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let reader = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(FOOTER_PREFETCH));
            let meta = match self.size {
                Some(size) => reader.load_and_finish(self, size).await?,
                None => reader.load_via_suffix_and_finish(self).await?,
            };
            Ok(Arc::new(meta))
        }
        .boxed()
    }
}

impl MetadataSuffixFetch for &mut ShardReader {
    fn fetch_suffix(&mut self, suffix: usize) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let options = GetOptions { range: Some(GetRange::Suffix(suffix as u64)), ..Default::default() };
        async move {
            let got = self.store.get_opts(&self.path, options).await.map_err(to_parquet)?;
            got.bytes().await.map_err(to_parquet)
        }
        .boxed()
    }
}

impl Dataset {
    /// A ranged reader of a data file of `kind`.
    pub fn shard_reader(&self, kind: TableKind, file: &DataFile) -> ShardReader {
        let loc = self.location();
        ShardReader::new(loc.store().clone(), loc.path(&format!("{}/{}", kind.name(), file.path)), Some(file.size))
    }

    /// Parquet metadata of a data file (with its page index, so row selections skip whole pages),
    /// loaded once by a reader and reused for every row-group read of that file.
    pub async fn file_metadata(&self, kind: TableKind, file: &DataFile) -> Result<ArrowReaderMetadata> {
        let rel = format!("{}/{}", kind.name(), file.path);
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        ArrowReaderMetadata::load_async(&mut self.shard_reader(kind, file), options)
            .await
            .map_err(|e| self.parquet_error(&rel, e))
    }

    /// Reads `rows` (ascending, within the row group) of one row group, only `columns`, fetching
    /// just the pages that hold them.
    pub async fn read_rows(
        &self,
        kind: TableKind,
        file: &DataFile,
        meta: &ArrowReaderMetadata,
        row_group: usize,
        rows: &[u32],
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>> {
        let rel = format!("{}/{}", kind.name(), file.path);
        let total = match meta.metadata().row_groups().get(row_group) {
            Some(rg) => rg.num_rows() as usize,
            None => {
                return Err(StoreError::Parquet { path: rel, message: format!("no row group {row_group}") });
            }
        };
        if let Some(bad) = rows.iter().find(|r| **r as usize >= total) {
            return Err(StoreError::Parquet { path: rel, message: format!("row {bad} beyond row group {row_group}") });
        }
        let ranges = rows.iter().map(|r| *r as usize..*r as usize + 1);
        let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(self.shard_reader(kind, file), meta.clone());
        let mask = self.projection(&rel, builder.parquet_schema(), builder.schema(), columns)?;
        builder
            .with_projection(mask)
            .with_row_groups(vec![row_group])
            .with_row_selection(RowSelection::from_consecutive_ranges(ranges, total))
            .with_batch_size(rows.len().max(1))
            .build()
            .map_err(|e| self.parquet_error(&rel, e))?
            .try_collect()
            .await
            .map_err(|e| self.parquet_error(&rel, e))
    }

    /// Reads only `columns` (top-level names) of a data file, fetching just their byte ranges.
    pub async fn read_columns(&self, kind: TableKind, file: &DataFile, columns: &[&str]) -> Result<Vec<RecordBatch>> {
        let rel = format!("{}/{}", kind.name(), file.path);
        let builder = ParquetRecordBatchStreamBuilder::new(self.shard_reader(kind, file))
            .await
            .map_err(|e| self.parquet_error(&rel, e))?;
        let mask = self.projection(&rel, builder.parquet_schema(), builder.schema(), columns)?;
        builder
            .with_projection(mask)
            .build()
            .map_err(|e| self.parquet_error(&rel, e))?
            .try_collect()
            .await
            .map_err(|e| self.parquet_error(&rel, e))
    }

    /// The projection of `columns` (top-level names), or an error naming the missing one.
    fn projection(
        &self,
        rel: &str,
        parquet: &SchemaDescriptor,
        arrow: &arrow_schema::SchemaRef,
        columns: &[&str],
    ) -> Result<ProjectionMask> {
        let roots: Vec<usize> = columns
            .iter()
            .map(|c| {
                arrow
                    .index_of(c)
                    .map_err(|_| StoreError::Parquet { path: rel.to_string(), message: format!("no column '{c}'") })
            })
            .collect::<Result<_>>()?;
        Ok(ProjectionMask::roots(parquet, roots))
    }

    /// A parquet failure as a store error: storage errors keep their retry class and the path.
    fn parquet_error(&self, rel: &str, e: ParquetError) -> StoreError {
        match e {
            ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
                Ok(os) => self.location().storage_error(rel, &os),
                Err(other) => StoreError::Parquet { path: rel.to_string(), message: other.to_string() },
            },
            other => StoreError::Parquet { path: rel.to_string(), message: other.to_string() },
        }
    }
}

/// Rows and stored bytes of one row group, counting only the columns a reader projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowGroupSize {
    /// Rows in the row group.
    pub rows: u64,
    /// Compressed bytes of the projected column chunks (what a read of all its rows fetches).
    pub bytes: u64,
}

/// The size of every row group of a file, counting only the top-level `columns`.
pub fn row_group_sizes(meta: &ArrowReaderMetadata, columns: &[&str]) -> Vec<RowGroupSize> {
    meta.metadata()
        .row_groups()
        .iter()
        .map(|rg| RowGroupSize {
            rows: rg.num_rows().max(0) as u64,
            bytes: rg
                .columns()
                .iter()
                .filter(|c| c.column_path().parts().first().is_some_and(|root| columns.contains(&root.as_str())))
                .map(|c| c.compressed_size().max(0) as u64)
                .fold(0, u64::saturating_add),
        })
        .collect()
}
