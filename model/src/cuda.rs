//! Opening a CUDA device: a persistent kernel cache, and a clean error where CUDA is unusable.
//!
//! burn's CUDA backend generates every kernel at run time and compiles it with NVRTC on first
//! use; a base-size training step needs hundreds of them. cubecl can keep the PTX it compiled on
//! disk, but only when asked, so [`device`] turns that cache on (in `$ECAMP_KERNEL_CACHE`, else
//! `$XDG_CACHE_HOME/ecamp/kernels`, else `~/.cache/ecamp/kernels`): the second run of the same
//! model skips NVRTC. A `cubecl.toml` that configures the cache itself wins, and
//! `ECAMP_KERNEL_CACHE=off` turns it off.
//!
//! Without a driver, cubecl panics on the first operation; [`device`] makes that first
//! operation itself and returns [`CudaError`] instead.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};

use burn::backend::Cuda;
use burn::backend::cuda::CudaDevice;
use burn::tensor::Tensor;
use cubecl_runtime::config::cache::CacheConfig;
use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};

/// Why a CUDA device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// The driver or runtime library is missing, or the device index does not exist.
    #[error("CUDA device {index} is not usable: {reason}")]
    Unusable {
        /// The device index asked for.
        index: usize,
        /// What cubecl reported.
        reason: String,
    },
}

/// The kernel cache directory [`device`] configures, `None` where it is turned off.
pub fn kernel_cache_dir() -> Option<PathBuf> {
    match std::env::var_os("ECAMP_KERNEL_CACHE") {
        Some(v) if v == "off" || v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("ecamp").join("kernels")),
    }
}

/// Configures cubecl once per process; a config already read or set elsewhere is left alone.
fn configure() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if config.compilation.cache.is_none()
            && let Some(dir) = kernel_cache_dir()
        {
            // An unwritable directory means no cache, not a failed run.
            match std::fs::create_dir_all(&dir) {
                Ok(()) => config.compilation.cache = Some(CacheConfig::File(dir)),
                Err(e) => tracing::warn!("kernel cache {} unusable, compiling without it: {e}", dir.display()),
            }
        }
        let storage = CubeClRuntimeConfig::storage().lock();
        let unset = storage.is_none();
        drop(storage);
        if unset {
            CubeClRuntimeConfig::set(config);
        }
    });
}

/// CUDA device `index`, with the kernel cache configured and the driver checked by a first
/// allocation.
pub fn device(index: usize) -> Result<CudaDevice, CudaError> {
    configure();
    let device = CudaDevice::new(index);
    // cubecl reports a missing driver or device by panicking, first in its server thread and
    // then in this one; keep the first message (the cause), not the traces.
    let first: Arc<Mutex<Option<String>>> = Arc::default();
    let hook = std::panic::take_hook();
    let seen = first.clone();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "cubecl panicked".into());
        if let Ok(mut first) = seen.lock() {
            first.get_or_insert(message);
        }
    }));
    let probe = std::panic::catch_unwind(|| {
        let t = Tensor::<Cuda, 1>::zeros([1], &device);
        t.into_data().to_vec::<f32>().map(|v| v.len())
    });
    std::panic::set_hook(hook);
    match probe {
        Ok(Ok(1)) => Ok(device),
        Ok(other) => Err(CudaError::Unusable { index, reason: format!("a first read-back gave {other:?}") }),
        Err(_) => {
            let reason = first.lock().ok().and_then(|m| m.clone()).unwrap_or_else(|| "cubecl panicked".into());
            Err(CudaError::Unusable { index, reason })
        }
    }
}
