//! Layers fused with the loss they feed, their gradients computed in closed form during the
//! forward pass.
//!
//! Where a layer's output goes straight into a loss, the gradient of the loss with respect to
//! the layer's inputs and parameters is known when the forward pass runs. Computing it there, on
//! the host in tight loops where the backend keeps tensors in host memory (burn-ndarray), or
//! with a few tensor ops elsewhere, replaces dozens of small autodiff steps, each with its own
//! temporaries and copies. Autodiff receives the result through a surrogate (see
//! [`with_gradient`]), so the rest of the graph, the optimizer and gradient accumulation see
//! ordinary gradients.

pub mod cross_entropy;
pub mod super_resolution;

use std::any::TypeId;

use burn::backend::ndarray::NdArrayDevice;
use burn::tensor::{Tensor, backend::Backend};

use crate::net::autocast;

/// Whether `B` keeps tensors in host memory (burn-ndarray, with or without autodiff) and no
/// half-precision scope is active: then the host paths apply, and reading a tensor costs a
/// copy at most.
fn on_host<B: Backend>() -> bool {
    TypeId::of::<B::Device>() == TypeId::of::<NdArrayDevice>() && !autocast::active()
}

/// `x` cut from the graph and not requiring a gradient. (`detach` keeps `require_grad`, so a
/// detached parameter or intermediate would still be tracked and its gradient computed.)
fn constant<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.set_require_grad(false)
}

/// `value`, carrying the gradient of `surrogate`: `surrogate` is a sum of `Σ p · ∂L/∂p` over the
/// tracked tensors `p` with the (untracked) gradients `∂L/∂p`, so its gradient with respect to
/// each `p` is `∂L/∂p`; its value is subtracted back out, exactly (`s − s = 0`).
fn with_gradient<B: Backend>(value: Tensor<B, 1>, surrogate: Tensor<B, 1>) -> Tensor<B, 1> {
    constant(value) + (surrogate.clone() - constant(surrogate))
}

/// The elements of `x`, row-major. Through a fresh buffer: burn-ndarray hands over a tensor's
/// own buffer when nothing else holds it, but copies a shared one (a parameter, an input autodiff
/// keeps for the backward pass) element by element through a dynamic-rank iterator, ~30 ns per
/// element (9 ms for the tiny decoder's weight); the multiplication by one is a plain, exact copy.
fn read<B: Backend, const D: usize>(x: Tensor<B, D>) -> Option<Vec<f32>> {
    x.mul_scalar(1.0).into_data().into_vec::<f32>().ok()
}
