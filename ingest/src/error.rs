//! Typed errors of ingestion. Bad inputs are not errors: they become rejects (see
//! [`crate::source::Reject`]) unless the run asked to fail on them.

/// What stops an ingest, distill or vocabulary run.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The dataset could not be opened, read or written.
    #[error(transparent)]
    Store(#[from] ecamp_store::StoreError),
    /// A source could not be listed at all (missing folder, unreadable manifest, missing option).
    #[error("{source_kind} source: {detail}")]
    Source {
        /// The source kind.
        source_kind: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// A bad input under `--on-error fail`.
    #[error("rejected {input} ({reason}): {detail}")]
    Rejected {
        /// The input.
        input: String,
        /// Reason code.
        reason: String,
        /// Detail.
        detail: String,
    },
    /// An invalid option value.
    #[error("invalid option: {0}")]
    Option(String),
    /// Writing the rejects file failed.
    #[error("cannot write rejects to {path}: {message}")]
    Rejects {
        /// Where.
        path: String,
        /// Why.
        message: String,
    },
    /// A distiller failed as a whole (e.g. the endpoint is unreachable after all retries).
    #[error("distiller '{name}': {message}")]
    Distiller {
        /// The distiller.
        name: String,
        /// Why.
        message: String,
    },
    /// Tokenizer training or loading failed.
    #[error("vocabulary: {0}")]
    Vocab(String),
}

/// Result type of this crate.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;
