//! Dataset URLs: parsing, redaction, and the one shared object store behind a dataset.

use std::collections::HashMap;
use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use object_store::ObjectStore;
use object_store::RetryConfig;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use url::Url;

use crate::error::{Result, StoreError};
use crate::redact;

/// The storage backends a dataset can live on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Local disk (`file://` or a plain path).
    File,
    /// A named in-process store (`memory://NAME/...`), shared by every open in this process.
    Memory,
    /// Amazon S3 or an S3-compatible server (`s3://BUCKET/...`).
    S3,
    /// Google Cloud Storage (`gs://BUCKET/...`).
    Gcs,
    /// Azure Blob Storage / ADLS Gen2 (`az://CONTAINER/...`).
    Azure,
}

/// Where a dataset lives: its normalised URL, the root object store and the prefix inside it.
#[derive(Debug, Clone)]
pub struct Location {
    url: Url,
    backend: Backend,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

fn memory_stores() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

/// Lexically normalises a local path (no symlink resolution, no existence required).
fn absolute_path(raw: &str) -> std::io::Result<PathBuf> {
    let path = FsPath::new(raw);
    let joined = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

/// The store path of a URL's (percent-encoded) path, decoded the way delta-rs decodes it, so
/// data files and the Delta log land under the same prefix.
fn url_path(raw: &str, url: &Url) -> Result<Path> {
    Path::from_url_path(url.path()).map_err(|e| invalid(raw, e.to_string()))
}

fn invalid(raw: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidUrl { url: redact::url(raw), reason: reason.into() }
}

/// Retry policy for every cloud request: generous, since many writers share one bucket.
/// Client options (timeouts, proxies, TLS) are left to the environment: overriding them here
/// would discard settings such as `AWS_ALLOW_HTTP`.
fn retry_config() -> RetryConfig {
    RetryConfig { max_retries: 8, retry_timeout: std::time::Duration::from_secs(120), ..RetryConfig::default() }
}

impl Location {
    /// Parses a dataset URL (`file://`, plain path, `memory://`, `s3://`, `gs://`, `az://`) and
    /// builds its object store from the cloud's standard environment variables.
    pub fn parse(raw: &str) -> Result<Self> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(invalid(raw, "empty"));
        }
        let parsed = match Url::parse(trimmed) {
            Ok(u) if u.scheme().len() > 1 => Some(u),
            Ok(_) | Err(url::ParseError::RelativeUrlWithoutBase) => None,
            Err(e) => return Err(invalid(raw, e.to_string())),
        };
        let Some(url) = parsed else {
            let path = absolute_path(trimmed).map_err(|e| invalid(raw, e.to_string()))?;
            let url = Url::from_directory_path(&path).map_err(|_| invalid(raw, "not an absolute path"))?;
            return Self::from_url(raw, url);
        };
        Self::from_url(raw, url)
    }

    fn from_url(raw: &str, mut url: Url) -> Result<Self> {
        // One canonical form: a trailing slash, so joins stay inside the dataset.
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        let shown = redact::url(raw);
        let config =
            |e: object_store::Error| StoreError::Config { url: shown.clone(), message: redact::scrub(&e.to_string()) };
        let scheme = url.scheme().to_ascii_lowercase();
        let (backend, store, prefix): (Backend, Arc<dyn ObjectStore>, Path) = match scheme.as_str() {
            "file" => {
                let path = url.to_file_path().map_err(|_| invalid(raw, "not a local path"))?;
                let prefix = Path::from_absolute_path(&path).map_err(|e| invalid(raw, e.to_string()))?;
                (Backend::File, Arc::new(LocalFileSystem::new()), prefix)
            }
            "memory" => {
                let name = url.host_str().unwrap_or("").to_string();
                let mut stores = memory_stores().lock().map_err(|_| invalid(raw, "memory store registry poisoned"))?;
                let store = stores.entry(name).or_insert_with(|| Arc::new(InMemory::new())).clone();
                (Backend::Memory, store as Arc<dyn ObjectStore>, url_path(raw, &url)?)
            }
            "s3" | "s3a" => {
                let store = AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry_config())
                    .build()
                    .map_err(config)?;
                (Backend::S3, Arc::new(store), url_path(raw, &url)?)
            }
            "gs" => {
                let store = GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry_config())
                    .build()
                    .map_err(config)?;
                (Backend::Gcs, Arc::new(store), url_path(raw, &url)?)
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let store = MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry_config())
                    .build()
                    .map_err(config)?;
                (Backend::Azure, Arc::new(store), url_path(raw, &url)?)
            }
            other => {
                return Err(StoreError::UnknownScheme { scheme: other.to_string(), url: shown });
            }
        };
        if matches!(backend, Backend::S3 | Backend::Gcs | Backend::Azure) && url.host_str().unwrap_or("").is_empty() {
            return Err(invalid(raw, "missing bucket or container name"));
        }
        Ok(Location { url, backend, store, prefix })
    }

    /// The normalised URL (ends with `/`). May hold secrets only if the user put them there;
    /// print [`Location::display`] instead.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL with secrets masked, for messages.
    pub fn display(&self) -> String {
        redact::url(self.url.as_str().trim_end_matches('/'))
    }

    /// Which backend serves this location.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The object store rooted at the bucket (or `/`), shared by tables and readers.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The dataset's prefix inside [`Location::store`].
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The store path of `relative` (slash-separated, dataset-relative).
    pub fn path(&self, relative: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in relative.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    /// The dataset-relative form of a store path, if it lies under the dataset.
    pub fn relative(&self, path: &Path) -> Option<String> {
        path.prefix_match(&self.prefix).map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
    }

    /// The URL of a sub-directory (a table), ending without `/` as delta-rs expects.
    pub fn child_url(&self, name: &str) -> Result<Url> {
        let joined = self.url.join(name).map_err(|e| invalid(self.url.as_str(), e.to_string()))?;
        Ok(joined)
    }

    /// Wraps an object-store error on dataset-relative `path` with this dataset's context.
    pub fn storage_error(&self, path: &str, err: &object_store::Error) -> StoreError {
        StoreError::storage(&self.display(), path, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_path_becomes_file_url() {
        let loc = Location::parse("/tmp/x/../ds").expect("parse");
        assert_eq!(loc.backend(), Backend::File);
        assert_eq!(loc.url().as_str(), "file:///tmp/ds/");
        assert_eq!(loc.path("samples/a.parquet").as_ref(), "tmp/ds/samples/a.parquet");
    }

    #[test]
    fn percent_encoded_paths_decode_like_delta_rs() {
        let loc = Location::parse("memory://enc/chest%20xray/ds").expect("parse");
        assert_eq!(loc.path("samples/a").as_ref(), "chest xray/ds/samples/a");
    }

    #[test]
    fn unknown_scheme_is_refused() {
        let err = Location::parse("ftp://host/ds").expect_err("must fail");
        assert!(matches!(err, StoreError::UnknownScheme { .. }), "{err}");
    }

    #[test]
    fn memory_stores_are_shared_by_name() {
        let a = Location::parse("memory://shared-test/ds").expect("parse");
        let b = Location::parse("memory://shared-test/other").expect("parse");
        assert!(Arc::ptr_eq(a.store(), b.store()));
        assert_eq!(a.relative(&a.path("samples/x")).as_deref(), Some("samples/x"));
    }
}
