//! ecamp-ingest: from raw sources (synthetic phantoms, MIMIC-CXR-JPG, DICOM folders, CSV/JSONL
//! manifests, IU X-ray) to validated rows in an ecamp dataset, with report distillation and
//! vocabulary training.
#![warn(missing_docs)]

pub mod distill;
pub mod error;
pub mod files;
pub mod image;
pub mod phantom;
pub mod pipeline;
pub mod source;
#[cfg(test)]
mod testdata;
pub mod vocab;

pub use error::{IngestError, Result};
pub use pipeline::{IngestOptions, IngestSummary, OnError, ingest};
pub use source::{SourceOptions, SourceSpec};
