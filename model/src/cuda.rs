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
//! operation itself and returns [`CudaError`] instead. Later failures (out of GPU memory, most
//! often) panic inside cubecl's server thread while the caller carries on with invalid buffers
//! and fails later for an unrelated-looking reason (a NaN loss); [`device`] therefore also
//! records the first cubecl panic, prints it once instead of once per queued operation, and
//! [`device_failure`] hands it to whoever reports the caller's error.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};

use burn::backend::Cuda;
use burn::backend::cuda::CudaDevice;
use burn::tensor::Tensor;
use cubecl_runtime::config::cache::CacheConfig;
use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};

/// Why a CUDA device could not be opened or stopped working.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CudaError {
    /// The driver or runtime library is missing, or the device index does not exist.
    #[error("CUDA device {index} is not usable: {reason}")]
    Unusable {
        /// The device index asked for.
        index: usize,
        /// What cubecl reported.
        reason: String,
    },
    /// cubecl's runtime panicked during the run (the first such panic).
    #[error("the CUDA runtime failed: {cause}{}", oom_hint(cause))]
    Failed {
        /// cubecl's panic message.
        cause: String,
    },
}

/// Advice for cubecl's out-of-memory message.
fn oom_hint(cause: &str) -> &'static str {
    if cause.contains("can't allocate") || cause.contains("out of memory") {
        " (out of GPU memory: lower --batch-size, and raise --accum to keep the effective batch)"
    } else {
        ""
    }
}

/// The first cubecl panic of this process, if [`device`] has opened a device since.
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// The first failure of cubecl's runtime in this process, to report with the error it caused.
pub fn device_failure() -> Option<CudaError> {
    let first = FAILURE.lock().ok()?.clone();
    first.map(|cause| CudaError::Failed { cause })
}

/// A panic payload as text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "cubecl panicked".into())
}

/// Installs (once) the panic hook that records cubecl's panics; others go to the previous hook.
fn watch_runtime() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // cudarc is the driver binding cubecl calls into.
            if !info.location().is_some_and(|l| l.file().contains("cubecl") || l.file().contains("cudarc")) {
                return previous(info);
            }
            let message = panic_message(info.payload());
            let Ok(mut first) = FAILURE.lock() else { return };
            if first.is_none() {
                eprintln!("error: the CUDA runtime failed: {message}{}", oom_hint(&message));
                *first = Some(message);
            }
        }));
    });
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
        let message = panic_message(info.payload());
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
        Ok(Ok(1)) => {
            watch_runtime();
            Ok(device)
        }
        Ok(other) => Err(CudaError::Unusable { index, reason: format!("a first read-back gave {other:?}") }),
        Err(_) => {
            let reason = first.lock().ok().and_then(|m| m.clone()).unwrap_or_else(|| "cubecl panicked".into());
            Err(CudaError::Unusable { index, reason })
        }
    }
}
