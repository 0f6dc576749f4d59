//! Typed errors of label loading and splitting. Every error about a file names the file and, for a bad
//! row, its 1-based line.

use std::path::Path;

/// What stops labels from loading or a split from being made.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A label file could not be opened or read.
    #[error("cannot read {file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A label file's header is missing or lacks a required column.
    #[error("{file}: {message}")]
    Header {
        /// The file.
        file: String,
        /// What was wrong.
        message: String,
    },
    /// One row of a label file is malformed.
    #[error("{file} line {line}: {message}")]
    Row {
        /// The file.
        file: String,
        /// 1-based line number where the row starts.
        line: u64,
        /// What was wrong.
        message: String,
    },
    /// The ground-truth JSON of one phantom sample is malformed.
    #[error("phantom labels of {sample_id}: {message}")]
    Sample {
        /// The sample whose labels are bad.
        sample_id: String,
        /// What was wrong.
        message: String,
    },
    /// A label source specification (`KIND:PATH`) could not be understood.
    #[error("label source '{spec}': {message}")]
    Spec {
        /// The specification as given.
        spec: String,
        /// What was wrong.
        message: String,
    },
    /// An invalid argument (split fractions, indices, focus entity).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl EvalError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        EvalError::Io { file: path.display().to_string(), source }
    }
}

/// Result type of this crate.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;
