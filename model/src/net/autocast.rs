//! Mixed precision in the manner of torch's `autocast`: inside a [`Scope`] the linear layers, the
//! patch embedding and the attention products compute in a half dtype (bf16 or f16); parameters,
//! norms, softmax, activations, losses, gradients and the optimizer state stay f32.
//!
//! The scope is per thread, as torch's: a forward pass runs on one thread and the scope ends
//! with it. The casts are recorded by autodiff, so the backward pass computes the same matmuls
//! in the same half dtype and hands f32 gradients to the f32 parameters without any scope.
//! bf16 keeps f32's exponent range, so it needs no loss scaling; f16 would underflow small
//! gradients without it, and is offered for comparison only.

use std::cell::Cell;

use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

/// The dtype the matmuls of a forward pass compute in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything f32 (the only choice on the CPU).
    #[default]
    F32,
    /// Matmuls in bfloat16, the rest f32 (mixed precision as the official run's AMP).
    Bf16,
    /// Matmuls in float16, the rest f32 (no loss scaling: for comparison only).
    F16,
}

impl Precision {
    /// The half dtype the matmuls cast to; `None` for plain f32.
    pub fn half(self) -> Option<FloatDType> {
        match self {
            Self::F32 => None,
            Self::Bf16 => Some(FloatDType::BF16),
            Self::F16 => Some(FloatDType::F16),
        }
    }

    /// Whether backend `B` can compute in this precision on `device` (ndarray holds no half
    /// floats; CUDA does).
    pub fn supported<B: Backend>(self, device: &B::Device) -> bool {
        self.half().is_none_or(|d| B::supports_dtype(device, DType::from(d)))
    }

    /// The name in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }
}

thread_local! {
    static HALF: Cell<Option<FloatDType>> = const { Cell::new(None) };
}

/// While alive, the matmuls of this thread compute in the precision [`scope`] was given.
#[derive(Debug)]
#[must_use = "the precision applies only while the scope is alive"]
pub struct Scope {
    previous: Option<FloatDType>,
}

/// Enters `precision` on this thread until the returned guard drops (scopes nest).
pub fn scope(precision: Precision) -> Scope {
    Scope { previous: HALF.replace(precision.half()) }
}

impl Drop for Scope {
    fn drop(&mut self) {
        HALF.set(self.previous);
    }
}

/// Whether a half-precision scope is active on this thread.
pub(crate) fn active() -> bool {
    HALF.get().is_some()
}

/// `layer.forward(x)`, in the scope's half dtype when one is active (bias included, as torch's
/// autocast `linear`); the result comes back in `x`'s dtype.
pub(crate) fn linear<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    match HALF.get() {
        None => layer.forward(x),
        Some(_) => affine(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val())),
    }
}

/// `x · weight + bias` (`weight [d_in, d_out]`, burn's layout), in the scope's half dtype when
/// one is active; the result in `x`'s dtype.
pub(crate) fn affine<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    match HALF.get() {
        None => burn::tensor::module::linear(x, weight, bias),
        Some(half) => {
            let out = FloatDType::from(x.dtype());
            burn::tensor::module::linear(x.cast(half), weight.cast(half), bias.map(|b| b.cast(half))).cast(out)
        }
    }
}

/// `a.matmul(b)`, in the scope's half dtype when one is active; the result in `a`'s dtype.
pub(crate) fn matmul<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    match HALF.get() {
        None => a.matmul(b),
        Some(half) => {
            let out = FloatDType::from(a.dtype());
            a.cast(half).matmul(b.cast(half)).cast(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(HALF.get(), None);
        {
            let _outer = scope(Precision::Bf16);
            assert_eq!(HALF.get(), Some(FloatDType::BF16));
            {
                let _inner = scope(Precision::F32);
                assert_eq!(HALF.get(), None);
            }
            assert_eq!(HALF.get(), Some(FloatDType::BF16));
        }
        assert_eq!(HALF.get(), None);
    }

    #[test]
    fn ndarray_supports_only_f32() {
        let device = Default::default();
        assert!(Precision::F32.supported::<NdArray>(&device));
        assert!(!Precision::Bf16.supported::<NdArray>(&device));
        assert!(!Precision::F16.supported::<NdArray>(&device));
    }

    #[test]
    fn names_round_trip_through_serde() {
        for p in [Precision::F32, Precision::Bf16, Precision::F16] {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
            assert_eq!(serde_json::from_str::<Precision>(&json).unwrap(), p);
        }
    }
}
