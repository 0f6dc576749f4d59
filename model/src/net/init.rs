//! Parameter initialisation as `ECAMP.initialize_weights()` leaves it (spec §3.6): xavier-uniform
//! Linear weights with zero biases everywhere (BERT included), unit/zero LayerNorms, N(0, 0.02)
//! embeddings and tokens.

use burn::module::{Initializer, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

/// A Linear layer with a xavier-uniform weight and a zero bias.
pub fn linear<B: Backend>(d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Linear<B> {
    let mut layer = LinearConfig::new(d_in, d_out)
        .with_bias(false)
        .with_initializer(Initializer::XavierUniform { gain: 1.0 })
        .init(device);
    if bias {
        layer.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    }
    layer
}

/// A LayerNorm with weight 1, bias 0 and the given epsilon.
pub fn layer_norm<B: Backend>(d: usize, eps: f64, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(d).with_epsilon(eps).init(device)
}

/// A tensor drawn from N(0, 0.02), the BERT / MAE token initialisation.
pub fn normal_002<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Param<Tensor<B, D>> {
    Initializer::Normal { mean: 0.0, std: 0.02 }.init(shape, device)
}

/// A fixed (non-trainable) parameter, as the sin-cos position tables.
pub fn frozen<B: Backend, const D: usize>(value: Tensor<B, D>) -> Param<Tensor<B, D>> {
    Param::from_tensor(value).set_require_grad(false)
}
