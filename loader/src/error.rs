//! Why a loader cannot open a snapshot or finish an epoch.

use ecamp_store::StoreError;

use crate::order::OrderError;
use crate::text::TextError;

/// A loader failure; every variant names what it is about (file, sample, setting).
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// Reading the dataset failed (the store error names the file; transient ones were retried).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Settings that cannot work together.
    #[error("invalid loader settings: {0}")]
    Config(String),
    /// The order could not be built or the cursor does not fit it.
    #[error(transparent)]
    Order(#[from] OrderError),
    /// The text preparation could not be set up.
    #[error(transparent)]
    Text(#[from] TextError),
    /// A data file whose columns are not what the samples table promises.
    #[error("{path}: {message}")]
    Malformed {
        /// File, relative to the dataset.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A bad sample under `BadSamplePolicy::Fail`.
    #[error("sample {sample_id} ({path}): {reason}")]
    BadSample {
        /// The sample's id.
        sample_id: String,
        /// Its data file, relative to the dataset.
        path: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The loader's own machinery failed (a thread could not start, a stage stopped early).
    #[error("loader: {0}")]
    Internal(String),
}
