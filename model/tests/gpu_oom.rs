//! Out of GPU memory is reported as such: cubecl panics in its server thread when an allocation
//! fails, the caller's thread carries on, and `ecamp_model::cuda::device_failure` must hand the
//! cause to whoever reports the caller's error. Its own test binary, because the device is not
//! usable after the failure. Built only with `--features cuda`; needs an NVIDIA GPU.
#![cfg(feature = "cuda")]

use burn::backend::Cuda;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use ecamp_model::cuda::{CudaError, device, device_failure};

#[test]
fn an_allocation_beyond_the_gpu_is_reported_as_out_of_memory() {
    let dev = match device(0) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    assert!(device_failure().is_none(), "no failure before the allocation");
    // 14 GB at a time (each within u32 indexing) until cubecl fails: more than any GPU holds.
    let held = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut held = Vec::new();
        for _ in 0..24 {
            held.push(Tensor::<Cuda, 1>::ones([3_500_000_000usize], &dev));
            let _ = Cuda::sync(&dev);
            if device_failure().is_some() {
                break;
            }
        }
        held.len()
    }));
    // Whether the caller's thread panicked too or carried on, the cause is recorded.
    let failure = device_failure();
    let Some(CudaError::Failed { cause }) = &failure else {
        panic!("no CUDA failure recorded (the caller got {held:?})")
    };
    let text = failure.as_ref().map(ToString::to_string).unwrap_or_default();
    println!("recorded: {text}");
    assert!(text.contains("out of GPU memory"), "{cause}");
}
