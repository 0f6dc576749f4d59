//! Ranged, async reads of one data file: parquet's `AsyncFileReader` on our object store, so
//! readers fetch the footer and only the row groups and columns they need.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, MetadataSuffixFetch};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

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

impl AsyncFileReader for ShardReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move { self.store.get_range(&self.path, range).await.map_err(to_parquet) }.boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        // get_ranges coalesces nearby ranges into fewer requests.
        async move { self.store.get_ranges(&self.path, &ranges).await.map_err(to_parquet) }.boxed()
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

    /// Reads only `columns` (top-level names) of a data file, fetching just their byte ranges.
    pub async fn read_columns(
        &self,
        kind: TableKind,
        file: &DataFile,
        columns: &[&str],
    ) -> Result<Vec<arrow_array::RecordBatch>> {
        let rel = format!("{}/{}", kind.name(), file.path);
        let perr = |e: ParquetError| match e {
            ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
                Ok(os) => self.location().storage_error(&rel, &os),
                Err(other) => StoreError::Parquet { path: rel.clone(), message: other.to_string() },
            },
            other => StoreError::Parquet { path: rel.clone(), message: other.to_string() },
        };
        let builder = ParquetRecordBatchStreamBuilder::new(self.shard_reader(kind, file)).await.map_err(perr)?;
        let schema = builder.parquet_schema();
        let roots: Vec<usize> = columns
            .iter()
            .map(|c| {
                builder
                    .schema()
                    .index_of(c)
                    .map_err(|_| StoreError::Parquet { path: rel.clone(), message: format!("no column '{c}'") })
            })
            .collect::<Result<_>>()?;
        let mask = ProjectionMask::roots(schema, roots);
        builder.with_projection(mask).build().map_err(perr)?.try_collect().await.map_err(perr)
    }
}
