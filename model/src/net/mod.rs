//! The ECAMP networks as burn modules, one file per part of spec §3.

pub mod autocast;
pub mod bert;
pub mod init;
pub mod pos_embed;
pub mod sr;
pub mod vit;

use burn::tensor::{Tensor, backend::Backend};

/// Exact (erf) GELU, `x · (1 + erf(x / √2)) / 2`, as torch's `nn.GELU()` and HF BERT's `gelu`.
///
/// The same ops in the same order as burn's `activation::gelu`, so the forward values are
/// identical; but composed from differentiable ops, so the backward pass is the exact derivative
/// `Φ(x) + x·φ(x)`. burn 0.21's fused `gelu` differentiates the tanh approximation instead
/// (`gelu_backward` in burn-backend), which is off by up to ~1e-3 against torch's gradient.
pub(crate) fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone().mul(x.div_scalar(std::f64::consts::SQRT_2).erf().add_scalar(1.0)).div_scalar(2.0)
}

/// `[b, n, h·d]` → `[b, h, n, d]`: the per-head view of an attention input.
pub(crate) fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, n, c] = x.dims();
    x.reshape([b, n, heads, c / heads]).swap_dims(1, 2)
}

/// `[b, h, n, d]` → `[b, n, h·d]`: heads concatenated back, head-major as torch's reshape.
pub(crate) fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Tensor, TensorData};

    type A = Autodiff<NdArray<f32>>;

    #[test]
    fn gelu_forward_is_burns_and_its_gradient_is_exact() {
        let xs: Vec<f32> = (0..161).map(|i| -4.0 + i as f32 * 0.05).collect();
        let x = Tensor::<A, 1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &Default::default()).require_grad();
        let ours = super::gelu(x.clone());
        let burns = burn::tensor::activation::gelu(x.clone());
        assert_eq!(ours.clone().into_data(), burns.clone().into_data(), "forward values differ");

        let grad_of = |y: Tensor<A, 1>| -> Vec<f32> {
            let grads = y.sum().backward();
            x.grad(&grads).map(|g| g.into_data().to_vec().unwrap()).unwrap()
        };
        let (ours_grad, burns_grad) = (grad_of(ours), grad_of(burns));
        // d/dx x·Φ(x) = Φ(x) + x·φ(x); Φ from the forward's own erf, φ in f64.
        let phi_big = burn::tensor::Tensor::<NdArray<f32>, 1>::from_data(
            TensorData::new(xs.clone(), [xs.len()]),
            &Default::default(),
        )
        .div_scalar(std::f64::consts::SQRT_2)
        .erf()
        .add_scalar(1.0)
        .div_scalar(2.0)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
        let mut worst_ours = 0f64;
        let mut worst_burn = 0f64;
        for (i, &x) in xs.iter().enumerate() {
            let x = f64::from(x);
            let exact = f64::from(phi_big[i]) + x * (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            worst_ours = worst_ours.max((f64::from(ours_grad[i]) - exact).abs());
            worst_burn = worst_burn.max((f64::from(burns_grad[i]) - exact).abs());
        }
        println!("max abs gradient error vs the exact derivative: ours {worst_ours:.2e}, burn gelu {worst_burn:.2e}");
        assert!(worst_ours < 2e-6, "our gradient is off by {worst_ours}");
        // Documents why ours exists: burn's fused gelu differentiates the tanh approximation.
        assert!(worst_burn > 1e-4, "burn's gelu gradient became exact ({worst_burn}): drop ours");
    }
}
