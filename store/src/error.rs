//! Typed errors of the store. Every message names the dataset, table or file it is about,
//! and every message is scrubbed of secrets before it is shown.

use crate::redact;

/// Result type of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong while opening, writing or verifying a dataset.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The dataset URL could not be understood.
    #[error("invalid dataset URL '{url}': {reason}")]
    InvalidUrl {
        /// The URL as given (secrets redacted).
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The URL's scheme is none of file, memory, s3, gs, az.
    #[error(
        "unknown URL scheme '{scheme}' in '{url}' (supported: file://, memory://, s3://, gs://, az://, or a plain path)"
    )]
    UnknownScheme {
        /// The offending scheme.
        scheme: String,
        /// The URL as given (secrets redacted).
        url: String,
    },
    /// The object store client could not be built (bad or missing credentials, bad options).
    #[error("cannot configure storage for '{url}': {message}")]
    Config {
        /// The dataset URL (secrets redacted).
        url: String,
        /// The client's message (secrets redacted).
        message: String,
    },
    /// The bucket or container named by the URL does not exist.
    #[error("bucket or container of '{url}' does not exist: {message}")]
    NoSuchBucket {
        /// The dataset URL.
        url: String,
        /// The server's message.
        message: String,
    },
    /// The store refused the credentials.
    #[error("access denied to '{url}' (check credentials): {message}")]
    AccessDenied {
        /// The dataset URL.
        url: String,
        /// The server's message.
        message: String,
    },
    /// The URL points at storage that holds no ecamp dataset.
    #[error("'{url}' is not an ecamp dataset (no {marker}); create one with `ecamp init --dataset {url}` or an ingest")]
    NotADataset {
        /// The dataset URL.
        url: String,
        /// The marker object that was looked for.
        marker: String,
    },
    /// Creating a dataset where other files already are: its tables would mix with them, and
    /// fsck would take them for orphans.
    #[error("'{url}' already holds files but no ecamp dataset (no {marker}): choose an empty location")]
    NotEmpty {
        /// The dataset URL.
        url: String,
        /// The marker object that was looked for.
        marker: String,
    },
    /// A dataset marker or table exists but was written by an incompatible version.
    #[error("dataset '{url}' uses schema version {found}, this build understands {supported}")]
    SchemaVersion {
        /// The dataset URL.
        url: String,
        /// Version found in the dataset.
        found: u32,
        /// Version this build writes and reads.
        supported: u32,
    },
    /// The table's Delta protocol needs features this reader does not implement.
    #[error("table '{table}' needs Delta protocol features this build does not support: {features}")]
    UnsupportedProtocol {
        /// The table URL.
        table: String,
        /// The features, comma separated.
        features: String,
    },
    /// The table exists but its schema is not the one ecamp expects.
    #[error("table '{table}' has an unexpected schema: {reason}")]
    SchemaMismatch {
        /// The table URL.
        table: String,
        /// What differs.
        reason: String,
    },
    /// A requested table version does not exist.
    #[error("table '{table}' has no version {version} (latest is {latest})")]
    NoSuchVersion {
        /// The table URL.
        table: String,
        /// The requested version.
        version: u64,
        /// The latest committed version.
        latest: u64,
    },
    /// A snapshot id is malformed or has no pinned manifest.
    #[error("snapshot '{id}' not found in '{url}' (pin it first with `ecamp snapshot pin`)")]
    NoSuchSnapshot {
        /// The snapshot id.
        id: String,
        /// The dataset URL.
        url: String,
    },
    /// A file does not match what the commit or snapshot recorded for it.
    #[error("integrity error in '{path}': {reason}")]
    Integrity {
        /// The file, relative to the dataset root.
        path: String,
        /// What does not match.
        reason: String,
    },
    /// A commit could not be made after the whole retry budget.
    #[error("commit to '{table}' failed after {attempts} attempts: {message}")]
    CommitFailed {
        /// The table URL.
        table: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        message: String,
    },
    /// Rows handed to a writer do not fit the table.
    #[error("invalid rows for table '{table}': {reason}")]
    InvalidRows {
        /// The table name.
        table: String,
        /// What is wrong (row index and column).
        reason: String,
    },
    /// An error from the object store while touching one object.
    #[error("storage error on '{path}': {message}")]
    Storage {
        /// The object path (dataset-relative when known).
        path: String,
        /// The client's message (secrets redacted).
        message: String,
        /// Whether retrying may help.
        transient: bool,
    },
    /// An error inside the Delta log layer.
    #[error("delta log error on '{table}': {message}")]
    Delta {
        /// The table URL.
        table: String,
        /// delta-rs's message (secrets redacted).
        message: String,
    },
    /// A Parquet or Arrow error while encoding or decoding a data file.
    #[error("parquet error in '{path}': {message}")]
    Parquet {
        /// The data file.
        path: String,
        /// The decoder's message.
        message: String,
    },
    /// A JSON document of ours (marker, snapshot manifest) is malformed.
    #[error("malformed {what} '{path}': {message}")]
    Malformed {
        /// What kind of document.
        what: &'static str,
        /// Its path.
        path: String,
        /// The parser's message.
        message: String,
    },
}

impl StoreError {
    /// Wraps an object-store error on `path`, classifying bucket, credential and transient failures.
    pub fn storage(url: &str, path: impl Into<String>, err: &object_store::Error) -> Self {
        let message = compact(&redact::scrub(&err.to_string()));
        let lower = message.to_ascii_lowercase();
        if lower.contains("nosuchbucket")
            || lower.contains("bucket does not exist")
            || lower.contains("containernotfound")
            || lower.contains("the specified bucket does not exist")
        {
            return StoreError::NoSuchBucket { url: url.to_string(), message };
        }
        if matches!(err, object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })
            || lower.contains("accessdenied")
            || lower.contains("invalidaccesskeyid")
            || lower.contains("signaturedoesnotmatch")
            || lower.contains("authenticationfailed")
        {
            return StoreError::AccessDenied { url: url.to_string(), message };
        }
        // With no keys in the environment the AWS client asks the instance metadata service,
        // whose refusal off EC2 says nothing about credentials.
        // Its refusals, or any failure when no keys are set (off EC2 it mostly cannot be
        // reached); with keys set, a metadata-service timeout on EC2 may pass and stays retryable.
        let refused = [" 401", " 403", " 404"].iter().any(|c| lower.contains(c));
        let no_keys = std::env::var_os("AWS_ACCESS_KEY_ID").is_none();
        if lower.contains("169.254.169.254") && (refused || no_keys) {
            let message = format!(
                "no credentials found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an instance role); \
                 the instance metadata service answered: {message}"
            );
            return StoreError::AccessDenied { url: url.to_string(), message };
        }
        let transient = is_transient(err);
        StoreError::Storage { path: path.into(), message, transient }
    }

    /// Wraps a delta-rs error for `table`.
    pub(crate) fn delta(table: &str, err: impl std::fmt::Display) -> Self {
        StoreError::Delta { table: table.to_string(), message: redact::scrub(&err.to_string()) }
    }

    /// Whether the operation that failed may succeed if retried.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Storage { transient: true, .. })
    }
}

/// One line from a client message: an XML error body becomes `Code: Message`, and every run of
/// whitespace (newlines included) becomes one space.
pub(crate) fn compact(msg: &str) -> String {
    let tag = |name: &str| -> Option<&str> {
        let open = format!("<{name}>");
        let start = msg.find(&open)? + open.len();
        let len = msg[start..].find(&format!("</{name}>"))?;
        Some(&msg[start..start + len])
    };
    let text = match (msg.find("<?xml").or_else(|| msg.find("<Error>")), tag("Code")) {
        (Some(at), Some(code)) => {
            format!("{} {code}: {}", &msg[..at], tag("Message").unwrap_or(""))
        }
        _ => msg.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether an object-store error is worth retrying (network hiccups, throttling, 5xx).
pub(crate) fn is_transient(err: &object_store::Error) -> bool {
    match err {
        object_store::Error::NotFound { .. }
        | object_store::Error::AlreadyExists { .. }
        | object_store::Error::Precondition { .. }
        | object_store::Error::NotModified { .. }
        | object_store::Error::NotSupported { .. }
        | object_store::Error::NotImplemented { .. }
        | object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. }
        | object_store::Error::InvalidPath { .. }
        | object_store::Error::UnknownConfigurationKey { .. } => false,
        other => {
            let s = other.to_string().to_ascii_lowercase();
            // A range past the end of a file is a file shorter than its commit: asking again
            // cannot help.
            let permanent = [
                "nosuchbucket",
                "accessdenied",
                "invalidaccesskeyid",
                "out of range",
                "invalidrange",
                "range not satisfiable",
            ];
            !permanent.iter().any(|p| s.contains(p))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_bodies_become_one_line() {
        let msg = "GET http://h/b 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><RequestId>x</RequestId></Error>";
        assert_eq!(compact(msg), "GET http://h/b 404 Not Found: NoSuchBucket: The specified bucket does not exist");
        assert_eq!(compact("a\n  b"), "a b");
    }

    #[test]
    fn missing_aws_credentials_are_named_as_such() {
        let err = object_store::Error::Generic {
            store: "S3",
            source: "Error performing token request: PUT http://169.254.169.254/latest/api/token 403".into(),
        };
        let e = StoreError::storage("s3://b/ds", "_ecamp", &err);
        assert!(matches!(e, StoreError::AccessDenied { .. }) && e.to_string().contains("no credentials found"), "{e}");
        assert!(!e.is_transient());
    }

    #[test]
    fn a_range_past_the_end_is_not_retried() {
        let generic = |msg: &str| object_store::Error::Generic { store: "LocalFileSystem", source: msg.into() };
        assert!(!is_transient(&generic("Out of range of file /d/x.parquet, expected: 99337, actual: 99337")));
        assert!(!is_transient(&generic("GET http://h/b 416 Range Not Satisfiable: InvalidRange: …")));
        assert!(is_transient(&generic("error sending request: connection reset")));
    }
}
