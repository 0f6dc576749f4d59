//! What a loader learns once when it opens a snapshot: the samples table's files and row groups
//! (the units of the order and of IO), the canvas that fits every image, and the annotations
//! joined by sample id.

use std::collections::HashMap;

use arrow_array::{Array, Int32Array, RecordBatch};
use ecamp_store::schema::annotation_rows;
use ecamp_store::{DataFile, Dataset, FileMetadata, Snapshot, TableKind, row_group_sizes};
use futures::{StreamExt, TryStreamExt};

use crate::config::MAX_CANVAS_PIXELS;
use crate::error::LoaderError;
use crate::order::Unit;

/// Columns of the samples table the CPU stage needs; nothing else is fetched.
pub(crate) const SAMPLE_COLUMNS: [&str; 4] = ["sample_id", "image", "image_sha256", "report"];

/// Files whose metadata or annotations are read at once when opening.
const OPEN_CONCURRENCY: usize = 16;

/// The part of an annotation the loader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Annotation {
    pub context: Option<String>,
    pub sr_window: Option<(i32, i32)>,
    created_at_us: i64,
}

/// One opened snapshot, shared read-only by every stage of every epoch.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Samples files, sorted by path so indices do not depend on log order.
    pub files: Vec<DataFile>,
    /// Parquet metadata per file (with page indexes), loaded once.
    pub metas: Vec<FileMetadata>,
    /// Every row group of the samples table.
    pub units: Vec<Unit>,
    /// Stored bytes of the projected columns, `[file][row group]`.
    pub unit_bytes: Vec<Vec<u64>>,
    /// (width, height) of the batch canvas.
    pub canvas: (usize, usize),
    /// Newest annotation per sample id.
    pub annotations: HashMap<String, Annotation>,
}

impl Plan {
    /// Reads the metadata of every samples file, the canvas (unless given) and the annotations.
    pub async fn build(ds: &Dataset, snap: &Snapshot, canvas: Option<(usize, usize)>) -> Result<Plan, LoaderError> {
        let mut files = snap.table(TableKind::Samples).map(|t| t.files.clone()).unwrap_or_default();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let metas: Vec<FileMetadata> =
            futures::stream::iter(files.iter().map(|f| ds.file_metadata(TableKind::Samples, f)))
                .buffered(OPEN_CONCURRENCY)
                .try_collect()
                .await?;
        let mut units = Vec::new();
        let mut unit_bytes = Vec::with_capacity(files.len());
        for (fi, meta) in metas.iter().enumerate() {
            let sizes = row_group_sizes(meta, &SAMPLE_COLUMNS);
            let file = &files[fi];
            let malformed =
                |message: String| LoaderError::Malformed { path: format!("samples/{}", file.path), message };
            // The footer's counts size every allocation and the byte budget: they must agree
            // with what the log recorded for the file (rows, when it has stats; bytes, always).
            let footer_rows = sizes.iter().fold(0u64, |n, rg| n.saturating_add(rg.rows));
            if file.rows > 0 && footer_rows != file.rows {
                return Err(malformed(format!("the footer counts {footer_rows} rows, the log {}", file.rows)));
            }
            for (gi, rg) in sizes.iter().enumerate() {
                let rows =
                    u32::try_from(rg.rows).map_err(|_| malformed(format!("row group {gi} has {} rows", rg.rows)))?;
                if file.size > 0 && rg.bytes > file.size {
                    return Err(malformed(format!(
                        "row group {gi} claims {} bytes in a file of {}",
                        rg.bytes, file.size
                    )));
                }
                units.push(Unit { file: fi as u32, row_group: gi as u32, rows });
            }
            unit_bytes.push(sizes.iter().map(|s| s.bytes).collect());
        }
        let canvas = match canvas {
            Some(c) => c,
            None => largest_image(ds, &files).await?,
        };
        let annotations = annotations(ds, snap).await?;
        warn_unannotated(ds, snap, &files, &annotations).await?;
        Ok(Plan { files, metas, units, unit_bytes, canvas, annotations })
    }

    /// Rows in the samples table.
    pub fn rows(&self) -> u64 {
        self.units.iter().map(|u| u64::from(u.rows)).sum()
    }

    /// The data file of index `file`, as a path relative to the dataset (for messages).
    pub fn file_path(&self, file: u32) -> String {
        format!("samples/{}", self.files[file as usize].path)
    }
}

/// The largest stored width and height over all samples (from two small int columns); a size
/// no JPEG can have, or a canvas over [`MAX_CANVAS_PIXELS`], is an error naming the file and row.
async fn largest_image(ds: &Dataset, files: &[DataFile]) -> Result<(usize, usize), LoaderError> {
    let per_file: Vec<(usize, usize)> = futures::stream::iter(files.iter().map(|f| async move {
        let batches = ds.read_columns(TableKind::Samples, f, &["width", "height"]).await?;
        let path = format!("samples/{}", f.path);
        let mut max = (0usize, 0usize);
        let mut row = 0usize;
        for b in &batches {
            let w = int_column(b, "width", &path)?;
            let h = int_column(b, "height", &path)?;
            for (w, h) in w.values().iter().zip(h.values()) {
                let side = |v: i32| usize::try_from(v).ok().filter(|v| (1..=usize::from(u16::MAX)).contains(v));
                let (Some(w), Some(h)) = (side(*w), side(*h)) else {
                    return Err(LoaderError::Malformed {
                        path: path.clone(),
                        message: format!("row {row}: stored size {w}x{h} is not a JPEG size (1..=65535 per side)"),
                    });
                };
                max = (max.0.max(w), max.1.max(h));
                row += 1;
            }
        }
        Ok::<_, LoaderError>(max)
    }))
    .buffered(OPEN_CONCURRENCY)
    .try_collect()
    .await?;
    let (w, h) = per_file.into_iter().fold((1, 1), |a, b| (a.0.max(b.0), a.1.max(b.1)));
    if (w as u64) * (h as u64) > MAX_CANVAS_PIXELS {
        return Err(LoaderError::Config(format!(
            "the snapshot's widest and tallest images need a {w}x{h} canvas, over {MAX_CANVAS_PIXELS} pixels; \
             ingest at a smaller --image-size"
        )));
    }
    Ok((w, h))
}

fn int_column<'a>(batch: &'a RecordBatch, name: &str, path: &str) -> Result<&'a Int32Array, LoaderError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
        .filter(|c| c.null_count() == 0)
        .ok_or_else(|| LoaderError::Malformed {
            path: path.to_string(),
            message: format!("column {name} missing, not int32 or with nulls"),
        })
}

/// Warns when samples have no annotation row in the snapshot (an annotations version older than
/// the samples, or none pinned): they train without LLM context and with the centre SR window,
/// which a run should not do unnoticed.
async fn warn_unannotated(
    ds: &Dataset,
    snap: &Snapshot,
    files: &[DataFile],
    annotations: &HashMap<String, Annotation>,
) -> Result<(), LoaderError> {
    let per_file: Vec<Vec<RecordBatch>> =
        futures::stream::iter(files.iter().map(|f| ds.read_columns(TableKind::Samples, f, &["sample_id"])))
            .buffered(OPEN_CONCURRENCY)
            .try_collect()
            .await?;
    let (mut missing, mut total, mut examples) = (0u64, 0u64, Vec::new());
    for batch in per_file.iter().flatten() {
        let ids = ecamp_store::schema::sample_ids(batch)?;
        for id in ids.iter() {
            total += 1;
            if !annotations.contains_key(id) {
                missing += 1;
                if examples.len() < 3 {
                    examples.push(id.to_string());
                }
            }
        }
    }
    if missing > 0 {
        tracing::warn!(
            "{missing} of {total} samples of snapshot {} have no annotation row (e.g. {}): they train without \
             LLM context and with the centre SR window; pin a snapshot whose annotations cover them \
             (`ecamp distill`, `ecamp snapshot pin`)",
            snap.id,
            examples.join(", ")
        );
    }
    Ok(())
}

/// The newest annotation of each sample (ties: the later file in path order wins, so the join is
/// deterministic whatever order the log listed files in).
async fn annotations(ds: &Dataset, snap: &Snapshot) -> Result<HashMap<String, Annotation>, LoaderError> {
    let mut files = snap.table(TableKind::Annotations).map(|t| t.files.clone()).unwrap_or_default();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let per_file: Vec<Vec<RecordBatch>> =
        futures::stream::iter(files.iter().map(|f| ds.read_file(TableKind::Annotations, f)))
            .buffered(OPEN_CONCURRENCY)
            .try_collect()
            .await?;
    let mut joined: HashMap<String, Annotation> = HashMap::new();
    for (file, batches) in files.iter().zip(per_file) {
        for batch in &batches {
            let rows = annotation_rows(batch).map_err(|e| LoaderError::Malformed {
                path: format!("annotations/{}", file.path),
                message: e.to_string(),
            })?;
            for row in rows {
                let newer = joined.get(&row.sample_id).is_none_or(|a| row.created_at_us >= a.created_at_us);
                if newer {
                    let ann =
                        Annotation { context: row.context, sr_window: row.sr_window, created_at_us: row.created_at_us };
                    joined.insert(row.sample_id, ann);
                }
            }
        }
    }
    Ok(joined)
}
