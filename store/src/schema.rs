//! The two tables of a dataset: their Arrow schemas and the typed rows written into them.
//!
//! The image column follows the Hugging Face `datasets` Parquet convention (a struct of
//! `bytes` and `path`), so common tools decode it as an image without ecamp.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BinaryArray, Int32Array, ListArray, RecordBatch, StringArray, StructArray,
    TimestampMicrosecondArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::error::{Result, StoreError};

/// Version of the table layout this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Which of a dataset's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// Images and reports: heavy, append-only.
    Samples,
    /// Distilled context, entities and SR windows: light, re-derivable. Re-deriving appends new
    /// rows; a sample may then have several, and readers take the one with the newest `created_at`.
    Annotations,
    /// Ground truth for evaluation (findings, boxes, masks) as JSON per sample: never derived
    /// from the reports, so it survives re-distillation.
    Labels,
}

impl TableKind {
    /// Both tables, in a fixed order.
    pub const ALL: [TableKind; 3] = [TableKind::Samples, TableKind::Annotations, TableKind::Labels];

    /// The table's directory name under the dataset.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Samples => "samples",
            TableKind::Annotations => "annotations",
            TableKind::Labels => "labels",
        }
    }

    /// The table's Arrow schema.
    pub fn schema(self) -> SchemaRef {
        match self {
            TableKind::Samples => samples_schema(),
            TableKind::Annotations => annotations_schema(),
            TableKind::Labels => labels_schema(),
        }
    }

    /// Whether the table only ever grows (Delta `appendOnly`).
    pub fn append_only(self) -> bool {
        matches!(self, TableKind::Samples)
    }
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn image_fields() -> Fields {
    Fields::from(vec![Field::new("bytes", DataType::Binary, true), Field::new("path", DataType::Utf8, true)])
}

fn string_list() -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)))
}

fn entity_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("descriptors", string_list(), true),
    ])
}

fn window_fields() -> Fields {
    Fields::from(vec![Field::new("row", DataType::Int32, false), Field::new("col", DataType::Int32, false)])
}

fn producer_fields() -> Fields {
    Fields::from(vec![
        Field::new("distiller", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, true),
        Field::new("prompt_hash", DataType::Utf8, true),
    ])
}

/// Arrow schema of the `samples` table.
pub fn samples_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("sample_id", DataType::Utf8, false),
        Field::new("subject_id", DataType::Utf8, true),
        Field::new("study_id", DataType::Utf8, true),
        Field::new("view", DataType::Utf8, true),
        Field::new("image", DataType::Struct(image_fields()), false),
        Field::new("image_sha256", DataType::Utf8, false),
        Field::new("width", DataType::Int32, false),
        Field::new("height", DataType::Int32, false),
        Field::new("orig_width", DataType::Int32, false),
        Field::new("orig_height", DataType::Int32, false),
        Field::new("report", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("ingested_at", timestamp(), false),
    ]))
}

/// Arrow schema of the `annotations` table.
pub fn annotations_schema() -> SchemaRef {
    let entity = Field::new("element", DataType::Struct(entity_fields()), true);
    Arc::new(Schema::new(vec![
        Field::new("sample_id", DataType::Utf8, false),
        Field::new("context", DataType::Utf8, true),
        Field::new("entities", DataType::List(Arc::new(entity)), true),
        Field::new("sr_window", DataType::Struct(window_fields()), true),
        Field::new("producer", DataType::Struct(producer_fields()), false),
        Field::new("created_at", timestamp(), false),
    ]))
}

/// Arrow schema of the `labels` table.
pub fn labels_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("sample_id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("labels", DataType::Utf8, false),
        Field::new("created_at", timestamp(), false),
    ]))
}

/// Ground truth of one sample: a row of the `labels` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRow {
    /// The sample these labels describe.
    pub sample_id: String,
    /// Which source produced them (e.g. `phantom`, `chestxray14`).
    pub source: String,
    /// The labels as a JSON document (findings, boxes, masks); its layout belongs to the source.
    pub labels_json: String,
    /// Creation time, microseconds since the Unix epoch (UTC).
    pub created_at_us: i64,
}

/// Builds a `labels` batch.
pub fn labels_batch(rows: &[LabelRow]) -> Result<RecordBatch> {
    batch(
        TableKind::Labels,
        vec![
            strings(rows.iter().map(|r| r.sample_id.as_str())),
            strings(rows.iter().map(|r| r.source.as_str())),
            strings(rows.iter().map(|r| r.labels_json.as_str())),
            ts_array(rows.iter().map(|r| r.created_at_us).collect()),
        ],
    )
}

/// Decodes `labels` rows from a batch read back from a data file.
pub fn label_rows(batch: &RecordBatch) -> Result<Vec<LabelRow>> {
    let id = column::<StringArray>(batch, "sample_id")?;
    let source = column::<StringArray>(batch, "source")?;
    let labels = column::<StringArray>(batch, "labels")?;
    let at = column::<TimestampMicrosecondArray>(batch, "created_at")?;
    Ok((0..batch.num_rows())
        .map(|i| LabelRow {
            sample_id: id.value(i).to_string(),
            source: source.value(i).to_string(),
            labels_json: labels.value(i).to_string(),
            created_at_us: at.value(i),
        })
        .collect())
}

/// One image with its report: a row of the `samples` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRow {
    /// Stable unique id of the sample.
    pub sample_id: String,
    /// Patient id, when the source has one.
    pub subject_id: Option<String>,
    /// Study id; images of one study share it and the report.
    pub study_id: Option<String>,
    /// View position (PA, AP, LATERAL, ...).
    pub view: Option<String>,
    /// Encoded image bytes (JPEG at training resolution).
    pub image: Vec<u8>,
    /// Original file name or path of the image, as the HF image struct's `path`.
    pub image_path: Option<String>,
    /// Lower-case hex sha256 of `image`.
    pub image_sha256: String,
    /// Stored image width in pixels.
    pub width: i32,
    /// Stored image height in pixels.
    pub height: i32,
    /// Width of the source image before resizing.
    pub orig_width: i32,
    /// Height of the source image before resizing.
    pub orig_height: i32,
    /// Findings and impression text.
    pub report: String,
    /// Which source produced the row (e.g. `phantom`, `mimic-cxr`).
    pub source: String,
    /// Ingestion time, microseconds since the Unix epoch (UTC).
    pub ingested_at_us: i64,
}

/// One structured finding of a report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entity {
    /// Entity name from the ECAMP lexicon (e.g. `effusion`).
    pub name: String,
    /// `present`, `uncertain` or `absent`.
    pub status: String,
    /// Descriptors (size, side, location, severity).
    pub descriptors: Vec<String>,
}

/// Which job derived an annotation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Producer {
    /// Distiller or job name.
    pub distiller: String,
    /// Model used, if any.
    pub model: Option<String>,
    /// Hash of the prompt, if any.
    pub prompt_hash: Option<String>,
}

/// Derived data of one sample: a row of the `annotations` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationRow {
    /// The sample this row annotates.
    pub sample_id: String,
    /// Entity-centred context text.
    pub context: Option<String>,
    /// Structured entities, if distilled.
    pub entities: Option<Vec<Entity>>,
    /// Super-resolution window (row, col) on the patch grid.
    pub sr_window: Option<(i32, i32)>,
    /// Provenance.
    pub producer: Producer,
    /// Creation time, microseconds since the Unix epoch (UTC).
    pub created_at_us: i64,
}

fn ts_array(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC"))
}

fn opt_strings<'a>(it: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(it))
}

fn strings<'a>(it: impl Iterator<Item = &'a str>) -> ArrayRef {
    // Collected first: `from_iter_values` needs an exact size hint, which flattened iterators lack.
    let values: Vec<&str> = it.collect();
    Arc::new(StringArray::from_iter_values(values))
}

fn ints(it: impl Iterator<Item = i32>) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(it))
}

/// A list column from flat `values` and per-row lengths (`None` = null row).
fn list_array(item: Field, values: ArrayRef, lengths: impl Iterator<Item = Option<usize>>) -> Result<ArrayRef> {
    let lengths: Vec<Option<usize>> = lengths.collect();
    let offsets = OffsetBuffer::from_lengths(lengths.iter().map(|l| l.unwrap_or(0)));
    let nulls = NullBuffer::from_iter(lengths.iter().map(Option::is_some));
    ListArray::try_new(Arc::new(item), offsets, values, Some(nulls))
        .map(|a| Arc::new(a) as ArrayRef)
        .map_err(|e| StoreError::InvalidRows { table: "annotations".into(), reason: e.to_string() })
}

fn batch(kind: TableKind, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(kind.schema(), columns)
        .map_err(|e| StoreError::InvalidRows { table: kind.to_string(), reason: e.to_string() })
}

/// Builds a `samples` batch, checking ids and hashes are well-formed.
pub fn samples_batch(rows: &[SampleRow]) -> Result<RecordBatch> {
    for (i, r) in rows.iter().enumerate() {
        if r.sample_id.is_empty() {
            return Err(StoreError::InvalidRows {
                table: "samples".into(),
                reason: format!("row {i}: empty sample_id"),
            });
        }
        if r.image_sha256.len() != 64 || !r.image_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::InvalidRows {
                table: "samples".into(),
                reason: format!("row {i} ({}): image_sha256 is not 64 hex digits", r.sample_id),
            });
        }
    }
    let image = StructArray::new(
        image_fields(),
        vec![
            Arc::new(BinaryArray::from_iter_values(rows.iter().map(|r| r.image.as_slice()))) as ArrayRef,
            opt_strings(rows.iter().map(|r| r.image_path.as_deref())),
        ],
        None,
    );
    batch(
        TableKind::Samples,
        vec![
            strings(rows.iter().map(|r| r.sample_id.as_str())),
            opt_strings(rows.iter().map(|r| r.subject_id.as_deref())),
            opt_strings(rows.iter().map(|r| r.study_id.as_deref())),
            opt_strings(rows.iter().map(|r| r.view.as_deref())),
            Arc::new(image),
            strings(rows.iter().map(|r| r.image_sha256.as_str())),
            ints(rows.iter().map(|r| r.width)),
            ints(rows.iter().map(|r| r.height)),
            ints(rows.iter().map(|r| r.orig_width)),
            ints(rows.iter().map(|r| r.orig_height)),
            strings(rows.iter().map(|r| r.report.as_str())),
            strings(rows.iter().map(|r| r.source.as_str())),
            ts_array(rows.iter().map(|r| r.ingested_at_us).collect()),
        ],
    )
}

/// Builds an `annotations` batch.
pub fn annotations_batch(rows: &[AnnotationRow]) -> Result<RecordBatch> {
    let all: Vec<&Entity> = rows.iter().flat_map(|r| r.entities.iter().flatten()).collect();
    let descriptors = list_array(
        Field::new("element", DataType::Utf8, true),
        strings(all.iter().flat_map(|e| e.descriptors.iter().map(String::as_str))),
        all.iter().map(|e| Some(e.descriptors.len())),
    )?;
    let entity_values = StructArray::new(
        entity_fields(),
        vec![strings(all.iter().map(|e| e.name.as_str())), strings(all.iter().map(|e| e.status.as_str())), descriptors],
        None,
    );
    let entities = list_array(
        Field::new("element", DataType::Struct(entity_fields()), true),
        Arc::new(entity_values),
        rows.iter().map(|r| r.entities.as_ref().map(Vec::len)),
    )?;
    let window = StructArray::new(
        window_fields(),
        vec![
            ints(rows.iter().map(|r| r.sr_window.map_or(0, |w| w.0))),
            ints(rows.iter().map(|r| r.sr_window.map_or(0, |w| w.1))),
        ],
        Some(NullBuffer::from_iter(rows.iter().map(|r| r.sr_window.is_some()))),
    );
    let producer = StructArray::new(
        producer_fields(),
        vec![
            strings(rows.iter().map(|r| r.producer.distiller.as_str())),
            opt_strings(rows.iter().map(|r| r.producer.model.as_deref())),
            opt_strings(rows.iter().map(|r| r.producer.prompt_hash.as_deref())),
        ],
        None,
    );
    batch(
        TableKind::Annotations,
        vec![
            strings(rows.iter().map(|r| r.sample_id.as_str())),
            opt_strings(rows.iter().map(|r| r.context.as_deref())),
            entities,
            Arc::new(window),
            Arc::new(producer),
            ts_array(rows.iter().map(|r| r.created_at_us).collect()),
        ],
    )
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<T>()).ok_or_else(|| StoreError::InvalidRows {
        table: "samples".into(),
        reason: format!("column '{name}' missing or of the wrong type"),
    })
}

fn opt(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

/// Decodes `samples` rows from a batch read back from a data file.
pub fn sample_rows(batch: &RecordBatch) -> Result<Vec<SampleRow>> {
    let id = column::<StringArray>(batch, "sample_id")?;
    let subject = column::<StringArray>(batch, "subject_id")?;
    let study = column::<StringArray>(batch, "study_id")?;
    let view = column::<StringArray>(batch, "view")?;
    let image = column::<StructArray>(batch, "image")?;
    let bad = |what: &str| StoreError::InvalidRows {
        table: "samples".into(),
        reason: format!("image.{what} missing or of the wrong type"),
    };
    let bytes = image
        .column_by_name("bytes")
        .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
        .ok_or_else(|| bad("bytes"))?;
    let path = image
        .column_by_name("path")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| bad("path"))?;
    let sha = column::<StringArray>(batch, "image_sha256")?;
    let width = column::<Int32Array>(batch, "width")?;
    let height = column::<Int32Array>(batch, "height")?;
    let ow = column::<Int32Array>(batch, "orig_width")?;
    let oh = column::<Int32Array>(batch, "orig_height")?;
    let report = column::<StringArray>(batch, "report")?;
    let source = column::<StringArray>(batch, "source")?;
    let at = column::<TimestampMicrosecondArray>(batch, "ingested_at")?;
    Ok((0..batch.num_rows())
        .map(|i| SampleRow {
            sample_id: id.value(i).to_string(),
            subject_id: opt(subject, i),
            study_id: opt(study, i),
            view: opt(view, i),
            image: if bytes.is_valid(i) { bytes.value(i).to_vec() } else { Vec::new() },
            image_path: opt(path, i),
            image_sha256: sha.value(i).to_string(),
            width: width.value(i),
            height: height.value(i),
            orig_width: ow.value(i),
            orig_height: oh.value(i),
            report: report.value(i).to_string(),
            source: source.value(i).to_string(),
            ingested_at_us: at.value(i),
        })
        .collect())
}

/// Reads the `sample_id` column of a batch of either table.
pub fn sample_ids(batch: &RecordBatch) -> Result<Vec<String>> {
    let id = column::<StringArray>(batch, "sample_id")?;
    Ok((0..id.len()).map(|i| id.value(i).to_string()).collect())
}

/// Decodes `annotations` rows from a batch read back from a data file.
pub fn annotation_rows(batch: &RecordBatch) -> Result<Vec<AnnotationRow>> {
    let id = column::<StringArray>(batch, "sample_id")?;
    let context = column::<StringArray>(batch, "context")?;
    let entities = column::<ListArray>(batch, "entities")?;
    let window = column::<StructArray>(batch, "sr_window")?;
    let producer = column::<StructArray>(batch, "producer")?;
    let created = column::<TimestampMicrosecondArray>(batch, "created_at")?;
    let bad = |what: &str| StoreError::InvalidRows {
        table: "annotations".into(),
        reason: format!("{what} missing or of the wrong type"),
    };
    // Children by name: a data file carries its own schema, which may lack one.
    let child = |s: &StructArray, name: &str| s.column_by_name(name).cloned();
    let field =
        |s: &StructArray, name: &str| child(s, name).and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
    let int =
        |s: &StructArray, name: &str| child(s, name).and_then(|c| c.as_any().downcast_ref::<Int32Array>().cloned());
    let wrow = int(window, "row").ok_or_else(|| bad("sr_window.row"))?;
    let wcol = int(window, "col").ok_or_else(|| bad("sr_window.col"))?;
    let distiller = field(producer, "distiller").ok_or_else(|| bad("producer.distiller"))?;
    let model = field(producer, "model").ok_or_else(|| bad("producer.model"))?;
    let prompt = field(producer, "prompt_hash").ok_or_else(|| bad("producer.prompt_hash"))?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let ents = if entities.is_valid(i) {
            let list = entities.value(i);
            let s = list.as_any().downcast_ref::<StructArray>().ok_or_else(|| bad("entities"))?;
            let names = field(s, "name").ok_or_else(|| bad("entities.name"))?;
            let status = field(s, "status").ok_or_else(|| bad("entities.status"))?;
            let descs = child(s, "descriptors")
                .and_then(|c| c.as_any().downcast_ref::<ListArray>().cloned())
                .ok_or_else(|| bad("entities.descriptors"))?;
            let mut v = Vec::with_capacity(s.len());
            for j in 0..s.len() {
                let d = descs.value(j);
                let d = d.as_any().downcast_ref::<StringArray>().ok_or_else(|| bad("entities.descriptors"))?;
                v.push(Entity {
                    name: names.value(j).to_string(),
                    status: status.value(j).to_string(),
                    descriptors: (0..d.len()).map(|k| d.value(k).to_string()).collect(),
                });
            }
            Some(v)
        } else {
            None
        };
        out.push(AnnotationRow {
            sample_id: id.value(i).to_string(),
            context: opt(context, i),
            entities: ents,
            sr_window: window.is_valid(i).then(|| (wrow.value(i), wcol.value(i))),
            producer: Producer {
                distiller: distiller.value(i).to_string(),
                model: opt(&model, i),
                prompt_hash: opt(&prompt, i),
            },
            created_at_us: created.value(i),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<AnnotationRow> {
        vec![
            AnnotationRow {
                sample_id: "a".into(),
                context: Some("There is pleural effusion.".into()),
                entities: Some(vec![
                    Entity {
                        name: "effusion".into(),
                        status: "present".into(),
                        descriptors: vec!["small".into(), "right".into()],
                    },
                    Entity { name: "pneumothorax".into(), status: "absent".into(), descriptors: vec![] },
                ]),
                sr_window: Some((3, 4)),
                producer: Producer { distiller: "rules".into(), model: None, prompt_hash: Some("ab".into()) },
                created_at_us: 7,
            },
            AnnotationRow {
                sample_id: "b".into(),
                context: None,
                entities: None,
                sr_window: None,
                producer: Producer { distiller: "rules".into(), model: Some("m".into()), prompt_hash: None },
                created_at_us: 8,
            },
        ]
    }

    #[test]
    fn annotations_round_trip() {
        let batch = annotations_batch(&rows()).expect("batch");
        assert_eq!(annotation_rows(&batch).expect("decode"), rows());
    }

    #[test]
    fn a_struct_column_missing_a_child_is_an_error_naming_it() {
        // A data file whose own schema has `sr_window` with only its `row` child.
        let batch = annotations_batch(&rows()).expect("batch");
        let schema = batch.schema();
        let at = schema.index_of("sr_window").expect("column");
        let row = Arc::new(Field::new("row", DataType::Int32, true));
        let mut columns = batch.columns().to_vec();
        columns[at] =
            Arc::new(StructArray::from(vec![(row.clone(), Arc::new(Int32Array::from(vec![3, 4])) as ArrayRef)]));
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields[at] = Field::new("sr_window", DataType::Struct(Fields::from(vec![row])), true);
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch");
        let err = annotation_rows(&batch).expect_err("no col child").to_string();
        assert!(err.contains("sr_window.col"), "{err}");
    }

    #[test]
    fn bad_hash_names_the_row() {
        let row = SampleRow {
            sample_id: "s1".into(),
            subject_id: None,
            study_id: None,
            view: None,
            image: vec![1],
            image_path: None,
            image_sha256: "nothex".into(),
            width: 1,
            height: 1,
            orig_width: 1,
            orig_height: 1,
            report: String::new(),
            source: "t".into(),
            ingested_at_us: 0,
        };
        let err = samples_batch(&[row]).expect_err("must fail");
        assert!(err.to_string().contains("s1"), "{err}");
    }
}
